"""What a worker does with a new image: preview, embeddings, ready, index refresh."""

from __future__ import annotations

import io
import logging
import uuid

from PIL import Image as PILImage
from sqlalchemy import delete, select

from app import queue
from app.extensions import db
from app.models import Embedding, Image, utcnow
from app.plugin_api import ObjectNotFound
from app.runtime import plugins, storage
from app.services import ServiceError
from app.services.imaging import encode_webp, make_rendition, open_working

log = logging.getLogger(__name__)

PREVIEW_SIZE = 1280


class PermanentFailure(Exception):
    """Retrying cannot help: the stored file is missing or cannot be decoded."""


def _outdated_embedders(image: Image) -> list[str]:
    have = dict(
        db.session.execute(
            select(Embedding.embedder, Embedding.version).where(Embedding.image_id == image.id)
        ).all()
    )
    return [name for name, e in plugins().embedders.items() if have.get(name) != e.version]


def _load_working_image(key: str) -> PILImage.Image:
    """Decode the original once, no larger than the preview needs (JPEG draft decoding),
    upright, RGB or RGBA."""
    need = max([PREVIEW_SIZE] + [e.input_size for e in plugins().embedders.values()])
    try:
        with storage().open(key) as f:
            return open_working(f, need)
    except ObjectNotFound as exc:
        raise PermanentFailure("the original file is missing from storage") from exc
    except (ServiceError, PILImage.DecompressionBombError) as exc:
        raise PermanentFailure(f"the original cannot be decoded: {exc}") from exc


def process_image(image_id: uuid.UUID, *, final_attempt: bool = True) -> str:
    """Bring one image to `ready`; running it again changes nothing. Returns the final status."""
    image = db.session.get(Image, image_id)
    if image is None:
        return "missing"  # deleted before the worker got to it
    outdated = _outdated_embedders(image)
    if image.status == "ready" and not outdated and image.preview_key:
        return "ready"
    image.status, image.error = "processing", None
    db.session.commit()
    try:
        working = _load_working_image(image.storage_key)
        preview = make_rendition(working, PREVIEW_SIZE)
        preview_key = f"teams/{image.team_id}/images/{image.id}/preview.webp"
        storage().save(preview_key, io.BytesIO(encode_webp(preview, quality=82)), "image/webp")
        # Embedders see the preview without transparency, as they always have.
        pixels = preview.convert("RGB")
        for name in outdated:
            embedder = plugins().embedders[name]
            vector = embedder.embed_batch([pixels])[0]
            # A new row, never an update: embedding ids only grow (see Embedding).
            db.session.execute(
                delete(Embedding).where(Embedding.image_id == image.id, Embedding.embedder == name)
            )
            db.session.add(
                Embedding(
                    team_id=image.team_id,
                    image_id=image.id,
                    embedder=name,
                    version=embedder.version,
                    vector=embedder.codec.to_bytes(vector),
                )
            )
        image.preview_key = preview_key
        image.status, image.processed_at = "ready", utcnow()
        db.session.commit()
    except PermanentFailure as exc:
        db.session.rollback()
        _mark_error(image_id, str(exc))
        return "error"
    except Exception as exc:
        db.session.rollback()
        if final_attempt:
            _mark_error(image_id, f"processing failed: {exc.__class__.__name__}: {exc}")
        raise
    for name in outdated:
        queue.request_index_build(image.team_id, name)
    return "ready"


def _mark_error(image_id: uuid.UUID, message: str) -> None:
    image = db.session.get(Image, image_id)
    if image is not None:
        image.status, image.error = "error", message[:1000]
        db.session.commit()
    log.warning("image %s failed: %s", image_id, message)
