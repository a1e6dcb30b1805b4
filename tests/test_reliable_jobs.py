"""Jobs never lose work: Redis outages, killed workers, retries and the reconcile sweep."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from sqlalchemy import func, select

from app import create_app
from app.embedded_redis import EmbeddedRedis
from app.extensions import db
from app.models import Embedding, Image
from app.queue import get_queue
from app.tenancy import unscoped
from config import BASE_DIR
from tests import samples
from tests.conftest import make_config


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


@pytest.fixture
def own_redis(app_env):
    """A Redis server of this test's own, which the test may stop and start again."""
    directory = tempfile.mkdtemp(prefix="lk-own-", dir="/tmp")
    server = EmbeddedRedis(directory, persist=False)
    url = server.start()
    yield server, url
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


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
@pytest.mark.parametrize("config_overrides", [{"JOB_TIMEOUT_SECONDS": 5}], ids=["timeout5"])
def test_worker_killed_mid_job_still_ends_ready(app, app_env, team_a, upload, instance_path):
    """SIGKILL the worker while it holds the job; RQ declares the job abandoned once its
    heartbeat lapses (the job timeout plus 60 s), the sweep retries it, and it completes."""
    env = {**app_env, "JOB_TIMEOUT_SECONDS": "5"}
    image = upload(team_a, [(samples.jpeg(7), "victim.jpg")]).json["items"][0]
    path = original_path(app, instance_path, image)
    saved = path.read_bytes()
    path.unlink()
    os.mkfifo(path)  # reading the original blocks: the job is stuck mid-way, deterministically

    worker = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", "worker"],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while image_status(app, image["id"]) != "processing":
            assert time.monotonic() < deadline, "the worker never started the job"
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    path.unlink()
    path.write_bytes(saved)
    assert image_status(app, image["id"]) == "processing"

    deadline = time.monotonic() + 150
    while image_status(app, image["id"]) != "ready":
        assert time.monotonic() < deadline, "the image never became ready"
        flask(env, "reconcile", "--older-than", "0")
        flask(env, "worker", "--burst")
        time.sleep(3)
    with app.app_context(), unscoped():
        embedders = db.session.scalars(
            select(Embedding.embedder).where(Embedding.image_id == uuid.UUID(image["id"]))
        ).all()
    assert sorted(embedders) == ["color", "phash"]  # one set, not two


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
