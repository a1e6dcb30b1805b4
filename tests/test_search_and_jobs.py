"""Search correctness around the index, and jobs that are idempotent and debounced."""

from __future__ import annotations

import io
import uuid

from rq import Queue

from app.extensions import db
from app.models import Embedding, IndexBuild, Team, utcnow
from app.queue import get_queue, request_index_build
from app.runtime import storage
from app.services import keys
from app.services.audit import Actor
from app.services.indexing import build_index, prune_builds
from app.services.ingest import Incoming, ingest
from app.tenancy import team_scope
from tests import samples
from tests.conftest import recorded_statements


def upload_ids(upload, team, count, seed=0):
    files = [(samples.jpeg(seed + i, size=(96, 72)), f"{i}.jpg") for i in range(count)]
    return [i["id"] for i in upload(team, files).json["items"]]


def similar(client, team, image_id, k, embedder="color"):
    response = client.get(
        f"/api/v1/images/{image_id}/similar?k={k}&embedder={embedder}", headers=team.headers()
    )
    assert response.status_code == 200, response.json
    return [m["image"]["id"] for m in response.json["items"]]


def test_results_stay_full_when_the_nearest_were_deleted(client, team_a, upload, run_jobs):
    ids = upload_ids(upload, team_a, 26)
    run_jobs()
    order = similar(client, team_a, ids[0], 25)
    assert len(order) == 25
    for gone in order[:21]:  # more than the index is first asked for
        assert client.delete(f"/api/v1/images/{gone}", headers=team_a.headers()).status_code == 204
    # No rebuild has run: the index still holds the deleted images.
    assert similar(client, team_a, ids[0], 3) == order[21:24]


def test_similar_loads_a_page_of_100_matches_in_a_fixed_number_of_statements(
    app, client, team_a, upload, run_jobs, person
):
    # What every match shows comes from rows of its own: its tags, and the key or the person
    # that uploaded it. Several of each, so no single cached row answers for all.
    files = [(samples.jpeg(500 + i, size=(48, 36)), f"{i}.jpg") for i in range(120)]
    with app.app_context():
        team = db.session.get(Team, team_a.id)
        uploader_keys = [keys.create_key(team, f"uploader {n}", ["write"])[1] for n in range(3)]
        db.session.commit()
    for n, key in enumerate(uploader_keys):
        batch = files[n * 30 : (n + 1) * 30]
        response = client.post(
            "/api/v1/images",
            data={"file": [(io.BytesIO(d), name) for d, name in batch], "tags": f"batch-{n},k{n}"},
            headers={"X-API-Key": key},
            content_type="multipart/form-data",
        )
        assert response.status_code == 201, response.json
    member = person(team_a, "member")
    with app.app_context(), team_scope(team_a.id):
        ingest(
            team_a.id,
            [Incoming(io.BytesIO(d), name) for d, name in files[90:]],
            actor=Actor.system("test"),
            tags=["by-a-person"],
            user_id=member.user_id,
        )
    run_jobs()

    client.get("/api/v1/team", headers=team_a.headers())  # the key's once-a-minute touch
    first = client.get("/api/v1/images?limit=1", headers=team_a.headers()).json["items"][0]

    def similar_statements(k: int):
        statements, stop = recorded_statements(app)
        try:
            response = client.get(
                f"/api/v1/images/{first['id']}/similar?k={k}", headers=team_a.headers()
            )
        finally:
            stop()
        assert response.status_code == 200, response.json
        return [m["image"] for m in response.json["items"]], statements

    items, statements = similar_statements(100)
    assert len(items) == 100
    assert {i["uploaded_by"] for i in items} >= {member.email, "api-key:uploader 0"}
    assert all(i["tags"] for i in items)
    # The key, the image with its vectors, the index build, the newer embeddings, then the k
    # nearest ready matches with their persons and keys, their tags, their labels: as many for
    # 100 matches as for one.
    assert len(statements) <= 7, "\n".join(statements)
    assert len(similar_statements(1)[1]) == len(statements)


def test_index_and_exact_scan_agree(app, client, team_a, upload, run_jobs):
    ids = upload_ids(upload, team_a, 30, seed=100)
    run_jobs()  # built: everything is in the index
    with_index = {i: similar(client, team_a, i, 5) for i in ids[:5]}
    with app.app_context():
        db.session.query(IndexBuild).delete()
        db.session.commit()
    # With no build, search is an exact scan of every embedding.
    assert {i: similar(client, team_a, i, 5) for i in ids[:5]} == with_index


def test_processing_twice_changes_nothing(app, team_a, upload, run_jobs):
    (image_id,) = upload_ids(upload, team_a, 1)
    run_jobs()
    from app.jobs import process_image

    with app.app_context():
        before = [(e.id, e.vector) for e in db.session.query(Embedding).order_by(Embedding.id)]
        assert process_image(image_id) == "ready"
        after = [(e.id, e.vector) for e in db.session.query(Embedding).order_by(Embedding.id)]
    assert len(before) == 2 and before == after


def test_processing_a_deleted_image_is_a_no_op(app):
    from app.jobs import process_image

    with app.app_context():
        assert process_image(str(uuid.uuid4())) == "missing"


def test_index_requests_are_debounced_to_one_queued_build(app, team_a, pinned_clock):
    with app.app_context():
        for _ in range(20):
            assert request_index_build(team_a.id, "color")
        queue: Queue = get_queue()
        builds = [j for j in queue.jobs if j.func_name == "app.jobs.build_index"]
        scheduled = queue.scheduled_job_registry.get_job_ids()
    assert len(builds) == 1 and scheduled == []


def test_a_request_during_a_running_build_schedules_the_next_one(app, team_a, pinned_clock):
    with app.app_context():
        request_index_build(team_a.id, "color")
        (job,) = get_queue().jobs
        job.set_status("started")  # as a worker would while building
        request_index_build(team_a.id, "color")
        request_index_build(team_a.id, "color")
        scheduled = get_queue().scheduled_job_registry.get_job_ids()
    assert len(scheduled) == 1 and scheduled[0] != job.id


def test_old_index_versions_are_pruned_after_the_grace_period(app, team_a, instance_path):
    with app.app_context():
        first = build_index(team_a.id, "color")
        first_keys = list(first.storage_keys)
        second = build_index(team_a.id, "color")
        assert prune_builds(team_a.id, "color") == 0  # the successor is too young
        second.built_at = utcnow().replace(year=2000)
        db.session.commit()
        assert prune_builds(team_a.id, "color") == 1
        versions = [b.version for b in db.session.query(IndexBuild)]
        assert first_keys and not any(storage().exists(key) for key in first_keys)
        assert second.storage_keys and all(storage().exists(key) for key in second.storage_keys)
    assert versions == [2]
    folders = instance_path / "storage" / "teams" / str(team_a.id) / "indexes" / "color"
    assert [p.name.split("-")[0] for p in folders.iterdir()] == ["v2"]  # emptied folders go
