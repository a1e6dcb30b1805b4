"""Getting images in, by every path: validate, store the originals and thumbnails, write the
rows with their tags and upload events in one transaction, commit, then queue their processing."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from flask import current_app
from sqlalchemy import or_, select
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
from app.runtime import delete_objects, storage
from app.services import audit, collections, images
from app.services.audit import Actor
from app.services.transaction import after_commit, unit_of_work
from app.tenancy import unscoped

__all__ = [
    "ALLOWED_FORMATS",
    "Incoming",
    "InvalidImage",
    "IngestResult",
    "TooLarge",
    "UnsupportedMediaType",
    "Validated",
    "ingest",
    "limits",
    "seekable",
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

    Raises TooLarge, UnsupportedMediaType, InvalidImage or Invalid (an empty file). The stream
    must be seekable; `ingest` spools one that is not.
    """
    rules = limits()
    sha256, size = measure(stream, rules.max_bytes)
    return Validated(sha256, size, analyse(stream, rules))


def _existing(team_id: uuid.UUID, sha256: str) -> Image | None:
    return db.session.scalar(select(Image).where(Image.team_id == team_id, Image.sha256 == sha256))


@dataclass
class Incoming:
    """One file on its way in: its bytes, the name it came with and, for a direct upload, the
    id the image was promised."""

    stream: BinaryIO
    filename: str | None
    image_id: uuid.UUID | None = None


def ingest(
    team_id: uuid.UUID,
    files: Sequence[Incoming],
    *,
    actor: Actor,
    tags: Sequence[str] = (),
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    details: Mapping[str, object] | None = None,
    collection_id: uuid.UUID | str | None = None,
    before_commit: Callable[[list[IngestResult]], None] | None = None,
) -> list[IngestResult]:
    """Every way in (API upload, direct-upload completion, URL import, folder import): validate
    each file, store its original and thumbnail, then in one transaction write the rows, their
    tags and an `image.upload` event for each (by `actor`, with `details`), commit, and only
    then queue their processing. An exact re-upload returns the existing image and changes
    nothing (it stays in whatever collection it is in).

    New images go into the team's collection `collection_id`; any other id is NotFound, before
    anything is read or stored. All files are validated before any is stored: a bad one
    anywhere leaves nothing behind, no object, row or job. `before_commit(results)` is the
    caller's own bookkeeping that commits with the images (a completed upload, a finished
    import item); it runs again if the transaction is retried, so it must only set state.
    """
    details = dict(details or {})
    if collection_id is not None:
        collection_id = collections.require(team_id, collection_id).id
        details["collection_id"] = str(collection_id)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(seekable(f.stream)) for f in files]
        checked = [
            _Checked(source, f.filename, f.image_id, validate(source))
            for source, f in zip(sources, files, strict=True)
        ]
        work = _Work(team_id, checked, actor, list(tags), user_id, key_id, details, collection_id)
        try:
            return _store_once(work, before_commit)
        except IntegrityError:
            # The same bytes arrived concurrently and the other upload won: the second pass
            # finds them as existing.
            return _store_once(work, before_commit)


@dataclass
class _Checked:
    stream: BinaryIO
    filename: str | None
    image_id: uuid.UUID | None
    valid: Validated


@dataclass
class _Work:
    team_id: uuid.UUID
    files: list[_Checked]
    actor: Actor
    tags: list[str]
    user_id: uuid.UUID | None
    key_id: uuid.UUID | None
    details: dict[str, object]
    collection_id: uuid.UUID | None


def _store_once(
    work: _Work, before_commit: Callable[[list[IngestResult]], None] | None
) -> list[IngestResult]:
    """One attempt: objects, then rows, tags and events in one unit of work; the objects go
    again if it does not commit."""
    written: list[str] = []
    try:
        # Outermost: a retry after a conflict rolls back, which would undo an enclosing unit.
        with unit_of_work(outermost=True):
            results = _store_all(work, written)
            if before_commit is not None:
                before_commit(results)
            for result in results:
                if not result.existing:
                    image_id = result.image.id
                    after_commit(lambda image_id=image_id: queue.enqueue_process_image(image_id))
    except BaseException:
        delete_objects(_unpublished(work, written), of="a failed upload")
        raise
    return results


def _unpublished(work: _Work, written: list[str]) -> list[str]:
    """The keys of `written` that no committed image names.

    Only an image id the caller chose (a direct upload's) can be another request's too: two
    completions of one upload at once, a client retrying, store the same image's files under
    the same keys, and the one that loses the race must not delete what the winner published.
    Random ids are this attempt's alone. When the database cannot tell (it is what failed),
    everything written goes, as it would without a winner.
    """
    chosen = tuple(f"teams/{work.team_id}/images/{f.image_id}/" for f in work.files if f.image_id)
    shared = [key for key in written if key.startswith(chosen)] if chosen else []
    if not shared:
        return written
    try:
        with unscoped():
            named = db.session.execute(
                select(Image.storage_key, Image.thumbnail_key).where(
                    or_(Image.storage_key.in_(shared), Image.thumbnail_key.in_(shared))
                )
            ).all()
    except Exception:
        log.exception("could not tell whether a concurrent upload published %s", shared)
        return written
    published = {key for row in named for key in row}
    return [key for key in written if key not in published]


def _store_all(work: _Work, written: list[str]) -> list[IngestResult]:
    if work.collection_id is not None:
        # Again inside the transaction, locked: it may have been deleted since (it was empty).
        collections.require(work.team_id, work.collection_id, lock=True)
    results: list[IngestResult] = []
    created: dict[str, Image] = {}  # by digest: the same bytes twice in one request are one image
    for checked in work.files:
        valid = checked.valid
        existing = created.get(valid.sha256) or _existing(work.team_id, valid.sha256)
        if existing is not None:
            results.append(IngestResult(existing, True))
            continue
        row = _new_image(work, checked)
        _save_files(row, checked.stream, valid, written)
        db.session.add(row)
        created[valid.sha256] = row
        results.append(IngestResult(row, False))
    for row in created.values():
        if work.tags:
            images.set_tags(row, work.tags)
        audit.record_image(work.actor, "image.upload", row, **work.details)
    return results


def _new_image(work: _Work, checked: _Checked) -> Image:
    valid = checked.valid
    found = valid.analysis
    image_id = checked.image_id or uuid.uuid4()
    prefix = f"teams/{work.team_id}/images/{image_id}"
    return Image(
        id=image_id,
        team_id=work.team_id,
        uploaded_by_user_id=work.user_id,
        uploaded_by_key_id=work.key_id,
        filename=images.clean_filename(checked.filename),
        content_type=found.content_type,
        size_bytes=valid.size,
        width=found.width,
        height=found.height,
        sha256=valid.sha256,
        status="pending",
        collection_id=work.collection_id,
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


@contextlib.contextmanager
def seekable(stream: BinaryIO) -> Iterator[BinaryIO]:
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
