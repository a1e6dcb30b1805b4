"""The safety net: images left `pending` or `processing` too long are queued again.

An upload commits its row before it queues work, so a Redis outage, a worker killed mid-job or
a lost job leaves the image waiting. The sweep finds such images and queues them with the same
deterministic job id as the upload did, so an image whose job is still alive is left alone and
nothing runs twice. Index builds are asked for again the same way: the requests live in Redis,
so a pair whose index lacks embeddings gets a check at every sweep. Once a day a sweep also
queues the storage sweep, which removes what killed writers left: unfinished writes, and
objects whose row never came (or went, and the delete of its files broke off).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import timedelta

import redis
from flask import current_app
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from sqlalchemy import exists, or_, select

from app import queue
from app.errors import Conflict
from app.extensions import db, redis_connection
from app.models import (
    DirectUpload,
    Embedding,
    Image,
    ImportBatch,
    ImportItem,
    IndexBuild,
    Team,
    utcnow,
)
from app.plugin_api import StorageUnavailable
from app.runtime import plugins, storage
from app.services import audit, imports, indexing, processing, uploads
from app.services.audit import Actor
from app.services.transaction import after_commit, transactional
from app.tenancy import unscoped

log = logging.getLogger(__name__)

ALIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
# Images queued for embedding again per sweep: enough to keep a worker busy until the next.
REEMBED_PER_SWEEP = 10_000
# How often the storage is swept for leftovers, and how old a leftover must be that the store
# cannot tell from a write in progress (no save takes a day).
ABANDONED_SWEEP_SECONDS = 24 * 3600


def _still_queued(job_id: str) -> bool:
    """True if the job is waiting or running. A finished, failed or stopped job is deleted, so
    that its id can be queued again."""
    return _job_state(job_id) == "alive"


def _job_state(job_id: str) -> str:
    """The job's state: `alive` (waiting or running), `failed` (its retries ran out) or
    `gone` (finished, stopped, or lost with a Redis that restarted empty). A job that is not
    alive is deleted, so that its id can be queued again."""
    connection = redis_connection.client
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return "gone"
    status = job.get_status(refresh=True)
    if status in ALIVE:
        return "alive"
    job.delete()
    return "failed" if status == JobStatus.FAILED else "gone"


# Its job failed for good, yet the work is not marked failed: the job never got to its own
# handler, on any attempt (the worker was killed, by the kernel for memory, or by a platform).
# Queued again, it would do the same forever.
GAVE_UP = (
    "the worker stopped while working on it, on every attempt (out of memory or killed?); "
    "retry once the cause is fixed"
)


def stale_images(older_than: timedelta) -> list[uuid.UUID]:
    cutoff = utcnow() - older_than
    with unscoped():
        return list(
            db.session.scalars(
                select(Image.id)
                .where(Image.status.in_(("pending", "processing")), Image.created_at < cutoff)
                .order_by(Image.created_at)
            )
        )


def reconcile(older_than: timedelta) -> int:
    """Queue again every image stuck longer than `older_than` with no live job (returns how
    many) and ask again for the index builds still owed."""
    # Jobs whose worker died (no heartbeat) are retried or failed by RQ's own cleanup first.
    for listened in (queue.get_queue(), queue.get_import_queue()):
        StartedJobRegistry(queue=listened).cleanup()
    queued = 0
    for image_id in stale_images(older_than):
        state = _job_state(queue.process_job_id(image_id))
        if state == "alive":
            continue
        if state == "failed":
            processing.give_up(image_id, GAVE_UP)
            continue
        if queue.enqueue_process_image(image_id):
            log.info("reconcile queued image %s again", image_id)
            queued += 1
    reembedding = 0
    for image_id in outdated_images(REEMBED_PER_SWEEP):
        reembedding += queue.enqueue_process_image(image_id, background=True)
    if reembedding:
        log.info("reconcile asked for %d images to be embedded again", reembedding)
    for team_id, embedder in indexing.indexes_behind():
        queue.request_index_check(team_id, embedder)
    removed = uploads.remove_expired()
    if removed:
        log.info("reconcile removed %d direct uploads never completed", removed)
    for batch_id, position in stale_import_items(older_than):
        state = _job_state(queue.import_job_id(batch_id, position))
        if state == "failed":
            imports.give_up(batch_id, position, GAVE_UP)
        elif state == "gone" and queue.enqueue_import_item(batch_id, position):
            log.info("reconcile queued item %d of import %s again", position, batch_id)
            queued += 1
    request_storage_sweep()
    return queued


def request_storage_sweep() -> bool:
    """Once a day, whichever worker's sweep comes first: queue the storage sweep
    (`sweep_storage`) as a job of its own, behind uploads, since walking a large store takes
    minutes. True if this call queued it."""
    gate = _storage_sweep_gate()
    try:
        if not redis_connection.client.set(
            gate, utcnow().isoformat(), nx=True, ex=ABANDONED_SWEEP_SECONDS
        ):
            return False
    except redis.RedisError as exc:
        log.warning("could not ask for the storage sweep: %s", exc)
        return False
    if not queue.enqueue_storage_sweep():
        with contextlib.suppress(redis.RedisError):
            redis_connection.client.delete(gate)  # the next sweep asks again
        return False
    return True


def sweep_storage() -> int:
    """What writers that died left in the storage, such as a web process killed during an
    upload: unfinished writes (`remove_abandoned`) and objects no row names
    (`remove_orphaned_objects`); returns how many were removed. The daily job."""
    try:
        unfinished = storage().remove_abandoned(ABANDONED_SWEEP_SECONDS)
        orphaned = remove_orphaned_objects(ABANDONED_SWEEP_SECONDS)
    except StorageUnavailable as exc:
        # An outage passes: the next sweep asks again. Any other failure (a sweep past its
        # job's timeout, say) waits for the next day, not for every sweep.
        with contextlib.suppress(redis.RedisError):
            redis_connection.client.delete(_storage_sweep_gate())
        log.warning("the storage could not be swept for abandoned writes: %s", exc)
        return 0
    if unfinished:
        log.info("reconcile removed %d writes that killed writers left unfinished", unfinished)
    return unfinished + orphaned


def _storage_sweep_gate() -> str:
    return f"likeness:{current_app.config['QUEUE_NAME']}:storage-swept"


# Listed objects are looked up in the database this many at a time.
_ORPHAN_BATCH = 1000


def remove_orphaned_objects(older_than: float) -> int:
    """Delete the stored objects that no row names, written more than `older_than` seconds
    ago; returns how many.

    A writer killed between its save and its commit (an upload, an index build), or a delete
    killed between its commit and the files, leaves objects that no row names. Only the layouts
    the application writes are judged: `teams/<team>/images/<image>/...` (kept while the
    image's row exists), `teams/<team>/indexes/...` (while a build's row lists it) and
    `teams/<team>/uploads/<upload>/...` (while the direct upload is open); and only under
    a team of this database, so that a bucket shared with another deployment, or a team being
    imported (its row is not committed yet), loses nothing. An object written in the last
    `older_than` seconds is not judged: its row may still be on its way. A store that cannot
    list its objects is skipped.
    """
    cutoff = time.time() - older_than
    with unscoped():
        teams = {str(team_id) for team_id in db.session.scalars(select(Team.id))}
        # Read before listing: a build published meanwhile lists only objects too new to judge.
        index_keys = {
            k for keys in db.session.scalars(select(IndexBuild.storage_keys)) for k in keys
        }
    removed = 0
    batch: list[tuple[str, str, uuid.UUID | None]] = []
    try:
        for found in storage().list_objects("teams/"):
            owner = _owner(found.key, teams) if found.modified < cutoff else None
            if owner is not None:
                batch.append((found.key, *owner))
            if len(batch) >= _ORPHAN_BATCH:
                removed += _remove_orphans(batch, index_keys)
                batch = []
    except NotImplementedError as exc:
        log.info("the storage is not swept for orphaned objects: %s", exc)
    removed += _remove_orphans(batch, index_keys)
    if removed:
        log.info("reconcile removed %d stored objects that no row names", removed)
    return removed


def _owner(key: str, teams: set[str]) -> tuple[str, uuid.UUID | None] | None:
    """What kind of row would name `key` ("image", "upload" with its id; "index"), or None
    for a key the sweep does not judge."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != "teams" or parts[1] not in teams:
        return None
    if parts[2] == "indexes":
        return "index", None
    if parts[2] in ("images", "uploads") and len(parts) >= 5:
        try:
            row_id = uuid.UUID(parts[3])
        except ValueError:
            return None
        if str(row_id) == parts[3]:
            return parts[2][:-1], row_id
    return None


def _remove_orphans(batch: list[tuple[str, str, uuid.UUID | None]], index_keys: set[str]) -> int:
    wanted = {"image": set(), "upload": set()}
    for _, kind, row_id in batch:
        if row_id is not None:
            wanted[kind].add(row_id)
    # Apart by kind: a completed upload's image has the upload's id. Only an open upload keeps
    # its object (a presigned POST sent again after completion writes it anew).
    with unscoped():
        alive = {
            "image": set(db.session.scalars(select(Image.id).where(Image.id.in_(wanted["image"])))),
            "upload": set(
                db.session.scalars(
                    select(DirectUpload.id).where(
                        DirectUpload.id.in_(wanted["upload"]), DirectUpload.completed_at.is_(None)
                    )
                )
            ),
        }
    orphans = [
        key
        for key, kind, row_id in batch
        if (key not in index_keys if kind == "index" else row_id not in alive[kind])
    ]
    for key in orphans:
        storage().delete(key)
        log.info("removed %s: no row names it", key)
    return len(orphans)


def outdated_images(limit: int) -> list[uuid.UUID]:
    """Ready images without a vector of an enabled embedder's current version (its version
    changed, or it was enabled after they were processed), or processed before pixel digests
    were kept (exact duplicates), oldest first."""
    lacking = [
        ~exists().where(
            Embedding.image_id == Image.id,
            Embedding.embedder == name,
            Embedding.version == embedder.version,
        )
        for name, embedder in plugins().embedders.items()
    ] + [Image.pixel_sha256.is_(None)]
    with unscoped():
        return list(
            db.session.scalars(
                select(Image.id)
                .where(Image.status == "ready", or_(*lacking))
                .order_by(Image.created_at)
                .limit(limit)
            )
        )


def stale_import_items(older_than: timedelta) -> list[tuple[uuid.UUID, int]]:
    """(batch, position) of every item still queued in a batch older than `older_than`."""
    cutoff = utcnow() - older_than
    with unscoped():
        return [
            (batch_id, position)
            for batch_id, position in db.session.execute(
                select(ImportItem.batch_id, ImportItem.position)
                .join(ImportBatch)
                .where(ImportItem.status == "queued", ImportBatch.created_at < cutoff)
                .order_by(ImportBatch.created_at, ImportItem.position)
            )
        ]


@transactional
def retry_image(image: Image, *, actor: Actor) -> None:
    """Run processing again for an image that ended in `error`; queued once that is committed."""
    if image.status != "error":
        raise Conflict(f"only an image in error can be retried; this one is {image.status}")
    _still_queued(queue.process_job_id(image.id))  # frees the failed job's id
    image.status, image.error = "pending", None
    audit.record_image(actor, "image.retry", image)
    image_id = image.id
    after_commit(lambda: queue.enqueue_process_image(image_id))
