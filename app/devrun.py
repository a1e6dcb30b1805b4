"""`python -m app.devrun` (what `make run` calls): run Likeness on one box, honcho-style.

It prepares the instance folder (and, in development, a persistent SECRET_KEY), starts the
embedded Redis unless REDIS_URL points elsewhere, then reads the Procfile: the `release` line
runs to completion first, every other line runs side by side via `sh -c`, output prefixed with
its name. Ctrl-C or SIGTERM stops the processes, then Redis. If any process exits on its own,
everything is stopped and the exit status is non-zero, naming the one that died.

Overrides, mainly for tests: LIKENESS_PROCFILE (default: the Procfile next to this package),
LIKENESS_INSTANCE_PATH (as in config.py), LIKENESS_DEVRUN_GRACE (seconds a process gets to
stop before SIGKILL, default 10).

Imports nothing of the app beyond app.embedded_redis (stdlib only) and never builds the Flask
app itself; the app runs only in the Procfile's processes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError, parent_death_signal

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "5000"
DEFAULT_GRACE_SECONDS = 10.0
SYSTEM_NAME = "devrun"

_PR_SET_CHILD_SUBREAPER = 36
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
# A command containing any of these is not one simple command (`&&`, `;`, `|`, `&`, ...).
_NOT_SIMPLE = re.compile(r"[;&|\n`]")
_FD_DUP = re.compile(r"[<>]&(?:\d+|-)")  # `2>&1` is a redirection, not a list
_SHELL_KEYWORDS = {"if", "for", "while", "until", "case", "!", "exec", "{", "("}
_COLORS = ("36", "33", "32", "35", "34", "31")


class StartupError(Exception):
    """Something we need before starting any process is missing; the message says what."""


def parse_procfile(path: str) -> list[tuple[str, str]]:
    """Return the (name, command) pairs of a Procfile, in file order."""
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _PROCFILE_LINE.match(line)
            if not match:
                raise StartupError(f"{path}:{number}: expected `name: command`, got {line!r}")
            name, command = match.group(1), match.group(2).strip()
            if name in seen:
                raise StartupError(f"{path}:{number}: process {name!r} is defined twice")
            seen.add(name)
            entries.append((name, command))
    return entries


def shell_command(command: str) -> str:
    """The `sh -c` script for a Procfile command: `exec command` when that means the same.

    Without exec, dash forks the command and the parent-death signal (which is not inherited
    across fork) would reach only the shell: a SIGKILLed supervisor would orphan gunicorn.
    Lists, pipelines, compound commands and leading assignments are left as they are.
    """
    first = command.split(None, 1)[0] if command.strip() else ""
    if (
        _NOT_SIMPLE.search(_FD_DUP.sub(" ", command))
        or first in _SHELL_KEYWORDS
        or "=" in first
        or first.startswith(("(", "{"))
    ):
        return command
    return f"exec {command}"


def ensure_secret_key(instance: str) -> str:
    """Read instance/secret_key, creating it (mode 0600) on first use.

    Persistent so that sessions and CSRF tokens survive a restart of `make run`.
    """
    path = os.path.join(instance, "secret_key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as fh:
            key = fh.read().strip()
        if key:
            # A copied-around file may have lost its mode; it is a credential.
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
            return key
        os.unlink(path)  # empty (e.g. a crash mid-write): start over
        return ensure_secret_key(instance)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key


def _human_list(items: Iterable[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux), so nothing a process forks outlives `make run`.

    rq's work horse, for one, moves to its own process group, out of reach of killpg.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _adopted_children(exclude: set[int]) -> list[tuple[int, bool]]:
    """(pid, is_zombie) of our direct children that we did not start ourselves."""
    me = os.getpid()
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == me:
            found.append((int(name), fields[0] == b"Z"))
    return found


class Output:
    """Line-oriented, lock-protected, name-prefixed writer (`web     | ...`)."""

    def __init__(self, names: Iterable[str], stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.width = max(len(name) for name in [SYSTEM_NAME, *names])
        self.lock = threading.Lock()
        self.colors: dict[str, str] = {}
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.use_color = isatty and not os.environ.get("NO_COLOR")

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self.width}} |"
        if self.use_color:
            color = self.colors.setdefault(name, _COLORS[len(self.colors) % len(_COLORS)])
            prefix = f"\033[{color}m{prefix}\033[0m"
        with self.lock:
            try:
                self.stream.write(f"{prefix} {text}\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # our own stdout went away; keep supervising regardless

    def system(self, text: str) -> None:
        self.line(SYSTEM_NAME, text)

    def plain(self, text: str) -> None:
        """An unprefixed line, for the one message that should stand out."""
        with self.lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass


@dataclass
class Child:
    name: str
    command: str
    process: subprocess.Popen[bytes]
    reader: threading.Thread = field(init=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal_group(self, sig: int) -> None:
        # Each child leads its own group (pgid == pid), so this reaches what it forked too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


class Supervisor:
    """Runs a Procfile's processes; see the module docstring."""

    def __init__(self, procfile: str, instance: str, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        self.procfile = os.path.abspath(procfile)
        self.instance = os.path.abspath(instance)
        self.grace = grace
        self.entries = parse_procfile(self.procfile)
        self.out = Output([name for name, _ in self.entries])
        self.env = dict(os.environ)
        self.redis: EmbeddedRedis | None = None
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.force = threading.Event()
        self.subreaper = False

    # -- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            # A second Ctrl-C: the user is out of patience, skip the graceful wait.
            self.force.set()
        self.stop_requested.set()

    def _install_signal_handlers(self) -> dict[int, object]:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    # -- setup ------------------------------------------------------------------------------

    def _prepare_environment(self) -> None:
        env = self.env
        os.makedirs(self.instance, exist_ok=True)
        env["LIKENESS_INSTANCE_PATH"] = self.instance
        env.setdefault("LIKENESS_ENV", "development")
        env["HOST"] = DEFAULT_HOST
        env["PORT"] = env.get("PORT") or DEFAULT_PORT
        if not env.get("SECRET_KEY"):
            if env["LIKENESS_ENV"] != "development":
                raise StartupError(
                    f"SECRET_KEY must be set when LIKENESS_ENV={env['LIKENESS_ENV']}"
                )
            env["SECRET_KEY"] = ensure_secret_key(self.instance)
        # The venv's bin first, so `flask` and `gunicorn` in the Procfile are this venv's.
        # sys.executable's directory, not its resolved target: a venv's python is a symlink.
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = os.pathsep.join([bindir, env.get("PATH", os.defpath)])
        # Otherwise Python children block-buffer into our pipe and logs arrive in lumps.
        env["PYTHONUNBUFFERED"] = "1"

    def _check_port_free(self) -> None:
        host, port = self.env["HOST"], int(self.env["PORT"])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Same option gunicorn uses, so a port in TIME_WAIT does not count as taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(
                        f"port {port} on {host} is already in use (another `make run`?); "
                        "stop it or set PORT"
                    ) from None
                raise

    def _start_redis(self) -> None:
        if self.env.get("REDIS_URL"):
            self.out.system(f"using REDIS_URL from the environment: {self.env['REDIS_URL']}")
            return
        self.redis = EmbeddedRedis(self.instance, persist=True)
        try:
            self.env["REDIS_URL"] = self.redis.start()
        except EmbeddedRedisError as exc:
            self.redis = None
            raise StartupError(str(exc)) from None
        self.out.system(f"redis-server (pid {self.redis.pid}) listening on {self.redis.url}")

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, name: str, command: str) -> Child:
        process = subprocess.Popen(
            ["/bin/sh", "-c", shell_command(command)],
            cwd=os.path.dirname(self.procfile),  # Procfile semantics: the app root
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own group: the terminal's Ctrl-C reaches only us, and we stop children in order.
            process_group=0,
            # If we are SIGKILLed, the child still hears about it.
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )
        child = Child(name, command, process)
        child.reader = threading.Thread(
            target=self._pump, args=(child,), name=f"devrun-{name}", daemon=True
        )
        child.reader.start()
        self.children.append(child)
        self.out.system(f"started {name} (pid {process.pid}): {command}")
        return child

    def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        for raw in iter(child.process.stdout.readline, b""):
            self.out.line(child.name, raw.decode(errors="replace").rstrip("\r\n"))

    def _known_pids(self) -> set[int]:
        pids = {child.pid for child in self.children}
        if self.redis is not None and self.redis.pid is not None:
            pids.add(self.redis.pid)
        return pids

    def _reap_adopted_zombies(self) -> None:
        if not self.subreaper:
            return
        for pid, zombie in _adopted_children(self._known_pids()):
            if zombie:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def _stop_children(self) -> None:
        alive = [c for c in self.children if c.process.poll() is None]
        if alive:
            self.out.system(f"stopping {_human_list(c.name for c in alive)}")
        for child in alive:
            child.signal_group(signal.SIGTERM)
        start = time.monotonic()
        repeated = False
        while any(c.process.poll() is None for c in alive):
            elapsed = time.monotonic() - start
            if self.force.is_set() or elapsed >= self.grace:
                for child in alive:
                    if child.process.poll() is None:
                        self.out.system(f"{child.name} did not stop in time; killing it")
                        child.signal_group(signal.SIGKILL)
                for child in alive:
                    child.process.wait()
                break
            if not repeated and elapsed >= self.grace / 2:
                # A second SIGTERM turns rq's warm shutdown (finish the job) into a cold one
                # that also kills its work horse; gunicorn just repeats its graceful stop.
                repeated = True
                for child in alive:
                    if child.process.poll() is None:
                        child.signal_group(signal.SIGTERM)
            time.sleep(0.05)
        for child in self.children:
            # Anything left in a group whose leader has gone (a forked helper, say).
            child.signal_group(signal.SIGKILL)
            child.reader.join(timeout=1)

    def _stop_redis(self) -> None:
        if self.redis is not None:
            self.out.system("stopping redis-server")
            self.redis.stop()
            self.redis = None

    def _sweep_adopted(self) -> None:
        """Stop and reap descendants that escaped their process group and were orphaned."""
        if not self.subreaper:
            return
        strays = []
        for pid, zombie in _adopted_children(self._known_pids()):
            if zombie:  # already dead, only needs reaping
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            else:
                strays.append(pid)
        if not strays:
            return
        self.out.system(f"stopping leftover processes {', '.join(map(str, strays))}")
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + min(self.grace, 5)
        remaining = set(strays)
        while remaining and time.monotonic() < deadline:
            for pid in list(remaining):
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if not done:
                        continue
                remaining.discard(pid)
            time.sleep(0.05)
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _run_release(self, command: str) -> int | None:
        """Run the release step; its exit code, or None if we were asked to stop meanwhile."""
        child = self._spawn("release", command)
        while child.process.poll() is None:
            if self.stop_requested.wait(0.1):
                return None
        child.reader.join(timeout=1)
        return child.process.returncode

    def _announce_when_listening(self, web: bool, announced: bool) -> bool:
        host, port = self.env["HOST"], self.env["PORT"]
        if announced:
            return True
        stops = [name for name, _ in self.entries if name != "release"]
        if self.redis is not None:
            stops.append("Redis")
        if not web:
            self.out.system(f"Likeness is running (Ctrl-C stops {_human_list(stops)})")
            return True
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                pass
        except OSError:
            return False
        self.out.plain(
            f"Likeness is running at http://{host}:{port} (Ctrl-C stops {_human_list(stops)})"
        )
        return True

    def _run(self) -> int:
        self._prepare_environment()
        services = [(n, c) for n, c in self.entries if n != "release"]
        release = next((c for n, c in self.entries if n == "release"), None)
        if not services:
            raise StartupError(f"{self.procfile} defines no processes besides `release`")
        web = any(name == "web" for name, _ in services)
        if web:
            self._check_port_free()
        self.subreaper = _become_subreaper()
        self._start_redis()
        if self.stop_requested.is_set():
            return 0
        if release is not None:
            code = self._run_release(release)
            if code is None:
                return 0
            if code != 0:
                self.out.system(f"release {_describe_exit(code)}; not starting anything else")
                return code if code > 0 else 1
        for name, command in services:
            self._spawn(name, command)
        announced = False
        last_reap = time.monotonic()
        while not self.stop_requested.wait(0.2):
            for child in self.children:
                code = child.process.poll()
                if code is not None and child.name != "release":
                    child.reader.join(timeout=1)
                    self.out.system(
                        f"{child.name} {_describe_exit(code)} on its own; stopping everything"
                    )
                    return 1
            if self.redis is not None and (code := self.redis.poll()) is not None:
                self.out.system(
                    f"redis-server {_describe_exit(code)} on its own (log: "
                    f"{self.redis.log_path}); stopping everything"
                )
                return 1
            announced = self._announce_when_listening(web, announced)
            if time.monotonic() - last_reap > 2:
                self._reap_adopted_zombies()
                last_reap = time.monotonic()
        return 0

    def run(self) -> int:
        previous = self._install_signal_handlers()
        try:
            return self._run()
        except StartupError as exc:
            self.out.system(f"error: {exc}")
            return 1
        finally:
            self._stop_children()
            self._stop_redis()
            self._sweep_adopted()
            self.out.system("stopped")
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]


def main(
    procfile: str | None = None, instance: str | None = None, grace: float | None = None
) -> int:
    procfile = (
        procfile or os.environ.get("LIKENESS_PROCFILE") or os.path.join(REPO_ROOT, "Procfile")
    )
    # Mirrors config.Config.INSTANCE_PATH; exported to the children so both always agree.
    instance = (
        instance or os.environ.get("LIKENESS_INSTANCE_PATH") or os.path.join(REPO_ROOT, "instance")
    )
    if grace is None:
        grace = float(os.environ.get("LIKENESS_DEVRUN_GRACE") or DEFAULT_GRACE_SECONDS)
    try:
        supervisor = Supervisor(procfile, instance, grace)
    except (OSError, StartupError) as exc:
        print(f"{SYSTEM_NAME}: cannot read Procfile: {exc}", file=sys.stderr)
        return 1
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
