"""Direct uploads with local storage: the app's signed, expiring URL stands in for S3's."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import update

from app.extensions import db
from app.models import DirectUpload, utcnow
from tests import samples
from tests.invariants import check_invariants
from tests.killed_writers import overtaken_on_first_save


def begin(client, team, data, content_type="image/jpeg", **extra):
    body = {
        "filename": "direct.jpg",
        "content_type": content_type,
        "size_bytes": len(data),
        **extra,
    }
    return client.post("/api/v1/uploads", json=body, headers=team.headers())


def send(client, upload, data, filename="direct.jpg"):
    """What any client does with the answer: post the fields, then the file, to the URL."""
    target = urlsplit(upload["url"])
    form = {**upload["fields"], "file": (io.BytesIO(data), filename)}
    return client.post(target.path, data=form, content_type="multipart/form-data")


def complete(client, team, image_id):
    return client.post(f"/api/v1/uploads/{image_id}/complete", headers=team.headers())


def test_direct_upload_round_trip(client, team_a, run_jobs):
    data = samples.jpeg(1)
    started = begin(client, team_a, data, tags=["Direct"])
    assert started.status_code == 201
    body = started.json
    assert body["upload"]["method"] == "POST" and body["expires_at"].endswith("Z")
    assert send(client, body["upload"], data).status_code == 204
    done = complete(client, team_a, body["image_id"])
    assert done.status_code == 201
    image = done.json
    assert image["id"] == body["image_id"] and image["size_bytes"] == len(data)
    assert image["tags"] == ["direct"] and image["status"] == "pending"
    run_jobs()
    fetched = client.get(f"/api/v1/images/{image['id']}/file", headers=team_a.headers())
    assert fetched.data == data
    again = complete(client, team_a, body["image_id"])
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"filename": "a.svg", "content_type": "image/svg+xml", "size_bytes": 10}, 415),
        ({"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 10}, 415),
        # A wrong type or a value out of the declared range is a 400 naming the field.
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": 0}, 400),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": "10"}, 400),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": 51 * 1024 * 1024}, 413),
        ({"filename": "", "content_type": "image/jpeg", "size_bytes": 10}, 422),
        ({"filename": "a.jpg", "content_type": "image/jpeg"}, 400),
        (
            {"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": 10, "team_id": "x"},
            400,
        ),
    ],
)
def test_bad_upload_requests_are_refused(app, client, team_a, body, status):
    response = client.post("/api/v1/uploads", json=body, headers=team_a.headers())
    assert response.status_code == status and response.json["error"]["message"]
    with app.app_context():
        assert db.session.query(DirectUpload).count() == 0


def test_the_app_enforces_size_and_type_of_what_is_sent(client, team_a):
    data = samples.jpeg(2)
    upload = begin(client, team_a, data).json
    bigger = data + b"\0" * 10
    assert send(client, upload["upload"], bigger).status_code == 413
    wrong_type = {**upload["upload"], "fields": {"Content-Type": "image/png"}}
    assert send(client, wrong_type, data).status_code == 415
    assert send(client, upload["upload"], data).status_code == 204


def test_tampered_or_expired_upload_urls_are_refused(app, client, team_a):
    data = samples.jpeg(3)
    upload = begin(client, team_a, data).json
    tampered = {**upload["upload"], "url": upload["upload"]["url"][:-3] + "xyz"}
    assert send(client, tampered, data).status_code == 403
    with app.app_context():
        db.session.execute(update(DirectUpload).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    expired = send(client, upload["upload"], data)  # as S3 answers an expired URL
    assert expired.status_code == 403 and "expired" in expired.json["error"]["message"]


def test_completion_after_expiry_is_refused_and_cleans_up(app, client, team_a, instance_path):
    data = samples.jpeg(4)
    upload = begin(client, team_a, data).json
    send(client, upload["upload"], data)
    with app.app_context():
        db.session.execute(update(DirectUpload).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    response = complete(client, team_a, upload["image_id"])
    assert response.status_code == 422 and response.json["error"]["code"] == "validation_error"
    assert "expired" in response.json["error"]["message"]
    assert not list((instance_path / "storage").rglob("original"))
    assert (
        client.get(f"/api/v1/images/{upload['image_id']}", headers=team_a.headers()).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"%PDF-1.4 not an image at all" + b"\0" * 100, 415),
        (samples.jpeg(5)[: len(samples.jpeg(5)) // 2], 422),  # truncated
    ],
)
def test_completion_validates_like_an_upload_and_removes_the_object(
    app, client, team_a, instance_path, payload, status
):
    upload = begin(client, team_a, payload).json
    assert send(client, upload["upload"], payload).status_code == 204
    response = complete(client, team_a, upload["image_id"])
    assert response.status_code == status
    assert not [p for p in (instance_path / "storage").rglob("*") if p.is_file()]
    with app.app_context():
        assert db.session.query(DirectUpload).count() == 0
    listed = client.get("/api/v1/images", headers=team_a.headers()).json["items"]
    assert listed == []


@pytest.mark.parametrize("chunk", [b"zTXt", b"iCCP"])
def test_completion_of_a_png_with_an_inflating_chunk_is_422_and_leaves_nothing(
    app, client, team_a, instance_path, chunk
):
    payload = samples.png_with_compressed_chunk(chunk)
    upload = begin(client, team_a, payload, content_type="image/png").json
    assert send(client, upload["upload"], payload).status_code == 204
    response = complete(client, team_a, upload["image_id"])
    assert response.status_code == 422 and response.json["error"]["code"] == "invalid_image"
    assert not [p for p in (instance_path / "storage").rglob("*") if p.is_file()]
    with app.app_context():
        assert db.session.query(DirectUpload).count() == 0
    again = complete(client, team_a, upload["image_id"])
    assert again.status_code == 404


def test_completing_without_sending_anything_is_422(client, team_a):
    upload = begin(client, team_a, samples.jpeg(6)).json
    response = complete(client, team_a, upload["image_id"])
    assert (
        response.status_code == 422 and "nothing was uploaded" in response.json["error"]["message"]
    )


def test_an_exact_duplicate_returns_the_existing_image(client, team_a, upload):
    data = samples.jpeg(7)
    first = upload(team_a, [(data, "first.jpg")]).json["items"][0]
    started = begin(client, team_a, data).json
    send(client, started["upload"], data)
    response = complete(client, team_a, started["image_id"])
    assert response.status_code == 201  # as POST /images answers known bytes (API.md)
    assert response.json["id"] == first["id"] and response.json["existing"] is True


def test_uploads_never_completed_are_cleaned_up(app, client, runner, team_a, instance_path):
    data = samples.jpeg(8)
    upload = begin(client, team_a, data).json
    send(client, upload["upload"], data)
    assert [p for p in (instance_path / "storage").rglob("original")]
    with app.app_context():
        db.session.execute(update(DirectUpload).values(expires_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
    runner.invoke(args=["reconcile"])
    assert not [p for p in (instance_path / "storage").rglob("original")]
    with app.app_context():
        assert db.session.query(DirectUpload).count() == 0


def test_another_teams_upload_cannot_be_completed(client, team_a, team_b):
    data = samples.jpeg(9)
    upload = begin(client, team_a, data).json
    send(client, upload["upload"], data)
    assert complete(client, team_b, upload["image_id"]).status_code == 404
    assert complete(client, team_a, upload["image_id"]).status_code == 201


def test_two_completions_at_once_keep_the_image_whole(app, client, team_a, monkeypatch):
    """A client that retries a slow completion sends a second one while the first runs. Both
    store the same image id's files; whichever loses the race must not delete what the
    winner published."""
    from app.services import ingest

    data = samples.jpeg(2)
    body = begin(client, team_a, data).json
    assert send(client, body["upload"], data).status_code == 204

    def retry_from_another_process():
        # Another request, as from another web process: a thread of its own.
        answer = []
        other = threading.Thread(
            target=lambda: answer.append(complete(app.test_client(), team_a, body["image_id"]))
        )
        other.start()
        other.join(60)
        return answer[0]

    retrying_client, retried = overtaken_on_first_save(ingest.storage, retry_from_another_process)
    monkeypatch.setattr(ingest, "storage", retrying_client)
    first = complete(client, team_a, body["image_id"])
    monkeypatch.undo()

    assert retried[0].status_code == 201, retried[0].json
    # The one that lost finds the image the other made: the same answer as any re-upload.
    assert first.status_code == 201, first.json
    assert first.json["id"] == body["image_id"] and first.json["existing"] is True
    fetched = client.get(f"/api/v1/images/{body['image_id']}/file", headers=team_a.headers())
    assert fetched.status_code == 200 and fetched.data == data
    thumbnail = client.get(
        f"/api/v1/images/{body['image_id']}/file?variant=thumbnail", headers=team_a.headers()
    )
    assert thumbnail.status_code == 200
    check_invariants(app, [team_a])
