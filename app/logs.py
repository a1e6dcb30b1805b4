"""Structured logs: one JSON object a line on stderr, for web and worker alike.

Every line carries the request id of the request it belongs to, and in a worker the id of the
request that queued the job (app/queue.py keeps it in the job's meta; app/worker.py binds it
while the job runs), so one id follows an upload from the web process into its processing job
and the index builds that job asks for.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy's request id may look like to be taken as it is (Heroku's router sends a UUID):
# short, printable, no spaces or quotes, so it cannot forge or break a log line.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=@-]{0,127}")

_request_id: ContextVar[str | None] = ContextVar("likeness_request_id", default=None)
_job_id: ContextVar[str | None] = ContextVar("likeness_job_id", default=None)

# Libraries that log their requests with signed headers and URLs at DEBUG: they stay at INFO
# or above whatever LOG_LEVEL says, since no log line may hold a signature.
TALKATIVE_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3")

# Marks the handler configure_logging installs, so that a second application in the same
# process replaces it instead of doubling every line.
_OURS = "_likeness_handler"


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(incoming: str | None, trusted: bool) -> str:
    """The id of this request: the proxy's when a trusted proxy sent a sane one, else new."""
    if trusted and incoming and SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return new_request_id()


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> None:
    """Bind the request id for the rest of this request (cleared when it ends)."""
    _request_id.set(request_id)


@contextmanager
def bound(request_id: str | None, job_id: str | None = None) -> Iterator[None]:
    """Every log line in this block (and every job queued from it) carries these ids."""
    request_token = _request_id.set(request_id)
    job_token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(job_token)
        _request_id.reset(request_token)


class ContextFilter(logging.Filter):
    """Adds the bound request and job ids to every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        return True


def json_formatter() -> logging.Formatter:
    """Time, level, logger and message, then whatever the line adds (`extra=`), as JSON."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def handler(fmt: str = "json") -> logging.Handler:
    """A stderr handler in `fmt` (json | text) that adds the request and job ids."""
    made = _StderrHandler()
    if fmt == "text":
        made.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    else:
        made.setFormatter(json_formatter())
    made.addFilter(ContextFilter())
    return made


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger's records (RQ's, gunicorn's error log aside, included) to stderr."""
    if fmt not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be json or text, not {fmt!r}")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _OURS, False):
            root.removeHandler(existing)
    installed = handler(fmt)
    setattr(installed, _OURS, True)
    root.addHandler(installed)
    root.setLevel(level.upper())
    for name in TALKATIVE_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
