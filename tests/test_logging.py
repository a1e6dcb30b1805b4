"""Structured logs: the request id (made here or taken from a trusted proxy, echoed, carried into
the jobs a request queued) and an access log that never holds a secret."""

from __future__ import annotations

import io
import json
import logging
import re
from urllib.parse import urlsplit

import pytest

from app import create_app, logs
from app.extensions import db
from tests import samples
from tests.conftest import PASSWORD, make_config
from tests.s3server import s3_config

pytest_plugins = ["tests.s3server"]


@pytest.fixture
def captured_logs():
    """Every record of every logger, down to DEBUG, through the production JSON handler."""
    stream = io.StringIO()
    handler = logs.handler("json")
    # It writes to sys.stderr: here, to this test's stream instead.
    handler.emit = lambda record: stream.write(handler.format(record) + "\n")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_response_carries_a_new_request_id(client):
    first = client.get("/login").headers["X-Request-ID"]
    second = client.get("/login").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_a_clients_request_id_is_ignored_without_a_trusted_proxy(client):
    answer = client.get("/login", headers={"X-Request-ID": "forged-by-client"})
    assert answer.headers["X-Request-ID"] != "forged-by-client"


@pytest.mark.parametrize("config_overrides", [{"TRUSTED_PROXY_COUNT": 1}], ids=["proxied"])
@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("0b7f2c1e-4a5d-4e8f-9c3b-2d1a6f0e9b87", True),  # Heroku's router
        ("req:42/a+b=", True),
        ("", False),
        ("two words", False),
        ('quote"d', False),
        ("tab\there", False),
        ("caf\u00e9", False),
        ("x" * 129, False),
        ("-starts-with-a-dash", False),
    ],
)
def test_a_trusted_proxys_sane_request_id_is_kept(client, incoming, kept):
    answer = client.get("/login", headers={"X-Request-ID": incoming})
    echoed = answer.headers["X-Request-ID"]
    assert (echoed == incoming) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed)


def test_no_secret_reaches_any_log_line(app, client, team_a, person, captured_logs):
    member = person(team_a, "admin", email="logged@example.com")  # signs in: a login
    cookie = member.client.get_cookie("session").value
    assert member.client.get("/").status_code == 200

    listed = client.get("/api/v1/images", headers=team_a.headers())  # a keyed request
    assert listed.status_code == 200
    bearer = client.get("/api/v1/team", headers={"Authorization": f"Bearer {team_a.key}"})
    assert bearer.status_code == 200

    data = samples.jpeg(3)  # a presigned upload: its URL's token is the credential
    begun = client.post(
        "/api/v1/uploads",
        json={"filename": "d.jpg", "content_type": "image/jpeg", "size_bytes": len(data)},
        headers=team_a.headers(),
    ).json
    target = urlsplit(begun["upload"]["url"])
    form = {**begun["upload"]["fields"], "file": (io.BytesIO(data), "d.jpg")}
    assert client.post(target.path, data=form, content_type="multipart/form-data").status_code
    token = target.path.rsplit("/", 1)[1]
    done = client.post(f"/api/v1/uploads/{begun['image_id']}/complete", headers=team_a.headers())
    assert done.status_code == 201
    # A refused password and a wrong key are logged too, without what was tried.
    assert app.test_client().post(
        "/login", data={"email": "logged@example.com", "password": "wrong " + PASSWORD}
    ).status_code in (401, 429)
    client.get("/api/v1/team", headers={"X-API-Key": team_a.key[:-2] + "zz"})

    text = captured_logs.getvalue()
    lines = json_lines(captured_logs)  # every line is one JSON object
    for secret in (PASSWORD, team_a.key, team_a.key.split("_", 2)[-1], cookie, token):
        assert secret not in text
    access = [line for line in lines if line["logger"] == "likeness.access"]
    paths = {(line["method"], line["path"]) for line in access}
    assert ("POST", "/login") in paths and ("GET", "/api/v1/images") in paths
    assert ("POST", "/api/v1/uploads/direct/[redacted]") in paths
    keyed = next(line for line in access if line["path"] == "/api/v1/images")
    assert keyed["key_prefix"] == team_a.key.split("_")[1]
    assert keyed["team_id"] == str(team_a.id) and keyed["status"] == 200
    assert keyed["request_id"] == listed.headers["X-Request-ID"]
    assert isinstance(keyed["duration_ms"], float)
    gallery = next(line for line in access if line["path"] == "/")
    assert gallery["user_id"] == str(member.user_id) and gallery["team_id"] == str(team_a.id)


def test_a_request_id_follows_the_upload_into_its_jobs(app, upload, team_a, run_worker_process):
    answer = upload(team_a, [(samples.jpeg(5), "a.jpg")])
    assert answer.status_code == 201
    request_id = answer.headers["X-Request-ID"]
    image_id = answer.json["items"][0]["id"]

    worker = run_worker_process()  # a real `flask worker --burst`, logging as in production
    lines = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    processing = [line for line in lines if line.get("job_id") == f"process-image-{image_id}"]
    assert processing and all(line["request_id"] == request_id for line in processing)
    # The index builds that processing asked for carry the request that started it all.
    builds = [line for line in lines if str(line.get("job_id")).startswith("build-index-")]
    assert builds and all(line["request_id"] == request_id for line in builds)
    assert all(line["level"] and line["time"] for line in lines)


def test_logs_are_json_outside_tests_and_text_on_request(app_env):
    level = logging.getLogger().level
    production = create_app(make_config(app_env, TESTING=False, LOG_FORMAT="json"))
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "_likeness_handler", 0)]
    try:
        assert len(handlers) == 1 and not production.logger.handlers
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        with logs.bound("rid-1", "job-1"):
            handlers[0].filter(record)
            line = json.loads(handlers[0].format(record))
        assert line["message"] == "hello you" and line["request_id"] == "rid-1"
        assert line["job_id"] == "job-1" and line["level"] == "INFO"
        create_app(make_config(app_env, TESTING=False, LOG_FORMAT="text"))
        again = [h for h in logging.getLogger().handlers if getattr(h, "_likeness_handler", 0)]
        assert len(again) == 1 and not isinstance(again[0].formatter, type(handlers[0].formatter))
        with pytest.raises(ValueError, match="LOG_FORMAT"):
            logs.configure_logging("INFO", "yaml")
    finally:
        for h in logging.getLogger().handlers[:]:
            if getattr(h, "_likeness_handler", 0):
                logging.getLogger().removeHandler(h)
        logging.getLogger().setLevel(level)
        with production.app_context():
            db.engine.dispose()


def test_no_signature_reaches_the_log_even_at_debug(app, app_env, team_a, moto_endpoint, s3_bucket):
    """LOG_LEVEL=DEBUG on S3: boto3 would log each request's signed headers; it may not."""
    import urllib3

    on_s3 = create_app(
        make_config(app_env, STORAGE_BACKEND="s3", **s3_config(moto_endpoint, s3_bucket))
    )
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    capture = logs.handler("json")
    capture.emit = lambda record: stream.write(capture.format(record) + "\n")
    logs.configure_logging("DEBUG", "json")  # as LOG_LEVEL=DEBUG does outside tests
    root.addHandler(capture)
    try:
        client = on_s3.test_client()
        data = samples.jpeg(6)
        begun = client.post(
            "/api/v1/uploads",
            json={"filename": "s3.jpg", "content_type": "image/jpeg", "size_bytes": len(data)},
            headers=team_a.headers(),
        ).json
        fields = begun["upload"]["fields"]
        posted = urllib3.request(
            "POST", begun["upload"]["url"], fields={**fields, "file": ("s3.jpg", data)}
        )
        assert posted.status in (200, 201, 204)
        done = client.post(
            f"/api/v1/uploads/{begun['image_id']}/complete", headers=team_a.headers()
        )
        assert done.status_code == 201
        download = client.get(f"/api/v1/images/{done.json['id']}/file", headers=team_a.headers())
        assert download.status_code == 302  # a presigned GET
    finally:
        root.removeHandler(capture)
        for h in root.handlers[:]:
            if getattr(h, "_likeness_handler", 0):
                root.removeHandler(h)
        root.setLevel(level)
        for name in logs.TALKATIVE_LIBRARIES:
            logging.getLogger(name).setLevel(logging.NOTSET)
        with on_s3.app_context():
            db.engine.dispose()
    text = stream.getvalue()
    assert "likeness.access" in text  # the capture works
    signature = next(v for k, v in fields.items() if k.lower() == "x-amz-signature")
    assert signature not in text and fields["policy"] not in text
    assert "Signature=" not in text and "X-Amz-Signature" not in text
    assert download.headers["Location"].split("?")[1] not in text
