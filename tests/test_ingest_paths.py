"""Every way in is one ingest: the image, its tags and its `image.upload` event (by whoever
brought it) are committed together, and only then is its processing queued, so the worker that
takes the job finds all of it."""

from __future__ import annotations

import io
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from app import queue
from app.extensions import db
from app.models import AuditEvent, Image, ImageTag, Tag
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
        exists = connection.scalar(select(Image.id).where(Image.id == image_id)) is not None
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
    return {"exists": exists, "tags": list(tags), "uploads": [tuple(u) for u in uploads]}


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
            "tags": ["beach", "summer"],
            "uploads": [(actor_type, actor, details)],
        }
    }
    # And through the API, as an admin reads it afterwards: one event for the one image.
    events = client.get("/api/v1/audit?action=image.upload", headers=team_a.headers()).json
    assert [(e["target_id"], e["actor"]) for e in events["items"]] == [(image_id, actor)]
