"""Direct uploads that are retried, completed twice or sent again: the upload keeps what a
retry needs, and nothing is left in the store for good."""

from __future__ import annotations

import io
import threading
import uuid
from urllib.parse import urlsplit

import urllib3

from app import create_app
from app.extensions import db
from app.models import DirectUpload
from app.plugin_api import StorageUnavailable
from app.runtime import storage
from app.services import reconcile
from tests import samples
from tests.conftest import make_config
from tests.s3server import admin_client, s3_config

pytest_plugins = ["tests.s3server"]


def begin(client, team, data, content_type="image/jpeg"):
    body = {"filename": "direct.jpg", "content_type": content_type, "size_bytes": len(data)}
    response = client.post("/api/v1/uploads", json=body, headers=team.headers())
    assert response.status_code == 201, response.json
    return response.json


def send_local(client, upload, data):
    form = {**upload["fields"], "file": (io.BytesIO(data), "direct.jpg")}
    path = urlsplit(upload["url"]).path
    return client.post(path, data=form, content_type="multipart/form-data")


def complete(client, team, image_id):
    return client.post(f"/api/v1/uploads/{image_id}/complete", headers=team.headers())


def s3_app(app_env, moto_endpoint, bucket):
    return create_app(
        make_config(app_env, STORAGE_BACKEND="s3", **s3_config(moto_endpoint, bucket))
    )


def keys_in(moto_endpoint, bucket) -> list[str]:
    listing = admin_client(moto_endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_an_object_posted_again_after_completion_is_swept(
    app, app_env, team_a, moto_endpoint, s3_bucket
):
    """A presigned POST stays valid until it expires, completed or not: a client that posts
    again after completing (a retry, a double submit) leaves an object under the upload's key,
    which the daily sweep must remove like any other object no open upload names."""
    on_s3 = s3_app(app_env, moto_endpoint, s3_bucket)
    client = on_s3.test_client()
    data = samples.jpeg(11)
    started = begin(client, team_a, data)
    fields = {**started["upload"]["fields"], "file": ("a.jpg", data)}
    assert urllib3.request("POST", started["upload"]["url"], fields=fields).status < 300
    assert complete(client, team_a, started["image_id"]).status_code == 201
    assert urllib3.request("POST", started["upload"]["url"], fields=fields).status < 300
    assert [k for k in keys_in(moto_endpoint, s3_bucket) if "/uploads/" in k]

    with on_s3.app_context():
        # moto dates every object now: an age of "any" lets the sweep judge them all.
        assert reconcile.remove_orphaned_objects(older_than=-60) == 1
    assert not [k for k in keys_in(moto_endpoint, s3_bucket) if "/uploads/" in k]
    # The image keeps its files.
    assert [k for k in keys_in(moto_endpoint, s3_bucket) if started["image_id"] in k]


def test_a_completion_the_store_fails_can_be_retried(app, client, team_a, monkeypatch):
    """A store outage while completing answers 503 "try again": the uploaded bytes must still be
    there when the client does."""
    from app.services import ingest

    data = samples.jpeg(12)
    started = begin(client, team_a, data)
    assert send_local(client, started["upload"], data).status_code == 204

    class Down:
        def __getattr__(self, name):
            return getattr(storage(), name)

        def save(self, key, fileobj, content_type):
            raise StorageUnavailable("the store is down")

    monkeypatch.setattr(ingest, "storage", Down)
    failed = complete(client, team_a, started["image_id"])
    monkeypatch.undo()
    assert failed.status_code == 503 and "try again" in failed.json["error"]["message"]

    retried = complete(client, team_a, started["image_id"])
    assert retried.status_code == 201, retried.json
    assert retried.json["id"] == started["image_id"]
    fetched = client.get(f"/api/v1/images/{started['image_id']}/file", headers=team_a.headers())
    assert fetched.data == data
    with app.app_context():
        row = db.session.get(DirectUpload, uuid.UUID(started["image_id"]))
        assert row.completed_at is not None


def test_a_retry_overtaken_by_its_first_completion_does_not_undo_it(
    app, client, team_a, monkeypatch
):
    """A client retries a slow completion; the first one finishes (and removes the uploaded
    object) after the retry checked the upload but before it read the object. The retry must
    not answer "nothing was uploaded" nor forget that the upload was completed."""
    from app.services import uploads

    data = samples.jpeg(13)
    started = begin(client, team_a, data)
    assert send_local(client, started["upload"], data).status_code == 204
    first: list = []

    class Overtaken:
        def __getattr__(self, name):
            return getattr(storage(), name)

        def open(self, key):
            if not first:  # the first completion, as from another web process, ends meanwhile
                monkeypatch.undo()
                other = threading.Thread(
                    target=lambda: first.append(
                        complete(app.test_client(), team_a, started["image_id"])
                    )
                )
                other.start()
                other.join(60)
            return storage().open(key)

    monkeypatch.setattr(uploads, "storage", Overtaken)
    retried = complete(client, team_a, started["image_id"])
    monkeypatch.undo()

    assert first[0].status_code == 201, first[0].json
    # As any completion sent again while the first runs: the image the first made.
    assert retried.status_code == 201, retried.json
    assert retried.json["existing"] is True and retried.json["id"] == started["image_id"]
    assert complete(client, team_a, started["image_id"]).status_code == 409
    fetched = client.get(f"/api/v1/images/{started['image_id']}/file", headers=team_a.headers())
    assert fetched.status_code == 200 and fetched.data == data
