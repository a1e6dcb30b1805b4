"""Bulk import endpoints: start an import from URLs (JSON or CSV), follow it, get its report."""

from __future__ import annotations

from flask import g, request, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.body import read_json
from app.api.errors import ApiError
from app.api.images import refuse_unknown_args, refuse_unknown_form_fields
from app.models import ImportBatch
from app.services import images as image_service
from app.services import imports
from app.tenancy import current_team_id, get_owned
from app.views import current_actor


def _requests_from_json() -> tuple[list[imports.ItemRequest], list[str]]:
    body = read_json()
    if not isinstance(body, dict):
        raise ApiError(400, "send JSON {\"urls\": [...]} or a multipart CSV 'file'")
    unknown = sorted(set(body) - {"urls", "tags", "collection_id"})
    if unknown:
        raise ApiError(400, f"unsupported field {', '.join(unknown)}")
    if body.get("collection_id") is not None:
        raise ApiError(422, "no such collection", "validation_error")
    urls = body.get("urls")
    if not isinstance(urls, list):
        raise ApiError(400, "urls is a list of URLs")
    return [imports.ItemRequest(url=u) for u in urls], image_service.parse_tags(
        body.get("tags", [])
    )


def _requests_from_csv() -> tuple[list[imports.ItemRequest], list[str]]:
    refuse_unknown_form_fields()
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "send the CSV as a multipart 'file' part")
    data = upload.stream.read(imports.MAX_CSV_BYTES + 1)
    tags = image_service.parse_tags(request.form.get("tags", ""))
    return imports.parse_csv(data), tags


@bp.post("/imports")
@scope_required("write")
def create_import():
    if request.mimetype == "multipart/form-data":
        requests, tags = _requests_from_csv()
    else:
        requests, tags = _requests_from_json()
    batch = imports.create_batch(
        current_team_id(), requests, tags, actor=current_actor(), key_id=g.api_key.id
    )
    return {"id": str(batch.id), **imports.progress(batch)}, 202


def _file_url(image_id, variant: str) -> str:
    return url_for("api.get_image_file", image_id=image_id, variant=variant, _external=True)


@bp.get("/imports/<import_id>")
@scope_required("read")
def get_import(import_id):
    refuse_unknown_args()
    batch = get_owned(ImportBatch, import_id)
    items = [
        {
            "url": item.url,
            "status": item.status,
            "image_id": str(item.image_id) if item.image_id else None,
            "error": item.error,
        }
        for item in batch.items
    ]
    return {"id": str(batch.id), **imports.progress(batch), "items": items}


@bp.get("/imports/<import_id>/report.csv")
@scope_required("read")
def get_import_report(import_id):
    refuse_unknown_args()
    batch = get_owned(ImportBatch, import_id)
    report = imports.report_csv(batch, _file_url)
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="import-{batch.id}.csv"',
    }
    return report, 200, headers
