"""Search by image: drop a file, see the team's closest images with scores. The file is
checked like an upload and embedded, but never stored."""

from __future__ import annotations

from flask import g, render_template, request

from app.errors import ServiceError
from app.gallery import bp
from app.runtime import plugins
from app.services import search
from app.views import fragment_or_page, http_status

RESULTS = 24


def _search_page(status: int = 200, **context):
    context.setdefault("embedders", list(plugins().embedders))
    context.setdefault("chosen", "")
    return fragment_or_page(
        "gallery/_search_results.html", "gallery/search.html", status, **context
    )


@bp.get("/search")
def show_search():
    return (
        render_template("gallery/search.html", embedders=list(plugins().embedders), chosen=""),
        200,
        {"Vary": "HX-Request"},
    )


@bp.post("/search")
def search_by_image():
    """Viewers may search too: reading is all it does."""
    upload = request.files.get("file")
    chosen = request.form.get("embedder") or ""
    if upload is None or not upload.filename:
        return _search_page(422, error="Choose or drop an image to search by.", chosen=chosen)
    try:
        result = search.search_by_file(g.membership.team_id, upload.stream, RESULTS, chosen or None)
    except ServiceError as exc:
        return _search_page(http_status(exc), error=exc.message, chosen=chosen)
    return _search_page(result=result, query_name=upload.filename, chosen=chosen)
