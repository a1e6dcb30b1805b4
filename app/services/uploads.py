"""Direct (presigned) uploads: the client sends the bytes to storage, then asks to complete.

With S3 the client posts straight to the bucket through a presigned POST; with local storage it
posts to a signed, expiring URL of the application. Either way the application, not the store,
enforces expiry and size: completion checks the object against what was declared, validates it
exactly like an upload, and removes it on rejection. Uploads never completed are removed by
the reconcile sweep once expired.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import timedelta
from typing import BinaryIO

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from app.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    TooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.extensions import db
from app.models import DirectUpload, Image, utcnow
from app.plugin_api import ObjectNotFound
from app.runtime import delete_objects, storage
from app.services import collections
from app.services.audit import Actor
from app.services.images import clean_filename
from app.services.ingest import ALLOWED_FORMATS, Incoming, IngestResult, ingest
from app.services.transaction import transactional, unit_of_work
from app.tenancy import find_owned, unscoped

ALLOWED_TYPES = sorted(set(ALLOWED_FORMATS.values()))
_SALT = "likeness-direct-upload"


def _lifetime() -> int:
    return int(current_app.config["UPLOAD_URL_SECONDS"])


def create(
    team_id: uuid.UUID,
    filename: object,
    content_type: object,
    size_bytes: object,
    tags: list[str],
    *,
    collection_id: object = None,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
) -> tuple[DirectUpload, dict | None]:
    """Record a direct upload, whose image goes into the team's collection `collection_id` if
    given (another id is NotFound); returns it with the store's presigned POST (None for
    local)."""
    if not isinstance(filename, str) or not filename.strip():
        raise ValidationFailed("filename is a non-empty string")
    if not isinstance(content_type, str) or content_type.lower() not in ALLOWED_TYPES:
        raise UnsupportedMediaType(f"content_type must be one of {', '.join(ALLOWED_TYPES)}")
    max_bytes = current_app.config["MAX_UPLOAD_MB"] * 1024 * 1024
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 1:
        raise ValidationFailed("size_bytes is a positive whole number")
    if size_bytes > max_bytes:
        raise TooLarge(f"files are limited to {current_app.config['MAX_UPLOAD_MB']} MB")
    if collection_id is not None:
        collection_id = collections.require(team_id, collection_id).id
    upload_id = uuid.uuid4()
    upload = DirectUpload(
        id=upload_id,
        team_id=team_id,
        filename=clean_filename(filename),
        content_type=content_type.lower(),
        size_bytes=size_bytes,
        storage_key=f"teams/{team_id}/uploads/{upload_id}/original",
        tags=tags,
        collection_id=collection_id,
        created_by_user_id=user_id,
        created_by_key_id=key_id,
        expires_at=utcnow() + timedelta(seconds=_lifetime()),
    )
    with unit_of_work():
        db.session.add(upload)
    presigned = storage().presign_upload(
        upload.storage_key, upload.content_type, upload.size_bytes, _lifetime()
    )
    return upload, presigned


def sign(upload: DirectUpload) -> str:
    """The token of the application's own upload URL (local storage)."""
    serializer = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_SALT)
    return serializer.dumps({"id": str(upload.id), "team": str(upload.team_id)})


def from_token(token: str) -> DirectUpload:
    """The open upload a signed token names; expired or tampered tokens are refused."""
    serializer = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_SALT)
    try:
        payload = serializer.loads(token, max_age=_lifetime())
        upload_id, team_id = uuid.UUID(payload["id"]), uuid.UUID(payload["team"])
    except (BadSignature, KeyError, TypeError, ValueError):
        raise Forbidden("this upload URL is not valid or has expired") from None
    with unscoped():
        upload = db.session.get(DirectUpload, upload_id)
    if upload is None or upload.team_id != team_id or upload.completed_at is not None:
        raise Forbidden("this upload URL is not valid or has expired")
    if upload.expires_at <= utcnow():
        # As an expired presigned URL of S3 answers.
        raise Forbidden("this upload URL has expired; start a new upload")
    return upload


def receive(upload: DirectUpload, stream: BinaryIO, content_type: str | None) -> None:
    """Store bytes sent to the application's upload URL, within the declared type and size."""
    if (content_type or "").lower() != upload.content_type:
        raise UnsupportedMediaType(f"this upload accepts only {upload.content_type}")
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        size = 0
        while chunk := stream.read(1024 * 1024):
            size += len(chunk)
            if size > upload.size_bytes:
                raise TooLarge(f"this upload accepts at most {upload.size_bytes} bytes")
            spool.write(chunk)
        if size == 0:
            raise Invalid("the file is empty")
        spool.seek(0)
        storage().save(upload.storage_key, spool, upload.content_type)


def get(upload_id: str) -> DirectUpload:
    """One of the current team's direct uploads, or NotFound."""
    upload = find_owned(DirectUpload, upload_id)
    if upload is None:
        raise NotFound("no such upload")
    return upload


def complete(upload: DirectUpload, *, actor: Actor) -> IngestResult:
    """Validate what was uploaded exactly like an upload and ingest it (the image, its tags, its
    upload event and the upload marked complete commit together); the object is removed once
    completed or refused, and a refused upload's row too. A failure that is no refusal (the
    store or the database down) keeps both, so the client can complete again; the reconcile
    sweep removes them if it never does."""
    if upload.completed_at is not None:
        raise Conflict("this upload was already completed")
    key = upload.storage_key  # read now: a refused upload's row is gone by the `finally`
    settled = False
    try:
        if upload.expires_at <= utcnow():
            raise ValidationFailed("this upload expired before it was completed; start a new one")
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            try:
                with storage().open(key) as source:
                    _copy_at_most(source, spool, upload.size_bytes)
            except ObjectNotFound:
                row = _fresh(upload)
                if row is not None and row.completed_at is not None:
                    # A retry the first completion overtook: it gets that image, as a retry
                    # that finds the bytes ingested does.
                    made = find_owned(Image, upload.id)
                    if made is not None:
                        return IngestResult(made, existing=True)
                    raise Conflict("this upload was already completed") from None
                raise ValidationFailed("nothing was uploaded for this upload yet") from None
            if spool.tell() != upload.size_bytes:
                raise ValidationFailed(
                    f"{spool.tell()} bytes were uploaded but {upload.size_bytes} were declared"
                )
            spool.seek(0)
            [result] = ingest(
                upload.team_id,
                [Incoming(spool, upload.filename, image_id=upload.id)],
                actor=actor,
                tags=upload.tags,
                user_id=upload.created_by_user_id,
                key_id=upload.created_by_key_id,
                details={"direct": True},
                collection_id=upload.collection_id,
                before_commit=lambda _results: _mark_completed(upload),
            )
        settled = True
        return result
    except ServiceError:
        settled = True
        _discard(upload)
        raise
    finally:
        if settled:
            delete_objects([key], of="a direct upload")


def _mark_completed(upload: DirectUpload) -> None:
    upload.completed_at = utcnow()


def _copy_at_most(source: BinaryIO, target: BinaryIO, limit: int) -> None:
    copied = 0
    while chunk := source.read(1024 * 1024):
        copied += len(chunk)
        if copied > limit:
            raise TooLarge(f"more than the declared {limit} bytes were uploaded")
        target.write(chunk)


def _fresh(upload: DirectUpload) -> DirectUpload | None:
    """The upload's row as the database has it now (another request may have completed it),
    or None if it is gone."""
    statement = select(DirectUpload).where(DirectUpload.id == upload.id)
    return db.session.scalar(statement.execution_options(populate_existing=True))


@transactional
def _discard(upload: DirectUpload) -> None:
    """A refused upload leaves no row behind (its object goes in `complete`'s finally); one
    that another request completed meanwhile stays completed."""
    row = _fresh(upload)
    if row is not None and row.completed_at is None:
        db.session.delete(row)


@transactional
def remove_expired(grace: timedelta = timedelta(minutes=5)) -> int:
    """Delete uploads never completed, and their objects, once expired; returns how many."""
    cutoff = utcnow() - grace
    with unscoped():
        stale = db.session.scalars(
            select(DirectUpload).where(
                DirectUpload.completed_at.is_(None), DirectUpload.expires_at < cutoff
            )
        ).all()
        for upload in stale:
            delete_objects([upload.storage_key], of="an expired direct upload")
            db.session.delete(upload)
    return len(stale)
