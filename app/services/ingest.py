"""Getting an image in: validate, store the original and a thumbnail, write the row, queue work."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import queue
from app.extensions import db
from app.imaging.validate import (
    ALLOWED_FORMATS,
    Analysis,
    InvalidImage,
    Limits,
    TooLarge,
    UnsupportedMediaType,
    analyse,
    measure,
)
from app.models import Image
from app.runtime import storage
from app.services import audit, images
from app.services.audit import Actor

__all__ = [
    "ALLOWED_FORMATS",
    "InvalidImage",
    "IngestResult",
    "TooLarge",
    "UnsupportedMediaType",
    "Validated",
    "ingest",
    "ingest_all",
    "limits",
    "validate",
]

log = logging.getLogger(__name__)

THUMBNAIL_CONTENT_TYPE = "image/webp"
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass
class IngestResult:
    image: Image
    existing: bool


@dataclass
class Validated:
    """An upload that passed every check: its digest, size and what analysis found."""

    sha256: str
    size: int
    analysis: Analysis


def limits() -> Limits:
    """The upload limits from configuration."""
    config = current_app.config
    return Limits(
        max_bytes=config["MAX_UPLOAD_MB"] * 1024 * 1024,
        max_pixels=config["MAX_IMAGE_PIXELS"],
        max_frames=config["MAX_ANIMATION_FRAMES"],
        max_animation_pixels=config["MAX_ANIMATION_PIXELS"],
        thumbnail_size=config["THUMBNAIL_SIZE"],
    )


def validate(stream: BinaryIO) -> Validated:
    """Every check an upload must pass, whatever the path it came by (API, gallery, URL
    import, direct upload): size, content type by content, pixel and frame limits, full decode.

    Raises TooLarge (413), UnsupportedMediaType (415), InvalidImage (422) or ServiceError (400,
    an empty file). The stream must be seekable; `ingest` spools one that is not.
    """
    rules = limits()
    sha256, size = measure(stream, rules.max_bytes)
    return Validated(sha256, size, analyse(stream, rules))


def _existing(team_id: uuid.UUID, sha256: str) -> Image | None:
    return db.session.scalar(select(Image).where(Image.team_id == team_id, Image.sha256 == sha256))


def ingest(
    team_id: uuid.UUID,
    stream: BinaryIO,
    filename: str | None,
    *,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    image_id: uuid.UUID | None = None,
) -> IngestResult:
    """Validate and store one upload; an exact re-upload returns the existing image.

    `image_id` is the id the new image gets (a direct upload promised it); a fresh one if None.

    Nothing is left behind on refusal: objects are written only after validation and removed
    again if the row cannot be committed.
    """
    with _seekable(stream) as source:
        valid = validate(source)
        if existing := _existing(team_id, valid.sha256):
            return IngestResult(existing, True)
        return _store(team_id, source, filename, valid, user_id, key_id, image_id)


def ingest_all(
    team_id: uuid.UUID,
    uploads: list[tuple[BinaryIO, str | None]],
    *,
    actor: Actor,
    tags: list[str] | None = None,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
) -> list[IngestResult]:
    """Several (stream, filename) uploads as one: all are validated before any is stored, then
    stored, tagged and audited in one transaction, and queued for processing only once that is
    committed. A bad file anywhere leaves nothing behind: no object, no row, no job.
    """
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(_seekable(stream)) for stream, _ in uploads]
        checks = [validate(source) for source in sources]
        files = [
            (source, filename, valid)
            for source, (_, filename), valid in zip(sources, uploads, checks, strict=True)
        ]
        try:
            results = _store_all(team_id, files, actor, tags or [], user_id, key_id)
        except IntegrityError:
            # The same bytes arrived concurrently and the other upload won: the second pass
            # finds them as existing.
            results = _store_all(team_id, files, actor, tags or [], user_id, key_id)
    for result in results:
        if not result.existing:
            queue.enqueue_process_image(result.image.id)
    return results


def _store_all(
    team_id: uuid.UUID,
    files: list[tuple[BinaryIO, str | None, Validated]],
    actor: Actor,
    tags: list[str],
    user_id: uuid.UUID | None,
    key_id: uuid.UUID | None,
) -> list[IngestResult]:
    results: list[IngestResult] = []
    created: dict[str, Image] = {}  # by digest: the same bytes twice in one request are one image
    written: list[str] = []
    try:
        for stream, filename, valid in files:
            existing = created.get(valid.sha256) or _existing(team_id, valid.sha256)
            if existing is not None:
                results.append(IngestResult(existing, True))
                continue
            row = _new_image(team_id, filename, valid, user_id, key_id)
            _save_files(row, stream, valid, written)
            db.session.add(row)
            created[valid.sha256] = row
            results.append(IngestResult(row, False))
        for row in created.values():
            if tags:
                images.set_tags(row, tags)
            audit.record_image(actor, "image.upload", row)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        _remove(written)
        raise
    return results


def _new_image(
    team_id: uuid.UUID,
    filename: str | None,
    valid: Validated,
    user_id: uuid.UUID | None,
    key_id: uuid.UUID | None,
    image_id: uuid.UUID | None = None,
) -> Image:
    found = valid.analysis
    image_id = image_id or uuid.uuid4()
    prefix = f"teams/{team_id}/images/{image_id}"
    return Image(
        id=image_id,
        team_id=team_id,
        uploaded_by_user_id=user_id,
        uploaded_by_key_id=key_id,
        filename=images.clean_filename(filename),
        content_type=found.content_type,
        size_bytes=valid.size,
        width=found.width,
        height=found.height,
        sha256=valid.sha256,
        status="pending",
        storage_key=f"{prefix}/original",
        thumbnail_key=f"{prefix}/thumbnail.webp",
        # API.md fixes `colors` as hex strings; they are listed most dominant first.
        meta={"exif": found.exif, "colors": [hex_ for hex_, _ in found.colors], "custom": {}},
    )


def _save_files(row: Image, stream: BinaryIO, valid: Validated, written: list[str]) -> None:
    """Store the original and the thumbnail, adding each key to `written` once it is saved."""
    stream.seek(0)
    storage().save(row.storage_key, stream, row.content_type)
    written.append(row.storage_key)
    thumbnail = io.BytesIO(valid.analysis.thumbnail)
    storage().save(row.thumbnail_key, thumbnail, THUMBNAIL_CONTENT_TYPE)
    written.append(row.thumbnail_key)


def _store(
    team_id: uuid.UUID,
    stream: BinaryIO,
    filename: str | None,
    valid: Validated,
    user_id: uuid.UUID | None,
    key_id: uuid.UUID | None,
    image_id: uuid.UUID | None = None,
) -> IngestResult:
    row = _new_image(team_id, filename, valid, user_id, key_id, image_id)
    written: list[str] = []
    try:
        _save_files(row, stream, valid, written)
        db.session.add(row)
        db.session.commit()
    except IntegrityError:
        # The same bytes arrived concurrently and the other upload won: one row, no orphans.
        db.session.rollback()
        _remove(written)
        existing = _existing(team_id, valid.sha256)
        if existing is None:
            raise
        return IngestResult(existing, True)
    except BaseException:
        db.session.rollback()
        _remove(written)
        raise
    queue.enqueue_process_image(row.id)
    return IngestResult(row, False)


@contextlib.contextmanager
def _seekable(stream: BinaryIO) -> Iterator[BinaryIO]:
    """The stream itself if it can seek; otherwise a bounded copy, removed afterwards.

    A response body from a URL import, say, is read at most one byte past the upload limit.
    """
    if stream.seekable():
        yield stream
        return
    limit = current_app.config["MAX_UPLOAD_MB"] * 1024 * 1024
    # An unnamed file once it outgrows memory: nothing is left in the temp folder, even on a
    # crash.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as copy:
        copied = 0
        while chunk := stream.read(min(1024 * 1024, limit + 1 - copied)):
            copy.write(chunk)
            copied += len(chunk)
            if copied > limit:
                break  # measure() refuses it; no need to read the rest
        copy.seek(0)
        yield copy


def _remove(keys: list[str]) -> None:
    for key in keys:
        try:
            storage().delete(key)
        except Exception:  # cleanup must not hide the original error
            log.exception("could not remove %s after a failed upload", key)
