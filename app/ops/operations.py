"""The Operations page for a team's admins: the job queue and the team's indexes."""

from __future__ import annotations

from functools import wraps

from flask import flash, g, redirect, request, url_for
from flask_login import login_required

from app.errors import Unavailable
from app.ops import bp
from app.services import indexing, jobs_admin
from app.views import choose_team, current_actor, fragment_or_page, role_required


def team_admin(view):
    """Signed in, in a team, as its admin (`/healthz` beside these pages asks for nothing)."""
    admin_view = role_required("admin")(view)

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if (answer := choose_team()) is not None:
            return answer
        return admin_view(*args, **kwargs)

    return wrapped


def _operations(status: int = 200, message: str | None = None):
    team_id = g.membership.team_id
    try:
        queue = dict(
            depths=jobs_admin.depths(),
            running=jobs_admin.running_jobs(team_id),
            failed=jobs_admin.failed_jobs(team_id),
        )
    except Unavailable as exc:  # the indexes can still be shown
        queue = dict(depths=[], running=[], failed=[], queue_error=exc.message)
    return fragment_or_page(
        "ops/_operations.html",
        "ops/operations.html",
        status,
        indexes=indexing.index_status(team_id),
        message=message,
        **queue,
    )


def _done(message: str):
    if request.headers.get("HX-Request"):
        return _operations(message=message)
    flash(message, "info")
    return redirect(url_for("ops.show_operations"))


@bp.get("/operations")
@team_admin
def show_operations():
    return _operations()


@bp.post("/operations/jobs/<job_id>/retry")
@team_admin
def retry_job(job_id: str):
    job = jobs_admin.retry_job(job_id, team_id=g.membership.team_id, actor=current_actor())
    return _done(f"Queued again: {job.description}")


@bp.post("/operations/jobs/retry-all")
@team_admin
def retry_all_jobs():
    count = jobs_admin.retry_all(team_id=g.membership.team_id, actor=current_actor())
    return _done(f"Queued {count} failed jobs again.")


@bp.post("/operations/indexes/<embedder>/rebuild")
@team_admin
def rebuild_index(embedder: str):
    jobs_admin.request_rebuild(g.membership.team_id, embedder, actor=current_actor())
    return _done(f"A rebuild of the {embedder} index is queued.")
