"""Direct (presigned) uploads: ask for an upload URL, send the bytes there, then complete."""

from __future__ import annotations

from flask import g, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.responses import no_content
from app.api.schemas import (
    CreateUploadSchema,
    DirectUploadPartsSchema,
    EmptySchema,
    ImageSchema,
    UploadTicketSchema,
    With,
)
from app.services import images as image_service
from app.services import uploads
from app.tenancy import current_team_id
from app.views import current_actor


@bp.post("/uploads", tags=["uploads"])
@scope_required("write")
@bp.arguments(
    CreateUploadSchema,
    example={"filename": "beach.jpg", "content_type": "image/jpeg", "size_bytes": 123456},
)
@bp.response(201, UploadTicketSchema)
@bp.errors(404, 413, 415, 422)
def create_upload(body):
    """Ask for a URL to send one image's bytes to directly (the store's presigned POST, or a
    signed URL of this server), then complete the upload."""
    upload, presigned = uploads.create(
        current_team_id(),
        body["filename"],
        body["content_type"],
        body["size_bytes"],
        image_service.parse_tags(body.get("tags", [])),
        collection_id=body.get("collection_id"),
        key_id=g.api_key.id,
    )
    if presigned is None:  # the store has no direct upload: the application takes the bytes
        url = url_for("api.receive_upload", token=uploads.sign(upload), _external=True)
        presigned = {"url": url, "method": "POST", "fields": {"Content-Type": upload.content_type}}
    return With(upload, upload=presigned)


@bp.post("/uploads/direct/<token>", tags=["uploads"])
@bp.doc(security=[])
@bp.arguments(DirectUploadPartsSchema, location="multipart")
@bp.response(204)
@bp.errors(403, 404, 409, 413)
def receive_upload(parts, token):
    """The signed, expiring upload URL of local storage; the token is the credential."""
    upload = uploads.from_token(token)
    part = parts["file"]
    uploads.receive(upload, part.stream, parts.get("content_type") or part.mimetype)
    return no_content()


@bp.post("/uploads/<upload_id>/complete", tags=["uploads"])
@scope_required("write")
@bp.arguments(EmptySchema, required=False)
@bp.response(
    201, ImageSchema, description='The image; bytes the team has already: that image, "existing"'
)
@bp.errors(404, 409, 422)
def complete_upload(body, upload_id):
    """Check what was uploaded, exactly as an upload is checked, and make it an image; a refused
    upload (an expired one too) is removed. Known bytes answer the image already here, with
    `"existing": true`, as `POST /images` does."""
    result = uploads.complete(uploads.get(upload_id), actor=current_actor())
    return With(result.image, existing=True) if result.existing else result.image
