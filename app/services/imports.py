"""Bulk import from lists of URLs: a batch of items, each fetched by a worker and ingested."""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import func, select

from app import queue
from app.errors import Invalid, NotFound, ServiceError, TooLarge, ValidationFailed
from app.extensions import db
from app.models import ApiKey, ImportBatch, ImportItem, User, utcnow
from app.net.fetch import FetchError, fetch, policy_from_config
from app.services import audit, collections, paging
from app.services import images as image_service
from app.services.audit import COMMAND_LINE, SYSTEM, Actor
from app.services.images import clean_filename
from app.services.ingest import Incoming, IngestResult, ingest
from app.services.transaction import after_commit, unit_of_work
from app.tenancy import find_owned, team_scope, unscoped

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_CSV_BYTES = 2 * 1024 * 1024


@dataclass
class ItemRequest:
    url: str
    filename: str | None = None
    tags: list[str] | None = None


def check_url(url: object, row: int) -> str:
    """A plausible http(s) URL; where it leads is checked by the fetcher, hop by hop."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed(f"item {row}: the url is missing")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(f"item {row}: the url is longer than {MAX_URL_LENGTH} characters")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # an unbalanced [ or ] in the host: "Invalid IPv6 URL"
        raise ValidationFailed(f"item {row}: not a valid URL: {url[:80]!r}") from None
    if scheme not in ("http", "https"):
        raise ValidationFailed(
            f"item {row}: only http and https URLs can be imported, not {url[:80]!r}"
        )
    return url


def parse_csv(data: bytes) -> list[ItemRequest]:
    """Rows of a CSV with a `url` column and optional `filename` and `tags` columns, at most
    IMPORT_MAX_URLS of them (ValidationFailed past that, before the rest is read)."""
    limit = current_app.config["IMPORT_MAX_URLS"]
    if len(data) > MAX_CSV_BYTES:
        raise TooLarge(f"the CSV is larger than {MAX_CSV_BYTES // 1024 // 1024} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the CSV must be UTF-8 text") from None
    if "\x00" in text:  # as in any field of a form (app/strict_params.py)
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise Invalid(f"the CSV holds a NUL character (line {line}); no field accepts one")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    items = []
    try:
        # Reading the header row reads a row too: a field of it may be too long to read.
        if not reader.fieldnames or "url" not in [f.strip().lower() for f in reader.fieldnames]:
            raise Invalid("the CSV needs a header row with a 'url' column")
        for row in reader:
            row = {(k or "").strip().lower(): (v or "") for k, v in row.items() if k}
            if not any(value.strip() for value in row.values()):
                continue  # blank line
            if len(items) == limit:  # 2 MB of short rows would be a million items
                raise ValidationFailed(f"at most {limit} URLs per import; this CSV has more")
            items.append(
                ItemRequest(
                    url=row.get("url", ""),
                    filename=row.get("filename") or None,
                    tags=image_service.parse_tags(row.get("tags", "")),
                )
            )
    except csv.Error as exc:
        raise Invalid(f"the CSV cannot be read: {exc}") from None
    return items


def create_batch(
    team_id: uuid.UUID,
    requests: list[ItemRequest],
    tags: list[str],
    *,
    actor: Actor = SYSTEM,
    collection_id: object = None,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    enqueue: bool = True,
) -> ImportBatch:
    """Record a batch and its items (all valid, or nothing is created), then, once that is
    committed, queue the work (unless the caller runs it itself: `enqueue=False`). Its images
    go into the team's collection `collection_id` if given (another id is NotFound)."""
    limit = current_app.config["IMPORT_MAX_URLS"]
    if not requests:
        raise ValidationFailed("the import has no URLs")
    if len(requests) > limit:
        raise ValidationFailed(f"at most {limit} URLs per import; this one has {len(requests)}")
    urls = [check_url(r.url, n) for n, r in enumerate(requests, start=1)]
    for n, r in enumerate(requests, start=1):
        # Each image gets the import's tags and its row's: together, as many as any image has.
        if len(set(tags).union(r.tags or [])) > image_service.MAX_TAGS:
            raise ValidationFailed(
                f"item {n}: at most {image_service.MAX_TAGS} tags, the import's included"
            )
    if collection_id is not None:
        collection_id = collections.require(team_id, collection_id).id
    with unit_of_work():
        batch = ImportBatch(
            team_id=team_id,
            created_by_user_id=user_id,
            created_by_key_id=key_id,
            total=len(requests),
            tags=tags,
            collection_id=collection_id,
        )
        db.session.add(batch)
        for position, (request, url) in enumerate(zip(requests, urls, strict=True)):
            batch.items.append(
                ImportItem(
                    team_id=team_id,
                    position=position,
                    url=url,
                    # Shown as the image's name and stored in a 255-character column: cleaned
                    # now, like an upload's, not only when the item is ingested.
                    filename=clean_filename(request.filename)
                    if (request.filename or "").strip()
                    else None,
                    tags=request.tags or [],
                )
            )
        db.session.flush()
        audit.record(
            actor,
            "import.create",
            team_id,
            target_type="import",
            target_id=batch.id,
            target=f"{batch.total} URLs",
            **({"collection_id": str(collection_id)} if collection_id else {}),
        )
        if enqueue:
            batch_id, total = batch.id, batch.total
            after_commit(lambda: _enqueue_items(batch_id, total))
    return batch


def _enqueue_items(batch_id: uuid.UUID, total: int) -> None:
    for position in range(total):
        queue.enqueue_import_item(batch_id, position)


def _filename_from_url(url: str) -> str:
    name = posixpath.basename(unquote(urlsplit(url).path))
    return name or "imported"


def creator(batch: ImportBatch) -> Actor:
    """Who made the import, as the actor of what its items do: the key or person, or an
    operator at the command line (the only way to make one with neither)."""
    with unscoped():  # a key or an account, looked up by the id the batch holds
        if batch.created_by_key_id is not None:
            key = db.session.get(ApiKey, batch.created_by_key_id)
            if key is not None:
                return Actor.for_key(key)
        if batch.created_by_user_id is not None:
            user = db.session.get(User, batch.created_by_user_id)
            if user is not None:
                return Actor.for_user(user)
    return COMMAND_LINE


def run_item(item: ImportItem, *, final_attempt: bool = True) -> str:
    """Fetch and ingest one item unless it is finished already; returns its status.

    The image, its tags, its `image.upload` event (by the import's creator) and the item marked
    done commit together; a failure is recorded on the item in a transaction of its own."""
    if item.status != "queued":
        return item.status
    policy = policy_from_config(current_app.config)
    batch = item.batch

    def finish(results: list[IngestResult]) -> None:
        _finish(item, "done", image_id=results[0].image.id)

    try:
        with fetch(item.url, policy) as fetched:
            filename = item.filename or _filename_from_url(fetched.final_url)
            # The download may have taken minutes: a collection deleted meanwhile (it was
            # empty) has cleared the batch's, and the image then lands in none.
            db.session.refresh(batch, ["collection_id"])
            ingest(
                item.team_id,
                [Incoming(fetched.body, filename)],
                actor=creator(batch),
                tags=list(dict.fromkeys([*batch.tags, *item.tags])),
                user_id=batch.created_by_user_id,
                key_id=batch.created_by_key_id,
                details={"import_id": str(batch.id)},
                collection_id=batch.collection_id,
                before_commit=finish,
            )
    except (FetchError, ServiceError) as exc:
        _fail(item, exc.message)
    except Exception as exc:
        if not final_attempt:
            raise  # a transient failure: RQ retries the job
        log.exception("import item %s failed", item.id)
        _fail(item, f"could not import: {type(exc).__name__}")
    return item.status


def _finish(
    item: ImportItem, status: str, *, image_id: uuid.UUID | None = None, error: str | None = None
) -> None:
    item.status, item.image_id, item.error = status, image_id, error
    item.finished_at = utcnow()


def give_up(batch_id: uuid.UUID, position: int, message: str) -> None:
    """Mark an item still `queued` as failed with `message`: its job ran out of attempts
    without ending (the sweep found it failed)."""
    with unscoped():
        item = db.session.scalar(
            select(ImportItem).where(
                ImportItem.batch_id == batch_id,
                ImportItem.position == position,
                ImportItem.status == "queued",
            )
        )
    if item is not None:
        _fail(item, message)


def _fail(item: ImportItem, message: str) -> None:
    with unit_of_work():
        _finish(item, "failed", error=message[:1000])


def run_item_at(batch_id: uuid.UUID, position: int, *, final_attempt: bool = True) -> str | None:
    """Run the item at `position` of a batch unless it is finished; its status, None if gone."""
    batch = db.session.get(ImportBatch, batch_id)
    if batch is None:
        return None
    with team_scope(batch.team_id):
        item = db.session.scalar(
            select(ImportItem).where(
                ImportItem.batch_id == batch_id, ImportItem.position == position
            )
        )
        return None if item is None else run_item(item, final_attempt=final_attempt)


def run_items(batch_id: uuid.UUID, start: int, stop: int, *, final_attempt: bool = True) -> int:
    """Run the items of one batch at positions start..stop-1; returns how many it finished."""
    batch = db.session.get(ImportBatch, batch_id)
    if batch is None:
        return 0
    with team_scope(batch.team_id):
        items = db.session.scalars(
            select(ImportItem)
            .where(
                ImportItem.batch_id == batch_id,
                ImportItem.position >= start,
                ImportItem.position < stop,
            )
            .order_by(ImportItem.position)
        ).all()
        return sum(run_item(item, final_attempt=final_attempt) != "queued" for item in items)


def progress(batch: ImportBatch) -> dict:
    """Counts by status and the batch's overall status."""
    counts = dict(
        db.session.execute(
            select(ImportItem.status, func.count())
            .where(ImportItem.batch_id == batch.id)
            .group_by(ImportItem.status)
        ).all()
    )
    done, failed = counts.get("done", 0), counts.get("failed", 0)
    finished = done + failed
    status = "done" if finished == batch.total else ("running" if finished else "queued")
    return {"status": status, "total": batch.total, "done": done, "failed": failed}


# --- reading, a page at a time -----------------------------------------------------------------


@dataclass
class ImportSummary:
    """A batch and where it stands."""

    batch: ImportBatch
    status: str
    total: int
    done: int
    failed: int


def _summaries(batches: list[ImportBatch]) -> list[ImportSummary]:
    """Each batch with its counts, from one grouped query for them all."""
    counts: dict[tuple[uuid.UUID, str], int] = {}
    if batches:
        rows = db.session.execute(
            select(ImportItem.batch_id, ImportItem.status, func.count())
            .where(ImportItem.batch_id.in_([b.id for b in batches]))
            .group_by(ImportItem.batch_id, ImportItem.status)
        ).all()
        counts = {(batch_id, status): n for batch_id, status, n in rows}
    summaries = []
    for batch in batches:
        done, failed = counts.get((batch.id, "done"), 0), counts.get((batch.id, "failed"), 0)
        finished = done + failed
        status = "done" if finished == batch.total else ("running" if finished else "queued")
        summaries.append(ImportSummary(batch, status, batch.total, done, failed))
    return summaries


def get_import(import_id: object) -> ImportSummary:
    """One of the current team's imports with its counts, or NotFound."""
    batch = find_owned(ImportBatch, import_id)
    if batch is None:
        raise NotFound("no such import")
    return _summaries([batch])[0]


def import_page(limit: int, cursor: str | None = None) -> tuple[list[ImportSummary], str | None]:
    """One page of the current team's imports, newest first, and the next page's cursor."""
    query = select(ImportBatch).order_by(ImportBatch.created_at.desc(), ImportBatch.id.desc())
    if cursor:
        created_at, batch_id = paging.decode_time_and_id(cursor)
        query = query.where(
            paging.sorts_before(ImportBatch.created_at, ImportBatch.id, created_at, batch_id)
        )
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return _summaries(rows), paging.encode_time_and_id(last.created_at, last.id) if last else None


def item_page(
    batch: ImportBatch, limit: int, cursor: str | None = None
) -> tuple[list[ImportItem], str | None]:
    """One page of a batch's items in their order, and the next page's cursor."""
    query = select(ImportItem).where(ImportItem.batch_id == batch.id).order_by(ImportItem.position)
    if cursor:
        [position] = paging.decode(cursor, 1)
        if not (position.isascii() and position.isdigit()) or len(position) > 9:
            raise Invalid("cursor is not one this API returned")
        query = query.where(ImportItem.position > int(position))
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, paging.encode(str(rows[-1].position)) if more else None


def parse_url_lines(text: str) -> list[ItemRequest]:
    """One URL per line (blank lines and surrounding spaces ignored), as pasted in a form."""
    return [ItemRequest(url=line.strip()) for line in text.splitlines() if line.strip()]


REPORT_COLUMNS = ["url", "status", "image_id", "error", "original_url", "thumbnail_url"]


def csv_safe(value: str) -> str:
    """A cell starting with = + - @ is a formula to spreadsheet programs: defused."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def report_csv(batch: ImportBatch, file_url) -> str:
    """The batch's report, one row per item; `file_url(image_id, variant)` links its files."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for item in batch.items:
        image_id = item.image_id
        writer.writerow(
            [
                csv_safe(item.url),
                item.status,
                str(image_id) if image_id else "",
                csv_safe(item.error or ""),
                file_url(image_id, "original") if image_id else "",
                file_url(image_id, "thumbnail") if image_id else "",
            ]
        )
    return out.getvalue()
