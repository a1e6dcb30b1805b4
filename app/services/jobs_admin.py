"""The job queue as operators see it: how much waits, what runs, what failed and why, and a
retry of a failed job.

RQ keeps all of it in Redis registries per queue. A job names its team only through its
arguments (an image, an import batch or the team itself), so each job is traced to its team
here; a team admin sees only their team's jobs, the command line sees every team's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select

from app import queue
from app.errors import Conflict, NotFound, Unavailable
from app.extensions import db
from app.models import Image, ImportBatch, Team
from app.runtime import plugins
from app.services import audit, reconcile
from app.services.audit import Actor
from app.services.transaction import after_commit, transactional
from app.tenancy import unscoped

# Job functions whose first argument is the id of an image, an import batch or a team.
IMAGE_JOBS = {"app.jobs.process_image"}
BATCH_JOBS = {"app.jobs.import_item", "app.jobs.import_items"}
TEAM_JOBS = {"app.jobs.build_index", "app.jobs.check_index"}
# How many failed or running jobs one listing reads from Redis at most.
LISTING_LIMIT = 200
# How far a team's listing reads into registries shared by every team (newest first).
SCAN_LIMIT = 10_000


@dataclass
class QueueDepth:
    name: str
    queued: int
    running: int
    scheduled: int
    failed: int


@dataclass
class JobInfo:
    id: str
    queue: str
    function: str
    description: str
    team_id: uuid.UUID | None
    team: str | None  # slug
    image_id: uuid.UUID | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None  # the last line of the exception, for a failed job
    traceback: str | None


def queues() -> list[Queue]:
    return [queue.get_queue(), queue.get_import_queue()]


QUEUE_UNREACHABLE = "the job queue (Redis) cannot be reached just now"


def depths() -> list[QueueDepth]:
    """Per queue: jobs waiting, running, scheduled (retries and debounced builds), failed;
    Unavailable while Redis cannot be reached."""
    try:
        return _depths()
    except redis.RedisError:
        raise Unavailable(QUEUE_UNREACHABLE) from None


def _depths() -> list[QueueDepth]:
    return [
        QueueDepth(
            name=q.name,
            queued=q.count,
            running=q.started_job_registry.count,
            scheduled=q.scheduled_job_registry.count,
            failed=q.failed_job_registry.count,
        )
        for q in queues()
    ]


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _first_argument(job: Job) -> uuid.UUID | None:
    try:
        return _uuid(job.args[0]) if job.args else None
    except Exception:  # a job whose payload cannot be read names no team
        return None


def _teams_of(jobs: list[Job]) -> dict[str, tuple[uuid.UUID | None, uuid.UUID | None]]:
    """Job id -> (team id, image id), read in one query per kind of reference."""
    images, batches, owners = {}, {}, {}
    for job in jobs:
        reference = _first_argument(job)
        if reference is None:
            continue
        if job.func_name in IMAGE_JOBS:
            images[job.id] = reference
        elif job.func_name in BATCH_JOBS:
            batches[job.id] = reference
        elif job.func_name in TEAM_JOBS:
            owners[job.id] = (reference, None)
    with unscoped():  # operators trace jobs of any team; the faces filter by team
        image_teams = dict(
            db.session.execute(
                select(Image.id, Image.team_id).where(Image.id.in_(set(images.values())))
            ).all()
        )
        batch_teams = dict(
            db.session.execute(
                select(ImportBatch.id, ImportBatch.team_id).where(
                    ImportBatch.id.in_(set(batches.values()))
                )
            ).all()
        )
    for job_id, image_id in images.items():
        owners[job_id] = (image_teams.get(image_id), image_id)
    for job_id, batch_id in batches.items():
        owners[job_id] = (batch_teams.get(batch_id), None)
    return owners


def _describe(jobs: list[Job], queue_name: dict[str, str]) -> list[JobInfo]:
    owners = _teams_of(jobs)
    slugs = dict(db.session.execute(select(Team.id, Team.slug)).all())
    infos = []
    for job in jobs:
        team_id, image_id = owners.get(job.id, (None, None))
        traceback = _traceback(job)
        infos.append(
            JobInfo(
                id=job.id,
                queue=queue_name.get(job.id, job.origin),
                function=job.func_name.removeprefix("app.jobs."),
                description=job.description or job.func_name,
                team_id=team_id,
                team=slugs.get(team_id),
                image_id=image_id,
                started_at=job.started_at,
                ended_at=job.ended_at,
                error=_last_line(traceback),
                traceback=traceback,
            )
        )
    return infos


def _traceback(job: Job) -> str | None:
    result = job.latest_result()
    return result.exc_string if result is not None and result.exc_string else None


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _jobs_in(registry_of, team_id: uuid.UUID | None) -> list[JobInfo]:
    try:
        return _read_jobs_in(registry_of, team_id)
    except redis.RedisError:
        raise Unavailable(QUEUE_UNREACHABLE) from None


def _read_jobs_in(registry_of, team_id: uuid.UUID | None) -> list[JobInfo]:
    """The newest LISTING_LIMIT jobs of each queue's registry; of one team, when given, read
    through the registry newest first until it has as many of that team's (the registries
    hold every team's jobs: the first page alone could be all another team's)."""
    infos = []
    for q in queues():
        registry, found = registry_of(q), []
        for start in range(0, SCAN_LIMIT, LISTING_LIMIT):
            ids = registry.get_job_ids(start, start + LISTING_LIMIT - 1, desc=True)
            jobs = [job for job in Job.fetch_many(ids, connection=q.connection) if job]
            page = _describe(jobs, dict.fromkeys((job.id for job in jobs), q.name))
            found += [i for i in page if team_id is None or i.team_id == team_id]
            if team_id is None or len(found) >= LISTING_LIMIT or len(ids) < LISTING_LIMIT:
                break
        infos += found[:LISTING_LIMIT]
    return infos


def failed_jobs(team_id: uuid.UUID | None = None) -> list[JobInfo]:
    """Failed jobs, newest first: of one team, or of all (and of none) when not given."""
    infos = _jobs_in(lambda q: q.failed_job_registry, team_id)
    return sorted(infos, key=lambda i: i.ended_at or datetime.min, reverse=True)


def running_jobs(team_id: uuid.UUID | None = None) -> list[JobInfo]:
    """Jobs a worker is running now: of one team, or of all when not given."""
    return _jobs_in(lambda q: q.started_job_registry, team_id)


def _failed_job(job_id: str, team_id: uuid.UUID | None) -> tuple[Queue, Job]:
    for q in queues():
        if job_id in q.failed_job_registry:
            try:
                job = Job.fetch(job_id, connection=q.connection)
            except NoSuchJobError:
                break
            if team_id is not None and _teams_of([job]).get(job.id, (None,))[0] != team_id:
                break  # another team's job, or nobody's: not there for this team
            return q, job
    raise NotFound("no failed job with this id")


@transactional
def retry_job(job_id: str, *, team_id: uuid.UUID | None = None, actor: Actor) -> JobInfo:
    """Run a failed job again (only one of `team_id`'s when given). An image that ended in
    `error` goes back to `pending` and is queued afresh, with its full set of retries."""
    q, job = _failed_job(job_id, team_id)
    info = _describe([job], {job.id: q.name})[0]
    if info.image_id is not None:
        with unscoped():
            image = db.session.get(Image, info.image_id)
        if image is not None and image.status == "error":
            reconcile.retry_image(image, actor=actor)
            return info
    try:
        q.failed_job_registry.requeue(job)
    except NoSuchJobError:
        raise Conflict("this job is no longer in the failed list") from None
    if info.team_id is not None:
        audit.record(
            actor,
            "job.retry",
            info.team_id,
            target_type="job",
            target_id=job.id,
            target=info.description,
        )
    return info


def retry_all(*, team_id: uuid.UUID | None = None, actor: Actor) -> int:
    """Retry every failed job (of one team when given); how many were queued again."""
    retried = 0
    for info in failed_jobs(team_id):
        try:
            retry_job(info.id, team_id=team_id, actor=actor)
        except (NotFound, Conflict):
            continue  # retried or removed meanwhile
        retried += 1
    return retried


@transactional
def request_rebuild(team_id: uuid.UUID, embedder: str, *, actor: Actor) -> None:
    """Ask for a rebuild of one of the team's indexes (debounced like every other request);
    queued once the audit event is committed."""
    if embedder not in plugins().embedders:
        raise NotFound(f"no enabled embedder named {embedder!r}")
    audit.record(actor, "index.rebuild", team_id, target_type="index", target=embedder)
    after_commit(lambda: queue.request_index_build(team_id, embedder))
