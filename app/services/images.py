"""Reading, editing and removing a team's images."""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import datetime

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import selectinload

from app import queue
from app.errors import Invalid, NotFound, ValidationFailed
from app.extensions import db
from app.models import IMAGE_STATUSES, Embedding, Image, ImageTag, Label, Tag
from app.runtime import delete_objects, plugins
from app.services import audit, collections, paging, text_search
from app.services.audit import Actor
from app.services.transaction import after_commit, transactional


def encode_cursor(image: Image) -> str:
    return paging.encode_time_and_id(image.created_at, image.id)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position `encode_cursor` gave out; anything else (tampered, truncated, of another
    shape) is Invalid, checked part by part before it reaches a query."""
    return paging.decode_time_and_id(cursor)


def list_images(
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    *,
    tag: str | None = None,
    text: str | None = None,
    collection_id: str | None = None,
    label: str | None = None,
    details: bool = True,
    newer_than: str | None = None,
) -> tuple[list[Image], str | None]:
    """One page of the current team's images, newest first, and the cursor of the next page.

    `tag` keeps images with that tag; `text` keeps those whose filename, tags, labels (what an
    embedder such as cnn saw) and collection name have all its words, case aside, the last one
    as a prefix (`text_search`); `collection_id` keeps the images of that collection of the
    team (any other id is NotFound); `label` keeps images an embedder gave that label (by its
    exact name, or in another case as far as the database's lower() folds it: SQLite folds
    ASCII letters only). Filters combine. `newer_than`, a cursor, keeps only the images newer
    than that position (what arrived since a page was shown). Without `details`, the images'
    tags, labels and uploaders are not loaded (a grid of thumbnails shows none of them).
    """
    query = select(Image).order_by(Image.created_at.desc(), Image.id.desc())
    if details:
        # What every listed image shows, in four queries for the page rather than four each.
        query = query.options(
            selectinload(Image.tags),
            selectinload(Image.labels),
            selectinload(Image.uploaded_by_user),
            selectinload(Image.uploaded_by_key),
        )
    query = _filtered(
        query, status=status, tag=tag, text=text, collection_id=collection_id, label=label
    )
    if cursor:
        created_at, image_id = decode_cursor(cursor)
        query = query.where(paging.sorts_before(Image.created_at, Image.id, created_at, image_id))
    if newer_than:
        created_at, image_id = decode_cursor(newer_than)
        query = query.where(paging.sorts_after(Image.created_at, Image.id, created_at, image_id))
    rows = list(db.session.scalars(query.limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _filtered(
    query,
    *,
    status: str | None = None,
    tag: str | None = None,
    text: str | None = None,
    collection_id: str | None = None,
    label: str | None = None,
):
    """`query` narrowed by list_images' filters."""
    if status is not None:
        if status not in IMAGE_STATUSES:
            raise Invalid(f"status must be one of {', '.join(IMAGE_STATUSES)}")
        query = query.where(Image.status == status)
    if collection_id is not None:
        query = query.where(Image.collection_id == collections.get(collection_id).id)
    if tag is not None:
        query = query.where(Image.tags.any(Tag.name == normalise_tag(tag)))
    if label is not None:
        # Uncorrelated: the labelled ids are found once, not looked for again per image.
        # The exact name is what the picker offers, and matches whatever the letters; lower()
        # on both sides (never casefold(), which turns 'ß' into 'ss') keeps typed names
        # matching in another case where the database can fold them.
        labelled = select(Label.image_id).where(
            or_(Label.name == label, func.lower(Label.name) == label.lower())
        )
        query = query.where(Image.id.in_(labelled))
    if text is not None:
        query = query.where(text_search.image_filter(text_search.words_of(text)))
    return query


def count_images(**filters) -> dict[str, int]:
    """How many of the current team's images pass list_images' filters (`status` aside), by
    status, every status present."""
    filters.pop("status", None)
    query = _filtered(select(Image.status, func.count()).group_by(Image.status), **filters)
    counts = dict.fromkeys(IMAGE_STATUSES, 0)
    counts.update({status: count for status, count in db.session.execute(query)})
    return counts


def adjacent_images(image: Image, **filters) -> tuple[Image | None, Image | None]:
    """The images just newer and just older than `image` in list_images' order, among those
    that pass the same filters (either None at an end)."""
    position = Image.created_at, Image.id, image.created_at, image.id
    newer = _filtered(select(Image), **filters).where(paging.sorts_after(*position))
    older = _filtered(select(Image), **filters).where(paging.sorts_before(*position))
    return (
        db.session.scalar(newer.order_by(Image.created_at, Image.id).limit(1)),
        db.session.scalar(older.order_by(Image.created_at.desc(), Image.id.desc()).limit(1)),
    )


def tag_names(limit: int = 500) -> list[str]:
    """The current team's tag names, in order (for filter pickers)."""
    return list(db.session.scalars(select(Tag.name).order_by(Tag.name).limit(limit)))


def label_names(limit: int = 500) -> list[str]:
    """The distinct labels the current team's images carry, in order (for filter pickers)."""
    query = select(Label.name).distinct().order_by(Label.name).limit(limit)
    return list(db.session.scalars(query))


@transactional
def delete_image(image: Image, *, actor: Actor) -> None:
    """Remove the row, its embeddings and its files; searches stop returning it at once."""
    keys = [k for k in (image.storage_key, image.thumbnail_key, image.preview_key) if k]
    keys += (image.meta or {}).get("renditions", [])
    team_id = image.team_id
    audit.record_image(actor, "image.delete", image)
    db.session.execute(delete(Embedding).where(Embedding.image_id == image.id))
    db.session.delete(image)
    # Files go after the commit: a failure there leaves an unreferenced file, never a broken row.
    after_commit(lambda: _forget_files(team_id, keys))


def _forget_files(team_id: uuid.UUID, keys: list[str]) -> None:
    delete_objects(keys, of="a deleted image")
    for name in plugins().embedders:
        queue.request_index_build(team_id, name)


MAX_FILENAME = 255


def clean_filename(name: str | None) -> str:
    """A display name: NFC, no control, format (bidi, zero-width) or unassigned characters,
    no directories, at most 255 characters with the extension kept."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # a client's full path: keep the base name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    # Removing a joiner can leave a newly composable pair, and stripping can leave only dots.
    name = unicodedata.normalize("NFC", name).strip()
    if name in ("", ".", ".."):
        return "untitled"
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            name = f"{stem[: MAX_FILENAME - len(ext) - 1].rstrip()}.{ext}"
        else:
            name = name[:MAX_FILENAME].rstrip()
    return name


MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_CUSTOM_BYTES = 16 * 1024


def normalise_tag(name: str) -> str:
    """NFKC, lower case, single spaces: "Summer  2024" and "summer 2024" are one tag."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def parse_tags(value: str | list) -> list[str]:
    """Tags from a list or comma-separated text: normalised, de-duplicated, bounded."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed("tags is a list of strings")
    tags = []
    for raw in value:
        name = normalise_tag(raw)
        if not name:
            continue
        if len(name) > MAX_TAG_LENGTH or "," in name:
            raise ValidationFailed(f"a tag has at most {MAX_TAG_LENGTH} characters and no commas")
        if any(unicodedata.category(ch)[0] == "C" for ch in name):
            raise ValidationFailed("a tag has no control characters")
        if name not in tags:
            tags.append(name)
    if len(tags) > MAX_TAGS:
        raise ValidationFailed(f"at most {MAX_TAGS} tags")
    return tags


def set_tags(image: Image, names: list[str]) -> None:
    """Replace the image's tags, creating the team's missing tags.

    A missing tag is inserted with ON CONFLICT DO NOTHING, then read: another request that
    creates the same tag meanwhile (two edits, an upload) is no conflict, each uses the one row.
    """
    tags = _team_tags(image.team_id, names)
    image.tags = [tags[name] for name in names]


def _team_tags(team_id: uuid.UUID, names: list[str]) -> dict[str, Tag]:
    """The team's tags of these names by name, those it lacks created."""
    if not names:
        return {}

    def existing() -> dict[str, Tag]:
        query = select(Tag).where(Tag.team_id == team_id, Tag.name.in_(names))
        return {tag.name: tag for tag in db.session.scalars(query)}

    found = existing()
    missing = [name for name in names if name not in found]
    if missing:
        dialect = db.session.get_bind().dialect.name
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        db.session.execute(
            insert(Tag)
            .values([{"team_id": team_id, "name": name} for name in missing])
            .on_conflict_do_nothing(index_elements=["team_id", "name"])
        )
        found = existing()
    return found


def check_custom_metadata(value) -> dict:
    """User metadata: a JSON object of bounded size."""
    if not isinstance(value, dict):
        raise ValidationFailed("metadata.custom is a JSON object")
    encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    if len(encoded.encode()) > MAX_CUSTOM_BYTES:
        raise ValidationFailed(f"metadata.custom is at most {MAX_CUSTOM_BYTES // 1024} KB of JSON")
    return value


@transactional
def edit_image(image: Image, changes: dict, *, actor: Actor) -> list[str]:
    """Apply validated edits (filename, tags, custom metadata, collection_id: one of the team's
    collections, None for none) and record them; returns the fields changed."""
    changed = []
    details = {}
    # Locked until this commits (PostgreSQL): two edits of one image run one after the other.
    locked = select(Image.id).where(Image.id == image.id).with_for_update()
    if db.session.scalar(locked) is None:
        raise NotFound("no such image")  # deleted since it was read
    if "collection_id" in changes and changes["collection_id"] is not None:
        # Before any other change: an unknown collection refuses the whole edit. Locked, so it
        # cannot be deleted before this commits.
        target = collections.require(image.team_id, changes["collection_id"], lock=True).id
    else:
        target = None
    if "filename" in changes:
        if not isinstance(changes["filename"], str) or not changes["filename"].strip():
            raise ValidationFailed("filename is a non-empty string")
        image.filename = clean_filename(changes["filename"])
        changed.append("filename")
    if "tags" in changes:
        names = parse_tags(changes["tags"])
        # Replaced by a statement, then set on what is left (nothing): never from tags read
        # before another edit of the image committed, which would add its tags again (a
        # duplicate row) or remove them twice, or leave a mix of both edits' tags.
        db.session.execute(delete(ImageTag).where(ImageTag.image_id == image.id))
        db.session.expire(image, ["tags"])
        set_tags(image, names)
        changed.append("tags")
    if "custom" in changes:
        image.meta = {**(image.meta or {}), "custom": check_custom_metadata(changes["custom"])}
        changed.append("metadata.custom")
    if "collection_id" in changes and target != image.collection_id:
        details["collection"] = {
            "from": str(image.collection_id) if image.collection_id else None,
            "to": str(target) if target else None,
        }
        image.collection_id = target
        changed.append("collection_id")
    audit.record_image(actor, "image.edit", image, fields=changed, **details)
    return changed
