"""Image endpoints of the API."""

from __future__ import annotations

from flask import abort, g, jsonify

from app.api import bp
from app.api.auth import scope_required
from app.api.responses import no_content
from app.api.schemas import (
    EditImageSchema,
    EmptySchema,
    ImageFileArgs,
    ImageListArgs,
    ImageSchema,
    SimilarArgs,
    SimilarSchema,
    UploadedImagesSchema,
    UploadImagesSchema,
    With,
    page_of,
    similar_document,
)
from app.models import Image
from app.services import images as image_service
from app.services import reconcile, renditions
from app.services.ingest import Incoming, ingest
from app.services.search import similar_to
from app.tenancy import current_team_id, get_owned
from app.views import current_actor, send_stored, send_variant

BINARY = {"type": "string", "format": "binary"}


@bp.get("/images", tags=["images"])
@scope_required("read")
@bp.arguments(ImageListArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(ImageSchema))
@bp.errors(404)
def list_images(limit, cursor=None, status=None, tag=None, q=None, collection_id=None):
    """The team's images, newest first; filters by status, tag, collection, and text over
    filename, tags and labels."""
    items, next_cursor = image_service.list_images(
        limit, cursor, status, tag=tag, text=q, collection_id=collection_id
    )
    return {"items": items, "next_cursor": next_cursor}


@bp.post("/images", tags=["images"])
@scope_required("write")
@bp.arguments(UploadImagesSchema, location="multipart")
@bp.response(201, UploadedImagesSchema)
@bp.errors(404, 413, 415, 422)
def create_images(form):
    """Upload one or more images. One request, one outcome: every file is checked before any
    is stored. An exact re-upload answers the image already here, with `"existing": true`."""
    results = ingest(
        current_team_id(),
        [Incoming(part.stream, part.filename) for part in form["file"]],
        actor=current_actor(),
        tags=image_service.parse_tags(form.get("tags", "")),
        key_id=g.api_key.id,
        collection_id=form.get("collection_id"),
    )
    return {"items": [With(r.image, existing=True) if r.existing else r.image for r in results]}


@bp.get("/images/<image_id>", tags=["images"])
@scope_required("read")
@bp.response(200, ImageSchema)
@bp.errors(404)
def get_image(image_id):
    """One image."""
    return get_owned(Image, image_id)


@bp.patch("/images/<image_id>", tags=["images"])
@scope_required("write")
@bp.arguments(EditImageSchema, example={"tags": ["summer"], "metadata": {"custom": {"n": 1}}})
@bp.response(200, ImageSchema)
@bp.errors(404, 422)
def edit_image(body, image_id):
    """Change an image's filename, tags, collection or custom metadata."""
    image = get_owned(Image, image_id)
    changes = {k: body[k] for k in ("filename", "tags", "collection_id") if k in body}
    if "metadata" in body:
        changes["custom"] = body["metadata"]["custom"]
    image_service.edit_image(image, changes, actor=current_actor())
    return image


@bp.delete("/images/<image_id>", tags=["images"])
@scope_required("write")
@bp.response(204)
@bp.errors(404)
def delete_image(image_id):
    """Delete an image: its file, renditions and embeddings go too."""
    image_service.delete_image(get_owned(Image, image_id), actor=current_actor())
    return no_content()


@bp.post("/images/<image_id>/retry", tags=["images"])
@scope_required("write")
@bp.arguments(EmptySchema, required=False)
@bp.response(202, ImageSchema)
@bp.errors(404, 409)
def retry_image(body, image_id):
    """Process again an image whose processing failed."""
    image = get_owned(Image, image_id)
    reconcile.retry_image(image, actor=current_actor())
    return image


@bp.get("/images/<image_id>/file", tags=["images"])
@scope_required("read")
@bp.arguments(ImageFileArgs, location="query", as_kwargs=True)
@bp.response(200, BINARY, content_type="application/octet-stream", description="The bytes")
# Sent with the file's own type (image/jpeg, image/webp, ...); octet-stream stays first, the
# type generated clients read as bytes.
@bp.doc(
    responses={
        "200": {
            "description": "The bytes",
            "content": {
                "application/octet-stream": {"schema": BINARY},
                "image/*": {"schema": BINARY},
            },
        }
    }
)
@bp.alt_response(302, description="A short-lived URL of the bytes, in Location", success=True)
@bp.errors(404, 409)
def get_image_file(image_id, variant, format=None, quality=None, width=None):  # noqa: A002
    """The original or a rendition; with `format`, `quality` or `width`, a version made once
    and kept."""
    image = get_owned(Image, image_id)
    if format is None and quality is None and width is None:
        return send_variant(image, variant)
    rendition = renditions.derived(image, variant, format, quality, width)
    return send_stored(rendition.key, rendition.content_type, rendition.filename)


@bp.get("/images/<image_id>/similar", tags=["images"])
@scope_required("read")
@bp.arguments(SimilarArgs, location="query", as_kwargs=True)
@bp.response(200, SimilarSchema)
@bp.errors(404, 409, 503)
def get_similar_images(image_id, k, embedder=None):
    """The images most like this one by an embedder, nearest first."""
    result = similar_to(image_id, k, embedder)
    if result is None:
        abort(404)
    # SimilarSchema documents the answer; similar_document builds the same, much faster.
    return jsonify(similar_document(result))
