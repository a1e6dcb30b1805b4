"""Can this process reach its database, Redis and storage, and can a worker run jobs?"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import text

from app.extensions import db, redis_connection
from app.queue import count_able_workers
from app.runtime import storage

log = logging.getLogger(__name__)


def _check(name: str, probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # any failure is the answer, not an error of the check
        # Error texts name hosts, sockets and ports: for operators' logs, not for anyone who asks.
        log.warning("health check %s failed: %s: %s", name, exc.__class__.__name__, exc)
        return "failed"
    return "ok"


def check_database() -> None:
    """Raise if the database does not answer (the session is left clean either way)."""
    try:
        db.session.execute(text("SELECT 1"))
    finally:
        db.session.rollback()


def _a_worker_can_run_jobs() -> None:
    if count_able_workers() == 0:
        raise RuntimeError("no worker has reported lately that it can run jobs")


def checks() -> dict[str, str]:
    """Each dependency's state, "ok" or "failed"; the reasons go to the log."""
    return {
        "database": _check("database", check_database),
        "redis": _check("redis", lambda: redis_connection.client.ping()),
        "storage": _check("storage", lambda: storage().check()),
        "worker": _check("worker", _a_worker_can_run_jobs),
    }
