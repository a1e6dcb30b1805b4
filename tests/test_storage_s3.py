"""The s3 storage backend against real HTTP endpoints on 127.0.0.1: moto, and failing stores.

The contract every backend keeps is tested in test_plugin_contract.py; this module covers
what only S3 does: presigned URLs, the key prefix, configuration errors and retries.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import urllib.error
import urllib.request
from email.message import Message

import pytest
import urllib3

from app.plugin_api import ObjectNotFound, StorageUnavailable
from app.plugins import load_plugins
from plugins.storage_s3 import S3Storage
from tests.s3server import FailingStore, admin_client, s3_config

pytest_plugins = ["tests.s3server"]  # the moto_endpoint and s3_bucket fixtures


@pytest.fixture
def storage(moto_endpoint, s3_bucket) -> S3Storage:
    return S3Storage(s3_config(moto_endpoint, s3_bucket))


def _get(url: str) -> tuple[int, Message, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers, response.read()


def _post_form(upload: dict, content: bytes, content_type: str) -> int:
    """Send the upload as a browser would: every signed field first, then the file."""
    fields = [*upload["fields"].items(), ("file", ("photo.png", content, content_type))]
    body, form_type = urllib3.encode_multipart_formdata(fields)
    request = urllib.request.Request(
        upload["url"], data=body, method=upload["method"], headers={"Content-Type": form_type}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _policy(upload: dict) -> dict:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


# --- presigned URLs ------------------------------------------------------------------------


def test_presigned_get_downloads_the_bytes(storage):
    payload = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    storage.save("originals/t1/a.png", io.BytesIO(payload), "image/png")
    url = storage.url("originals/t1/a.png", 120)
    assert url.startswith(storage.endpoint_url + "/")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    status, headers, body = _get(url)
    assert status == 200
    assert body == payload
    assert headers["Content-Type"] == "image/png"


def test_presigned_get_of_a_missing_object_is_404(storage):
    with pytest.raises(urllib.error.HTTPError) as error:
        _get(storage.url("originals/t1/missing.png", 60))
    assert error.value.code == 404


@pytest.mark.parametrize("expires_in", [0, -1, 7 * 24 * 3600 + 1, 1.5])
def test_presign_rejects_bad_expiry(storage, expires_in):
    with pytest.raises(ValueError, match="expires_in"):
        storage.url("k", expires_in)
    with pytest.raises(ValueError, match="expires_in"):
        storage.presign_upload("k", "image/png", 1000, expires_in)


def test_presigned_post_policy_limits_size_and_type(storage, s3_bucket):
    before = time.time()
    upload = storage.presign_upload("uploads/t1/new.png", "image/png", 5_000_000, 600)
    assert upload["method"] == "POST"
    assert upload["url"] == f"{storage.endpoint_url}/{s3_bucket}"
    fields = upload["fields"]
    assert fields["key"] == "uploads/t1/new.png"
    assert fields["Content-Type"] == "image/png"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert {"x-amz-credential", "x-amz-date", "x-amz-signature", "policy"} <= set(fields)

    policy = _policy(upload)
    conditions = policy["conditions"]
    assert ["content-length-range", 1, 5_000_000] in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert {"bucket": s3_bucket} in conditions
    assert {"key": "uploads/t1/new.png"} in conditions
    expires = time.mktime(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ"))
    expires -= time.timezone  # the policy states UTC
    assert before + 600 - 5 <= expires <= time.time() + 600 + 5


def test_presigned_post_accepts_an_upload(storage, moto_endpoint, s3_bucket):
    payload = b"\x89PNG\r\n\x1a\n" + b"pixels" * 1000
    upload = storage.presign_upload("uploads/t1/new.png", "image/png", len(payload), 300)
    assert _post_form(upload, payload, "image/png") == 204
    assert storage.exists("uploads/t1/new.png")
    with storage.open("uploads/t1/new.png") as stored:
        assert stored.read() == payload
    head = admin_client(moto_endpoint).head_object(Bucket=s3_bucket, Key="uploads/t1/new.png")
    assert head["ContentLength"] == len(payload)
    assert head["ContentType"] == "image/png"


@pytest.mark.parametrize(
    ("content_type", "max_bytes"), [("", 10), ("image/png\r\nX: y", 10), ("image/png", 0)]
)
def test_presign_upload_rejects_bad_arguments(storage, content_type, max_bytes):
    with pytest.raises(ValueError):
        storage.presign_upload("k", content_type, max_bytes, 60)


# --- prefix and configuration ---------------------------------------------------------------


def test_objects_land_under_the_prefix(moto_endpoint, s3_bucket):
    storage = S3Storage(s3_config(moto_endpoint, s3_bucket, S3_PREFIX="/deploy-1/likeness/"))
    admin = admin_client(moto_endpoint)
    admin.put_object(Bucket=s3_bucket, Key="originals/outside.png", Body=b"not ours")

    storage.save("originals/a.png", io.BytesIO(b"png"), "image/png")
    listed = admin.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == [
        "deploy-1/likeness/originals/a.png",
        "originals/outside.png",
    ]
    assert storage.exists("originals/a.png")
    assert not storage.exists("originals/outside.png")  # outside the prefix: invisible
    with pytest.raises(ObjectNotFound):
        storage.open("originals/outside.png")
    assert f"/{s3_bucket}/deploy-1/likeness/originals/a.png?" in storage.url("originals/a.png", 60)
    assert _get(storage.url("originals/a.png", 60))[2] == b"png"
    upload = storage.presign_upload("uploads/b.png", "image/png", 100, 60)
    assert upload["fields"]["key"] == "deploy-1/likeness/uploads/b.png"
    assert {"key": "deploy-1/likeness/uploads/b.png"} in _policy(upload)["conditions"]

    storage.delete("originals/a.png")
    remaining = admin.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [item["Key"] for item in remaining] == ["originals/outside.png"]


def test_bad_prefix_is_refused(moto_endpoint, s3_bucket):
    with pytest.raises(ValueError, match="S3_PREFIX"):
        S3Storage(s3_config(moto_endpoint, s3_bucket, S3_PREFIX="a/../b"))


@pytest.mark.parametrize("bucket", [None, ""])
def test_missing_bucket_setting_fails_at_construction(bucket):
    config = s3_config("http://127.0.0.1:9", "unused")
    config["S3_BUCKET"] = bucket
    with pytest.raises(ValueError, match="S3_BUCKET is not set"):
        S3Storage(config)
    with pytest.raises(ValueError, match="S3_BUCKET is not set"):
        load_plugins(
            {**config, "STORAGE_BACKEND": "s3", "EMBEDDERS": ["phash"], "PLUGINS_BUILTIN_ONLY": 1}
        )


def test_a_bucket_that_does_not_exist_is_unavailable_not_missing(moto_endpoint):
    storage = S3Storage(s3_config(moto_endpoint, "no-such-bucket-here"))
    with pytest.raises(StorageUnavailable, match="no-such-bucket-here"):
        storage.check()
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        storage.open("k")  # not ObjectNotFound: the store itself is misconfigured


# --- failing stores ---------------------------------------------------------------------------

OPERATIONS = {
    "save": lambda s: s.save("originals/a.png", io.BytesIO(b"png"), "image/png"),
    "open": lambda s: s.open("originals/a.png"),
    "exists": lambda s: s.exists("originals/a.png"),
    "delete": lambda s: s.delete("originals/a.png"),
    "check": lambda s: s.check(),
}


@pytest.mark.parametrize("operation", ["save", "open", "check"])
def test_a_store_answering_503_is_retried_then_unavailable(operation):
    with FailingStore("503") as store:
        storage = S3Storage(s3_config(store.endpoint, "bucket", S3_MAX_ATTEMPTS=3))
        with pytest.raises(StorageUnavailable) as error:
            OPERATIONS[operation](storage)
    assert len(store.requests) == 3
    assert len(set(store.requests)) == 1  # the same request, retried
    message = str(error.value)
    assert message.startswith("S3 storage unavailable: ")
    assert "bucket 'bucket'" in message and store.endpoint in message
    assert "HTTP 503 after 3 attempt(s)" in message


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_max_attempts_is_honoured(operation):
    with FailingStore("503") as store:
        storage = S3Storage(s3_config(store.endpoint, "bucket", S3_MAX_ATTEMPTS=1))
        with pytest.raises(StorageUnavailable, match="HTTP 503 after 1 attempt"):
            OPERATIONS[operation](storage)
    assert len(store.requests) == 1


def test_a_store_that_never_answers_times_out():
    with FailingStore("stall") as store:
        storage = S3Storage(
            s3_config(store.endpoint, "bucket", S3_MAX_ATTEMPTS=2, S3_READ_TIMEOUT=0.3)
        )
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="Read timeout"):
            storage.check()
        assert time.monotonic() - started < 5
    assert len(store.requests) == 2


def test_nothing_listening_is_unavailable():
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = S3Storage(s3_config(f"http://127.0.0.1:{port}", "bucket", S3_MAX_ATTEMPTS=1))
    with pytest.raises(StorageUnavailable, match="Could not connect"):
        storage.check()
    with pytest.raises(StorageUnavailable, match="save 'k'"):
        storage.save("k", io.BytesIO(b"x"), "text/plain")
