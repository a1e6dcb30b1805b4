"""Jobs never lose work: Redis outages, killed workers, retries and the reconcile sweep."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app import create_app
from app.extensions import db, redis_connection
from app.models import Embedding, Image
from app.queue import get_import_queue, get_queue, process_job_id
from app.runtime import storage
from app.services import indexing, reconcile
from app.tenancy import unscoped
from config import BASE_DIR
from tests import samples
from tests.conftest import make_config, process_group_members, wait_until
from tests.invariants import check_invariants, remove_killed_builds_files, stored_keys
from tests.killed_writers import killed, writers_mid_save
from tests.s3server import s3_config

pytest_plugins = ["tests.s3server"]  # the moto_endpoint and s3_bucket fixtures


def samples_file(seed):
    return io.BytesIO(samples.jpeg(seed))


def image_status(app, image_id):
    with app.app_context(), unscoped():
        db.session.expire_all()
        return db.session.scalar(select(Image.status).where(Image.id == uuid.UUID(str(image_id))))


def flask(app_env, *args, timeout=120):
    command = [os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", *args]
    result = subprocess.run(
        command,
        cwd=BASE_DIR,
        env={**os.environ, **app_env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_upload_succeeds_while_redis_is_down_and_is_processed_after(
    app_env, own_redis, team_a, upload, client
):
    server, url = own_redis
    env = {**app_env, "REDIS_URL": url}
    app = create_app(make_config(env))
    server.stop()
    api = app.test_client()
    response = api.post(
        "/api/v1/images",
        data={"file": (samples_file(1), "during-outage.jpg")},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    image = response.json["items"][0]
    assert image["status"] == "pending"
    assert (
        api.get(
            f"/api/v1/images/{image['id']}/file?variant=thumbnail", headers=team_a.headers()
        ).status_code
        == 200
    )

    server.start()  # Redis is back, empty: the job that could not be queued is nowhere
    assert flask(env, "reconcile", "--older-than", "0").strip().endswith("1 jobs queued again")
    flask(env, "worker", "--burst")
    assert image_status(app, image["id"]) == "ready"
    assert flask(env, "reconcile", "--older-than", "0").strip().endswith("0 jobs queued again")


def test_reconcile_leaves_images_with_a_live_job_alone(app, runner, team_a, upload):
    image = upload(team_a, [(samples.jpeg(2), "queued.jpg")]).json["items"][0]
    with app.app_context():
        before = get_queue().job_ids
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.output.strip().splitlines()[-1] == "0 jobs queued again"
    with app.app_context():
        assert get_queue().job_ids == before == [f"process-image-{image['id']}"]


def test_reconcile_ignores_images_younger_than_the_threshold(app, runner, team_a, upload):
    upload(team_a, [(samples.jpeg(3), "young.jpg")])
    with app.app_context():
        get_queue().empty()  # as if Redis had lost the job
    result = runner.invoke(args=["reconcile", "--older-than", "3600"])
    assert result.output.strip().splitlines()[-1] == "0 jobs queued again"
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.output.strip().splitlines()[-1] == "1 jobs queued again"


def _failed_for_good(queue, job_id: str) -> None:
    """What RQ leaves when a job's worker died on every attempt (killed for memory, say): the
    job in the failed registry, its work never marked failed, since it never got that far."""
    from rq.job import Job, JobStatus

    job = Job.fetch(job_id, connection=queue.connection)
    queue.remove(job)
    job.set_status(JobStatus.FAILED)
    queue.failed_job_registry.add(job, ttl=3600, exc_string="Work-horse terminated unexpectedly")


def test_an_image_whose_worker_died_on_every_attempt_ends_in_error_not_queued_forever(
    app, client, runner, team_a, upload, run_jobs
):
    image = upload(team_a, [(samples.jpeg(4), "poison.jpg")]).json["items"][0]
    with app.app_context(), unscoped():
        db.session.get(Image, uuid.UUID(image["id"])).status = "processing"
        db.session.commit()
        _failed_for_good(get_queue(), process_job_id(image["id"]))
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.output.strip().splitlines()[-1] == "0 jobs queued again"
    answer = client.get(f"/api/v1/images/{image['id']}", headers=team_a.headers()).json
    assert answer["status"] == "error" and answer["error"] == reconcile.GAVE_UP
    with app.app_context():
        assert get_queue().job_ids == []
    # Once the cause is fixed, a person retries it as any image in error.
    retried = client.post(f"/api/v1/images/{image['id']}/retry", headers=team_a.headers())
    assert retried.status_code == 202
    run_jobs()
    assert image_status(app, image["id"]) == "ready"


def test_an_import_item_whose_worker_died_on_every_attempt_ends_failed(app, client, runner, team_a):
    from app.queue import import_job_id

    batch = client.post(
        "/api/v1/imports", json={"urls": ["https://example.com/a.jpg"]}, headers=team_a.headers()
    ).json
    with app.app_context():
        _failed_for_good(get_import_queue(), import_job_id(batch["id"], 0))
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.output.strip().splitlines()[-1] == "0 jobs queued again"
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert (state["status"], state["failed"]) == ("done", 1)
    assert state["items"][0]["error"] == reconcile.GAVE_UP
    with app.app_context():
        assert import_job_id(batch["id"], 0) not in get_import_queue().job_ids


def test_every_worker_keeps_one_reconcile_sweep_scheduled(app, app_env, run_worker_process):
    run_worker_process()
    run_worker_process()
    with app.app_context():
        scheduled = get_queue().scheduled_job_registry.get_job_ids()
    assert len([j for j in scheduled if j.startswith("reconcile-")]) == 1


def test_the_periodic_sweep_requeues_stuck_images_and_schedules_the_next(
    app, team_a, upload, run_jobs
):
    from app.jobs import reconcile

    image = upload(team_a, [(samples.jpeg(4), "stuck.jpg")]).json["items"][0]
    with app.app_context():
        get_queue().empty()
        app.config["RECONCILE_AFTER_SECONDS"] = 0
        assert reconcile() == 1
        scheduled = get_queue().scheduled_job_registry.get_job_ids()
    assert any(j.startswith("reconcile-") for j in scheduled)
    run_jobs()
    assert image_status(app, image["id"]) == "ready"


def storage_sweeps(app) -> list:
    with app.app_context():
        return [job for job in get_import_queue().jobs if job.func_name == "app.jobs.sweep_storage"]


def test_once_a_day_the_sweep_removes_what_a_killed_upload_left(
    app, runner, run_jobs, instance_path, team_a
):
    root = instance_path / "storage"
    images = root / "teams" / str(team_a.team.id) / "images"
    keys = [f"teams/{team_a.team.id}/images/{uuid.uuid4()}/original" for _ in range(2)]
    with writers_mid_save("local", {"STORAGE_ROOT": str(root)}, keys) as (first, second):
        wait_until(lambda: len(list(images.glob("*/.tmp-*"))) == 2, 30, "no upload began")
        killed(first)  # as gunicorn kills a web worker past its timeout, mid-upload

        runner.invoke(args=["reconcile"])
        # Walking a large store takes minutes: a job of its own, behind uploads.
        assert len(storage_sweeps(app)) == 1
        assert len(list(images.glob("*/.tmp-*"))) == 2
        run_jobs()

        assert [p.name for p in images.iterdir()] == [keys[1].split("/")[-2]]
        killed(second)
        runner.invoke(args=["reconcile"])
        assert storage_sweeps(app) == []  # walking the store waits a day
        with app.app_context():
            gate = f"likeness:{app.config['QUEUE_NAME']}:storage-swept"
            assert 23 * 3600 < redis_connection.client.ttl(gate) <= 24 * 3600
            redis_connection.client.delete(gate)  # the day has passed

        runner.invoke(args=["reconcile"])
        run_jobs()

        assert not images.exists()
        check_invariants(app, [team_a])


def test_the_daily_sweep_removes_objects_no_row_names(app, runner, instance_path, team_a, upload):
    live = upload(team_a, [(samples.jpeg(1), "kept.jpg")]).json["items"][0]
    team = f"teams/{team_a.team.id}"
    orphans = [  # as writers killed between their save and their commit leave them
        f"{team}/images/{uuid.uuid4()}/original",  # an upload
        f"{team}/images/{uuid.uuid4()}/thumbnail.webp",
        f"{team}/indexes/color/v7/index.ann",  # an index build
        f"{team}/uploads/{uuid.uuid4()}/original",  # a direct upload whose row went
    ]
    kept = [
        f"teams/{uuid.uuid4()}/images/{uuid.uuid4()}/original",  # another deployment's team
        f"{team}/notes/readme.txt",  # a layout the application does not write
        f"{team}/images/not-an-id/original",
    ]
    fresh = f"{team}/images/{uuid.uuid4()}/original"  # its row may still be on its way
    root = instance_path / "storage"
    with app.app_context():
        for key in orphans + kept + [fresh]:
            storage().save(key, io.BytesIO(b"bytes"), "application/octet-stream")
        two_days_ago = time.time() - 2 * 24 * 3600
        for path in root.rglob("*"):
            if path.is_file() and path.relative_to(root).as_posix() != fresh:
                os.utime(path, (two_days_ago, two_days_ago))
        before = stored_keys(app)

        assert reconcile.sweep_storage() == len(orphans)

        assert stored_keys(app) == before - set(orphans)
        assert reconcile.sweep_storage() == 0
    # The kept image still has every file, and the emptied folders are gone.
    assert not (root / team / "uploads").exists() and not (root / team / "indexes").exists()
    for key in kept + [fresh]:
        with app.app_context():
            storage().delete(key)
    check_invariants(app, [team_a])
    assert live["id"] in {p.name for p in (root / team / "images").iterdir()}


def test_the_orphan_sweep_lists_an_s3_bucket(app, app_env, team_a, moto_endpoint, s3_bucket):
    on_s3 = create_app(
        make_config(app_env, STORAGE_BACKEND="s3", **s3_config(moto_endpoint, s3_bucket))
    )
    client = on_s3.test_client()
    live = client.post(
        "/api/v1/images",
        data={"file": (samples_file(2), "kept.jpg")},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    ).json["items"][0]
    orphan = f"teams/{team_a.team.id}/images/{uuid.uuid4()}/original"
    with on_s3.app_context():
        storage().save(orphan, io.BytesIO(b"bytes"), "image/jpeg")
        # moto dates every object now: an age of "any" lets the sweep judge them all.
        assert reconcile.remove_orphaned_objects(older_than=-60) == 1
        assert not storage().exists(orphan)
        prefix = f"teams/{team_a.team.id}/images/{live['id']}/"
        left = sorted(found.key for found in storage().list_objects(prefix))
    assert left == [f"{prefix}original", f"{prefix}thumbnail.webp"]  # the image keeps its files
    check_invariants(on_s3, [team_a])


def test_a_sweep_that_breaks_otherwise_waits_a_day(app, monkeypatch):
    with app.app_context():
        assert reconcile.request_storage_sweep()
        broken = RuntimeError("a sweep past its job's timeout")
        monkeypatch.setattr(type(storage()), "remove_abandoned", lambda self, older: _raise(broken))
        with pytest.raises(RuntimeError):
            reconcile.sweep_storage()
        # Not at every sweep, each as long as the one that broke: tomorrow.
        gate = f"likeness:{app.config['QUEUE_NAME']}:storage-swept"
        assert redis_connection.client.ttl(gate) > 23 * 3600
        assert not reconcile.request_storage_sweep()


def _raise(exc):
    raise exc


def test_a_store_that_fails_the_daily_sweep_is_swept_at_the_next(app, app_env, caplog):
    from tests.s3server import FailingStore

    with FailingStore("503") as store:
        failing = create_app(
            make_config(
                app_env, STORAGE_BACKEND="s3", **s3_config(store.endpoint, "b", S3_MAX_ATTEMPTS=1)
            )
        )
        with failing.app_context():
            assert reconcile.request_storage_sweep()
            assert reconcile.sweep_storage() == 0  # no exception: the job ends
            # The failure does not count as the day's sweep: the next reconcile asks again.
            assert reconcile.request_storage_sweep()
            assert reconcile.sweep_storage() == 0
        assert [method for method, _ in store.requests] == ["GET", "GET"]
    assert "could not be swept for abandoned writes" in caplog.text


def original_path(app, instance_path, image):
    with app.app_context():
        return instance_path / "storage" / db.session.get(Image, uuid.UUID(image["id"])).storage_key


def failed_image(app, instance_path, upload, run_jobs, team, seed):
    """An image whose original vanished before processing (a permanent failure), and the
    bytes to put back."""
    image = upload(team, [(samples.jpeg(seed), f"broken-{seed}.jpg")]).json["items"][0]
    path = original_path(app, instance_path, image)
    saved = path.read_bytes()
    path.unlink()
    run_jobs()
    return image, path, saved


def test_retry_reruns_an_image_in_error(app, client, team_a, upload, run_jobs, instance_path):
    image, path, saved = failed_image(app, instance_path, upload, run_jobs, team_a, 5)
    body = client.get(f"/api/v1/images/{image['id']}", headers=team_a.headers()).json
    assert body["status"] == "error" and "missing" in body["error"]

    refused = client.post(
        f"/api/v1/images/{image['id']}/retry", headers=team_a.headers(team_a.read_key)
    )
    assert refused.status_code == 403
    path.write_bytes(saved)
    retried = client.post(f"/api/v1/images/{image['id']}/retry", headers=team_a.headers())
    assert retried.status_code == 202 and retried.json["status"] == "pending"
    run_jobs()
    assert image_status(app, image["id"]) == "ready"
    again = client.post(f"/api/v1/images/{image['id']}/retry", headers=team_a.headers())
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"


def test_gallery_retry_button(app, team_a, upload, run_jobs, instance_path, person):
    image, path, saved = failed_image(app, instance_path, upload, run_jobs, team_a, 6)
    viewer = person(team_a, "viewer")
    assert b"Retry" not in viewer.client.get("/").data
    member = person(team_a, "member")
    assert b"Retry" in member.client.get("/").data
    assert viewer.client.post(f"/images/{image['id']}/retry").status_code == 403
    path.write_bytes(saved)
    badge = member.client.post(f"/images/{image['id']}/retry", headers={"HX-Request": "true"})
    assert badge.status_code == 200 and b'data-status="pending"' in badge.data
    run_jobs()
    assert image_status(app, image["id"]) == "ready"


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("config_overrides", [{"JOB_TIMEOUT_SECONDS": 5}], ids=["timeout5"])
def test_worker_killed_mid_job_still_ends_ready(
    app, team_a, team_b, upload, instance_path, start_worker
):
    """SIGKILL the worker while it holds the job; RQ declares the job abandoned once its
    registration lapses (the job timeout plus three worker heartbeats: 5 + 3 x 1 s here), the
    sweep of another worker retries it, and it completes."""
    settings = {"JOB_TIMEOUT_SECONDS": 5, "WORKER_HEARTBEAT_SECONDS": 1}
    image = upload(team_a, [(samples.jpeg(7), "victim.jpg")]).json["items"][0]
    path = original_path(app, instance_path, image)
    saved = path.read_bytes()
    path.unlink()
    os.mkfifo(path)  # reading the original blocks: the job is stuck mid-way, deterministically

    victim = start_worker(**settings)
    try:
        wait_until(
            lambda: image_status(app, image["id"]) == "processing",
            30,
            "the worker never started the job",
        )
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    path.unlink()
    path.write_bytes(saved)
    assert image_status(app, image["id"]) == "processing"

    # Another worker, sweeping every second: the sweep hands the abandoned job back to RQ,
    # which retries it after its first backoff (10 s). All well before RQ's own allowance (the
    # timeout plus 60 s) would even have run out.
    rescuer = start_worker(**settings, RECONCILE_INTERVAL_SECONDS=1, RECONCILE_AFTER_SECONDS=0)
    wait_until(
        lambda: image_status(app, image["id"]) == "ready", 40, "the image never became ready"
    )
    with app.app_context(), unscoped():
        embedders = db.session.scalars(
            select(Embedding.embedder).where(Embedding.image_id == uuid.UUID(image["id"]))
        ).all()
    assert sorted(embedders) == ["color", "phash"]  # one set, not two
    wait_until(lambda: all_indexed(app, team_a), 20, "the index was never built")
    stop_gracefully(rescuer)
    check_invariants(app, [team_a, team_b])


def stop_gracefully(worker) -> None:
    """SIGTERM, as a platform stops a worker: it finishes the job it runs (an index build
    saves its files, then publishes its row) and exits. Invariants are checked after that, not
    while a build the sweep started may be between its files and its row."""
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


def all_indexed(app, team) -> bool:
    """Whether the team's colour index holds every embedding (no delta left)."""
    with app.app_context():
        build = indexing.serving_build(team.id, "color")
        return build is not None and indexing.delta_size(team.id, "color") == 0


# A job that fails must not take the worker down with it, nor the jobs of other teams.


def leave_a_failed_flush():
    """A job that fails in the middle of a flush and leaves its session as it is."""
    from app.models import Tag

    db.session.add(Tag(team_id=None, name=None))  # NOT NULL twice: the flush fails
    db.session.flush()


def test_a_job_that_fails_mid_flush_does_not_poison_the_next_job(app, team_b, upload, run_jobs):
    with app.app_context():
        get_queue().enqueue("tests.test_reliable_jobs.leave_a_failed_flush")
    image = upload(team_b, [(samples.jpeg(40), "after.jpg")]).json["items"][0]
    run_jobs()  # one worker, both jobs, in this order
    assert image_status(app, image["id"]) == "ready"


@contextlib.contextmanager
def deleted_by_its_owner_when_the_worker_writes(client, team, image_id, status):
    """DELETE /api/v1/images/<id> lands at the very moment the worker flushes `status` to the
    image: the race of an upload deleted at once, made deterministic."""
    target = uuid.UUID(image_id)
    deleted = []

    def delete_now(session, flush_context, instances):
        for obj in session.dirty:
            if isinstance(obj, Image) and obj.id == target and obj.status == status and not deleted:
                # From another thread, as another process would: its own request, its own session.
                request = threading.Thread(target=delete)
                request.start()
                request.join()

    def delete():
        response = client.delete(f"/api/v1/images/{image_id}", headers=team.headers())
        deleted.append(response.status_code)

    event.listen(Session, "before_flush", delete_now)
    try:
        yield deleted
    finally:
        event.remove(Session, "before_flush", delete_now)


@pytest.mark.parametrize("moment", ["processing", "ready"])
def test_an_image_deleted_while_its_job_runs_is_a_quiet_no_op(
    app, client, team_a, team_b, upload, run_jobs, instance_path, moment
):
    doomed = upload(team_a, [(samples.jpeg(41), "doomed.jpg")]).json["items"][0]
    other = upload(team_b, [(samples.jpeg(42), "other-team.jpg")]).json["items"][0]
    with deleted_by_its_owner_when_the_worker_writes(client, team_a, doomed["id"], moment) as done:
        run_jobs()
    assert done == [204]
    assert image_status(app, doomed["id"]) is None
    # Nothing of the deleted image is left in storage, the preview the job wrote included.
    folder = instance_path / "storage" / "teams" / str(team_a.id) / "images" / doomed["id"]
    assert not folder.exists() or [p for p in folder.rglob("*") if p.is_file()] == []
    # Its job ended quietly: not failed, and no retry is waiting.
    job_id = process_job_id(doomed["id"])
    with app.app_context():
        assert job_id not in get_queue().failed_job_registry.get_job_ids()
        assert job_id not in get_queue().scheduled_job_registry.get_job_ids()
    # The next upload, of another team, is processed by the same worker.
    assert image_status(app, other["id"]) == "ready"


def test_a_bad_last_file_in_a_multi_file_upload_stores_and_queues_nothing(
    app, team_a, upload, instance_path
):
    files = [(samples.jpeg(50 + n), f"good-{n}.jpg") for n in range(6)]
    response = upload(team_a, [*files, (b"this is not an image", "bad.jpg")])
    assert response.status_code == 415 and response.json["error"]["code"]
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(Image)) == 0
        assert get_queue().job_ids == []
    storage = instance_path / "storage"
    assert not storage.exists() or [p for p in storage.rglob("*") if p.is_file()] == []


# The reconcile sweep keeps running, whatever happens to Redis and to the workers.

FAST_SWEEP = {
    "WORKER_HEARTBEAT_SECONDS": 1,
    "RECONCILE_INTERVAL_SECONDS": 2,
    "RECONCILE_AFTER_SECONDS": 1,
}
# Every pending image is swept at the next interval once it is older than RECONCILE_AFTER;
# a killed worker's scheduling passes to another within three heartbeats. Processing a small
# JPEG takes well under a second; the rest is slack for a loaded machine.
SWEPT_WITHIN = 2 + 1 + 3 * 1 + 10


def upload_with(api, team, seed):
    response = api.post(
        "/api/v1/images",
        data={"file": (samples_file(seed), f"{seed}.jpg")},
        headers=team.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    return response.json["items"][0]["id"]


def all_ready(app, image_ids):
    return all(image_status(app, image_id) == "ready" for image_id in image_ids)


@pytest.mark.slow
@pytest.mark.faults
def test_the_sweep_survives_redis_restarting_without_persistence(
    app_env, own_redis, team_a, team_b, start_worker
):
    from tests.test_imports import Origin

    server, url = own_redis
    env = {**app_env, "REDIS_URL": url}
    app = create_app(make_config(env, IMPORT_ALLOW_NETWORKS=["127.0.0.1/32"], **FAST_SWEEP))
    api = app.test_client()
    origin = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    worker = start_worker(REDIS_URL=url, IMPORT_ALLOW_NETWORKS="127.0.0.1/32", **FAST_SWEEP)
    try:
        before = [upload_with(api, team_a, seed) for seed in (60, 61)]
        wait_until(lambda: all_ready(app, before), 30, "the worker never processed uploads")

        server.stop()
        during = [upload_with(api, team_a, seed) for seed in range(62, 70)]
        batch = api.post(
            "/api/v1/imports",
            json={"urls": [f"http://127.0.0.1:{origin.server_port}/img/70.jpg"]},
            headers=team_a.headers(),
        )
        assert batch.status_code == 202
        time.sleep(3)  # an outage long enough for the worker to notice
        server.start()  # empty: every job and every scheduled sweep is gone

        def recovered():
            state = api.get(f"/api/v1/imports/{batch.json['id']}", headers=team_a.headers())
            return all_ready(app, during) and state.json["status"] == "done"

        wait_until(recovered, SWEPT_WITHIN, "work lost with Redis was never swept up")
        assert worker.poll() is None, "the worker died with Redis"
        wait_until(lambda: all_indexed(app, team_a), 20, "the index was never built")
        stop_gracefully(worker)
        check_invariants(app, [team_a, team_b], client=api)
    finally:
        origin.shutdown()


@pytest.mark.slow
@pytest.mark.faults
def test_a_worker_outlives_redis_dying_under_a_job(
    app_env, own_redis, team_a, team_b, instance_path, start_worker
):
    server, url = own_redis
    env = {**app_env, "REDIS_URL": url}
    app = create_app(make_config(env, **FAST_SWEEP))
    api = app.test_client()
    image_id = upload_with(api, team_a, 90)
    path = original_path(app, instance_path, {"id": image_id})
    saved = path.read_bytes()
    path.unlink()
    os.mkfifo(path)  # reading the original blocks: the job waits for us, deterministically
    worker = start_worker(REDIS_URL=url, **FAST_SWEEP)
    wait_until(lambda: image_status(app, image_id) == "processing", 30, "the job never started")

    server.stop()
    with open(path, "wb") as fifo:
        fifo.write(saved)  # the job goes on and ends, and RQ cannot record how it ended
    path.unlink()
    path.write_bytes(saved)
    time.sleep(3)  # Redis stays away for a few heartbeats
    server.start()  # empty: whatever RQ knew of the job is gone, only the sweep is left

    later = upload_with(api, team_a, 91)
    ids = [image_id, later]
    wait_until(lambda: all_ready(app, ids), SWEPT_WITHIN, "no worker after Redis came back")
    assert worker.poll() is None, "the worker died with Redis"
    wait_until(lambda: all_indexed(app, team_a), 20, "the index was never built")
    stop_gracefully(worker)
    check_invariants(app, [team_a, team_b], client=api)


@pytest.mark.slow
@pytest.mark.faults
def test_a_killed_worker_orphans_nothing_and_another_takes_over_the_sweep(
    app, app_env, team_a, team_b, upload, start_worker
):
    first = start_worker(**FAST_SWEEP)
    image = upload(team_a, [(samples.jpeg(80), "first.jpg")]).json["items"][0]
    wait_until(lambda: image_status(app, image["id"]) == "ready", 30, "the worker never started")

    os.kill(first.pid, signal.SIGKILL)  # the worker alone, by its pid
    first.wait(timeout=10)
    time.sleep(0.5)  # what it leaves behind would be reparented by now
    assert process_group_members(first.pid) == [], "the killed worker left processes running"

    images = [upload(team_a, [(samples.jpeg(seed), f"{seed}.jpg")]) for seed in (81, 82, 83)]
    image_ids = [response.json["items"][0]["id"] for response in images]
    with app.app_context():
        get_queue().empty()  # their jobs are lost: only the sweep can find them
    second = start_worker(**FAST_SWEEP)
    wait_until(lambda: all_ready(app, image_ids), SWEPT_WITHIN, "the sweep never ran again")
    wait_until(lambda: all_indexed(app, team_a), 20, "the index was never built")
    stop_gracefully(second)
    remove_killed_builds_files(app)  # the first may have died mid-build
    check_invariants(app, [team_a, team_b])
