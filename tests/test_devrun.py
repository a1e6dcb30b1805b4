"""The `make run` supervisor (app.devrun), with real processes but without the Flask app.

Each test writes a tiny Procfile whose processes are a fake script below, runs
`python -m app.devrun` with LIKENESS_PROCFILE / LIKENESS_INSTANCE_PATH pointing at a short
temporary directory, and checks by pid (via /proc) that nothing outlives the supervisor.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devrun import parse_procfile, shell_command

REPO_ROOT = Path(__file__).resolve().parents[1]

FAKE = textwrap.dedent(
    """
    import hashlib, os, signal, socket, sys, time

    name, args = sys.argv[1], sys.argv[2:]
    secret = hashlib.sha256(os.environ.get("SECRET_KEY", "").encode()).hexdigest()[:12]
    print(
        f"{name} pid={os.getpid()} env={os.environ.get('LIKENESS_ENV')} "
        f"host={os.environ.get('HOST')} secret={secret}",
        flush=True,
    )
    if "--listen" in args:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((os.environ["HOST"], int(os.environ["PORT"])))
        sock.listen()
    if "--redis" in args:
        import redis
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        client.set("devrun-test", name)
        print(f"{name} redis ok", flush=True)
    if "--stubborn" in args:
        # Ignores SIGTERM and leaves a grandchild in its own process group, like rq's horse.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = os.fork()
        if grandchild == 0:
            os.setpgrp()
            while True:
                time.sleep(1)
        print(f"{name} grandchild={grandchild}", flush=True)
    exit_after = float(args[args.index("--exit-after") + 1]) if "--exit-after" in args else None
    started = time.monotonic()
    while True:
        time.sleep(0.2)
        if exit_after is not None and time.monotonic() - started > exit_after:
            sys.exit(3)
    """
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl"),
]


def alive(pid: int) -> bool:
    """Running and not a zombie (pid 1 in some sandboxes never reaps what it adopts)."""
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevRun:
    """`python -m app.devrun` as a subprocess, its output collected line by line."""

    def __init__(self, workdir: str, port: int, grace: float = 10) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"REDIS_URL", "SECRET_KEY", "PORT", "LIKENESS_ENV", "NO_COLOR"}
        }
        env.update(
            LIKENESS_PROCFILE=os.path.join(workdir, "Procfile"),
            LIKENESS_INSTANCE_PATH=os.path.join(workdir, "inst"),
            LIKENESS_DEVRUN_GRACE=str(grace),
            PORT=str(port),
        )
        self.instance = env["LIKENESS_INSTANCE_PATH"]
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.devrun"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self.changed.wait(0.5)):
                    raise AssertionError(f"no line matching {pattern!r} in:\n{self.output}")
                self.changed.wait(min(left, 0.2))

    def wait_for_all(self, pattern: str, count: int, timeout: float = 20) -> list[str]:
        """The first group of `count` lines matching `pattern`, waiting for them to appear."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [m.group(1) for line in self.lines if (m := regex.search(line))]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(
                        f"fewer than {count} lines match {pattern!r}:\n{self.output}"
                    )
                self.changed.wait(min(left, 0.2))

    def pid_of(self, name: str) -> int:
        return int(self.wait_for(rf"\b{name} pid=(\d+)").group(1))

    def finish(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"devrun did not exit in {timeout}s:\n{self.output}") from None


@pytest.fixture
def workdir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="lkd", dir="/tmp")
    with open(os.path.join(directory, "fake.py"), "w") as fh:
        fh.write(FAKE)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def runs() -> Iterator[list[DevRun]]:
    """Every DevRun a test starts; killed at teardown should the test fail half-way."""
    started: list[DevRun] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def write_procfile(workdir: str, **entries: str) -> None:
    with open(os.path.join(workdir, "Procfile"), "w") as fh:
        fh.write("# written by the test\n")
        for name, command in entries.items():
            fh.write(f"{name}: {command}\n")


def start(runs: list[DevRun], workdir: str, port: int, grace: float = 10) -> DevRun:
    run = DevRun(workdir, port, grace)
    runs.append(run)
    return run


def redis_pid(run: DevRun) -> int:
    return int(run.wait_for(r"redis-server \(pid (\d+)\)").group(1))


def test_ctrl_c_stops_everything_and_a_second_run_works(workdir: str, runs: list[DevRun]) -> None:
    write_procfile(
        workdir,
        release="echo released",
        web="python fake.py web --listen",
        worker="python fake.py worker --redis",
    )
    port = free_port()
    secrets_seen = []
    for _ in range(2):
        run = start(runs, workdir, port)
        run.wait_for(
            rf"^Likeness is running at http://127\.0\.0\.1:{port} "
            r"\(Ctrl-C stops web, worker and Redis\)"
        )
        run.wait_for(r"^worker +\| worker redis ok")
        pids = {"web": run.pid_of("web"), "worker": run.pid_of("worker"), "redis": redis_pid(run)}
        with open(os.path.join(run.instance, "redis.pid")) as fh:
            assert int(fh.read()) == pids["redis"]
        assert all(alive(pid) for pid in pids.values())
        line = run.wait_for(r"web pid=\d+ env=(\S+) host=(\S+) secret=(\S+)")
        assert line.group(1, 2) == ("development", "127.0.0.1")
        secrets_seen.append(line.group(3))

        run.process.send_signal(signal.SIGINT)
        assert run.finish() == 0, run.output
        for name, pid in pids.items():
            assert not alive(pid), f"{name} (pid {pid}) survived Ctrl-C"
        assert not os.path.exists(os.path.join(run.instance, "redis.sock"))
        assert not os.path.exists(os.path.join(run.instance, "redis.pid"))
        out = run.output
        assert out.index("release | released") < out.index("started web")

    # The generated SECRET_KEY is private and the same on the second run.
    key_path = os.path.join(workdir, "inst", "secret_key")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    with open(key_path) as fh:
        key = fh.read().strip()
    assert secrets_seen == [hashlib.sha256(key.encode()).hexdigest()[:12]] * 2


def test_sigterm_kills_stubborn_children_and_their_escaped_grandchildren(
    workdir: str, runs: list[DevRun]
) -> None:
    write_procfile(
        workdir, web="python fake.py web --listen", worker="python fake.py worker --stubborn"
    )
    run = start(runs, workdir, free_port(), grace=1)
    run.wait_for(r"^Likeness is running")
    worker = run.pid_of("worker")
    grandchild = int(run.wait_for(r"worker grandchild=(\d+)").group(1))
    pids = [run.pid_of("web"), worker, grandchild, redis_pid(run)]

    began = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 0, run.output
    assert time.monotonic() - began < 8
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived:\n{run.output}"
    assert "worker did not stop in time; killing it" in run.output


def test_a_child_exiting_stops_everything(workdir: str, runs: list[DevRun]) -> None:
    write_procfile(
        workdir,
        web="python fake.py web --listen",
        worker="python fake.py worker --exit-after 1",
    )
    run = start(runs, workdir, free_port())
    pids = [run.pid_of("web"), run.pid_of("worker"), redis_pid(run)]
    code = run.finish()
    assert code != 0
    assert "worker exited with code 3 on its own; stopping everything" in run.output
    for pid in pids:
        assert not alive(pid)
    assert not os.path.exists(os.path.join(run.instance, "redis.sock"))


def test_failing_release_starts_nothing_else(workdir: str, runs: list[DevRun]) -> None:
    write_procfile(
        workdir,
        release="echo migrating; exit 4",
        web="python fake.py web --listen",
        worker="python fake.py worker",
    )
    run = start(runs, workdir, free_port())
    server = redis_pid(run)
    assert run.finish() == 4
    out = run.output
    assert "release | migrating" in out
    assert "release exited with code 4" in out
    assert "started web" not in out and "started worker" not in out
    assert not alive(server)
    assert not os.path.exists(os.path.join(run.instance, "redis.sock"))


def test_sigkilled_supervisor_leaves_no_orphans(workdir: str, runs: list[DevRun]) -> None:
    write_procfile(workdir, web="python fake.py web --listen", worker="python fake.py worker")
    port = free_port()
    run = start(runs, workdir, port)
    run.wait_for(r"^Likeness is running")
    pids = [run.pid_of("web"), run.pid_of("worker"), redis_pid(run)]
    run.process.kill()
    run.process.wait()
    for pid in pids:
        assert wait_dead(pid, 5), f"pid {pid} outlived the SIGKILLed supervisor"

    again = start(runs, workdir, port)
    again.wait_for(r"^Likeness is running")
    again.process.send_signal(signal.SIGINT)
    assert again.finish() == 0, again.output


def test_port_in_use_fails_before_starting_anything(workdir: str, runs: list[DevRun]) -> None:
    write_procfile(workdir, web="python fake.py web --listen", worker="python fake.py worker")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = start(runs, workdir, taken.getsockname()[1])
        assert run.finish() == 1
    assert "is already in use" in run.output
    assert "redis-server (pid" not in run.output


def test_real_gunicorn_and_rq_worker_shut_down_cleanly(workdir: str, runs: list[DevRun]) -> None:
    """The production Procfile's shape, with a plain WSGI callable in place of the app."""
    with open(os.path.join(workdir, "dummy.py"), "w") as fh:
        fh.write(
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'hello from gunicorn']\n"
        )
    write_procfile(
        workdir,
        release="true",
        # --no-control-socket: gunicorn 27 otherwise shares ~/.gunicorn/gunicorn.ctl.
        web="gunicorn dummy:app --bind ${HOST:-0.0.0.0}:${PORT:-5000} "
        "--workers ${WEB_CONCURRENCY:-2} --access-logfile - --no-control-socket",
        worker="rq worker --url ${REDIS_URL} likeness",
    )
    port = free_port()
    run = start(runs, workdir, port)
    run.wait_for(r"^Likeness is running")
    run.wait_for(r"^worker +\| .*Listening on likeness")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.read() == b"hello from gunicorn"
    pids = [
        int(run.wait_for(rf"started {name} \(pid (\d+)\)").group(1)) for name in ("web", "worker")
    ]
    # Gunicorn's two workers boot independently: wait for both lines, not just the first.
    pids += [int(m) for m in run.wait_for_all(r"Booting worker with pid: (\d+)", 2)]
    pids.append(redis_pid(run))
    assert len(pids) == 5

    run.process.send_signal(signal.SIGINT)
    assert run.finish() == 0, run.output
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived:\n{run.output}"
    assert "did not stop in time" not in run.output


def test_parse_procfile(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "# comment\n\nrelease: flask --app wsgi db upgrade\n"
        "web: gunicorn wsgi:app --bind ${HOST:-0.0.0.0}:${PORT:-5000}\n"
    )
    assert parse_procfile(str(procfile)) == [
        ("release", "flask --app wsgi db upgrade"),
        ("web", "gunicorn wsgi:app --bind ${HOST:-0.0.0.0}:${PORT:-5000}"),
    ]


def test_shell_command_execs_only_simple_commands() -> None:
    assert shell_command("flask --app wsgi worker") == "exec flask --app wsgi worker"
    assert shell_command("gunicorn x >log 2>&1") == "exec gunicorn x >log 2>&1"
    for compound in ("a && b", "a; b", "a | b", "FOO=1 a", "if true; then a; fi", "a &"):
        assert shell_command(compound) == compound
