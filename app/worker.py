"""The worker `flask worker` runs: RQ's SimpleWorker, made fit to live long in one process.

Jobs run in the worker's own process (no fork per job, see `run_worker`), so whatever one job
leaves behind, the next one would inherit. This worker therefore

* runs every job in an application context of its own: the job starts with a new database
  session and the session is removed when the job ends, however it ended, so a job that
  failed mid-flush cannot poison the jobs after it;
* listens to the main queue before the imports queue, so uploads are processed first;
* schedules in its own loop (retries, later index builds, sweeps) under RQ's per-queue
  scheduler lock, instead of RQ's forked scheduler child that a SIGKILL would orphan;
* on SIGTERM (a deploy, a platform's restart) finishes the job at hand within
  WORKER_SHUTDOWN_GRACE_SECONDS, or else interrupts it (rolling its transaction back) and puts
  it back at the front of its queue, untouched by its retries, before it exits: the platform's
  SIGKILL that follows never finds a job half done and unaccounted for;
* every heartbeat checks its own database and records in Redis until when it can be counted
  on to run jobs (read by `/healthz`), and keeps the next reconcile sweep scheduled, so the
  sweep survives Redis losing its data and any worker dying.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time

import redis
from flask import Flask
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.scripts import acquire_or_refresh_lock, release_lock

from app import logs
from app import queue as queues
from app.extensions import db, redis_connection
from app.services import health

log = logging.getLogger(__name__)

# How long an idle worker blocks waiting for a job before it looks at the clock again: the
# resolution of scheduling (RQ's own scheduler polls once a second too).
POLL_SECONDS = 1
# A worker counts for /healthz, and keeps its scheduler locks, this many heartbeats after its
# last one.
HEARTBEATS_OF_GRACE = 3
# Sent by the worker to itself when the shutdown grace runs out: its handler interrupts the job.
INTERRUPT_SIGNAL = signal.SIGUSR2


class ShutdownImminent(BaseException):
    """Raised inside a job still running when the worker must stop: a BaseException, so that
    no `except Exception` in a job swallows it, while units of work roll back on it."""


class LikenessWorker(SimpleWorker):
    """A SimpleWorker on this application's queues; see the module docstring."""

    def __init__(self, app: Flask, **kwargs):
        with app.app_context():
            listened = [queues.get_queue(), queues.get_import_queue()]  # in this order
            connection = redis_connection.client
        super().__init__(listened, connection=connection, **kwargs)
        self.app = app
        self.heartbeat_seconds = max(1, int(app.config["WORKER_HEARTBEAT_SECONDS"]))
        # Back to work soon after Redis returns, rather than after RQ's backoff of up to 60 s.
        self.max_connection_wait_time = float(self.heartbeat_seconds)
        self.main_queue_name = listened[0].name
        # RQ's scheduler, used for its enqueueing only: never started, so never forked.
        self._due_jobs_scheduler = RQScheduler(listened, connection=connection, name=self.name)
        self._next_poll = self._next_beat = 0.0
        self._able: bool | None = None
        self._counted_until = 0.0  # what /healthz was last told, in Unix seconds
        self.stop_asked = False
        self.shutdown_grace_seconds = float(app.config["WORKER_SHUTDOWN_GRACE_SECONDS"])
        self._interrupted_job_id: str | None = None
        self._running_job_id: str | None = None  # while its own code runs, not RQ's bookkeeping
        self._shutdown_timer: threading.Timer | None = None

    @property
    def dequeue_timeout(self) -> int:
        return POLL_SECONDS

    @property
    def grace_seconds(self) -> int:
        return HEARTBEATS_OF_GRACE * self.heartbeat_seconds

    def execute_job(self, job: Job, queue: Queue) -> None:
        # A busy worker still counts, for as long as its job may take (RQ ends it then); one
        # write covers a run of short jobs.
        timeout = job.timeout if job.timeout and job.timeout > 0 else Queue.DEFAULT_TIMEOUT
        if self._counted_until < time.time() + timeout:
            self._count_on_me(timeout + self.grace_seconds)
        # Its log lines carry the id of the request that queued it (or of the job that did).
        with logs.bound(job.meta.get("request_id"), job.id), self.app.app_context():
            try:
                super().execute_job(job, queue)
            finally:
                # The context's teardown removes it too; this also covers a failing teardown.
                db.session.remove()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # How long RQ keeps a started job in its StartedJobRegistry: past it, the job counts as
        # abandoned (its worker died) and RQ's cleanup retries it. SimpleWorker sends no beat
        # while a job runs, so RQ allows the job's timeout plus a fixed 60 s; this worker allows
        # the grace it claims on /healthz instead, so a killed worker's job is retried as soon
        # as a live worker would have reported again.
        if job.timeout == -1:  # no timeout: RQ's own long default
            return super().get_heartbeat_ttl(job, working_time)
        timeout = job.timeout if job.timeout and job.timeout > 0 else Queue.DEFAULT_TIMEOUT
        return int(timeout) + self.grace_seconds

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        # RQ's own beats, between jobs and while waiting for one: its three commands in one
        # round trip (RQ sends them one by one), then this worker's upkeep.
        with self.connection.pipeline(transaction=False) as batch:
            super().heartbeat(timeout, batch)
            batch.execute()
        self.maintain()

    def maintain(self) -> None:
        """Move due scheduled jobs to their queues; each heartbeat, report and keep the sweep."""
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            self.schedule_due_jobs()
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat_seconds
            self.report_health()
            with self.app.app_context():
                queues.schedule_reconcile()

    def schedule_due_jobs(self) -> None:
        """Enqueue the due scheduled jobs of every queue whose scheduler lock this worker holds
        or can take. The lock makes one worker at a time do it; it lapses a few heartbeats after
        its holder stops refreshing it (killed, or busy with a long job), so another takes over.
        """
        owned = [
            name
            for name in self.queue_names()
            if acquire_or_refresh_lock(
                self.connection, RQScheduler.get_locking_key(name), self.name, self.grace_seconds
            )
            != "taken"
        ]
        if owned:
            self._due_jobs_scheduler.prepare_registries(owned)
            self._due_jobs_scheduler.enqueue_scheduled_jobs()

    def report_health(self) -> None:
        """Record, for /healthz, that this worker can run jobs, if its database answers."""
        try:
            with self.app.app_context():
                health.check_database()
        except Exception as exc:  # whatever it is, jobs cannot run
            log.warning("worker %s cannot run jobs: its database check failed: %s", self.name, exc)
            queues.forget_able_worker(self.connection, self.main_queue_name, self.name)
            self._able, self._counted_until = False, 0.0
            return
        self._count_on_me(self.grace_seconds)
        if self._able is False:
            log.warning("worker %s can run jobs again: its database answers", self.name)
        self._able = True

    def _count_on_me(self, seconds: float) -> None:
        queues.record_able_worker(self.connection, self.main_queue_name, self.name, seconds)
        self._counted_until = time.time() + seconds

    def request_stop(self, signum, frame):
        """A warm shutdown: an idle worker stops now; a busy one lets its job finish within
        the grace, then interrupts it (see `handle_job_failure`)."""
        self.stop_asked = True
        super().request_stop(signum, frame)  # raises StopRequested when idle
        log.info(
            "worker %s stops after its job, or requeues it in %.0f s",
            self.name,
            self.shutdown_grace_seconds,
        )
        signal.signal(INTERRUPT_SIGNAL, self._interrupt_job)
        main_thread = threading.main_thread().ident
        self._shutdown_timer = threading.Timer(
            self.shutdown_grace_seconds, signal.pthread_kill, (main_thread, INTERRUPT_SIGNAL)
        )
        self._shutdown_timer.daemon = True
        self._shutdown_timer.start()

    def request_force_stop(self, signum, frame):
        # A second signal while a job runs: interrupt and requeue it at once, rather than RQ's
        # SystemExit, which a SimpleWorker would count as the job's failure.
        self._interrupt_job(signum, frame)
        super().request_force_stop(signum, frame)

    def prepare_job_execution(self, job: Job, *args, **kwargs):
        super().prepare_job_execution(job, *args, **kwargs)
        self._running_job_id = job.id

    def _finalize_success(self, job: Job, *args, **kwargs):
        self._running_job_id = None  # too late to interrupt: RQ records the success
        super()._finalize_success(job, *args, **kwargs)

    def _finalize_failure(self, job: Job, *args, **kwargs):
        self._running_job_id = None
        super()._finalize_failure(job, *args, **kwargs)

    def _interrupt_job(self, signum, frame):
        job_id = self._running_job_id
        if job_id is None:
            return
        self._interrupted_job_id = job_id
        log.warning(
            "worker %s interrupts job %s to stop; it goes back on its queue", self.name, job_id
        )
        raise ShutdownImminent(f"worker {self.name} is shutting down")

    def handle_exception(self, job: Job, *exc_info):
        if job.id != self._interrupted_job_id:  # an interruption is no error to report
            super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry=None, exc_string="", execution=None
    ):
        if job.id != self._interrupted_job_id:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        # Not a failure: the job's work was rolled back, and it runs again in full elsewhere.
        self._interrupted_job_id = None
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            queue._enqueue_job(job, pipeline=pipeline, at_front=True)
            pipeline.execute()
        log.info("job %s is back at the front of queue %s", job.id, queue.name)

    def register_death(self):
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
        with contextlib.suppress(redis.RedisError):
            queues.forget_able_worker(self.connection, self.main_queue_name, self.name)
            for name in self.queue_names():
                release_lock(self.connection, RQScheduler.get_locking_key(name), self.name)
        super().register_death()


def run_worker(app: Flask, *, burst: bool = False) -> None:
    """Work until asked to stop (with `burst`, until the queues are empty).

    RQ's work loop ends on an error of its own, such as Redis going away in the middle of a
    job's bookkeeping; a worker that ends without being asked to is replaced by a new one (in
    this process, once Redis answers again), so a Redis restart never leaves the queues without
    their worker.
    """
    level = app.config.get("LOG_LEVEL", "INFO")
    pause = max(1, int(app.config["WORKER_HEARTBEAT_SECONDS"]))
    stop = threading.Event()
    while True:
        worker = None
        try:
            worker = LikenessWorker(app)  # registers with Redis already
            worker.work(burst=burst, logging_level=level)
        except redis.RedisError as exc:
            if burst:
                raise
            log.error("worker lost Redis: %s", exc)
        finally:
            if worker is not None:
                _stop_listening(worker)
        if burst or (worker is not None and worker.stop_asked):
            return
        # Until the next worker installs its own handlers, a signal simply means stop.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        log.warning("the worker stopped on an error; another starts in %d s", pause)
        if stop.wait(pause):
            return


def _stop_listening(worker: LikenessWorker) -> None:
    """End the worker's pub/sub thread, which RQ's teardown skips when Redis is gone."""
    if worker.pubsub_thread is not None and worker.pubsub_thread.is_alive():
        worker.pubsub_thread.stop()
        worker.pubsub_thread.join(timeout=1)
    if worker.pubsub is not None:
        with contextlib.suppress(Exception):
            worker.pubsub.close()
