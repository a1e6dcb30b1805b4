"""The whole app on the s3 storage backend, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import io
import os
import tempfile
import urllib.request
import uuid

import pytest
import urllib3
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.models import DirectUpload, Image
from app.tenancy import unscoped
from tests import samples
from tests.conftest import make_config
from tests.invariants import check_invariants
from tests.s3server import FailingStore, admin_client, s3_config

pytest_plugins = ["tests.s3server"]


@pytest.fixture
def config_overrides(moto_endpoint, s3_bucket):
    return {"STORAGE_BACKEND": "s3", **s3_config(moto_endpoint, s3_bucket)}


def keys_in(moto_endpoint, bucket) -> list[str]:
    listing = admin_client(moto_endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_upload_process_download_and_search_on_s3(
    app, client, team_a, team_b, upload, run_jobs, moto_endpoint, s3_bucket
):
    original = samples.jpeg(1)
    image = upload(team_a, [(original, "a.jpg")]).json["items"][0]
    copy = upload(team_a, [(samples.resized_copy(original), "copy.jpg")]).json["items"][0]
    run_jobs()
    stored = keys_in(moto_endpoint, s3_bucket)
    assert any(k.endswith("preview.webp") for k in stored)
    assert any("/indexes/" in k for k in stored)  # index versions live in the bucket too

    response = client.get(f"/api/v1/images/{image['id']}/file", headers=team_a.headers())
    assert response.status_code == 302
    with urllib.request.urlopen(response.headers["Location"], timeout=10) as direct:
        assert direct.read() == original
    similar = client.get(f"/api/v1/images/{image['id']}/similar?k=1", headers=team_a.headers())
    assert [m["image"]["id"] for m in similar.json["items"]] == [copy["id"]]
    client.delete(f"/api/v1/images/{image['id']}", headers=team_a.headers())
    assert not [k for k in keys_in(moto_endpoint, s3_bucket) if image["id"] in k]
    check_invariants(app, [team_a, team_b])


def post_form(upload: dict, data: bytes) -> int:
    fields = {**upload["fields"], "file": ("photo.jpg", data)}
    response = urllib3.request("POST", upload["url"], fields=fields)
    return response.status


def test_direct_upload_through_a_presigned_post(app, client, team_a, moto_endpoint, s3_bucket):
    data = samples.jpeg(2)
    started = client.post(
        "/api/v1/uploads",
        json={"filename": "direct.jpg", "content_type": "image/jpeg", "size_bytes": len(data)},
        headers=team_a.headers(),
    ).json
    upload = started["upload"]
    assert upload["url"].startswith(moto_endpoint) and "policy" in upload["fields"]
    assert post_form(upload, data) in (200, 201, 204)
    done = client.post(f"/api/v1/uploads/{started['image_id']}/complete", headers=team_a.headers())
    assert done.status_code == 201 and done.json["id"] == started["image_id"]
    stored = keys_in(moto_endpoint, s3_bucket)
    assert not [k for k in stored if "/uploads/" in k]  # the upload object is gone
    assert any(started["image_id"] in k and "/images/" in k for k in stored)


def test_direct_upload_rejected_at_completion_leaves_nothing(
    app, client, team_a, moto_endpoint, s3_bucket
):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    started = client.post(
        "/api/v1/uploads",
        json={"filename": "x.png", "content_type": "image/png", "size_bytes": len(svg)},
        headers=team_a.headers(),
    ).json
    assert post_form(started["upload"], svg) in (200, 201, 204)
    done = client.post(f"/api/v1/uploads/{started['image_id']}/complete", headers=team_a.headers())
    assert done.status_code == 415
    assert keys_in(moto_endpoint, s3_bucket) == []
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(DirectUpload)) == 0


def test_more_bytes_than_declared_are_refused_by_the_app(client, team_a, moto_endpoint, s3_bucket):
    data = samples.jpeg(3)
    started = client.post(
        "/api/v1/uploads",
        json={"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": len(data) - 100},
        headers=team_a.headers(),
    ).json
    post_form(started["upload"], data)  # moto does not enforce the policy's size range
    done = client.post(f"/api/v1/uploads/{started['image_id']}/complete", headers=team_a.headers())
    assert done.status_code == 413
    assert keys_in(moto_endpoint, s3_bucket) == []


def test_a_store_answering_503_gives_a_clear_503_and_no_orphan_row(app_env, app, team_a, team_b):
    with FailingStore("503") as store:
        failing = create_app(
            make_config(
                app_env,
                STORAGE_BACKEND="s3",
                **s3_config(store.endpoint, "bucket", S3_MAX_ATTEMPTS=2),
            )
        )
        before = set(os.listdir(tempfile.gettempdir()))
        response = failing.test_client().post(
            "/api/v1/images",
            data={"file": (io.BytesIO(samples.jpeg(4)), "a.jpg")},
            headers=team_a.headers(),
            content_type="multipart/form-data",
        )
        assert response.status_code == 503
        assert response.json["error"]["code"] == "unavailable"
        assert "nothing was saved" in response.json["error"]["message"]
        assert response.headers["Retry-After"] == "30"
        # The original is the first object written: two attempts (S3_MAX_ATTEMPTS), then stop.
        assert [method for method, _ in store.requests] == ["PUT", "PUT"]
        assert set(os.listdir(tempfile.gettempdir())) - before == set()
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(Image)) == 0
    check_invariants(app, [team_a, team_b])  # the app of the working bucket


def test_a_store_failing_while_an_original_is_read_is_retried_not_an_error(
    app_env, app, team_a, upload
):
    """Reading storage and decoding fail apart: a store that breaks is a transient failure."""
    from app.services import processing

    image_id = upload(team_a, [(samples.jpeg(5), "a.jpg")]).json["items"][0]["id"]
    with FailingStore("503") as store:
        failing = create_app(
            make_config(
                app_env,
                STORAGE_BACKEND="s3",
                **s3_config(store.endpoint, "bucket", S3_MAX_ATTEMPTS=1),
            )
        )
        with failing.app_context(), pytest.raises(Exception, match="(?i)unavailable|503"):
            processing.process_image(uuid.UUID(image_id), final_attempt=False)
    with app.app_context(), unscoped():
        image = db.session.get(Image, uuid.UUID(image_id))
        assert image.status == "processing" and image.error is None  # RQ will try it again


def test_downloads_from_s3_keep_their_name_and_disposition(person, upload, team_a):
    """On S3 the bytes come from the store's URL: "Download original" still saves the file
    under its own name (not "original", and not shown in the tab), as from local storage."""
    admin = person(team_a, "admin")
    original = samples.jpeg(1)
    image_id = upload(team_a, [(original, "Été à la plage.jpg")]).json["items"][0]["id"]
    downloads = {
        f"/images/{image_id}/original": ("attachment", "%C3%89t%C3%A9%20%C3%A0%20la%20plage.jpg"),
        f"/images/{image_id}/download?format=jpeg&quality=40": ("attachment", "plage"),
        f"/api/v1/images/{image_id}/file": ("inline", "%C3%89t%C3%A9%20%C3%A0%20la%20plage.jpg"),
    }
    for path, (disposition, name) in downloads.items():
        headers = team_a.headers() if path.startswith("/api/") else {}
        response = admin.client.get(path, headers=headers)
        assert response.status_code == 302, path
        with urllib.request.urlopen(response.headers["Location"], timeout=10) as direct:
            answered = direct.headers["Content-Disposition"]
            body = direct.read()
        assert answered.startswith(f"{disposition}; filename="), (path, answered)
        assert "filename*=UTF-8''" in answered and name in answered, (path, answered)
        if path.endswith("/original"):
            assert body == original
