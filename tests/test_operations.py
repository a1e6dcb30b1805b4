"""The job queue for operators: `flask jobs` and the admins' Operations page, over real Redis
and a job that really failed in a worker."""

from __future__ import annotations

import os
import uuid

import pytest
from rq.job import Job

from app import queue
from app.extensions import db, redis_connection
from app.models import Image
from app.services import jobs_admin
from app.tenancy import unscoped
from tests import samples

HOSTILE = '<img src=x onerror=alert(1)>" hx-get="/settings/keys'


def _failed_processing(app, team, upload, run_jobs) -> tuple[str, str, bytes]:
    """Upload an image whose processing then fails for real in the worker (its original
    cannot be read: a symlink loop, an OSError that is no "missing file"); returns the image
    id, the original's path and its bytes."""
    image_id = upload(team, [(samples.jpeg(3), "broken.jpg")]).json["items"][0]["id"]
    with app.app_context():
        with unscoped():
            key = db.session.get(Image, uuid.UUID(image_id)).storage_key
        path = os.path.join(app.config["STORAGE_ROOT"], *key.split("/"))
        with open(path, "rb") as f:
            original = f.read()
        os.unlink(path)
        os.symlink(path, path)
        job_id = queue.process_job_id(image_id)
        Job.fetch(job_id, connection=redis_connection.client).delete()
        # The upload's job would be retried later; this one fails on its only attempt.
        queue.get_queue().enqueue(
            "app.jobs.process_image",
            image_id,
            job_id=job_id,
            description=f"process image {image_id}",
        )
    run_jobs()
    return image_id, path, original


def _repair(path: str, original: bytes) -> None:
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(original)


def test_failed_job_is_listed_with_its_error_and_retried_from_the_command_line(
    app, team_a, upload, run_jobs, runner
):
    image_id, path, original = _failed_processing(app, team_a, upload, run_jobs)
    job_id = queue.process_job_id(image_id)

    status = runner.invoke(args=["jobs", "status"])
    assert status.exit_code == 0, status.output
    assert "likeness-test: queued=0 running=0 failed=1" in status.output.splitlines()[-1]

    failed = runner.invoke(args=["jobs", "failed"])
    assert failed.exit_code == 0, failed.output
    assert job_id in failed.output and team_a.team.slug in failed.output
    assert "Too many levels of symbolic links" in failed.output
    assert failed.output.splitlines()[-1] == "1 failed jobs"

    with app.app_context(), unscoped():
        assert db.session.get(Image, uuid.UUID(image_id)).status == "error"
    _repair(path, original)
    retried = runner.invoke(args=["jobs", "retry", job_id])
    assert retried.exit_code == 0, retried.output
    assert retried.output.splitlines()[-1] == f"retried {job_id}"
    with app.app_context(), unscoped():
        assert db.session.get(Image, uuid.UUID(image_id)).status == "pending"
    run_jobs()
    with app.app_context(), unscoped():
        assert db.session.get(Image, uuid.UUID(image_id)).status == "ready"
        assert jobs_admin.failed_jobs() == []


def test_retry_needs_an_id_or_all_and_refuses_unknown_ids(app, runner):
    assert runner.invoke(args=["jobs", "retry"]).exit_code == 2
    unknown = runner.invoke(args=["jobs", "retry", "no-such-job"])
    assert unknown.exit_code == 1 and "no failed job with this id" in unknown.output
    everything = runner.invoke(args=["jobs", "retry", "--all"])
    assert everything.exit_code == 0 and everything.output.splitlines()[-1] == "retried 0 jobs"


def test_a_failed_job_of_no_team_is_requeued_as_it_was(app, runner, run_jobs):
    with app.app_context():
        # A job whose argument is no id fails in the worker and names no team.
        queue.get_queue().enqueue("app.jobs.process_image", "not-an-id", job_id="build-broken")
    run_jobs()
    failed = runner.invoke(args=["jobs", "failed"])
    assert "build-broken  -  " in failed.output
    assert "ValueError: badly formed hexadecimal UUID string" in failed.output
    retried = runner.invoke(args=["jobs", "retry", "--all"])
    assert retried.output.splitlines()[-1] == "retried 1 jobs"
    with app.app_context():
        assert queue.get_queue().get_job_ids() == ["build-broken"]
        assert jobs_admin.failed_jobs() == []


def test_operations_page_shows_this_teams_failed_job_and_retries_it(
    app, team_a, team_b, upload, run_jobs, person
):
    image_id, path, original = _failed_processing(app, team_a, upload, run_jobs)
    job_id = queue.process_job_id(image_id)
    admin = person(team_a, "admin").client

    page = admin.get("/operations")
    assert page.status_code == 200 and "HX-Request" in page.headers["Vary"]
    body = page.get_data(as_text=True)
    assert "<html" in body and f"process image {image_id}" in body
    assert "Too many levels of symbolic links" in body
    assert "phash" in body and "color" in body  # the index table, per embedder
    fragment = admin.get("/operations", headers={"HX-Request": "true"})
    assert "<html" not in fragment.get_data(as_text=True)
    assert f"process image {image_id}" in fragment.get_data(as_text=True)

    other_admin = person(team_b, "admin").client
    assert image_id not in other_admin.get("/operations").get_data(as_text=True)
    assert other_admin.post(f"/operations/jobs/{job_id}/retry").status_code == 404
    assert other_admin.post("/operations/jobs/retry-all").status_code == 302
    with app.app_context():
        assert [job.id for job in jobs_admin.failed_jobs()] == [job_id]

    _repair(path, original)
    answer = admin.post(f"/operations/jobs/{job_id}/retry", headers={"HX-Request": "true"})
    assert answer.status_code == 200 and "Queued again" in answer.get_data(as_text=True)
    run_jobs()
    with app.app_context(), unscoped():
        assert db.session.get(Image, uuid.UUID(image_id)).status == "ready"
    assert "No failed jobs for this team." in admin.get("/operations").get_data(as_text=True)


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_operations_are_for_admins(app, team_a, person, role):
    someone = person(team_a, role).client
    assert someone.get("/operations").status_code == 403
    assert someone.post("/operations/jobs/retry-all").status_code == 403
    assert someone.post("/operations/indexes/phash/rebuild").status_code == 403
    assert "/operations" not in someone.get("/").get_data(as_text=True)


def test_operations_need_a_sign_in(app, client):
    assert client.get("/operations").status_code == 302
    assert client.get("/healthz").status_code in (200, 503)  # still open to load balancers


def test_rebuild_button_queues_a_build_of_that_index(app, team_a, upload, run_jobs, person):
    upload(team_a, [(samples.jpeg(1), "one.jpg")])
    run_jobs()
    admin = person(team_a, "admin").client
    assert "v1" in admin.get("/operations").get_data(as_text=True)
    assert admin.post("/operations/indexes/nonexistent/rebuild").status_code == 404
    answer = admin.post("/operations/indexes/phash/rebuild")
    assert answer.status_code == 302
    assert "rebuild of the phash index is queued" in admin.get("/operations").get_data(as_text=True)
    with app.app_context():
        main = queue.get_queue()
        # Queued now, or (a build of this debounce window having run) at the next window.
        waiting = main.get_job_ids() + main.scheduled_job_registry.get_job_ids()
    assert [j for j in waiting if j.startswith(f"build-index-{team_a.id}-phash-")]


@pytest.mark.parametrize("config_overrides", [{"REDIS_URL": "redis://127.0.0.1:9/0"}])
def test_operations_page_says_when_the_queue_cannot_be_reached(app, team_a, person, runner):
    admin = person(team_a, "admin").client
    page = admin.get("/operations")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "The job queue (Redis) cannot be reached just now" in body
    assert "phash" in body  # the indexes are still shown
    status = runner.invoke(args=["jobs", "status"])
    assert status.exit_code == 1 and "cannot be reached" in status.output


def test_a_teams_failed_jobs_show_however_many_another_team_has(app, team_a, team_b, upload):
    """The failed registry is shared by every team: a team's failures must not hide behind a
    page of another team's, older or newer."""
    (mine,) = [i["id"] for i in upload(team_a, [(samples.jpeg(1), "a.jpg")]).json["items"]]
    (theirs,) = [i["id"] for i in upload(team_b, [(samples.jpeg(2), "b.jpg")]).json["items"]]
    with app.app_context():
        q = queue.get_queue()

        def failed(job_id: str, image_id: str, age: int) -> None:
            job = Job.create(
                "app.jobs.process_image", args=(image_id,), id=job_id, connection=q.connection
            )
            job.origin = q.name
            # Failures expire in the order they came: the newest last.
            q.failed_job_registry.add(job, ttl=3600 + age, exc_string="RuntimeError: broken")

        failed("mine-oldest", mine, 0)
        for n in range(jobs_admin.LISTING_LIMIT + 50):
            failed(f"theirs-{n}", theirs, 1 + n)
        failed("mine-newest", mine, 1000)
        assert {job.id for job in jobs_admin.failed_jobs(team_a.id)} == {
            "mine-oldest",
            "mine-newest",
        }
        assert len(jobs_admin.failed_jobs(team_b.id)) == jobs_admin.LISTING_LIMIT
        assert jobs_admin.failed_jobs(team_b.id)[0].id == f"theirs-{jobs_admin.LISTING_LIMIT + 49}"
