"""`make run` started as a person starts it, for the tests that need the whole thing running:
in a session of its own with a temporary instance folder and a free port, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from config import BASE_DIR

# Settings a developer's shell might carry that would point `make run` somewhere else.
FOREIGN = ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "STORAGE_ROOT", "LIKENESS_ENV", "PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(root: int) -> set[int]:
    """Every live process whose chain of parents leads to `root`."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name is in parentheses and may hold spaces: split after it.
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_name(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


class MakeRun:
    def __init__(self, instance: str, port: int):
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        env.update(LIKENESS_INSTANCE_PATH=instance, PORT=str(port))
        self.port = port
        self.env = env  # what a second terminal beside it would have
        self.output: list[str] = []
        self.process = subprocess.Popen(
            ["make", "run"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own foreground group, like a terminal's job
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def wait_healthy(self, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "make run exited:\n" + "".join(self.output)
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return json.load(response)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        raise AssertionError("never healthy:\n" + "".join(self.output[-60:]))

    def ctrl_c(self, timeout: float = 30) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError("make run did not stop:\n" + "".join(self.output)) from None


@contextmanager
def temporary_instance() -> Iterator[str]:
    """A fresh instance folder, removed afterwards."""
    # Short: the Redis unix socket lives here and its path is limited to 107 bytes.
    path = tempfile.mkdtemp(prefix="lk-run-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
