"""A team's collections: named sets of images, an image in at most one.

Names are unique in a team whatever their case or spacing ("Summer", " summer ", "ＳＵＭＭＥＲ" are
one name): the database holds the rule (a unique `name_key`), so two requests racing for a name
cannot both win. A collection is deleted only when empty, a rule the database holds too (an
image's reference to its collection has no ON DELETE action). Adding an image that is in
another collection moves it; removing one that is not in this collection changes nothing. Each
change is one transaction with its audit event, and a request naming any id the team does not
have changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from app.errors import Conflict, Invalid, NotFound, ValidationFailed
from app.extensions import db
from app.models import Collection, Image, utcnow
from app.services import audit, paging
from app.services.audit import Actor
from app.services.transaction import unit_of_work
from app.strict_json import loads_strict
from app.tenancy import current_team_id

MAX_NAME = 100
MAX_NAME_KEY = 400  # the column's width: NFKC and case folding can lengthen a name
MAX_DESCRIPTION = 2000
MAX_IMAGE_IDS = 1000  # per request to add or remove images
EDITABLE = ("description", "name")
_JOINER = "\u200d"  # kept in what is shown: emoji sequences (👩‍💻) are made with it


@dataclass(frozen=True)
class CollectionInfo:
    """A collection and how many images it holds."""

    collection: Collection
    image_count: int


@dataclass(frozen=True)
class CollectionChange(CollectionInfo):
    """A collection after images were put in or taken out, and how many of them changed: an
    image already where it was asked to be, or asked for twice, counts once or not at all."""

    changed: int


# --- names and descriptions -------------------------------------------------------------------


def _visible(text: str, keep: str = "") -> str:
    """Without control, format (bidi overrides, zero-width) or surrogate characters, but
    those in `keep`."""
    return "".join(
        ch for ch in text if ch in keep or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    )


def name_key(name: str) -> str:
    """What makes two names the same: compatibility forms, case, invisible characters and
    spacing aside."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(_visible(folded).split())


def clean_name(value: object) -> tuple[str, str]:
    """A collection name as shown (NFC, single spaces, nothing invisible but emoji joiners)
    and its key; 1 to 100 characters."""
    if not isinstance(value, str):
        raise ValidationFailed(f"name is a text of 1 to {MAX_NAME} characters")
    name = " ".join(_visible(unicodedata.normalize("NFC", value), keep=_JOINER).split())
    key = name_key(name)
    if not key:
        raise ValidationFailed("a collection needs a name")
    if len(name) > MAX_NAME or len(key) > MAX_NAME_KEY:
        raise ValidationFailed(f"a collection name has at most {MAX_NAME} characters")
    return name, key


def clean_description(value: object) -> str:
    """A description: NFC text of at most 2000 characters, lines kept, nothing invisible
    but emoji joiners; None is none."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"description is a text of at most {MAX_DESCRIPTION} characters")
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n")
    text = _visible(text, keep="\n\t" + _JOINER).strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationFailed(f"a description has at most {MAX_DESCRIPTION} characters")
    return text


# --- reading ----------------------------------------------------------------------------------


def _parse_id(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def require(team_id: uuid.UUID | None, collection_id: object, *, lock: bool = False) -> Collection:
    """The team's collection with this id, or NotFound (another team's included). `lock` keeps
    it from being deleted until the transaction ends (PostgreSQL's FOR KEY SHARE, the lock an
    image's reference to it takes anyway), for the services that put images in it."""
    if not isinstance(collection_id, str | uuid.UUID):
        raise ValidationFailed("collection_id is a collection's id")
    parsed = _parse_id(collection_id)
    if parsed is None or team_id is None:
        raise NotFound("no such collection")
    query = select(Collection).where(Collection.id == parsed, Collection.team_id == team_id)
    if lock:
        query = query.with_for_update(read=True, key_share=True)
    collection = db.session.scalar(query)
    if collection is None:
        raise NotFound("no such collection")
    return collection


def get(collection_id: object, *, lock: bool = False) -> Collection:
    """The current team's collection with this id, or NotFound (another team's included)."""
    return require(current_team_id(), collection_id, lock=lock)


def find(team_id: uuid.UUID, reference: str) -> Collection:
    """The team's collection with this id or name (any case or spacing), for the command
    line; NotFound otherwise."""
    parsed = _parse_id(reference.strip())
    query = select(Collection).where(Collection.team_id == team_id)
    by_id = db.session.scalar(query.where(Collection.id == parsed)) if parsed else None
    found = by_id or db.session.scalar(query.where(Collection.name_key == name_key(reference)))
    if found is None:
        raise NotFound(f"no collection {reference!r} in this team")
    return found


def _image_count():
    """The number of images of the collection of each row, as a column of the same query."""
    return (
        select(func.count(Image.id))
        .where(Image.collection_id == Collection.id)
        .correlate(Collection)
        .scalar_subquery()
        .label("image_count")
    )


def get_collection(collection_id: object) -> CollectionInfo:
    """One of the current team's collections with its image count, or NotFound."""
    collection = get(collection_id)
    count = db.session.scalar(
        select(func.count(Image.id)).where(Image.collection_id == collection.id)
    )
    return CollectionInfo(collection, count or 0)


def list_collections(
    limit: int, cursor: str | None = None
) -> tuple[list[CollectionInfo], str | None]:
    """One page of the current team's collections by name (case and spacing aside), each with
    its image count, in one statement; and the cursor of the next page, or None."""
    query = select(Collection, _image_count()).order_by(Collection.name_key, Collection.id)
    if cursor:
        key, after_id = decode_cursor(cursor)
        query = query.where(paging.sorts_after(Collection.name_key, Collection.id, key, after_id))
    rows = db.session.execute(query.limit(limit + 1)).all()
    page = [CollectionInfo(collection, count) for collection, count in rows[:limit]]
    next_cursor = encode_cursor(page[-1].collection) if len(rows) > limit else None
    return page, next_cursor


def encode_cursor(collection: Collection) -> str:
    raw = json.dumps([collection.name_key, str(collection.id)], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A name key of 400 characters of up to 4 UTF-8 bytes, JSON-escaped, then base64.
MAX_CURSOR_LENGTH = 4 * (MAX_NAME_KEY * 4 * 2 + 64) // 3


def decode_cursor(cursor: str) -> tuple[str, uuid.UUID]:
    """The position `encode_cursor` gave out; anything else is refused as malformed."""
    refused = Invalid("cursor is not one this API returned")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise refused
    try:
        parts = loads_strict(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise refused from None
    if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts)):
        raise refused
    after_id = _parse_id(parts[1])
    if after_id is None or len(parts[0]) > MAX_NAME_KEY:
        raise refused
    return parts[0], after_id


# --- changing ---------------------------------------------------------------------------------


def _refuse_taken(team_id: uuid.UUID, key: str, but: uuid.UUID | None = None) -> None:
    query = select(Collection).where(Collection.team_id == team_id, Collection.name_key == key)
    if but is not None:
        query = query.where(Collection.id != but)
    taken = db.session.scalar(query)
    if taken is not None:
        raise Conflict(f"the team already has a collection named {taken.name!r}")


def _record(actor: Actor, action: str, collection: Collection, **details) -> None:
    audit.record(
        actor,
        action,
        collection.team_id,
        target_type="collection",
        target_id=collection.id,
        target=collection.name,
        **details,
    )


def create_collection(
    team_id: uuid.UUID, name: object, description: object = None, *, actor: Actor
) -> CollectionInfo:
    """Create a collection; a name the team already uses (any case or spacing) is a Conflict,
    even when two requests race for it."""
    name, key = clean_name(name)
    description = clean_description(description)
    try:
        # Outermost: a refused insert rolls back, which must not undo an enclosing unit.
        with unit_of_work(outermost=True):
            _refuse_taken(team_id, key)
            now = utcnow()
            collection = Collection(
                team_id=team_id,
                name=name,
                name_key=key,
                description=description,
                created_at=now,
                updated_at=now,
            )
            db.session.add(collection)
            db.session.flush()
            _record(actor, "collection.create", collection)
    except IntegrityError:
        _refuse_taken(team_id, key)  # another request took the name after the check
        raise
    return CollectionInfo(collection, 0)


def update_collection(
    collection_id: object, changes: Mapping[str, object], *, actor: Actor
) -> CollectionInfo:
    """Rename it or change its description (`changes` holds either or both); a name another
    collection of the team has is a Conflict. Returns it with its image count."""
    refused = sorted(set(changes) - set(EDITABLE))
    if refused:
        raise Invalid(f"{', '.join(refused)} cannot be changed; editable: {', '.join(EDITABLE)}")
    name = clean_name(changes["name"]) if "name" in changes else None
    description = clean_description(changes["description"]) if "description" in changes else None
    try:
        with unit_of_work(outermost=True):
            # Read in the unit and locked: not deleted before this commits (PostgreSQL).
            collection = get(collection_id, lock=True)
            team_id, collection_key = collection.team_id, collection.id
            fields: list[str] = []
            details: dict[str, object] = {}
            if name is not None and name[0] != collection.name:
                if name[1] != collection.name_key:  # not only a change of case or spacing
                    _refuse_taken(team_id, name[1], but=collection_key)
                details["previous_name"] = collection.name
                collection.name, collection.name_key = name
                fields.append("name")
            if description is not None and description != collection.description:
                collection.description = description
                fields.append("description")
            if fields:
                collection.updated_at = utcnow()
                _record(actor, "collection.update", collection, fields=fields, **details)
    except IntegrityError:
        if name is not None:
            _refuse_taken(team_id, name[1], but=collection_key)
        raise
    except StaleDataError:
        # Deleted between the read and the update (SQLite takes no lock for the read).
        raise NotFound("no such collection") from None
    return get_collection(collection_key)


def delete_collection(collection_id: object, *, actor: Actor) -> None:
    """Delete an empty collection; one that holds images is a Conflict, even when an image is
    added to it while the delete runs."""
    collection = get(collection_id)
    name = collection.name
    refused = Conflict(
        f"the collection {name!r} still holds images; move or remove them before deleting it"
    )
    try:
        with unit_of_work(outermost=True):
            count = db.session.scalar(
                select(func.count(Image.id)).where(Image.collection_id == collection.id)
            )
            if count:
                raise Conflict(
                    f"the collection {name!r} still holds {count} "
                    f"image{'s' if count != 1 else ''}; move or remove them before deleting it"
                )
            _record(actor, "collection.delete", collection)
            db.session.delete(collection)
            db.session.flush()
    except IntegrityError:
        # An image came in after the count; the database keeps the rule.
        raise refused from None


def _requested_images(image_ids: object) -> dict[str, uuid.UUID | None]:
    """The ids asked for, in order and once each, with what they parse to (None: not an id)."""
    if isinstance(image_ids, str | bytes) or not isinstance(image_ids, Sequence):
        raise ValidationFailed("image_ids is a list of image ids")
    if not all(isinstance(value, str | uuid.UUID) for value in image_ids):
        raise ValidationFailed("image_ids is a list of image ids")
    if not image_ids:
        raise ValidationFailed("image_ids names at least one image")
    if len(image_ids) > MAX_IMAGE_IDS:
        raise ValidationFailed(f"at most {MAX_IMAGE_IDS} image ids at a time")
    return {str(value): _parse_id(value) for value in image_ids}


def _team_images(
    team_id: uuid.UUID, requested: dict[str, uuid.UUID | None]
) -> dict[uuid.UUID, uuid.UUID | None]:
    """Each requested image of the team and the collection it is in; NotFound naming every
    id the team does not have."""
    wanted = {parsed for parsed in requested.values() if parsed is not None}
    found = dict(
        db.session.execute(
            select(Image.id, Image.collection_id).where(
                Image.id.in_(wanted), Image.team_id == team_id
            )
        ).all()
    )
    unknown = [given for given, parsed in requested.items() if parsed not in found]
    if unknown:
        shown = ", ".join(given[:64] for given in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise NotFound(f"no such image{'s' if len(unknown) > 1 else ''}: {shown}{more}")
    # In the order asked, once each (two spellings of one id are one image).
    return {parsed: found[parsed] for parsed in dict.fromkeys(requested.values())}


def _move(image_ids: list[uuid.UUID], collection_id: uuid.UUID | None) -> None:
    db.session.execute(
        update(Image).where(Image.id.in_(image_ids)).values(collection_id=collection_id)
    )


def _changed(collection_id: uuid.UUID, changed: int) -> CollectionChange:
    info = get_collection(collection_id)
    return CollectionChange(info.collection, info.image_count, changed)


def add_images(collection_id: object, image_ids: object, *, actor: Actor) -> CollectionChange:
    """Put the team's images in this collection, moving those that are in another (an image is
    in at most one); any id the team does not have is NotFound and changes nothing. Returns the
    collection with its image count and how many images came in."""
    requested = _requested_images(image_ids)
    try:
        with unit_of_work(outermost=True):
            collection = get(collection_id, lock=True)  # not deleted until this commits
            team_id, target = collection.team_id, collection.id
            images = _team_images(team_id, requested)
            moving = [image for image, current in images.items() if current != target]
            if moving:
                _move(moving, target)
                moved_from: dict[str, list[str]] = {}
                for image in moving:
                    if (current := images[image]) is not None:
                        moved_from.setdefault(str(current), []).append(str(image))
                _record(
                    actor,
                    "collection.add_images",
                    collection,
                    image_ids=[str(image) for image in moving],
                    moved_from=moved_from,
                )
    except IntegrityError:
        # Deleted between the read and the move (SQLite takes no lock for the read).
        raise NotFound("no such collection") from None
    return _changed(target, len(moving))


def remove_images(collection_id: object, image_ids: object, *, actor: Actor) -> CollectionChange:
    """Take the team's images out of this collection (into none). An image of the team that
    is not in it is left as it is, so asking twice is harmless; an id the team does not have
    is NotFound and changes nothing. Returns the collection with its image count and how many
    images left it."""
    requested = _requested_images(image_ids)
    with unit_of_work():
        collection = get(collection_id)
        images = _team_images(collection.team_id, requested)
        leaving = [image for image, current in images.items() if current == collection.id]
        if leaving:
            _move(leaving, None)
            _record(
                actor,
                "collection.remove_images",
                collection,
                image_ids=[str(image) for image in leaving],
            )
    return _changed(collection.id, len(leaving))
