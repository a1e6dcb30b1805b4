"""Image endpoints of the API."""

from __future__ import annotations

import re

from flask import g, request, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.body import no_body, read_json
from app.api.errors import ApiError
from app.models import Image
from app.services import images as image_service
from app.services import reconcile, renditions
from app.services.ingest import Incoming, ingest
from app.services.search import MAX_K, SearchResult, similar_images
from app.tenancy import current_team_id, get_owned
from app.views import current_actor, send_stored, send_variant

_INT_RE = re.compile(r"^[0-9]{1,6}$")
VARIANTS = ("original", "thumbnail", "preview")


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A plain decimal integer query parameter within bounds, or a 400 that says so."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _INT_RE.match(raw) or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def refuse_unknown_args(*allowed: str) -> None:
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown query parameter {', '.join(unknown)}")


def refuse_unknown_form_fields() -> None:
    """Multipart bodies carry `file` parts and optional `tags`; anything else (team_id, ...) is
    refused rather than ignored."""
    unknown = sorted((set(request.form) - {"tags"}) | (set(request.files) - {"file"}))
    if unknown:
        raise ApiError(
            400, f"unsupported field {', '.join(unknown)}; send 'file' parts and optional 'tags'"
        )


def image_json(image: Image, **extra) -> dict:
    def file_url(variant: str) -> str:
        return url_for("api.get_image_file", image_id=image.id, variant=variant, _external=True)

    if image.uploaded_by_user is not None:
        uploaded_by = image.uploaded_by_user.email
    elif image.uploaded_by_key is not None:
        uploaded_by = f"api-key:{image.uploaded_by_key.name}"
    else:
        uploaded_by = None
    meta = image.meta or {}
    return {
        "id": str(image.id),
        "filename": image.filename,
        "content_type": image.content_type,
        "size_bytes": image.size_bytes,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "status": image.status,
        "error": image.error,
        "collection_id": None,
        "tags": [tag.name for tag in image.tags],
        "labels": [{"name": label.name, "score": label.score} for label in image.labels],
        "metadata": {
            "exif": meta.get("exif", {}),
            "colors": meta.get("colors", []),
            "custom": meta.get("custom", {}),
        },
        "created_at": image.created_at.isoformat().replace("+00:00", "Z"),
        "uploaded_by": uploaded_by,
        "urls": {v: file_url(v) for v in VARIANTS},
        **extra,
    }


@bp.get("/images")
@scope_required("read")
def list_images():
    refuse_unknown_args("limit", "cursor", "status", "tag", "q")
    limit = int_arg("limit", 50, 1, 200)
    items, next_cursor = image_service.list_images(
        limit,
        request.args.get("cursor"),
        request.args.get("status"),
        tag=request.args.get("tag"),
        text=request.args.get("q"),
    )
    return {"items": [image_json(i) for i in items], "next_cursor": next_cursor}


@bp.post("/images")
@scope_required("write")
def create_images():
    refuse_unknown_form_fields()
    tags = image_service.parse_tags(request.form.get("tags", ""))
    files = request.files.getlist("file")
    if not files:
        raise ApiError(400, "send the image as a multipart 'file' part")
    # One request, one outcome: every file is checked before any is stored.
    results = ingest(
        current_team_id(),
        [Incoming(upload.stream, upload.filename) for upload in files],
        actor=current_actor(),
        tags=tags,
        key_id=g.api_key.id,
    )
    items = [
        image_json(r.image, existing=True) if r.existing else image_json(r.image) for r in results
    ]
    return {"items": items}, 201


@bp.get("/images/<image_id>")
@scope_required("read")
def get_image(image_id):
    return image_json(get_owned(Image, image_id))


EDITABLE = {"filename", "tags", "metadata", "collection_id"}


@bp.patch("/images/<image_id>")
@scope_required("write")
def edit_image(image_id):
    image = get_owned(Image, image_id)
    body = read_json()
    if not isinstance(body, dict) or not body:
        raise ApiError(400, "send a JSON object with the fields to change")
    refused = sorted(set(body) - EDITABLE)
    if refused:
        raise ApiError(
            400, f"{', '.join(refused)} cannot be changed; editable: {', '.join(sorted(EDITABLE))}"
        )
    changes = {k: body[k] for k in ("filename", "tags") if k in body}
    if "metadata" in body:
        metadata = body["metadata"]
        if not isinstance(metadata, dict) or set(metadata) - {"custom"}:
            raise ApiError(400, "only metadata.custom can be changed")
        if "custom" in metadata:
            changes["custom"] = metadata["custom"]
    if body.get("collection_id") is not None:
        raise ApiError(422, "no such collection", "validation_error")
    image_service.edit_image(image, changes, actor=current_actor())
    return image_json(image)


@bp.delete("/images/<image_id>")
@scope_required("write")
def delete_image(image_id):
    image_service.delete_image(get_owned(Image, image_id), actor=current_actor())
    return "", 204


@bp.post("/images/<image_id>/retry")
@scope_required("write")
def retry_image(image_id):
    image = get_owned(Image, image_id)
    no_body()
    reconcile.retry_image(image, actor=current_actor())
    return image_json(image), 202


@bp.get("/images/<image_id>/file")
@scope_required("read")
def get_image_file(image_id):
    refuse_unknown_args("variant", "format", "quality", "width")
    image = get_owned(Image, image_id)
    variant = request.args.get("variant", "original")
    if variant not in VARIANTS:
        raise ApiError(400, f"variant must be one of {', '.join(VARIANTS)}")
    fmt = request.args.get("format")
    quality = int_arg("quality", 0, 1, 95) or None
    width = int_arg("width", 0, 1, 100_000) or None
    if fmt is None and quality is None and width is None:
        return send_variant(image, variant)
    rendition = renditions.derived(image, variant, fmt, quality, width)
    return send_stored(rendition.key, rendition.content_type, rendition.filename)


@bp.get("/images/<image_id>/similar")
@scope_required("read")
def get_similar_images(image_id):
    refuse_unknown_args("k", "embedder")
    image = get_owned(Image, image_id)
    k = int_arg("k", 20, 1, MAX_K)
    return matches_json(similar_images(image, k, request.args.get("embedder")))


def matches_json(result: SearchResult) -> dict:
    """/similar and search by file answer alike."""
    return {
        "items": [
            {"image": image_json(m.image), "distance": m.distance, "score": m.score}
            for m in result.matches
        ],
        "embedder": result.embedder,
        "index": {"version": result.index_version, "fresh": result.fresh},
    }
