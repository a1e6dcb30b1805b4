"""Keyset pagination: the cursor is the sort key of a page's last item, opaque to clients
(base64 of a JSON list) and checked part by part before it reaches a query."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from sqlalchemy import and_, or_

from app.errors import Invalid
from app.models import parse_utc
from app.strict_json import loads_strict

MAX_CURSOR_LENGTH = 2000  # what encode makes for our sort keys is far shorter


def encode(*parts: str) -> str:
    raw = json.dumps(list(parts), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, count: int, max_length: int = MAX_CURSOR_LENGTH) -> list[str]:
    """The `count` strings `encode` packed, or Invalid (tampered, truncated, another shape)."""
    refused = Invalid("cursor is not one this API returned")
    if len(cursor) > max_length:
        raise refused
    try:
        parts = loads_strict(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise refused from None
    if not (
        isinstance(parts, list)
        and len(parts) == count
        # No sort key holds a NUL, and PostgreSQL refuses one in any text it is asked about.
        and all(isinstance(p, str) and "\x00" not in p for p in parts)
    ):
        raise refused
    return parts


def encode_time_and_id(at: datetime, row_id: uuid.UUID) -> str:
    return encode(at.isoformat(), str(row_id))


def decode_time_and_id(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) position of a list sorted newest first."""
    at, row_id = decode(cursor, 2)
    try:
        return parse_utc(at), uuid.UUID(row_id)
    except ValueError:
        raise Invalid("cursor is not one this API returned") from None


def decode_text_and_id(cursor: str, max_text: int = 400) -> tuple[str, uuid.UUID]:
    """The (text, id) position of a list sorted by a text key (an email, a name)."""
    text, row_id = decode(cursor, 2)
    try:
        position = text, uuid.UUID(row_id)
    except ValueError:
        raise Invalid("cursor is not one this API returned") from None
    if len(text) > max_text:
        raise Invalid("cursor is not one this API returned")
    return position


def sorts_before(key_column, id_column, key, row_id):
    """The rows before the position (key, row_id) in the order (key_column, id_column): past a
    cursor's position in a list sorted in descending order."""
    return or_(key_column < key, and_(key_column == key, id_column < row_id))


def sorts_after(key_column, id_column, key, row_id):
    """The rows after the position (key, row_id) in the order (key_column, id_column)."""
    return or_(key_column > key, and_(key_column == key, id_column > row_id))
