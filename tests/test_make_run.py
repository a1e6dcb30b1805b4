"""`make run` as a person runs it: honcho starts web, worker and Redis; Ctrl-C stops them all.

The test starts `make run` in a session of its own, as a terminal would, with a short instance
folder and a free port, waits for `/healthz`, records every process below `make` by PID, then
sends SIGINT to the whole foreground group (what Ctrl-C does) and checks that every one of
those PIDs is gone. A second run must start cleanly and find what the first left in Redis.
"""

from __future__ import annotations

import os
import time

import pytest
import redis

from tests.make_run import (
    MakeRun,
    alive,
    command_name,
    descendants,
    free_port,
    temporary_instance,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def instance():
    with temporary_instance() as path:
        yield path


def run_once(instance: str, check) -> None:
    run = MakeRun(instance, free_port())
    try:
        health = run.wait_healthy()
        assert health["status"] == "ok", health
        pids = descendants(run.process.pid)
        names = {command_name(pid) for pid in pids if alive(pid)}
        assert {"honcho", "gunicorn", "redis-server"} <= names, names
        check(redis.Redis(unix_socket_path=os.path.join(instance, "redis.sock")))
    finally:
        run.ctrl_c()
    deadline = time.monotonic() + 10
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after Ctrl-C: {left}\n" + "".join(run.output[-40:])


def test_ctrl_c_stops_everything_and_a_second_run_starts_cleanly(instance):
    def leave_a_key(client):
        client.set("survives-a-restart", "yes")

    def find_the_key(client):
        # The append-only file in the instance kept what the first run wrote.
        assert client.get("survives-a-restart") == b"yes"

    run_once(instance, leave_a_key)
    run_once(instance, find_the_key)
    assert os.path.exists(os.path.join(instance, "secret_key"))
    assert os.path.exists(os.path.join(instance, "likeness.db"))
