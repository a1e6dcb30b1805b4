"""Duplicate review in the API: groups per tier, and resolving one."""

from __future__ import annotations

from app.api import bp
from app.api.auth import scope_required
from app.api.schemas import (
    DuplicateArgs,
    DuplicatePageSchema,
    ResolvedDuplicatesSchema,
    ResolveDuplicatesSchema,
)
from app.services import duplicates
from app.tenancy import current_team_id
from app.views import current_actor


@bp.get("/duplicates", tags=["duplicates"])
@scope_required("read")
@bp.arguments(DuplicateArgs, location="query", as_kwargs=True)
@bp.response(200, DuplicatePageSchema)
@bp.errors(503)
def list_duplicates(tier, limit, threshold=None, cursor=None):
    """Groups of images that look like duplicates, in a tier (exact, near, similar), each with
    the image suggested to keep first.

    The `similar` report of a large team is made by a worker: until the first is ready the
    answer is 503 `unavailable` with `Retry-After`; later, while a newer one is made, the
    previous report is answered."""
    groups, next_cursor = duplicates.list_groups(
        current_team_id(), tier, threshold, limit=limit, cursor=cursor
    )
    return {"groups": groups, "next_cursor": next_cursor}


@bp.post("/duplicates/<group_id>/resolve", tags=["duplicates"])
@scope_required("write")
@bp.arguments(
    ResolveDuplicatesSchema,
    examples={
        "keep one": {"value": {"keep": ["<image id>"], "delete": ["<image id>"]}},
        "not duplicates": {"value": {"not_duplicates": True}},
    },
)
@bp.response(200, ResolvedDuplicatesSchema)
@bp.errors(404, 409)
def resolve_duplicates(body, group_id):
    """Keep some images of a group and delete the others (their tags and collection go to the
    kept ones), or remember that the group's images are not duplicates."""
    return duplicates.resolve(current_team_id(), group_id, body, actor=current_actor())
