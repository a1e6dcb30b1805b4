"""The one place that enqueues: timeouts, retries and deterministic job ids.

A failure to reach Redis never fails the caller: the row it concerns is already committed, and a
reconcile sweep enqueues whatever stayed pending.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime

import redis
from flask import current_app
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from app import logs
from app.extensions import redis_connection

log = logging.getLogger(__name__)

# Transient failures (a store that blinks, a lost connection) are retried with backoff.
PROCESS_RETRY = Retry(max=3, interval=[10, 60, 300])
INDEX_RETRY = Retry(max=3, interval=[5, 30, 120])
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def job_meta() -> dict[str, str]:
    """What a job carries of the request (or job) that queued it: its request id, which the
    worker binds to the job's log lines (app/worker.py)."""
    request_id = logs.current_request_id()
    return {"request_id": request_id} if request_id else {}


def get_queue() -> Queue:
    """The main queue: processing, index builds, sweeps. Workers empty it first."""
    return Queue(current_app.config["QUEUE_NAME"], connection=redis_connection.client)


def get_import_queue() -> Queue:
    """URL imports, on a queue of their own so that a slow import never delays uploads; the
    re-embedding of stored images after an embedder's version changed waits there too."""
    return Queue(f"{current_app.config['QUEUE_NAME']}-imports", connection=redis_connection.client)


def _enqueue_once(
    func: str, *args, job_id: str, at: datetime | None = None, queue: Queue | None = None, **options
) -> bool:
    """Queue `func(*args)` under a deterministic id: True if queued now or already there.

    Every job here is idempotent and named, so an id already in Redis means the work is
    waiting; a Redis outage is logged and left to the reconcile sweep.
    """
    options.setdefault("job_timeout", current_app.config["JOB_TIMEOUT_SECONDS"])
    options.setdefault("failure_ttl", 7 * 24 * 3600)
    options.setdefault("meta", job_meta())
    try:
        target = queue or get_queue()
        if at is None:
            target.enqueue(func, *args, job_id=job_id, unique=True, **options)
        else:
            target.enqueue_at(at, func, *args, job_id=job_id, unique=True, **options)
    except DuplicateJobError:
        pass
    except redis.RedisError as exc:
        log.warning("could not queue %s, the reconcile sweep will: %s", job_id, exc)
        return False
    return True


def process_job_id(image_id: uuid.UUID | str) -> str:
    return f"process-image-{image_id}"


def enqueue_process_image(image_id: uuid.UUID, background: bool = False) -> bool:
    """Queue processing of one image; True if queued now or already waiting. `background`
    work (re-embedding a stored image) waits behind uploads, on the imports queue."""
    return _enqueue_once(
        "app.jobs.process_image",
        str(image_id),
        job_id=process_job_id(image_id),
        queue=get_import_queue() if background else None,
        retry=PROCESS_RETRY,
        result_ttl=0,  # nothing to keep, and the id is free for the next run at once
        description=f"process image {image_id}",
    )


IMPORT_RETRY = Retry(max=2, interval=[15, 60])


def import_job_id(batch_id: uuid.UUID | str, position: int) -> str:
    return f"import-{batch_id}-{position}"


def enqueue_import_item(batch_id: uuid.UUID, position: int) -> bool:
    """Queue the import of one item of a batch: one URL per job, so that between two URLs the
    worker takes the uploads waiting on the main queue."""
    return _enqueue_once(
        "app.jobs.import_item",
        str(batch_id),
        position,
        job_id=import_job_id(batch_id, position),
        queue=get_import_queue(),
        retry=IMPORT_RETRY,
        result_ttl=0,
        description=f"import item {position} of batch {batch_id}",
    )


# The debounce windows' clock; tests pin it so a request cannot straddle two windows.
clock = time.time


def request_index_build(team_id: uuid.UUID, embedder: str) -> bool:
    """Ask for a rebuild of one (team, embedder) index, debounced.

    Time is cut into windows of INDEX_DEBOUNCE_SECONDS and each window has one deterministic job
    id. The first request in a window queues a build at once; later ones find it waiting and
    stop there. A request that finds its window's build already running or done (so it may
    have missed this change) schedules the next window's build, which later requests join.
    """
    window = max(1, current_app.config["INDEX_DEBOUNCE_SECONDS"])
    bucket = int(clock() // window)
    options = dict(
        retry=INDEX_RETRY,
        job_timeout=current_app.config["JOB_TIMEOUT_SECONDS"],
        result_ttl=4 * window,
        failure_ttl=7 * 24 * 3600,
        unique=True,
        description=f"build {embedder} index of team {team_id}",
        meta=job_meta(),
    )
    args = ("app.jobs.build_index", str(team_id), embedder)
    # The window's job can expire between enqueue and fetch; then nothing waits, so ask again,
    # a few times at most: a Redis that keeps losing jobs is not worth looping on.
    for _attempt in range(3):
        try:
            if _request_build_in_window(args, team_id, embedder, bucket, window, options):
                return True
        except redis.RedisError as exc:
            log.warning("could not request %s index build for team %s: %s", embedder, team_id, exc)
            return False
    log.warning("gave up requesting a %s index build for team %s", embedder, team_id)
    return False


def _request_build_in_window(args, team_id, embedder, bucket, window, options) -> bool:
    """Join or queue this window's build, or schedule the next window's; False if the window's
    job vanished meanwhile."""
    queue = get_queue()
    job_id = f"build-index-{team_id}-{embedder}-{bucket}"
    try:
        queue.enqueue(*args, job_id=job_id, **options)
        return True
    except DuplicateJobError:
        pass
    try:
        job = Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        return False
    if job.get_status(refresh=True) in WAITING:
        return True
    next_start = datetime.fromtimestamp((bucket + 1) * window, UTC)
    with contextlib.suppress(DuplicateJobError):
        queue.enqueue_at(
            next_start,
            *args,
            job_id=f"build-index-{team_id}-{embedder}-{bucket + 1}",
            **options,
        )
    return True


def request_index_check(team_id: uuid.UUID, embedder: str) -> bool:
    """Make sure the index of one (team, embedder) is checked at least INDEX_QUIET_SECONDS
    from now, to be rebuilt then if nothing changed meanwhile (`indexing.check_index`).

    Time is cut into windows of INDEX_QUIET_SECONDS; the requests of one window share one
    job, scheduled at the end of the next window. With INDEX_QUIET_SECONDS=0 this is a build
    request.
    """
    quiet = current_app.config["INDEX_QUIET_SECONDS"]
    if quiet <= 0:
        return request_index_build(team_id, embedder)
    bucket = int(clock() // quiet)
    return _enqueue_once(
        "app.jobs.check_index",
        str(team_id),
        embedder,
        job_id=f"check-index-{team_id}-{embedder}-{bucket}",
        at=datetime.fromtimestamp((bucket + 2) * quiet, UTC),
        retry=INDEX_RETRY,
        result_ttl=0,
        description=f"check {embedder} index of team {team_id}",
    )


# A whole-team duplicate report can take minutes (app/services/duplicates.py).
REPORT_JOB_TIMEOUT_SECONDS = 3600


def enqueue_duplicate_report(team_id: uuid.UUID, tier: str, threshold: str) -> bool:
    """Queue the making of one duplicate report, behind uploads on the imports queue: one job
    per team and tier at a time, whatever thresholds it asks for meanwhile, so that no team can
    fill the queue that every team's imports share with reports of minutes each. The job makes
    the report of the team as it is when the job runs; a report out of date by then is asked
    for again by the next request. A failed one is forgotten after a minute, so that asking
    again queues it again."""
    return _enqueue_once(
        "app.jobs.duplicate_report",
        str(team_id),
        tier,
        threshold,
        job_id=f"duplicate-report-{team_id}-{tier}",
        queue=get_import_queue(),
        job_timeout=REPORT_JOB_TIMEOUT_SECONDS,
        result_ttl=0,
        failure_ttl=60,
        description=f"{tier} duplicate report of team {team_id}",
    )


# Walking a large store (millions of objects, a page of a thousand at a time) takes minutes.
STORAGE_SWEEP_TIMEOUT_SECONDS = 3 * 3600


def enqueue_storage_sweep() -> bool:
    """Queue the daily sweep of the storage (app/services/reconcile.py), behind uploads on the
    imports queue."""
    return _enqueue_once(
        "app.jobs.sweep_storage",
        job_id="storage-sweep",
        queue=get_import_queue(),
        job_timeout=STORAGE_SWEEP_TIMEOUT_SECONDS,
        result_ttl=0,
        description="sweep the storage for what killed writers left",
    )


def schedule_reconcile() -> bool:
    """Make sure one reconcile sweep is scheduled for the next interval (an idempotent call)."""
    interval = max(1, current_app.config["RECONCILE_INTERVAL_SECONDS"])
    bucket = int(clock() // interval) + 1
    return _enqueue_once(
        "app.jobs.reconcile",
        job_id=f"reconcile-{bucket}",
        at=datetime.fromtimestamp(bucket * interval, UTC),
        result_ttl=interval,
        failure_ttl=24 * 3600,
        description="reconcile stuck images",
    )


# Workers that can run jobs, for /healthz: a sorted set of worker names, each scored with the
# time (Unix seconds) until which that worker can be counted on.


def _able_workers_key(queue_name: str) -> str:
    return f"likeness:{queue_name}:able-workers"


def record_able_worker(
    connection: redis.Redis, queue_name: str, worker_name: str, seconds: float
) -> None:
    """Count on `worker_name` for the next `seconds`, and forget workers whose time is up."""
    now = time.time()
    key = _able_workers_key(queue_name)
    with connection.pipeline() as pipeline:
        pipeline.zadd(key, {worker_name: now + seconds})
        pipeline.zremrangebyscore(key, "-inf", now)
        pipeline.execute()


def forget_able_worker(connection: redis.Redis, queue_name: str, worker_name: str) -> None:
    connection.zrem(_able_workers_key(queue_name), worker_name)


def count_able_workers() -> int:
    """How many workers reported lately that they can run jobs."""
    key = _able_workers_key(current_app.config["QUEUE_NAME"])
    return redis_connection.client.zcount(key, time.time(), "+inf")
