"""SIGTERM, as a platform sends it on every deploy or restart: a real `flask worker` process
finishes the job at hand within its grace, or puts it back on its queue and exits."""

from __future__ import annotations

import signal

import pytest
from rq import Queue, Retry
from rq.job import Job, JobStatus

from tests.conftest import wait_until


@pytest.fixture
def queue(app, redis_client):
    return Queue(app.config["QUEUE_NAME"], connection=redis_client)


def enqueue_sleep(queue, record, seconds):
    return queue.enqueue(
        "tests.slow_jobs.sleep_and_record",
        str(record),
        seconds,
        job_id="slow-job",
        retry=Retry(max=2, interval=60),
        job_timeout=600,
    )


def started(record):
    return record.exists() and "started" in record.read_text()


def test_a_job_that_ends_within_the_grace_is_finished(queue, start_worker, tmp_path):
    record = tmp_path / "record"
    job = enqueue_sleep(queue, record, 2)
    worker = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS=20)
    wait_until(lambda: started(record), 60, "the worker never started the job")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert record.read_text() == "started\nfinished\n"
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.return_value() == "done"


def test_a_job_past_the_grace_is_requeued_untouched_and_the_worker_exits(
    queue, start_worker, tmp_path
):
    record = tmp_path / "record"
    job = enqueue_sleep(queue, record, 300)
    other = queue.enqueue("tests.slow_jobs.sleep_and_record", str(tmp_path / "other"), 0)
    worker = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS=1)
    wait_until(lambda: started(record), 60, "the worker never started the job")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0  # long before the platform's SIGKILL (30 s on Heroku)
    assert record.read_text() == "started\n"  # interrupted, not finished
    job = Job.fetch(job.id, connection=queue.connection)
    assert job.get_status() == JobStatus.QUEUED
    assert queue.job_ids == [job.id, other.id]  # back at the front, before the waiting one
    assert job.retries_left == 2  # a shutdown is not a failure: no retry spent
    assert job.id not in queue.failed_job_registry and job.id not in queue.started_job_registry
    log = worker.log_path.read_text()
    assert "back on its queue" in log and "Traceback" not in log  # no error reported

    # The next worker takes it first.
    record.write_text("")
    successor = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS=1)
    wait_until(lambda: started(record), 60, "the requeued job never ran again")
    assert not (tmp_path / "other").exists()
    successor.send_signal(signal.SIGTERM)
    assert successor.wait(timeout=20) == 0
