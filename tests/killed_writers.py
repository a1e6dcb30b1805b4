"""Writers stopped in the middle of a storage save: killed, as a web process or worker can be,
or overtaken by a concurrent operation that finishes first."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from config import BASE_DIR

# Saves argv[3] with the storage backend argv[1] (configured by argv[2]) from its stdin,
# which the test never closes: the writer waits mid-save.
WRITE_FROM_STDIN = """
import json, sys
from app.plugins import builtin_classes
storage = builtin_classes("storage")[sys.argv[1]](json.loads(sys.argv[2]))
storage.save(sys.argv[3], sys.stdin.buffer, "text/plain")
"""


@contextlib.contextmanager
def writers_mid_save(
    backend: str, config: dict, keys: list[str], first_bytes: int = 0
) -> Iterator[list[subprocess.Popen]]:
    """One process per key saving it from a stream that never ends (after `first_bytes`)."""
    writers = []
    try:
        for key in keys:
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITE_FROM_STDIN, backend, json.dumps(config), key],
                cwd=BASE_DIR,
                stdin=subprocess.PIPE,
            )
            writers.append(writer)
            if first_bytes:
                writer.stdin.write(os.urandom(first_bytes))
                writer.stdin.flush()
        yield writers
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(timeout=10)


def killed(writer: subprocess.Popen) -> int:
    """SIGKILL the writer: no cleanup of its own runs. Returns its pid."""
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    return writer.pid


def temporaries(directory: Path) -> set[str]:
    """The names of the local backend's temporary files in `directory`."""
    return {p.name for p in directory.glob(".tmp-*")} if directory.is_dir() else set()


def overtaken_on_first_save(real_storage: Callable[[], Any], overtake: Callable[[], Any]):
    """A stand-in for a module's `storage()` whose first save, once written, runs `overtake()`
    to its end before returning: a concurrent operation (another request, another build) that
    finishes while the first is still on its way. Every other call goes to the real store.
    Returns the stand-in and a list that holds what `overtake` returned once it has run."""
    outcome: list[Any] = []

    class Overtaken:
        def __getattr__(self, name):
            return getattr(real_storage(), name)

        def save(self, key, fileobj, content_type):
            real_storage().save(key, fileobj, content_type)
            if not outcome:
                outcome.append(None)  # the overtaking operation saves through here too
                outcome[0] = overtake()

    return Overtaken, outcome
