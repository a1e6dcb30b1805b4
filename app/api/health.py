"""`/healthz`: can this process reach its database, Redis and storage?"""

from flask import Blueprint
from sqlalchemy import text

from app.extensions import db
from app.queue import get_redis
from app.runtime import storage

bp = Blueprint("ops", __name__)


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:  # any failure is the answer, not an error of this endpoint
        return f"failed: {exc.__class__.__name__}: {exc}"[:300]
    return "ok"


@bp.get("/healthz")
def healthz():
    checks = {
        "database": _check(lambda: db.session.execute(text("SELECT 1"))),
        "redis": _check(lambda: get_redis().ping()),
        "storage": _check(lambda: storage().check()),
    }
    db.session.rollback()
    healthy = all(v == "ok" for v in checks.values())
    return {"status": "ok" if healthy else "unavailable", "checks": checks}, 200 if healthy else 503
