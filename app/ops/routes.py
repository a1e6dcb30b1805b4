from app.ops import bp
from app.services import health


@bp.get("/healthz")
def healthz():
    checks = health.checks()
    healthy = all(state == "ok" for state in checks.values())
    return {"status": "ok" if healthy else "unavailable", "checks": checks}, 200 if healthy else 503
