"""Duplicate review in the API: groups per tier, and resolving one."""

from __future__ import annotations

from flask import request

from app.api import bp
from app.api.auth import scope_required
from app.api.body import read_json
from app.api.images import image_json, int_arg, refuse_unknown_args
from app.services import duplicates
from app.tenancy import current_team_id
from app.views import current_actor


@bp.get("/duplicates")
@scope_required("read")
def list_duplicates():
    refuse_unknown_args("tier", "threshold", "limit", "cursor")
    groups, next_cursor = duplicates.list_groups(
        current_team_id(),
        request.args.get("tier"),
        request.args.get("threshold"),
        limit=int_arg("limit", 20, 1, duplicates.MAX_LIMIT),
        cursor=request.args.get("cursor"),
    )
    return {
        "groups": [
            {
                "id": group.id,
                "tier": group.tier,
                "images": [image_json(image) for image in group.images],
                "suggested_keep": str(group.suggested_keep.id),
            }
            for group in groups
        ],
        "next_cursor": next_cursor,
    }


@bp.post("/duplicates/<group_id>/resolve")
@scope_required("write")
def resolve_duplicates(group_id):
    result = duplicates.resolve(current_team_id(), group_id, read_json(), actor=current_actor())
    if "kept" in result:
        result["kept"] = [image_json(image) for image in result["kept"]]
    return result
