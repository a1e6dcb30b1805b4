"""Faults with real parts: a job delivered twice, a database connection cut mid-request, a store
that never answers, a full disk, racing rebuilds, readers during a build, a key
revoked under load. Each scenario ends with the shared invariants (tests/invariants.py).

The scenarios that start processes and wait on them are marked `faults`: `make faults`.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import subprocess
import threading
import time
import uuid

import psycopg
import pytest
import urllib3
from sqlalchemy import event, func, select
from werkzeug.serving import make_server

from app import create_app
from app.extensions import db
from app.models import Embedding, Image, IndexBuild, Team
from app.queue import get_queue, request_index_build
from app.services import indexing, keys, processing
from app.tenancy import unscoped
from tests import samples
from tests.conftest import TEST_DATABASE_URL, make_config, wait_until
from tests.invariants import check_invariants
from tests.s3server import FailingStore, s3_config
from tests.test_reliable_jobs import (
    FAST_SWEEP,
    SWEPT_WITHIN,
    all_indexed,
    all_ready,
    image_status,
    original_path,
    upload_with,
)


def upload_ids(upload, team, count, seed=0, size=(96, 72)):
    files = [(samples.jpeg(seed + i, size=size), f"{seed + i}.jpg") for i in range(count)]
    response = upload(team, files)
    assert response.status_code == 201, response.json
    return [item["id"] for item in response.json["items"]]


def embedding_rows(app, image_id):
    with app.app_context(), unscoped():
        db.session.expire_all()
        rows = db.session.execute(
            select(Embedding.id, Embedding.embedder).where(
                Embedding.image_id == uuid.UUID(image_id)
            )
        ).all()
    return sorted((embedder, row_id) for row_id, embedder in rows)


@contextlib.contextmanager
def served(app):
    """The app on a threaded HTTP server on 127.0.0.1, as several request threads see it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


# -- The same job delivered twice ----------------------------------------------------------


def test_a_job_delivered_again_after_it_ran_changes_nothing(app, team_a, team_b, upload, run_jobs):
    image_id, other = upload_ids(upload, team_a, 2)
    run_jobs()
    before = embedding_rows(app, image_id)
    assert [embedder for embedder, _ in before] == ["color", "phash"]
    with app.app_context():
        builds = db.session.scalar(select(func.count()).select_from(IndexBuild))
        # A second delivery of the very same job, under another id (RQ would refuse the same).
        get_queue().enqueue("app.jobs.process_image", image_id, job_id=f"again-{image_id}")
    run_jobs()
    assert embedding_rows(app, image_id) == before  # not embedded a second time
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IndexBuild)) == builds
    check_invariants(app, [team_a, team_b])


def test_a_job_delivered_to_two_workers_at_once_leaves_one_set_of_embeddings(
    app, team_a, team_b, upload, run_jobs
):
    (image_id,) = upload_ids(upload, team_a, 1)
    with app.app_context():
        get_queue().empty()
    start = threading.Barrier(2)
    outcomes = []

    def deliver():
        with app.app_context():
            start.wait()
            outcomes.append(processing.process_image(uuid.UUID(image_id)))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["ready", "ready"]
    assert [embedder for embedder, _ in embedding_rows(app, image_id)] == ["color", "phash"]
    run_jobs()  # the index builds the two deliveries asked for
    check_invariants(app, [team_a, team_b])


# -- PostgreSQL connection dropped mid-request ----------------------------------------------


@contextlib.contextmanager
def backend_terminated_at(app, marker: str):
    """Terminate, from another connection, the PostgreSQL backend of the first statement that
    contains `marker`, just before that statement is sent: the connection dies mid-request."""
    with app.app_context():
        engine = db.engine
    fired = []

    def terminate(conn, cursor, statement, parameters, context, executemany):
        if fired or marker not in statement:
            return
        pid = cursor.connection.info.backend_pid
        fired.append(pid)
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    event.listen(engine, "before_cursor_execute", terminate)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", terminate)


needs_postgres = pytest.mark.skipif(
    not (TEST_DATABASE_URL or "").startswith("postgresql"),
    reason="terminating a backend needs PostgreSQL (TEST_DATABASE_URL); SQLite has no server",
)


@needs_postgres
def test_a_connection_dropped_mid_request_is_a_503_and_the_next_request_works(
    app, client, team_a, team_b, upload, run_jobs, person
):
    upload_ids(upload, team_a, 2)
    run_jobs()
    with backend_terminated_at(app, "FROM image") as fired:
        response = client.get("/api/v1/images", headers=team_a.headers())
    assert fired, "no statement was interrupted"
    assert response.status_code == 503, response.data
    assert response.json["error"]["code"] == "unavailable"
    assert "Retry-After" in response.headers
    again = client.get("/api/v1/images", headers=team_a.headers())
    assert again.status_code == 200 and len(again.json["items"]) == 2

    member = person(team_a, "member")
    with backend_terminated_at(app, "FROM image") as fired:
        page = member.client.get("/")
    assert fired and page.status_code == 503
    assert page.mimetype == "text/html" and b"try again" in page.data.lower()
    assert member.client.get("/").status_code == 200
    check_invariants(app, [team_a, team_b])


@needs_postgres
def test_a_connection_dropped_during_an_upload_stores_nothing(
    app, client, team_a, team_b, upload, run_jobs
):
    with backend_terminated_at(app, "INSERT INTO image") as fired:
        response = upload(team_a, [(samples.jpeg(5), "cut.jpg")])
    assert fired and response.status_code == 503, response.data
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(Image)) == 0
    check_invariants(app, [team_a, team_b])
    assert upload(team_a, [(samples.jpeg(5), "cut.jpg")]).status_code == 201
    run_jobs()
    check_invariants(app, [team_a, team_b])


# -- S3 that never answers --------------------------------------------------------------------


def test_a_store_that_never_answers_times_out_with_a_clear_503_and_no_row(
    app_env, app, team_a, team_b
):
    with FailingStore("stall") as store:
        stalled = create_app(
            make_config(
                app_env,
                STORAGE_BACKEND="s3",
                **s3_config(store.endpoint, "bucket", S3_MAX_ATTEMPTS=1, S3_READ_TIMEOUT=1),
            )
        )
        response = stalled.test_client().post(
            "/api/v1/images",
            data={"file": (io.BytesIO(samples.jpeg(6)), "a.jpg")},
            headers=team_a.headers(),
            content_type="multipart/form-data",
        )
        assert response.status_code == 503
        assert response.json["error"]["code"] == "unavailable"
        assert "nothing was saved" in response.json["error"]["message"]
        assert [method for method, _ in store.requests] == ["PUT"]
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(Image)) == 0
        assert get_queue().job_ids == []
    check_invariants(app, [team_a, team_b])


# -- Local disk full ----------------------------------------------------------------------------


def mount_small_disk(kind: str, target, scratch) -> str | None:
    """Mount a 2 MB file system on `target`: a tmpfs, or an ext2 image on a loop device (where
    a new directory takes a block too). Returns why it failed, or None."""
    if kind == "tmpfs":
        commands = [["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)]]
    else:
        image = scratch / "small-disk.img"
        with open(image, "wb") as out:
            out.truncate(2 * 1024 * 1024)
        commands = [
            ["mkfs.ext2", "-q", "-F", str(image)],
            ["mount", "-o", "loop", str(image), str(target)],
        ]
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError as exc:
            return str(exc)
        if done.returncode != 0:
            return done.stderr.strip()
    return None


@pytest.fixture(params=["tmpfs", "loop"])
def small_disk(request, instance_path, tmp_path):
    """A 2 MB file system mounted as the storage folder (needs root; skipped otherwise)."""
    storage = instance_path / "storage"
    storage.mkdir(exist_ok=True)
    if failure := mount_small_disk(request.param, storage, tmp_path):
        pytest.skip(f"cannot mount a small {request.param} file system: {failure}")
    try:
        yield storage
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=False)


def test_a_full_disk_is_a_clear_error_with_nothing_half_written(
    app, client, team_a, team_b, upload, run_jobs, small_disk
):
    kept = upload_ids(upload, team_a, 1)
    run_jobs()
    filler = small_disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 4096, 1):  # to the last byte the disk takes
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, b"\0" * chunk)
    finally:
        os.close(descriptor)

    response = upload(team_a, [(samples.jpeg(7, size=(800, 600)), "big.jpg")])
    assert response.status_code == 503, response.data
    assert response.json["error"]["code"] == "unavailable"
    assert "nothing was saved" in response.json["error"]["message"]
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(Image)) == 1

    filler.unlink()
    check_invariants(app, [team_a, team_b])
    later = upload_ids(upload, team_a, 1, seed=8, size=(800, 600))
    run_jobs()
    listed = client.get("/api/v1/images", headers=team_a.headers()).json["items"]
    assert {item["id"] for item in listed} == set(kept + later)
    check_invariants(app, [team_a, team_b])


# -- Concurrency ------------------------------------------------------------------------------


def test_two_rebuild_triggers_for_one_team_make_one_build(
    app, team_a, team_b, upload, run_jobs, monkeypatch
):
    upload_ids(upload, team_a, 3)
    run_jobs()
    monkeypatch.setattr("app.queue.clock", lambda: 1_900_000_000.0)  # one fresh window
    more = upload_ids(upload, team_a, 2, seed=30)
    with app.app_context():
        get_queue().empty()
        builds_before = color_builds()
        for image_id in more:  # each new embedding is a trigger
            assert processing.process_image(uuid.UUID(image_id)) == "ready"
        assert request_index_build(team_a.id, "color")  # and two more, from elsewhere
        assert request_index_build(team_a.id, "color")
        waiting = [
            job
            for job in get_queue().jobs
            if job.func_name == "app.jobs.build_index" and job.args[1] == "color"
        ]
    assert len(waiting) == 1
    run_jobs()
    with app.app_context():
        builds = color_builds()
        assert len(builds) == len(builds_before) + 1
        assert builds[-1] == 5  # the one build holds all five
    check_invariants(app, [team_a, team_b])


def color_builds() -> list[int]:
    """Item counts of the colour index builds of every team, oldest first."""
    return list(
        db.session.scalars(
            select(IndexBuild.item_count)
            .where(IndexBuild.embedder == "color")
            .order_by(IndexBuild.version)
        )
    )


def test_readers_during_a_build_always_see_a_whole_index(
    app, team_a, team_b, upload, run_jobs, monkeypatch
):
    """While a build of a bigger index runs, /similar answers from the old index plus the exact
    scan of the rest: every answer holds every ready image, never part of the new index."""
    from plugins.index_annoy import AnnoyIndex

    ids = upload_ids(upload, team_a, 4)
    run_jobs()
    ids += upload_ids(upload, team_a, 8, seed=20)
    with app.app_context():
        for image_id in ids[4:]:
            assert processing.process_image(uuid.UUID(image_id)) == "ready"
        get_queue().empty()
    building, finish = threading.Event(), threading.Event()
    build = AnnoyIndex.build

    def slow_build(self, *args):
        building.set()
        assert finish.wait(30)
        return build(self, *args)

    monkeypatch.setattr(AnnoyIndex, "build", slow_build)
    published = {}

    def run_build():
        with app.app_context():
            published["build"] = indexing.build_index(team_a.id, "color")

    builder = threading.Thread(target=run_build)
    builder.start()
    answers = []
    try:
        assert building.wait(30)
        with served(app) as base:

            def read(image_id):
                for _ in range(5):
                    response = urllib3.request(
                        "GET",
                        f"{base}/api/v1/images/{image_id}/similar?k=100&embedder=color",
                        headers=team_a.headers(),
                        timeout=30,
                    )
                    answers.append((image_id, response.status, response.json()))

            readers = [threading.Thread(target=read, args=(i,)) for i in ids[:4]]
            for reader in readers:
                reader.start()
            finish.set()  # the build publishes while the readers read
            for reader in readers:
                reader.join(60)
    finally:
        finish.set()
        builder.join(60)
    assert published["build"] is not None and published["build"].item_count == 12
    assert len(answers) == 20
    for image_id, status, body in answers:
        assert status == 200
        assert {m["image"]["id"] for m in body["items"]} == set(ids) - {image_id}
    check_invariants(app, [team_a, team_b])


def test_a_key_revoked_under_load_fails_from_the_next_request_on(app, app_env, team_a, team_b):
    """Requests in flight with a key when another web process revokes it: those already
    accepted finish; every request that starts after the revocation is refused."""
    other_process = create_app(make_config(app_env))  # another web process, its own pool
    with app.app_context(), unscoped():
        key_id = str(keys.authenticate_key(team_a.key).id)
    with served(app) as base:
        host, port = base.removeprefix("http://").split(":")
        data = samples.jpeg(10)
        boundary = "faultsboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        in_flight = []
        for _ in range(3):  # headers sent, half the body on its way
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            connection.putrequest("POST", "/api/v1/images")
            connection.putheader("X-API-Key", team_a.key)
            connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders()
            connection.send(body[: len(body) // 2])
            in_flight.append(connection)
        listing = urllib3.request("GET", f"{base}/api/v1/images", headers=team_a.headers())
        assert listing.status == 200

        revoked = other_process.test_client().delete(
            f"/api/v1/keys/{key_id}", headers=team_a.headers()
        )
        assert revoked.status_code == 204

        statuses = []
        for connection in in_flight:
            connection.send(body[len(body) // 2 :])
            statuses.append(connection.getresponse().status)
            connection.close()
        assert set(statuses) <= {201, 401}, statuses  # never a 500
        for path in ("/api/v1/images", "/api/v1/team"):
            after = urllib3.request("GET", f"{base}{path}", headers=team_a.headers())
            assert after.status == 401, path
    with app.app_context():  # the invariants ask with a key of team A that still works
        team_a.key = keys.create_key(db.session.get(Team, team_a.id), "after", ["read"])[1]
        db.session.commit()
    check_invariants(app, [team_a, team_b])


# -- Slow: real worker processes and a Redis that goes away (`make faults`) ----------------------


def processing_starts(log_path) -> dict[str, int]:
    """How many times the worker started processing each image, read from its log."""
    starts: dict[str, int] = {}
    for line in log_path.read_text().splitlines():
        match = re.search(r": process image ([0-9a-f-]{36}) \(", line)
        if match:
            starts[match.group(1)] = starts.get(match.group(1), 0) + 1
    return starts


@pytest.mark.faults
@pytest.mark.parametrize("config_overrides", [{"JOB_TIMEOUT_SECONDS": 2}], ids=["timeout2"])
def test_a_job_over_its_timeout_is_stopped_and_retried(
    app, team_a, team_b, upload, instance_path, start_worker
):
    (image_id,) = upload_ids(upload, team_a, 1)
    path = original_path(app, instance_path, {"id": image_id})
    saved = path.read_bytes()
    path.unlink()
    os.mkfifo(path)  # reading the original blocks: the job overruns its 2 s, deterministically
    worker = start_worker(JOB_TIMEOUT_SECONDS=2, WORKER_HEARTBEAT_SECONDS=1)
    wait_until(lambda: image_status(app, image_id) == "processing", 30, "the job never started")
    wait_until(
        lambda: "JobTimeoutException" in worker.log_path.read_text(),
        30,
        "the job was never stopped at its timeout",
    )
    assert worker.poll() is None, "the worker died with its job"
    assert image_status(app, image_id) == "processing"  # not an error: RQ retries it
    path.unlink()
    path.write_bytes(saved)
    # The first retry comes after 10 s (PROCESS_RETRY).
    wait_until(lambda: image_status(app, image_id) == "ready", 40, "the retry never ran")
    assert [embedder for embedder, _ in embedding_rows(app, image_id)] == ["color", "phash"]
    assert processing_starts(worker.log_path)[image_id] == 2  # the overrun and the retry
    wait_until(lambda: all_indexed(app, team_a), 20, "the index was never built")
    check_invariants(app, [team_a, team_b])


@pytest.mark.faults
def test_redis_lost_with_jobs_queued_and_during_uploads_loses_nothing_and_repeats_nothing(
    app_env, own_redis, team_a, team_b, start_worker
):
    """Uploads go on while Redis stops and starts again empty (no persistence), with jobs that
    were queued before it went: the sweep queues every lost image again, each once."""
    server, url = own_redis
    app = create_app(make_config({**app_env, "REDIS_URL": url}, **FAST_SWEEP))
    api = app.test_client()
    queued = [upload_with(api, team_a, seed) for seed in range(100, 104)]  # no worker yet
    with app.app_context():
        assert len(get_queue().job_ids) == 4

    stopped, restart = threading.Event(), threading.Event()
    during = []

    def keep_uploading():
        for seed in range(104, 112):
            if seed == 106:
                restart.wait(30)  # two more only once Redis is back
            during.append(upload_with(app.test_client(), team_b, seed))
            if seed == 105:
                stopped.wait(30)

    uploader = threading.Thread(target=keep_uploading)
    uploader.start()
    server.stop()
    stopped.set()
    time.sleep(1)
    server.start()  # empty: the four queued jobs are gone
    restart.set()
    uploader.join(60)
    assert len(during) == 8

    worker = start_worker(REDIS_URL=url, **FAST_SWEEP)
    every = queued + during
    wait_until(lambda: all_ready(app, every), SWEPT_WITHIN + 10, "lost work was never swept up")
    wait_until(lambda: all_indexed(app, team_a) and all_indexed(app, team_b), 20, "no index")
    time.sleep(FAST_SWEEP["RECONCILE_INTERVAL_SECONDS"] + 1)  # one more sweep finds nothing
    starts = processing_starts(worker.log_path)
    assert {image_id: starts.get(image_id) for image_id in every} == dict.fromkeys(every, 1)
    for image_id in every:
        assert [embedder for embedder, _ in embedding_rows(app, image_id)] == ["color", "phash"]
    assert worker.poll() is None
    check_invariants(app, [team_a, team_b], client=api)
