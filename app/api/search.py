"""Search endpoints of the API: by an image that is not stored, and by text."""

from __future__ import annotations

from flask import jsonify

from app.api import bp
from app.api.auth import scope_required
from app.api.schemas import (
    ImageSchema,
    SearchByImageQuery,
    SearchByImageSchema,
    SimilarSchema,
    TextSearchArgs,
    page_of,
    similar_document,
)
from app.services import images as image_service
from app.services.search import search_by_file
from app.tenancy import current_team_id

DEFAULT_K = 20


@bp.post("/search", tags=["search"])
@scope_required("read")
@bp.arguments(SearchByImageQuery, location="query")
@bp.arguments(SearchByImageSchema, location="multipart")
@bp.response(200, SimilarSchema)
@bp.errors(409, 413, 415, 422, 503)
def search_by_image(query, form):
    """The team's images most like an image sent here, which is checked like an upload and not
    stored; answers like /images/{id}/similar."""
    k = form.get("k", query.get("k", DEFAULT_K))
    embedder = form.get("embedder", query.get("embedder"))
    # SimilarSchema documents the answer; similar_document builds the same, much faster.
    return jsonify(
        similar_document(search_by_file(current_team_id(), form["file"].stream, k, embedder))
    )


@bp.get("/search", tags=["search"])
@scope_required("read")
@bp.arguments(TextSearchArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(ImageSchema))
@bp.errors(404)
def search_by_text(q, limit, cursor=None, status=None, tag=None, collection_id=None):
    """The team's images whose filename, tags, labels and collection name hold every word (the
    last one may be the start of a word), newest first."""
    items, next_cursor = image_service.list_images(
        limit, cursor, status, tag=tag, text=q, collection_id=collection_id
    )
    return {"items": items, "next_cursor": next_cursor}
