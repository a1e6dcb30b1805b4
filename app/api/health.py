"""`/healthz`: can this process reach its database, Redis and storage, and can a worker run
jobs? Anonymous callers get each check's name and state; the details go to the log."""

import logging

from flask import Blueprint
from sqlalchemy import text

from app.extensions import db
from app.queue import count_able_workers, get_redis
from app.runtime import storage

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


def _check(name: str, probe) -> str:
    try:
        probe()
    except Exception as exc:  # any failure is the answer, not an error of this endpoint
        # Error texts name hosts, sockets and ports: for operators, not for anyone who asks.
        log.warning("health check %s failed: %s: %s", name, exc.__class__.__name__, exc)
        return "failed"
    return "ok"


def _a_worker_can_run_jobs() -> None:
    if count_able_workers() == 0:
        raise RuntimeError("no worker has reported lately that it can run jobs")


@bp.get("/healthz")
def healthz():
    checks = {
        "database": _check("database", lambda: db.session.execute(text("SELECT 1"))),
        "redis": _check("redis", lambda: get_redis().ping()),
        "storage": _check("storage", lambda: storage().check()),
        "worker": _check("worker", _a_worker_can_run_jobs),
    }
    db.session.rollback()
    healthy = all(v == "ok" for v in checks.values())
    return {"status": "ok" if healthy else "unavailable", "checks": checks}, 200 if healthy else 503
