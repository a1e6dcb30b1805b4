"""Bulk import endpoints: start an import from URLs (JSON or CSV), follow it, get its report."""

from __future__ import annotations

from flask import Response, g, request, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.schemas import (
    ImportCsvSchema,
    ImportDetailSchema,
    ImportSchema,
    ImportUrlsSchema,
    ListArgs,
    With,
    page_of,
)
from app.services import images as image_service
from app.services import imports
from app.tenancy import current_team_id
from app.views import current_actor

MULTIPART = "multipart/form-data"


@bp.get("/imports", tags=["imports"])
@scope_required("read")
@bp.arguments(ListArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(ImportSchema))
def list_imports(limit, cursor=None):
    """The team's imports, newest first, each with its counts."""
    items, next_cursor = imports.import_page(limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


@bp.post("/imports", tags=["imports"])
@scope_required("write")
@bp.doc(
    requestBody={
        "required": True,
        "content": {
            "application/json": {
                "schema": ImportUrlsSchema,
                "example": {"urls": ["https://example.com/a.jpg"], "tags": ["web"]},
            },
            MULTIPART: {"schema": ImportCsvSchema},
        },
    }
)
@bp.response(202, ImportSchema)
@bp.errors(400, 404, 413, 422)
def create_import():
    """Import images from URLs: a JSON list, or a CSV file (column `url`, optional `filename`
    and `tags`). Each URL is fetched by a worker; follow the import with GET /imports/{id}."""
    # One endpoint, two bodies: the content type says which schema reads it.
    parser = bp.ARGUMENTS_PARSER
    if request.mimetype == MULTIPART:
        body = parser.parse(ImportCsvSchema(), location="multipart")
        csv_bytes = body["file"].stream.read(imports.MAX_CSV_BYTES + 1)
        requests = imports.parse_csv(csv_bytes)
    else:
        body = parser.parse(ImportUrlsSchema(), location="json")
        requests = [imports.ItemRequest(url=url) for url in body["urls"]]
    batch = imports.create_batch(
        current_team_id(),
        requests,
        image_service.parse_tags(body.get("tags", [])),
        actor=current_actor(),
        key_id=g.api_key.id,
        collection_id=body.get("collection_id"),
    )
    return imports.get_import(batch.id)


@bp.get("/imports/<import_id>", tags=["imports"])
@scope_required("read")
@bp.arguments(ListArgs, location="query", as_kwargs=True)
@bp.response(200, ImportDetailSchema)
@bp.errors(404)
def get_import(import_id, limit, cursor=None):
    """An import's counts and one page of its items, in the order they were given."""
    summary = imports.get_import(import_id)
    items, next_cursor = imports.item_page(summary.batch, limit, cursor)
    return With(summary, items=items, next_cursor=next_cursor)


@bp.get("/imports/<import_id>/report.csv", tags=["imports"])
@scope_required("read")
@bp.response(200, {"type": "string"}, content_type="text/csv", description="The report")
@bp.errors(404)
def get_import_report(import_id):
    """Every item as CSV: url, status, image_id, error, original_url, thumbnail_url."""
    batch = imports.get_import(import_id).batch
    report = imports.report_csv(batch, _file_url)
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="import-{batch.id}.csv"',
    }
    return Response(report, headers=headers)


def _file_url(image_id, variant: str) -> str:
    return url_for("api.get_image_file", image_id=image_id, variant=variant, _external=True)
