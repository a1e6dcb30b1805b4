"""Job functions for worker tests: run by a real worker process, which imports them from here."""

from __future__ import annotations

import time


def sleep_and_record(path: str, seconds: float) -> str:
    """Note in `path` when the job starts and when it ends, sleeping `seconds` between."""
    with open(path, "a") as record:
        record.write("started\n")
    time.sleep(seconds)
    with open(path, "a") as record:
        record.write("finished\n")
    return "done"
