"""When indexes are rebuilt, one build at a time, and an embedder version bump that never
leaves search without an answer."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from app import runtime
from app.extensions import db
from app.jobs import process_image
from app.models import Embedding, IndexBuild, utcnow
from app.queue import get_import_queue, get_queue, request_index_check
from app.runtime import IndexCache
from app.services import indexing
from app.services.reconcile import reconcile
from config import BASE_DIR
from plugins.embed_color import ColorEmbedder
from plugins.index_annoy import AnnoyIndex
from tests import samples
from tests.conftest import wait_until
from tests.invariants import check_invariants
from tests.killed_writers import overtaken_on_first_save


def upload_ids(upload, team, count, seed=0):
    files = [(samples.jpeg(seed + i, size=(96, 72)), f"{i}.jpg") for i in range(count)]
    response = upload(team, files)
    assert response.status_code == 201, response.json
    return [i["id"] for i in response.json["items"]]


def similar(client, team, image_id, k=5, embedder="color"):
    response = client.get(
        f"/api/v1/images/{image_id}/similar?k={k}&embedder={embedder}", headers=team.headers()
    )
    assert response.status_code == 200, response.json
    body = response.json
    return body["index"]["version"], [(m["image"]["id"], m["distance"]) for m in body["items"]]


def waiting_jobs(function: str, embedder: str = "color") -> list:
    """Jobs of one kind for one embedder, waiting in the main queue or scheduled for later."""
    queue = get_queue()
    jobs = queue.jobs + [queue.fetch_job(i) for i in queue.scheduled_job_registry.get_job_ids()]
    return [j for j in jobs if j and j.func_name == function and j.args[1] == embedder]


def run_scheduled_jobs_now() -> None:
    """Queue the jobs scheduled for later at once, as if their time had come."""
    queue = get_queue()
    registry = queue.scheduled_job_registry
    for job_id in registry.get_job_ids():
        registry.remove(job_id)
        queue.enqueue_job(queue.fetch_job(job_id))


def clear_queue() -> None:
    queue = get_queue()
    queue.empty()
    for job_id in queue.scheduled_job_registry.get_job_ids():
        queue.scheduled_job_registry.remove(job_id, delete_job=True)


class TestWhenToRebuild:
    @pytest.fixture
    def config_overrides(self):
        return {
            "INDEX_REBUILD_MIN_DELTA": 3,
            "INDEX_REBUILD_FRACTION": 0.5,
            "INDEX_QUIET_SECONDS": 60,
        }

    @pytest.fixture
    def indexed(self, app, team_a, upload):
        """Four processed images in built indexes, and nothing queued."""
        ids = upload_ids(upload, team_a, 4)
        with app.app_context():
            for image_id in ids:
                assert process_image(image_id) == "ready"
            for embedder in ("color", "phash"):
                assert indexing.build_index(team_a.id, embedder).item_count == 4
            clear_queue()
        return ids

    def test_a_small_delta_waits_for_a_quiet_period(self, app, team_a, upload, run_jobs, indexed):
        (new,) = upload_ids(upload, team_a, 1, seed=50)
        with app.app_context():
            clear_queue()
            process_image(new)
            # Below max(3, 50% of 4): no build, but a check after the quiet period.
            assert waiting_jobs("app.jobs.build_index") == []
            (check,) = waiting_jobs("app.jobs.check_index")
            scheduled_at = get_queue().scheduled_job_registry.get_scheduled_time(check)
            assert scheduled_at >= utcnow() + timedelta(seconds=59)
            run_scheduled_jobs_now()
        run_jobs()  # the check, run early: the new embedding is not a minute old, no build
        with app.app_context():
            assert indexing.serving_build(team_a.id, "color").version == 1
            db.session.execute(
                update(Embedding)
                .where(Embedding.embedder == "color")
                .values(created_at=utcnow() - timedelta(seconds=61))
            )
            db.session.commit()
            assert request_index_check(team_a.id, "color")
            run_scheduled_jobs_now()
        run_jobs()  # quiet for a minute now: built
        with app.app_context():
            build = indexing.serving_build(team_a.id, "color")
            assert build.version == 2 and build.item_count == 5
            assert indexing.check_index(team_a.id, "color") is None  # nothing left to add

    def test_a_delta_at_the_threshold_asks_for_a_build_at_once(self, app, team_a, upload, indexed):
        two, third = upload_ids(upload, team_a, 2, seed=60), upload_ids(upload, team_a, 1, seed=70)
        with app.app_context():
            clear_queue()
            for image_id in two:
                process_image(image_id)
            assert waiting_jobs("app.jobs.build_index") == []
            process_image(third[0])  # 3 = max(3, 50% of 4)
            assert len(waiting_jobs("app.jobs.build_index")) == 1
            process_image(third[0])  # nothing new: no second build
            assert len(waiting_jobs("app.jobs.build_index")) == 1

    def test_status_shows_each_index_and_what_it_lacks(self, app, runner, team_a, upload, indexed):
        (new,) = upload_ids(upload, team_a, 1, seed=80)
        with app.app_context():
            process_image(new)
        result = runner.invoke(args=["index", "status", "--team", team_a.team.slug])
        assert result.exit_code == 0, result.output
        header, *lines = result.output.strip().splitlines()
        assert header.split()[:6] == ["team", "embedder", "index", "embedder", "v.", "items"]
        rows = {line.split()[1]: line.split() for line in lines}
        # team, embedder, index, embedder version, items, delta, to embed, built at, took
        assert rows["color"][:7] == [team_a.team.slug, "color", "v1", "1", "4", "1", "0"]
        assert rows["color"][-1].endswith("s") and float(rows["color"][-1][:-1]) >= 0
        assert rows["phash"][:7] == [team_a.team.slug, "phash", "v1", "1", "4", "1", "0"]


def test_two_builds_of_one_index_never_run_at_once(app, team_a, upload, run_jobs, monkeypatch):
    ids = upload_ids(upload, team_a, 3)
    run_jobs()
    inside, finish = threading.Event(), threading.Event()
    build = AnnoyIndex.build

    def held_build(self, *args):
        inside.set()
        assert finish.wait(30)
        return build(self, *args)

    monkeypatch.setattr(AnnoyIndex, "build", held_build)
    results = {}

    def first_build():
        with app.app_context():
            published = indexing.build_index(team_a.id, "color")
            results["first"] = published.version if published else None

    with app.app_context():
        before = db.session.scalar(select(IndexBuild.version).where(IndexBuild.embedder == "color"))
    worker = threading.Thread(target=first_build)
    worker.start()
    try:
        assert inside.wait(30)
        with app.app_context():
            assert indexing.build_index(team_a.id, "color") is None  # the other one is running
    finally:
        finish.set()
        worker.join(30)
    with app.app_context():
        versions = db.session.scalars(
            select(IndexBuild.version).where(IndexBuild.embedder == "color")
        ).all()
    assert results["first"] == before + 1
    assert sorted(versions) == [before, before + 1]
    assert similar(app.test_client(), team_a, ids[0])[0] == before + 1


# A build in another process that never ends: it holds the build lock until it is killed.
BUILD_FOR_EVER = """
import sys, threading, uuid
from plugins.index_annoy import AnnoyIndex
from wsgi import app
from app.services import indexing

def build_for_ever(self, ids, vectors):
    print("building", flush=True)
    threading.Event().wait()

AnnoyIndex.build = build_for_ever
with app.app_context():
    indexing.build_index(uuid.UUID(sys.argv[1]), "color")
"""


def test_a_build_keeps_its_lock_past_the_lease_and_a_killed_builder_frees_it_within_one(
    app, app_env, team_a, upload, run_jobs, tmp_path
):
    ids = upload_ids(upload, team_a, 3)
    run_jobs()
    heartbeat = 1
    lease = 3 * heartbeat
    output = tmp_path / "builder.log"
    with open(output, "wb") as log:
        builder = subprocess.Popen(
            [sys.executable, "-c", BUILD_FOR_EVER, str(team_a.id)],
            cwd=BASE_DIR,
            env={**os.environ, **app_env, "WORKER_HEARTBEAT_SECONDS": str(heartbeat)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: builder.poll() is not None or "building" in output.read_text(),
            60,
            "the other build never started",
        )
        assert builder.poll() is None, output.read_text()
        time.sleep(2 * lease)  # only renewing its lease keeps the lock this long
        with app.app_context():
            assert indexing.build_index(team_a.id, "color") is None  # still running elsewhere

        builder.kill()  # SIGKILL: nothing runs to release the lock
        builder.wait(timeout=10)
        with app.app_context():
            before = indexing.serving_build(team_a.id, "color").version
            # Within one lease (and a margin for a slow host), not the job timeout of minutes.
            build = wait_until(
                lambda: indexing.build_index(team_a.id, "color"),
                lease + 5,
                "the killed builder's lock outlived its lease",
            )
            assert build.version == before + 1 and build.item_count == 3
    finally:
        builder.kill()
        builder.wait(timeout=10)
    assert similar(app.test_client(), team_a, ids[0])[0] == before + 1


def test_the_sweep_asks_again_for_builds_whose_requests_were_lost(
    app, team_a, team_b, upload, run_jobs
):
    ids = upload_ids(upload, team_a, 3)
    with app.app_context():
        for image_id in ids:
            assert process_image(image_id) == "ready"
        clear_queue()  # the build requests die with Redis, or with the worker that held them
        assert set(indexing.indexes_behind()) == {(team_a.id, "color"), (team_a.id, "phash")}
        reconcile(timedelta(minutes=5))
    run_jobs()
    with app.app_context():
        assert indexing.indexes_behind() == []
        assert indexing.serving_build(team_a.id, "color").item_count == 3
        assert indexing.serving_build(team_b.id, "color") is None  # nothing to build there
    assert similar(app.test_client(), team_a, ids[0])[0] == 1  # searches read the new index


def test_two_web_processes_fetching_one_build_at_once_both_load_it(
    app, team_a, upload, run_jobs, tmp_path, monkeypatch
):
    """Web workers share the index cache folder: one may finish copying a build while another
    is still copying it (found by the load test, as a 500 on /similar)."""
    upload_ids(upload, team_a, 3)
    run_jobs()
    with app.app_context():
        build = indexing.build_index(team_a.id, "color")
        first, second = IndexCache(str(tmp_path)), IndexCache(str(tmp_path))
        stored, raced = runtime.storage(), []

        class OtherProcessFinishesFirst:
            def open(self, key):
                if not raced:
                    raced.append(key)
                    assert len(second.get(build)) == 3  # meanwhile, another process
                return stored.open(key)

        monkeypatch.setattr(runtime, "storage", OtherProcessFinishesFirst)
        assert len(first.get(build)) == 3
    assert raced
    assert [p.name for p in (tmp_path / str(team_a.id) / "color").iterdir()] == [
        f"v{build.version}-{build.id}"  # one copy, no partial one left behind
    ]


def cache_folders(app, team, embedder: str) -> list[str]:
    return sorted(
        p.name for p in (Path(app.config["INDEX_CACHE_DIR"]) / str(team.id) / embedder).iterdir()
    )


def test_rebuilds_leave_the_newest_two_builds_of_each_index_in_the_cache_folder(
    app, client, runner, team_a, upload, run_jobs
):
    """Each web process copies every build it loads into the cache folder: with none removed,
    local disk grew by a whole index (512 MB at 100k x 1280-d) with every rebuild."""
    ids = upload_ids(upload, team_a, 3)
    run_jobs()
    embedders = ["color", "phash"]
    for _ in range(4):
        result = runner.invoke(args=["index", "rebuild", "--team", team_a.team.slug])
        assert result.exit_code == 0, result.output
        for embedder in embedders:
            similar(client, team_a, ids[0], embedder=embedder)
    with app.app_context():
        for embedder in embedders:
            newest, previous = db.session.scalars(
                select(IndexBuild)
                .where(IndexBuild.team_id == team_a.id, IndexBuild.embedder == embedder)
                .order_by(IndexBuild.version.desc())
                .limit(2)
            ).all()
            assert newest.version >= 5
            # The previous one stays: another web process may still be opening its files.
            assert cache_folders(app, team_a, embedder) == sorted(
                f"v{b.version}-{b.id}" for b in (newest, previous)
            )
            assert similar(client, team_a, ids[0], embedder=embedder)[0] == newest.version


def test_the_cache_never_removes_another_process_copy_in_progress_nor_a_newer_build(
    app, client, team_a, upload, run_jobs
):
    ids = upload_ids(upload, team_a, 3)
    run_jobs()
    folder = Path(app.config["INDEX_CACHE_DIR"]) / str(team_a.id) / "color"
    # Another web process copying a build, and one that loaded a build this one has not seen.
    in_progress, newer = folder / ".partial-k3j2h1", folder / "v99-99"
    for path in (in_progress, newer):
        path.mkdir(parents=True)
        (path / "ids.npy").write_bytes(b"")
    names = []
    with app.app_context():
        for _ in range(3):
            build = indexing.build_index(team_a.id, "color")
            names.append(f"v{build.version}-{build.id}")
            assert similar(client, team_a, ids[0])[0] == build.version
    assert cache_folders(app, team_a, "color") == sorted(
        [in_progress.name, *names[-2:], newer.name]
    )


def test_a_copy_that_cannot_be_removed_is_logged_and_the_search_answers(
    app, client, team_a, upload, run_jobs, monkeypatch, caplog
):
    ids = upload_ids(upload, team_a, 3)
    run_jobs()
    with app.app_context():
        for _ in range(2):
            indexing.build_index(team_a.id, "color")
            similar(client, team_a, ids[0])
        build = indexing.build_index(team_a.id, "color")

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(shutil, "rmtree", refused)
    assert similar(client, team_a, ids[0])[0] == build.version
    assert "could not remove" in caplog.text


def test_search_answers_from_the_old_index_until_the_new_version_is_published(
    app, client, team_a, upload, run_jobs, monkeypatch
):
    ids = upload_ids(upload, team_a, 6)
    run_jobs()
    before = similar(client, team_a, ids[0])
    assert before[0] is not None and len(before[1]) == 5

    # Version 2 of the colour embedder: other vectors (the bins in another order).
    embed = ColorEmbedder.embed_batch
    monkeypatch.setattr(ColorEmbedder, "version", "2")
    monkeypatch.setattr(
        ColorEmbedder, "embed_batch", lambda self, images: np.roll(embed(self, images), 37, axis=1)
    )
    with app.app_context():
        reconcile(timedelta(minutes=5))  # the sweep asks for every image to be embedded again
        background = [j for j in get_import_queue().job_ids if j.startswith("process-image-")]
    assert sorted(background) == sorted(f"process-image-{i}" for i in ids)

    with app.app_context():
        for image_id in ids[:3]:  # half of them are embedded again
            assert process_image(image_id) == "ready"
        # A build now would hold half the images: it waits, and the old index serves.
        assert indexing.build_index(team_a.id, "color") is None
    assert similar(client, team_a, ids[0]) == before  # the old index, with the old vectors
    assert similar(client, team_a, ids[4])[0] == before[0]

    run_jobs()  # the other half; their index builds wait for the next debounce window
    assert similar(client, team_a, ids[0]) == before
    with app.app_context():
        run_scheduled_jobs_now()
    run_jobs()  # the build of version 2
    after = similar(client, team_a, ids[0])
    assert after[0] > before[0]
    assert after != before
    with app.app_context():
        build = indexing.serving_build(team_a.id, "color")
        assert build.embedder_version == "2" and build.item_count == 6
        versions = set(
            db.session.scalars(select(Embedding.version).where(Embedding.embedder == "color"))
        )
    assert versions == {"2"}  # the old vectors went with the old index


def test_two_builds_racing_for_one_version_leave_the_winners_files_whole(
    app, client, team_a, upload, run_jobs, monkeypatch
):
    """The build lock keeps builds of a pair apart; should it fail (a lease lost to a Redis
    blip, say), two builds take the same version number and the database publishes one. The
    loser's clean-up must not touch the winner's files, nor its files mix with them."""
    ids = upload_ids(upload, team_a, 5)
    run_jobs()
    real_storage = runtime.storage
    racing_storage, raced = overtaken_on_first_save(
        real_storage, lambda: indexing._build(team_a.id, "color")
    )
    monkeypatch.setattr(indexing, "storage", racing_storage)
    with app.app_context():
        before = indexing.current_build(team_a.id, "color").version
        assert indexing._build(team_a.id, "color") is None  # the version was taken meanwhile
        (winner,) = raced
        published = indexing.current_build(team_a.id, "color")
        assert published.id == winner.id and published.version == before + 1
        for key in published.storage_keys:
            assert real_storage().exists(key), key
    monkeypatch.undo()
    assert similar(client, team_a, ids[0])[0] == before + 1
    check_invariants(app, [team_a])
