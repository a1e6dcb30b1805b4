"""What a worker does with a new image: preview, embeddings, ready, index refresh."""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import uuid

from PIL import Image as PILImage
from sqlalchemy import delete, select, update

from app.errors import ServiceError
from app.extensions import db
from app.imaging.render import encode_webp, make_rendition
from app.imaging.validate import open_working, pixel_digest
from app.models import Embedding, Image, Label, utcnow
from app.plugin_api import ObjectNotFound
from app.runtime import delete_objects, plugins, storage
from app.services import indexing
from app.services.transaction import unit_of_work

log = logging.getLogger(__name__)

PREVIEW_SIZE = 1280
_SPOOL_BYTES = 8 * 1024 * 1024


class PermanentFailure(Exception):
    """Retrying cannot help: the stored file is missing or cannot be decoded."""


def _outdated_embedders(image: Image) -> list[str]:
    """Enabled embedders with no vector of their current version for this image."""
    have = {
        (name, version)
        for name, version in db.session.execute(
            select(Embedding.embedder, Embedding.version).where(Embedding.image_id == image.id)
        )
    }
    return [name for name, e in plugins().embedders.items() if (name, e.version) not in have]


def working_size() -> int:
    """The smallest edge an original is decoded to: what the preview and every enabled
    embedder need."""
    return max([PREVIEW_SIZE] + [e.input_size for e in plugins().embedders.values()])


def embedder_pixels(preview: PILImage.Image) -> PILImage.Image:
    """What embedders see of an image: its preview without transparency. Search by file
    prepares its query the same way, so its vector is comparable with the stored ones."""
    return preview.convert("RGB")


def _load_working_image(key: str, digest: bool) -> tuple[PILImage.Image, str | None]:
    """Decode the original once, no larger than the preview needs (JPEG draft decoding),
    upright, RGB or RGBA; with `digest`, also the digest of its full-size pixels (a second,
    whole decode: exact duplicates must differ nowhere, not only at the preview's scale)."""
    need = working_size()
    # Copied first, so that reading storage and decoding fail apart: a read that breaks is
    # retried, while whatever the decoder refuses will be refused again.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as copy:
        try:
            with storage().open(key) as f:
                shutil.copyfileobj(f, copy, 1024 * 1024)
        except ObjectNotFound as exc:
            raise PermanentFailure("the original file is missing from storage") from exc
        try:
            copy.seek(0)
            working = open_working(copy, need)
            copy.seek(0)
            return working, pixel_digest(copy) if digest else None
        except (ServiceError, PILImage.DecompressionBombError) as exc:
            raise PermanentFailure(f"the original cannot be decoded: {exc}") from exc


def process_image(image_id: uuid.UUID, *, final_attempt: bool = True) -> str:
    """Bring one image to `ready`; running it again changes nothing. Returns the final status,
    or "missing" when the image was deleted before or while the job ran (a quiet no-op)."""
    preview_key = None
    try:
        image = db.session.get(Image, image_id)
        if image is None:
            return "missing"  # deleted before the worker got to it
        outdated = _outdated_embedders(image)
        if image.status == "ready" and not outdated and image.preview_key and image.pixel_sha256:
            return "ready"
        team_id = image.team_id
        if image.status != "ready":  # a ready image being embedded again stays findable
            with unit_of_work():
                image.status, image.error = "processing", None
        working, pixels_digest = _load_working_image(
            image.storage_key, digest=image.pixel_sha256 is None
        )
        preview = make_rendition(working, PREVIEW_SIZE)
        preview_key = f"teams/{team_id}/images/{image_id}/preview.webp"
        storage().save(preview_key, io.BytesIO(encode_webp(preview, quality=82)), "image/webp")
        # Everything is computed before anything is written, so the write transaction stays
        # short.
        pixels = embedder_pixels(preview)
        # One call per embedder gives its vector and, if it names things, its labels.
        results = {name: plugins().embedders[name].embed_and_label([pixels]) for name in outdated}
        with unit_of_work():
            image.preview_key = preview_key
            image.pixel_sha256 = image.pixel_sha256 or pixels_digest
            image.status, image.processed_at = "ready", utcnow()
            for name, (vectors, labels) in results.items():
                embedder = plugins().embedders[name]
                # A new row, never an update: embedding ids only grow (see Embedding). Rows of
                # other versions stay until the index of this one is published.
                db.session.execute(
                    delete(Embedding).where(
                        Embedding.image_id == image_id,
                        Embedding.embedder == name,
                        Embedding.version == embedder.version,
                    )
                )
                db.session.add(
                    Embedding(
                        team_id=team_id,
                        image_id=image_id,
                        embedder=name,
                        version=embedder.version,
                        vector=embedder.codec.to_bytes(vectors[0]),
                    )
                )
                _replace_labels(team_id, image_id, name, labels[0] if labels else [])
    except PermanentFailure as exc:
        db.session.rollback()  # a read that failed can leave the session unusable too
        return _mark_error(image_id, str(exc))
    except Exception as exc:
        db.session.rollback()
        if not _exists(image_id):
            # Deleted while the job ran (its row went between two of our writes): finish
            # quietly, keeping nothing of what the job wrote.
            delete_objects([preview_key] if preview_key else [], of="a deleted image")
            log.info("image %s was deleted while it was being processed", image_id)
            return "missing"
        if final_attempt:
            _mark_error(image_id, f"processing failed: {exc.__class__.__name__}: {exc}")
        raise
    for name in outdated:
        indexing.index_changed(team_id, name)
    return "ready"


def _replace_labels(
    team_id: uuid.UUID, image_id: uuid.UUID, embedder: str, labels: list[tuple[str, float]]
) -> None:
    """The image's labels from this embedder become `labels` (in the caller's transaction)."""
    db.session.execute(delete(Label).where(Label.image_id == image_id, Label.embedder == embedder))
    scores: dict[str, float] = {}
    for name, score in labels:
        scores.setdefault(name[:100], float(score))  # the first (likeliest) of a repeated name
    db.session.add_all(
        Label(team_id=team_id, image_id=image_id, embedder=embedder, name=name, score=score)
        for name, score in scores.items()
    )


def _exists(image_id: uuid.UUID) -> bool:
    return db.session.scalar(select(Image.id).where(Image.id == image_id)) is not None


def give_up(image_id: uuid.UUID, message: str) -> None:
    """Mark an image still `pending` or `processing` as `error` with `message`: its job ran
    out of attempts without ending (the sweep found it failed). An image that moved on
    meanwhile (processed, retried, deleted) is left as it is."""
    with unit_of_work():
        marked = db.session.execute(
            update(Image)
            .where(Image.id == image_id, Image.status.in_(("pending", "processing")))
            .values(status="error", error=message[:1000])
        ).rowcount
    if marked:
        log.warning("image %s given up: %s", image_id, message)


def _mark_error(image_id: uuid.UUID, message: str) -> str:
    """Record a failure on the image; "error", or "missing" if it was deleted meanwhile."""
    # One UPDATE: it matches no row, rather than failing, if the image is gone by now.
    with unit_of_work():
        marked = db.session.execute(
            update(Image).where(Image.id == image_id).values(status="error", error=message[:1000])
        ).rowcount
    if not marked:
        return "missing"
    log.warning("image %s failed: %s", image_id, message)
    return "error"
