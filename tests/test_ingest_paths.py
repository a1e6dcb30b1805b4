"""Every way in is one ingest: the image, its tags and its `image.upload` event (by whoever
brought it) are committed together, and only then is its processing queued, so the worker that
takes the job finds all of it."""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from app import queue
from app.errors import NotFound
from app.extensions import db
from app.models import AuditEvent, DirectUpload, Image, ImageTag, ImportBatch, Tag
from app.services import collections, images, imports, uploads
from app.services.audit import Actor
from app.services.ingest import Incoming, ingest
from app.tenancy import team_scope, unscoped
from tests import samples

PHOTO = samples.jpeg(31, size=(160, 120))


@pytest.fixture
def config_overrides():
    return {"IMPORT_ALLOW_NETWORKS": ["127.0.0.1/32"], "IMPORT_READ_TIMEOUT": 5}


@pytest.fixture
def photo_url():
    """A local image host serving PHOTO at /photo.jpg."""

    class Host(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(PHOTO)))
            self.end_headers()
            self.wfile.write(PHOTO)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/photo.jpg"
    server.shutdown()
    thread.join(5)


def committed(image_id: uuid.UUID) -> dict:
    """What another process (the worker) can read of the image: committed rows only."""
    with db.engine.connect() as connection:
        row = connection.execute(select(Image.collection_id).where(Image.id == image_id)).first()
        tags = connection.scalars(
            select(Tag.name)
            .join(ImageTag, ImageTag.tag_id == Tag.id)
            .where(ImageTag.image_id == image_id)
            .order_by(Tag.name)
        ).all()
        uploads = connection.execute(
            select(AuditEvent.actor_type, AuditEvent.actor, AuditEvent.details).where(
                AuditEvent.action == "image.upload", AuditEvent.target_id == str(image_id)
            )
        ).all()
    return {
        "exists": row is not None,
        "collection_id": row and row.collection_id and str(row.collection_id),
        "tags": list(tags),
        "uploads": [tuple(u) for u in uploads],
    }


@pytest.fixture
def seen_when_queued(monkeypatch):
    """For each image queued for processing: what was committed at that moment."""
    seen: dict[str, dict] = {}
    enqueue = queue.enqueue_process_image

    def note_then_enqueue(image_id):
        seen[str(image_id)] = committed(uuid.UUID(str(image_id)))
        return enqueue(image_id)

    monkeypatch.setattr(queue, "enqueue_process_image", note_then_enqueue)
    return seen


def key_actor(team) -> str:
    return f"key {team.key.split('_')[1]} (full)"


def by_api_upload(client, runner, run_jobs, team, url, tmp_path):
    response = client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(PHOTO), "photo.jpg"), "tags": "Beach, Summer"},
        headers=team.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    return response.json["items"][0]["id"], ("key", key_actor(team), {})


def by_direct_upload(client, runner, run_jobs, team, url, tmp_path):
    body = {
        "filename": "photo.jpg",
        "content_type": "image/jpeg",
        "size_bytes": len(PHOTO),
        "tags": ["Beach", "Summer"],
    }
    started = client.post("/api/v1/uploads", json=body, headers=team.headers()).json
    target = started["upload"]
    form = {**target["fields"], "file": (io.BytesIO(PHOTO), "photo.jpg")}
    sent = client.post(urlsplit(target["url"]).path, data=form, content_type="multipart/form-data")
    assert sent.status_code == 204
    done = client.post(f"/api/v1/uploads/{started['image_id']}/complete", headers=team.headers())
    assert done.status_code == 201, done.json
    return done.json["id"], ("key", key_actor(team), {"direct": True})


def by_url_import(client, runner, run_jobs, team, url, tmp_path):
    body = {"urls": [url], "tags": ["Beach", "Summer"]}
    batch = client.post("/api/v1/imports", json=body, headers=team.headers()).json
    run_jobs()
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team.headers()).json
    assert state["items"][0]["status"] == "done", state
    return state["items"][0]["image_id"], ("key", key_actor(team), {"import_id": batch["id"]})


def by_cli_folder_import(client, runner, run_jobs, team, url, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "photo.jpg").write_bytes(PHOTO)
    args = ["import", str(tmp_path / "photos"), "--team", team.team.slug, "--tags", "Beach,Summer"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    [image] = client.get("/api/v1/images", headers=team.headers()).json["items"]
    return image["id"], ("system", "command line", {})


def by_cli_url_import(client, runner, run_jobs, team, url, tmp_path):
    listing = tmp_path / "urls.csv"
    listing.write_text(f"url,tags\n{url},Summer\n")
    args = ["import", str(listing), "--team", team.team.slug, "--tags", "Beach"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    batch_id = result.output.strip().splitlines()[-1].split()[1].rstrip(":")
    [image] = client.get("/api/v1/images", headers=team.headers()).json["items"]
    return image["id"], ("system", "command line", {"import_id": batch_id})


PATHS = [by_api_upload, by_direct_upload, by_url_import, by_cli_folder_import, by_cli_url_import]


@pytest.mark.parametrize("path", PATHS, ids=[p.__name__.removeprefix("by_") for p in PATHS])
def test_every_path_commits_image_tags_and_upload_event_before_queueing(
    app, client, runner, run_jobs, team_a, photo_url, tmp_path, seen_when_queued, path
):
    image_id, (actor_type, actor, details) = path(
        client, runner, run_jobs, team_a, photo_url, tmp_path
    )
    assert seen_when_queued == {
        image_id: {
            "exists": True,
            "collection_id": None,
            "tags": ["beach", "summer"],
            "uploads": [(actor_type, actor, details)],
        }
    }
    # And through the API, as an admin reads it afterwards: one event for the one image.
    events = client.get("/api/v1/audit?action=image.upload", headers=team_a.headers()).json
    assert [(e["target_id"], e["actor"]) for e in events["items"]] == [(image_id, actor)]


# --- into a collection: `collection_id` through every way in ----------------------------------

ALICE = Actor("user", "alice@a.example")
OTHER_PHOTO = samples.jpeg(32, size=(160, 120))


@contextlib.contextmanager
def acting_for(app, team):
    with app.app_context(), team_scope(team.id):
        yield


def ingest_into(app, client, runner, run_jobs, team, url, tmp_path, collection: str):
    """The API upload's service (the endpoint passes the form's collection_id)."""
    with acting_for(app, team):
        files = [Incoming(io.BytesIO(PHOTO), "photo.jpg")]
        [result] = ingest(team.id, files, actor=ALICE, collection_id=collection)
        return str(result.image.id), {}


def direct_upload_into(app, client, runner, run_jobs, team, url, tmp_path, collection: str):
    with acting_for(app, team):
        upload, _ = uploads.create(
            team.id, "photo.jpg", "image/jpeg", len(PHOTO), [], collection_id=collection
        )
        uploads.receive(upload, io.BytesIO(PHOTO), "image/jpeg")
        result = uploads.complete(upload, actor=ALICE)
        return str(result.image.id), {"direct": True}


def url_import_into(app, client, runner, run_jobs, team, url, tmp_path, collection: str):
    with acting_for(app, team):
        batch = imports.create_batch(
            team.id, [imports.ItemRequest(url)], [], actor=ALICE, collection_id=collection
        )
        batch_id = batch.id
    run_jobs()
    with acting_for(app, team):
        [item] = db.session.get(ImportBatch, batch_id).items
        assert item.status == "done", item.error
        return str(item.image_id), {"import_id": str(batch_id)}


def cli_folder_import_into(app, client, runner, run_jobs, team, url, tmp_path, collection: str):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "photo.jpg").write_bytes(PHOTO)
    # By name, as an operator types it: any case or spacing.
    args = ["import", str(tmp_path / "photos"), "--team", team.team.slug, "--collection", " TRIP "]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    [image] = client.get("/api/v1/images", headers=team.headers()).json["items"]
    return image["id"], {}


def cli_url_import_into(app, client, runner, run_jobs, team, url, tmp_path, collection: str):
    listing = tmp_path / "urls.csv"
    listing.write_text(f"url\n{url}\n")
    args = ["import", str(listing), "--team", team.team.slug, "--collection", collection]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    batch_id = result.output.strip().splitlines()[-1].split()[1].rstrip(":")
    [image] = client.get("/api/v1/images", headers=team.headers()).json["items"]
    return image["id"], {"import_id": batch_id}


INTO = [
    ingest_into,
    direct_upload_into,
    url_import_into,
    cli_folder_import_into,
    cli_url_import_into,
]


def make_trip(app, team) -> str:
    with acting_for(app, team):
        return str(collections.create_collection(team.id, "Trip", actor=ALICE).collection.id)


@pytest.mark.parametrize("path", INTO, ids=[p.__name__.removesuffix("_into") for p in INTO])
def test_every_path_puts_the_image_in_the_collection_it_names(
    app, client, runner, run_jobs, team_a, photo_url, tmp_path, seen_when_queued, path
):
    trip = make_trip(app, team_a)
    image_id, details = path(app, client, runner, run_jobs, team_a, photo_url, tmp_path, trip)
    [(image, seen)] = seen_when_queued.items()
    assert image == image_id
    assert seen["collection_id"] == trip  # committed with the image, before its job was queued
    [(_, _, upload_details)] = seen["uploads"]
    assert upload_details == {**details, "collection_id": trip}
    with acting_for(app, team_a):
        assert collections.get_collection(trip).image_count == 1
        [listed], _ = images.list_images(10, collection_id=trip)
        assert str(listed.id) == image_id


def nothing_of(app, team, instance_path) -> None:
    """No image, upload, import or stored file of the team's."""
    with app.app_context(), unscoped():
        for model in (Image, DirectUpload, ImportBatch):
            assert db.session.scalars(select(model).where(model.team_id == team.id)).all() == []
    assert [p for p in (instance_path / "storage").rglob("*") if p.is_file()] == []


REFUSING = [ingest_into, direct_upload_into, url_import_into]


@pytest.mark.parametrize("path", REFUSING, ids=[p.__name__.removesuffix("_into") for p in REFUSING])
def test_another_teams_or_an_unknown_collection_refuses_before_anything_is_stored(
    app, client, runner, run_jobs, team_a, team_b, photo_url, tmp_path, instance_path, path
):
    theirs = make_trip(app, team_b)
    for collection in (theirs, str(uuid.uuid4()), "Trip"):
        with pytest.raises(NotFound, match="no such collection"):
            path(app, client, runner, run_jobs, team_a, photo_url, tmp_path, collection)
    run_jobs()
    nothing_of(app, team_a, instance_path)


def test_the_import_command_names_a_collection_of_the_team_or_stops(
    app, runner, team_a, team_b, photo_url, tmp_path, instance_path
):
    theirs = make_trip(app, team_b)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "photo.jpg").write_bytes(PHOTO)
    (tmp_path / "urls.csv").write_text(f"url\n{photo_url}\n")
    for source in ("photos", "urls.csv"):
        for collection in (theirs, "Trip"):
            args = ["import", str(tmp_path / source), "--team", team_a.team.slug]
            result = runner.invoke(args=[*args, "--collection", collection])
            assert result.exit_code == 1
            assert f"no collection {collection!r} in this team" in result.output
    nothing_of(app, team_a, instance_path)


def test_a_collection_deleted_before_its_upload_or_import_lands_leaves_the_image_in_none(
    app, run_jobs, team_a, photo_url
):
    """It was empty, so it could go; what was on its way arrives rather than being refused."""
    trip = make_trip(app, team_a)
    with acting_for(app, team_a):
        upload, _ = uploads.create(
            team_a.id, "other.jpg", "image/jpeg", len(OTHER_PHOTO), [], collection_id=trip
        )
        uploads.receive(upload, io.BytesIO(OTHER_PHOTO), "image/jpeg")
        upload_id = upload.id
        batch = imports.create_batch(
            team_a.id, [imports.ItemRequest(photo_url)], [], actor=ALICE, collection_id=trip
        )
        batch_id = batch.id
        collections.delete_collection(trip, actor=ALICE)
    with acting_for(app, team_a):
        result = uploads.complete(db.session.get(DirectUpload, upload_id), actor=ALICE)
        assert not result.existing and result.image.collection_id is None
    run_jobs()
    with acting_for(app, team_a):
        [item] = db.session.get(ImportBatch, batch_id).items
        assert item.status == "done", item.error
        assert item.image_id != result.image.id
        assert db.session.get(Image, item.image_id).collection_id is None


def test_an_exact_reupload_into_a_collection_leaves_the_existing_image_where_it_is(app, team_a):
    trip = make_trip(app, team_a)
    with acting_for(app, team_a):
        [first] = ingest(team_a.id, [Incoming(io.BytesIO(PHOTO), "photo.jpg")], actor=ALICE)
        [again] = ingest(
            team_a.id, [Incoming(io.BytesIO(PHOTO), "again.jpg")], actor=ALICE, collection_id=trip
        )
        assert again.existing and again.image.id == first.image.id
        assert again.image.collection_id is None
        assert collections.get_collection(trip).image_count == 0
