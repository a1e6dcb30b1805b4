"""`/healthz` names each dependency and fails when one is down, a worker able to run jobs
included; anonymous callers see names and states only; uploads survive Redis being down."""

from __future__ import annotations

import logging
import os
import signal

import pytest
from rq import Worker

from app.extensions import redis_connection
from tests import samples
from tests.conftest import wait_until

FAST_HEARTBEAT = {"WORKER_HEARTBEAT_SECONDS": 1}
ALL_OK = {"database": "ok", "redis": "ok", "storage": "ok", "worker": "ok"}


def healthz_is(client, status_code):
    response = client.get("/healthz")
    return response if response.status_code == status_code else None


@pytest.mark.slow
def test_all_ok_with_a_worker_running(client, start_worker):
    start_worker(**FAST_HEARTBEAT)
    response = wait_until(lambda: healthz_is(client, 200), 30, "the worker never reported")
    assert response.json == {"status": "ok", "checks": ALL_OK}


def test_no_worker_is_503_naming_the_worker(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json == {
        "status": "unavailable",
        "checks": {**ALL_OK, "worker": "failed"},
    }


@pytest.mark.slow
def test_a_killed_worker_is_noticed(client, start_worker):
    worker = start_worker(**FAST_HEARTBEAT)
    wait_until(lambda: healthz_is(client, 200), 30, "the worker never reported")
    os.kill(worker.pid, signal.SIGKILL)
    # Its last report lapses after three heartbeats.
    response = wait_until(lambda: healthz_is(client, 503), 10, "a dead worker still counts")
    assert response.json["checks"]["worker"] == "failed"


@pytest.mark.slow
def test_a_worker_that_cannot_reach_its_database_is_not_counted(app, client, start_worker):
    worker = start_worker(DATABASE_URL="postgresql://nobody@127.0.0.1:9/nothing", **FAST_HEARTBEAT)

    def complained():
        return b"cannot run jobs" in worker.log_path.read_bytes()

    wait_until(complained, 30, "the worker never checked its database")
    with app.app_context():
        listening = Worker.all(connection=redis_connection.client)
    assert [w.pid for w in listening] == [worker.pid]  # alive and listening, yet useless
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json["checks"]["worker"] == "failed"


class TestRedisDown:
    @pytest.fixture
    def config_overrides(self, tmp_path):
        return {"REDIS_URL": f"unix://{tmp_path}/nobody-listens.sock"}

    def test_healthz_is_503_naming_redis_without_details(self, client, tmp_path, caplog):
        with caplog.at_level(logging.WARNING):
            response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json == {
            "status": "unavailable",
            "checks": {"database": "ok", "redis": "failed", "storage": "ok", "worker": "failed"},
        }
        # Anonymous callers learn no host, socket or port; operators find them in the log.
        assert str(tmp_path) not in response.get_data(as_text=True)
        assert "nobody-listens.sock" in caplog.text

    def test_upload_still_succeeds_and_stays_pending(self, client, team_a, upload):
        response = upload(team_a, [(samples.jpeg(1), "a.jpg")])
        assert response.status_code == 201
        assert response.json["items"][0]["status"] == "pending"
