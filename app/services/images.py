"""Reading and removing a team's images."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from datetime import datetime

from sqlalchemy import and_, delete, or_, select

from app import queue
from app.extensions import db
from app.models import IMAGE_STATUSES, Embedding, Image
from app.runtime import plugins, storage
from app.services import ServiceError

log = logging.getLogger(__name__)


def encode_cursor(image: Image) -> str:
    raw = json.dumps([image.created_at.isoformat(), str(image.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, image_id = json.loads(raw)
        parsed = datetime.fromisoformat(created_at), uuid.UUID(image_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ServiceError("cursor is not one this API returned") from None
    if parsed[0].tzinfo is None:
        raise ServiceError("cursor is not one this API returned")
    return parsed


def list_images(
    limit: int, cursor: str | None = None, status: str | None = None
) -> tuple[list[Image], str | None]:
    """One page of the current team's images, newest first, and the cursor of the next page."""
    query = select(Image).order_by(Image.created_at.desc(), Image.id.desc())
    if status is not None:
        if status not in IMAGE_STATUSES:
            raise ServiceError(f"status must be one of {', '.join(IMAGE_STATUSES)}")
        query = query.where(Image.status == status)
    if cursor:
        created_at, image_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Image.created_at < created_at,
                and_(Image.created_at == created_at, Image.id < image_id),
            )
        )
    rows = list(db.session.scalars(query.limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def delete_image(image: Image) -> None:
    """Remove the row, its embeddings and its files; searches stop returning it at once."""
    keys = [k for k in (image.storage_key, image.thumbnail_key, image.preview_key) if k]
    team_id = image.team_id
    db.session.execute(delete(Embedding).where(Embedding.image_id == image.id))
    db.session.delete(image)
    db.session.commit()
    # Files go after the commit: a failure here leaves an unreferenced file, never a broken row.
    for key in keys:
        try:
            storage().delete(key)
        except Exception:
            log.exception("could not delete %s", key)
    for name in plugins().embedders:
        queue.request_index_build(team_id, name)
