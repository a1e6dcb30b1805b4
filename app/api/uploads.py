"""Direct (presigned) uploads: ask for an upload URL, send the bytes there, then complete."""

from __future__ import annotations

from flask import g, request, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.body import json_body, no_body
from app.api.errors import ApiError
from app.api.images import image_json
from app.services import images as image_service
from app.services import uploads
from app.tenancy import current_team_id
from app.views import current_actor


@bp.post("/uploads")
@scope_required("write")
def create_upload():
    body = json_body(("filename", "content_type", "size_bytes"), ("tags",))
    upload, presigned = uploads.create(
        current_team_id(),
        body["filename"],
        body["content_type"],
        body["size_bytes"],
        image_service.parse_tags(body.get("tags", [])),
        key_id=g.api_key.id,
    )
    if presigned is None:  # the store has no direct upload: the application takes the bytes
        url = url_for("api.receive_upload", token=uploads.sign(upload), _external=True)
        presigned = {"url": url, "method": "POST", "fields": {"Content-Type": upload.content_type}}
    return {
        "image_id": str(upload.id),
        "upload": presigned,
        "expires_at": upload.expires_at.isoformat().replace("+00:00", "Z"),
    }, 201


@bp.post("/uploads/direct/<token>")
def receive_upload(token):
    """The signed, expiring upload URL of local storage; the token is the credential."""
    upload = uploads.from_token(token)
    unknown = sorted(set(request.files) - {"file"})
    if unknown or "file" not in request.files:
        raise ApiError(400, "send the bytes as a multipart 'file' part")
    part = request.files["file"]
    uploads.receive(upload, part.stream, request.form.get("Content-Type") or part.mimetype)
    return "", 204


@bp.post("/uploads/<upload_id>/complete")
@scope_required("write")
def complete_upload(upload_id):
    upload = uploads.get(upload_id)
    no_body()
    result = uploads.complete(upload, actor=current_actor())
    if result.existing:
        return image_json(result.image, existing=True), 200
    return image_json(result.image), 201
