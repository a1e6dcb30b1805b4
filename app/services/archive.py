"""A team's archive: everything canonical about one team in one file, to back it up or move it
to another deployment (`flask export`, `flask import-archive`).

The archive is a tar file (uncompressed: originals are compressed already) of exactly:

* `manifest.json`: `{"format": "likeness-team-archive", "version": 1, "exported_at",
  "team": {"name", "slug"}, "tags": [names], "collections": [{"id", "name", "description",
  "created_at", "updated_at"}], "images": [{"id", "filename", "content_type", "size_bytes",
  "width", "height", "sha256", "created_at", "collection_id", "tags": [names],
  "labels": [{"embedder", "name", "score"}], "metadata": {"exif", "colors", "custom"},
  "original": "originals/<sha256>"}], "not_duplicates": [[image id, image id]]}` (pairs
  someone said are not duplicates; optional). An export writes it last, without the images
  deleted while it ran; an import finds it anywhere in the archive;
* `originals/<sha256>`, one regular file per image: its original bytes.

Derived data is not in it: embeddings, indexes, previews and thumbnails are made again on import
(thumbnails at once, the rest by the workers, which then build the team's indexes). Members,
API keys, audit events and import batches belong to the deployment, not the team's content.

An import checks the whole archive before it writes anything (its format and version, every
member's name and kind, the manifest's shape, every original present), then validates each
original as an upload is validated and checks its digest, and writes the team in one
transaction; if anything fails, the transaction rolls back and the objects stored so far are
deleted, so nothing is half imported.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import select

from app import queue
from app.errors import Conflict, Invalid, NotFound, ServiceError
from app.extensions import db
from app.models import Collection, DuplicateDecision, Image, Label, Tag, Team, parse_utc, utcnow
from app.plugin_api import ObjectNotFound
from app.runtime import delete_objects, storage
from app.services import accounts, audit, collections, images, ingest
from app.services.audit import Actor
from app.services.transaction import after_commit, unit_of_work
from app.tenancy import team_scope, unscoped

FORMAT = "likeness-team-archive"
VERSION = 1
MANIFEST = "manifest.json"
ORIGINAL = re.compile(r"originals/([0-9a-f]{64})")
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_COPY_CHUNK = 1024 * 1024
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass
class ArchiveSummary:
    team_slug: str
    images: int
    collections: int
    tags: int
    ids_kept: bool = True


# --- export -----------------------------------------------------------------------------------


def export_team(team_id: uuid.UUID, path: str) -> ArchiveSummary:
    """Write the team's archive to `path` (replaced only once the archive is whole): the team
    as it was when the export began, less the images deleted while it ran."""
    team = db.session.get(Team, team_id)
    if team is None:
        raise NotFound("no such team")
    with team_scope(team_id):
        manifest, originals = _manifest(team)
        directory = os.path.dirname(os.path.abspath(path))
        try:
            fd, partial = tempfile.mkstemp(dir=directory, prefix=".likeness-export-")
        except OSError as exc:  # a folder that is not there, or that we may not write in
            raise Invalid(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
                deleted = set()
                for image_id, name, key, size in originals:
                    if not _add_object(tar, image_id, name, key, size):
                        deleted.add(image_id)
                # Written last, so that it lists only the originals the archive holds (an
                # import finds the manifest wherever it is).
                manifest = _without_images(manifest, deleted)
                _add_bytes(tar, MANIFEST, json.dumps(manifest, ensure_ascii=False).encode())
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise
    return ArchiveSummary(
        team.slug, len(manifest["images"]), len(manifest["collections"]), len(manifest["tags"])
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def _manifest(team: Team) -> tuple[dict[str, Any], list[tuple[str, str, str, int]]]:
    """The archive's manifest, and (image id, member name, storage key, size) of each original."""
    team_id = team.id
    collections_ = db.session.scalars(
        select(Collection).where(Collection.team_id == team_id).order_by(Collection.created_at)
    ).all()
    tags = db.session.scalars(select(Tag.name).where(Tag.team_id == team_id).order_by(Tag.name))
    rows = db.session.scalars(
        select(Image).where(Image.team_id == team_id).order_by(Image.created_at, Image.id)
    ).all()
    originals = []
    entries = []
    for image in rows:
        name = f"originals/{image.sha256}"
        originals.append((str(image.id), name, image.storage_key, image.size_bytes))
        entries.append(
            {
                "id": str(image.id),
                "filename": image.filename,
                "content_type": image.content_type,
                "size_bytes": image.size_bytes,
                "width": image.width,
                "height": image.height,
                "sha256": image.sha256,
                "created_at": _iso(image.created_at),
                "collection_id": str(image.collection_id) if image.collection_id else None,
                "tags": [tag.name for tag in image.tags],
                "labels": [
                    {"embedder": label.embedder, "name": label.name, "score": label.score}
                    for label in image.labels
                ],
                "metadata": image.meta or {},
                "original": name,
            }
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": _iso(utcnow()),
        "team": {"name": team.name, "slug": team.slug},
        "tags": list(tags),
        "collections": [
            {
                "id": str(c.id),
                "name": c.name,
                "description": c.description,
                "created_at": _iso(c.created_at),
                "updated_at": _iso(c.updated_at),
            }
            for c in collections_
        ],
        "images": entries,
        "not_duplicates": [
            [str(a), str(b)]
            for a, b in db.session.execute(
                select(DuplicateDecision.image_a_id, DuplicateDecision.image_b_id)
                .where(DuplicateDecision.team_id == team_id)
                .order_by(DuplicateDecision.id)
            )
        ],
    }
    return manifest, originals


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(utcnow().timestamp())
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as buffer:
        buffer.write(data)
        buffer.seek(0)
        tar.addfile(_member(name, len(data)), buffer)


def _without_images(manifest: dict[str, Any], image_ids: set[str]) -> dict[str, Any]:
    if not image_ids:
        return manifest
    return {
        **manifest,
        "images": [entry for entry in manifest["images"] if entry["id"] not in image_ids],
        "not_duplicates": [
            pair for pair in manifest["not_duplicates"] if image_ids.isdisjoint(pair)
        ],
    }


def _add_object(tar: tarfile.TarFile, image_id: str, name: str, key: str, size: int) -> bool:
    """Copy an image's original into the archive; False when the image has been deleted since
    the manifest was read (its object with it), so it is left out."""
    # The size goes in the header before the bytes: a stored object that is not the size its
    # row says would make a corrupt archive, so it stops the export instead.
    try:
        stored = storage().open(key)
    except ObjectNotFound:
        if db.session.scalar(select(Image.id).where(Image.id == uuid.UUID(image_id))) is None:
            return False
        raise Invalid(
            f"stored object {key} is missing: restore it, or delete its image, and export again"
        ) from None
    with stored, tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as copy:
        shutil.copyfileobj(stored, copy, _COPY_CHUNK)
        if copy.tell() != size:
            raise Invalid(f"stored object {key} is {copy.tell()} bytes, its row says {size}")
        copy.seek(0)
        tar.addfile(_member(name, size), copy)
    return True


# --- import -----------------------------------------------------------------------------------


@dataclass
class _ImageEntry:
    entry: dict[str, Any]
    member: tarfile.TarInfo


def import_archive(path: str, *, team_name: str | None = None, actor: Actor) -> ArchiveSummary:
    """Create a team from the archive at `path` (named `team_name` if given, else as exported),
    with its collections, tags, images, labels and metadata; queue the images' processing,
    which rebuilds the team's indexes. All or nothing."""
    with _open_tar(path) as tar:
        manifest, entries = _read_checked(tar)
        written: list[str] = []
        try:
            with unit_of_work():
                summary, image_ids = _write_team(tar, manifest, entries, team_name, actor, written)
                for image_id in image_ids:
                    # Behind uploads, on the imports queue: a big team must not hold up others.
                    after_commit(lambda i=image_id: queue.enqueue_process_image(i, background=True))
        except BaseException:
            delete_objects(written, of="a failed import")
            raise
    return summary


@contextmanager
def _open_tar(path: str) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise Invalid(f"{os.path.basename(path)} is not a readable tar archive: {exc}") from None
    with tar:
        yield tar


def _read_checked(tar: tarfile.TarFile) -> tuple[dict[str, Any], list[_ImageEntry]]:
    """The manifest and each image's member, once the archive passed every check that needs no
    decoding."""
    try:
        members = tar.getmembers()
    except tarfile.TarError as exc:
        raise Invalid(f"the archive is damaged: {exc}") from None
    by_name: dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = member.name
        # Only the names this format writes: no folders, links, devices, absolute or `..` paths.
        if name != MANIFEST and not ORIGINAL.fullmatch(name):
            raise Invalid(f"unexpected member {name!r} in the archive")
        if not member.isreg():
            raise Invalid(f"archive member {name!r} is not a regular file")
        if name in by_name:
            raise Invalid(f"archive member {name!r} appears twice")
        by_name[name] = member
    if MANIFEST not in by_name:
        raise Invalid(f"the archive has no {MANIFEST}: it is not a Likeness team archive")
    if by_name[MANIFEST].size > MAX_MANIFEST_BYTES:
        raise Invalid(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES // 2**20} MB")
    raw = tar.extractfile(by_name[MANIFEST]).read()
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid(f"{MANIFEST} is not valid JSON: {exc}") from None
    _check_manifest(manifest)
    entries = []
    referenced = {MANIFEST}
    for n, entry in enumerate(manifest["images"]):
        name = entry["original"]
        if name != f"originals/{entry['sha256']}":
            raise Invalid(f"images[{n}].original must be originals/<its sha256>")
        member = by_name.get(name)
        if member is None:
            raise Invalid(f"the archive lacks {name}, the original of images[{n}]")
        if member.size != entry["size_bytes"]:
            raise Invalid(f"{name} is {member.size} bytes, images[{n}] says {entry['size_bytes']}")
        if name in referenced:
            raise Invalid(f"images[{n}] has the same original as another image")
        referenced.add(name)
        entries.append(_ImageEntry(entry, member))
    if unreferenced := sorted(set(by_name) - referenced):
        raise Invalid(f"archive member {unreferenced[0]!r} belongs to no image")
    return manifest, entries


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Invalid(f"{MANIFEST}: {message}")


def _is_text(value: object, longest: int, shortest: int = 0) -> bool:
    return isinstance(value, str) and shortest <= len(value) <= longest


def _is_moment(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        parse_utc(value)
    except ValueError:
        return False
    return True


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_manifest(manifest: object) -> None:
    """The manifest's shape, field by field; the first problem is the error. Every id is
    rewritten as `str(uuid.UUID)` spells it, so that the import compares ids, not spellings."""
    _require(isinstance(manifest, dict), "must be a JSON object")
    _require(manifest.get("format") == FORMAT, f"format must be {FORMAT!r}")
    version = manifest.get("version")
    _require(_is_count(version), "version must be a whole number")
    if version != VERSION:
        raise Invalid(
            f"archive format version {version} is not one this Likeness reads (it reads "
            f"version {VERSION}); export it again, or import it with the version that wrote it"
        )
    team = manifest.get("team")
    _require(isinstance(team, dict), "team must be an object")
    _require(_is_text(team.get("name"), 100, 1), "team.name must be a text of 1 to 100 characters")
    slug = team.get("slug")
    _require(_is_text(slug, 60, 1) and SLUG.fullmatch(slug), "team.slug is not a slug")
    tags = manifest.get("tags", [])
    _require(isinstance(tags, list) and all(_is_text(t, 64, 1) for t in tags), "tags: bad list")
    found = manifest.get("collections")
    _require(isinstance(found, list), "collections must be a list")
    collection_at: dict[str, int] = {}
    for n, c in enumerate(found):
        where = f"collections[{n}]"
        _require(isinstance(c, dict), f"{where} must be an object")
        c["id"] = _canonical_id(c.get("id"), f"{where}.id must be a UUID")
        _first_use(collection_at, c["id"], "collections", n)
        _require(_is_text(c.get("name"), 400, 1), f"{where}.name must be a text")
        _require(c.get("description") is None or _is_text(c["description"], 4000), where)
        for field in ("created_at", "updated_at"):
            _require(_is_moment(c.get(field)), f"{where}.{field} must be an ISO time")
    listed = manifest.get("images")
    _require(isinstance(listed, list), "images must be a list")
    image_at: dict[str, int] = {}
    for n, image in enumerate(listed):
        _check_image(image, f"images[{n}]")
        _first_use(image_at, image["id"], "images", n)
    pairs = manifest.get("not_duplicates", [])
    _require(isinstance(pairs, list), "not_duplicates must be a list")
    for n, pair in enumerate(pairs):
        message = f"not_duplicates[{n}] must be two image ids"
        _require(isinstance(pair, list) and len(pair) == 2, message)
        pair[:] = [_canonical_id(i, message) for i in pair]


def _canonical_id(value: object, message: str) -> str:
    """`value` as `str(uuid.UUID)` spells it, or Invalid with `message`. One UUID has many
    spellings (capitals, braces, no hyphens) and the import compares and looks ids up as text:
    two spellings of one id would pass as two ids and then collide in the database, and a
    reference in capitals would name nothing."""
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise Invalid(f"{MANIFEST}: {message}") from None


def _first_use(first_at: dict[str, int], listed_id: str, kind: str, n: int) -> None:
    """Note that `kind[n]` has `listed_id`; refuse it if an earlier entry has it already: two
    rows of one id would collide in the database, and a reference could not tell them apart."""
    if listed_id in first_at:
        raise Invalid(f"{MANIFEST}: {kind}[{n}] repeats the id of {kind}[{first_at[listed_id]}]")
    first_at[listed_id] = n


def _check_image(image: object, where: str) -> None:
    _require(isinstance(image, dict), f"{where} must be an object")
    image["id"] = _canonical_id(image.get("id"), f"{where}.id must be a UUID")
    _require(_is_text(image.get("filename"), 255, 1), f"{where}.filename must be a text")
    _require(_is_count(image.get("size_bytes")), f"{where}.size_bytes must be a count")
    sha = image.get("sha256")
    _require(isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha), f"{where}.sha256")
    _require(_is_text(image.get("original"), 80), f"{where}.original must be a text")
    _require(_is_moment(image.get("created_at")), f"{where}.created_at must be an ISO time")
    if image.get("collection_id") is not None:
        image["collection_id"] = _canonical_id(image["collection_id"], f"{where}.collection_id")
    tags = image.get("tags", [])
    _require(isinstance(tags, list) and all(isinstance(t, str) for t in tags), f"{where}.tags")
    labels = image.get("labels", [])
    _require(isinstance(labels, list), f"{where}.labels must be a list")
    for label in labels:
        _require(
            isinstance(label, dict)
            and _is_text(label.get("embedder"), 50, 1)
            and _is_text(label.get("name"), 100, 1)
            and isinstance(label.get("score"), int | float)
            and not isinstance(label.get("score"), bool)
            and 0 <= label["score"] <= 1,
            f"{where}.labels: each is {{embedder, name, score in 0..1}}",
        )
    metadata = image.get("metadata", {})
    _require(isinstance(metadata, dict), f"{where}.metadata must be an object")


def _write_team(tar, manifest, entries, team_name, actor, written):
    team = _create_team(manifest["team"], team_name)
    ids_kept = not _ids_taken(manifest)
    collection_ids = _write_collections(team.id, manifest["collections"], ids_kept)
    _write_tags(team.id, manifest.get("tags", []))
    image_ids = []
    new_ids: dict[str, uuid.UUID] = {}
    with team_scope(team.id):
        for n, item in enumerate(entries):
            image = _write_image(
                tar, team.id, item, f"images[{n}]", collection_ids, ids_kept, written
            )
            image_ids.append(image.id)
            new_ids[item.entry["id"]] = image.id
        _write_decisions(team.id, manifest.get("not_duplicates", []), new_ids)
    audit.record(
        actor,
        "team.import",
        team.id,
        target_type="team",
        target_id=team.id,
        target=team.name,
        images=len(image_ids),
        collections=len(collection_ids),
        exported_at=manifest.get("exported_at"),
    )
    summary = ArchiveSummary(
        team.slug, len(image_ids), len(collection_ids), len(manifest.get("tags", [])), ids_kept
    )
    return summary, image_ids


def _create_team(exported: dict[str, str], team_name: str | None) -> Team:
    if team_name is not None:
        return accounts.create_team(team_name)
    slug = exported["slug"]
    taken = accounts.get_team_by_slug(slug)
    if taken is not None:
        raise Conflict(
            f"a team with slug {slug!r} ({taken.name}) already exists here; "
            "import under another name with --team-name"
        )
    team = accounts.create_team(exported["name"])  # refuses a team of the same name too
    team.slug = slug  # as it was: links and scripts that name the slug keep working
    db.session.flush()
    return team


def _ids_taken(manifest) -> bool:
    """Whether any image or collection id of the archive is used here (an import into the
    deployment it came from, under another name): then every row gets a new id."""
    image_ids = [uuid.UUID(i["id"]) for i in manifest["images"]]
    collection_ids = [uuid.UUID(c["id"]) for c in manifest["collections"]]
    with unscoped():
        for model, ids in ((Image, image_ids), (Collection, collection_ids)):
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                if db.session.scalar(select(model.id).where(model.id.in_(chunk)).limit(1)):
                    return True
    return False


def _moment(value: str | None) -> datetime:
    return parse_utc(value) if value else utcnow()


def _write_collections(team_id, listed, ids_kept) -> dict[str, uuid.UUID]:
    """The collections, by their id in the archive to their id here."""
    ids: dict[str, uuid.UUID] = {}
    keys: set[str] = set()
    for n, c in enumerate(listed):
        try:
            name, key = collections.clean_name(c["name"])
            description = collections.clean_description(c.get("description"))
        except ServiceError as exc:
            raise Invalid(f"{MANIFEST}: collections[{n}]: {exc.message}") from None
        if key in keys or c["id"] in ids:
            raise Invalid(f"{MANIFEST}: collections[{n}] repeats a name or id")
        keys.add(key)
        new_id = uuid.UUID(c["id"]) if ids_kept else uuid.uuid4()
        ids[c["id"]] = new_id
        db.session.add(
            Collection(
                id=new_id,
                team_id=team_id,
                name=name,
                name_key=key,
                description=description,
                created_at=_moment(c.get("created_at")),
                updated_at=_moment(c.get("updated_at") or c.get("created_at")),
            )
        )
    db.session.flush()
    return ids


def _write_decisions(team_id, pairs, new_ids: dict[str, uuid.UUID]) -> None:
    """The "not duplicates" decisions, between the images' ids here (the smaller first)."""
    seen = set()
    for n, pair in enumerate(pairs):
        if not all(i in new_ids for i in pair) or pair[0] == pair[1]:
            raise Invalid(f"{MANIFEST}: not_duplicates[{n}] names no two images of the archive")
        a, b = sorted(new_ids[i] for i in pair)
        if (a, b) not in seen:
            seen.add((a, b))
            db.session.add(DuplicateDecision(team_id=team_id, image_a_id=a, image_b_id=b))
    db.session.flush()


def _write_tags(team_id, names) -> None:
    """The team's tags, those no image carries included (the images' own are added with them)."""
    for n, name in enumerate(names):
        try:
            clean = images.parse_tags([name])
        except ServiceError as exc:
            raise Invalid(f"{MANIFEST}: tags[{n}]: {exc.message}") from None
        if clean and not db.session.scalar(
            select(Tag.id).where(Tag.team_id == team_id, Tag.name == clean[0])
        ):
            db.session.add(Tag(team_id=team_id, name=clean[0]))
            db.session.flush()


def _write_image(
    tar, team_id, item: _ImageEntry, where, collection_ids, ids_kept, written: list[str]
) -> Image:
    entry = item.entry
    collection = entry.get("collection_id")
    if collection is not None and collection not in collection_ids:
        raise Invalid(f"{MANIFEST}: {where}.collection_id names no collection of the archive")
    try:
        tags = images.parse_tags(entry.get("tags", []))
        custom = images.check_custom_metadata(entry.get("metadata", {}).get("custom") or {})
    except ServiceError as exc:
        raise Invalid(f"{MANIFEST}: {where}: {exc.message}") from None
    with _spooled(tar, item.member) as original:
        try:
            valid = ingest.validate(original)  # as any upload: an archive is input like another
        except ServiceError as exc:  # too large, not an image, a bomb...
            raise Invalid(f"{item.member.name} ({entry['filename']}): {exc.message}") from None
        if valid.sha256 != entry["sha256"]:
            raise Invalid(f"{item.member.name} does not match its sha256: the archive is damaged")
        found = valid.analysis
        image_id = uuid.UUID(entry["id"]) if ids_kept else uuid.uuid4()
        prefix = f"teams/{team_id}/images/{image_id}"
        image = Image(
            id=image_id,
            team_id=team_id,
            filename=images.clean_filename(entry["filename"]),
            content_type=found.content_type,
            size_bytes=valid.size,
            width=found.width,
            height=found.height,
            sha256=valid.sha256,
            status="pending",
            collection_id=collection_ids[collection] if collection else None,
            storage_key=f"{prefix}/original",
            thumbnail_key=f"{prefix}/thumbnail.webp",
            # What the bytes say, again; what people wrote, from the archive.
            meta={"exif": found.exif, "colors": [c for c, _ in found.colors], "custom": custom},
            created_at=_moment(entry.get("created_at")),
        )
        original.seek(0)
        # Each key is noted before its object is written: a failure removes whatever there is.
        written.append(image.storage_key)
        storage().save(image.storage_key, original, image.content_type)
    written.append(image.thumbnail_key)
    storage().save(image.thumbnail_key, io.BytesIO(found.thumbnail), ingest.THUMBNAIL_CONTENT_TYPE)
    db.session.add(image)
    images.set_tags(image, tags)
    seen = set()
    for label in entry.get("labels", []):
        if (label["embedder"], label["name"]) in seen:
            continue
        seen.add((label["embedder"], label["name"]))
        db.session.add(
            Label(
                team_id=team_id,
                image_id=image.id,
                embedder=label["embedder"],
                name=label["name"],
                score=float(label["score"]),
            )
        )
    db.session.flush()
    return image


@contextmanager
def _spooled(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[IO[bytes]]:
    """A seekable copy of one member (a compressed archive cannot seek cheaply)."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as copy:
        source = tar.extractfile(member)
        shutil.copyfileobj(source, copy, _COPY_CHUNK)
        copy.seek(0)
        yield copy
