"""Imports in the browser: paste URLs or upload a CSV, follow each batch live, download its
report."""

from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, request, url_for

from app.errors import ServiceError, ValidationFailed
from app.gallery import bp
from app.services import collections, imports
from app.services import images as image_service
from app.views import current_actor, fragment_or_page, http_status, role_required

LISTED = 50
SHOWN_ITEMS = 500  # on a batch's page; the report has them all


def _list_page(status: int = 200, **context):
    return fragment_or_page(
        "gallery/_imports.html",
        "gallery/imports.html",
        status,
        batches=imports.import_page(LISTED)[0],
        collection_infos=collections.list_collections(500)[0],
        limit=current_app.config["IMPORT_MAX_URLS"],
        **context,
    )


@bp.get("/imports")
def list_imports():
    return _list_page()


def _requests_from_form() -> list[imports.ItemRequest]:
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        if request.form.get("urls", "").strip():
            raise ValidationFailed("paste URLs or choose a CSV file, not both")
        return imports.parse_csv(upload.stream.read(imports.MAX_CSV_BYTES + 1))
    return imports.parse_url_lines(request.form.get("urls", ""))


@bp.post("/imports")
@role_required("admin", "member")
def create_import():
    try:
        batch = imports.create_batch(
            g.membership.team_id,
            _requests_from_form(),
            image_service.parse_tags(request.form.get("tags", "")),
            actor=current_actor(),
            collection_id=request.form.get("collection_id") or None,
            user_id=g.membership.user_id,
        )
    except ServiceError as exc:
        return _list_page(http_status(exc), error=exc.message, form=request.form)
    message = f"Import of {batch.total} URL{'s' if batch.total != 1 else ''} started."
    if request.headers.get("HX-Request"):
        return _list_page(message=message)
    flash(message, "info")
    return redirect(url_for("gallery.list_imports"))


@bp.get("/imports/<import_id>")
def show_import(import_id: str):
    """The batch's page; for htmx, its progress line (which stops polling once done)."""
    progress = imports.get_import(import_id)
    if request.headers.get("HX-Request"):
        page = render_template("gallery/_import_progress.html", row=progress)
        return page, 200, {"Vary": "HX-Request"}
    items = progress.batch.items[:SHOWN_ITEMS]
    page = render_template("gallery/import.html", row=progress, items=items, shown=SHOWN_ITEMS)
    return page, 200, {"Vary": "HX-Request"}


# The report's links open in the browser that downloaded it, signed in.
FILE_ENDPOINTS = {"original": "gallery.download_original", "thumbnail": "gallery.get_thumbnail"}


def _file_url(image_id, variant: str) -> str:
    return url_for(FILE_ENDPOINTS[variant], image_id=image_id, _external=True)


@bp.get("/imports/<import_id>/report.csv")
def download_import_report(import_id: str):
    batch = imports.get_import(import_id).batch
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="import-{batch.id}.csv"',
    }
    return imports.report_csv(batch, _file_url), 200, headers
