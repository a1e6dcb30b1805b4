"""Search endpoints of the API: by an image that is not stored, and by text."""

from __future__ import annotations

import re

from flask import request

from app.api import bp
from app.api.auth import scope_required
from app.api.errors import ApiError
from app.api.images import image_json, int_arg, matches_json, refuse_unknown_args
from app.services import images as image_service
from app.services.search import MAX_K, search_by_file
from app.tenancy import current_team_id

_INT_RE = re.compile(r"^[0-9]{1,6}$")


def _form_k() -> int:
    raw = request.form.get("k")
    if raw is None:
        return int_arg("k", 20, 1, MAX_K)
    if not _INT_RE.match(raw) or not 1 <= int(raw) <= MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}")
    return int(raw)


@bp.post("/search")
@scope_required("read")
def search_by_image():
    refuse_unknown_args("k", "embedder")
    unknown = sorted((set(request.form) - {"k", "embedder"}) | (set(request.files) - {"file"}))
    if unknown:
        raise ApiError(
            400, f"unsupported field {', '.join(unknown)}; send 'file', optional 'k', 'embedder'"
        )
    files = request.files.getlist("file")
    if len(files) != 1:
        raise ApiError(400, "send the image to search by as one multipart 'file' part")
    embedder = request.form.get("embedder", request.args.get("embedder"))
    result = search_by_file(current_team_id(), files[0].stream, _form_k(), embedder)
    return matches_json(result)


@bp.get("/search")
@scope_required("read")
def search_by_text():
    refuse_unknown_args("q", "limit", "cursor", "collection_id", "tag", "status")
    if request.args.get("q") is None:
        raise ApiError(400, "send the words to search for as ?q=")
    items, next_cursor = image_service.list_images(
        int_arg("limit", 50, 1, 200),
        request.args.get("cursor"),
        request.args.get("status"),
        tag=request.args.get("tag"),
        text=request.args.get("q"),
        collection_id=request.args.get("collection_id"),
    )
    return {"items": [image_json(i) for i in items], "next_cursor": next_cursor}
