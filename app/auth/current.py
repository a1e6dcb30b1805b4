"""Who is asking, for the audit trail and role checks."""

from __future__ import annotations

from functools import wraps

from flask import abort, g, has_request_context, redirect, request, session, url_for
from flask_login import current_user

from app.services import accounts
from app.services.audit import Actor
from app.tenancy import set_request_team


def client_ip() -> str | None:
    # ProxyFix has already replaced remote_addr when TRUSTED_PROXY_COUNT says to.
    return request.remote_addr if has_request_context() else None


def current_actor() -> Actor:
    if getattr(g, "api_key", None) is not None:
        return Actor.for_key(g.api_key, client_ip())
    if current_user.is_authenticated:
        return Actor.for_user(current_user, client_ip())
    return Actor("anonymous", "anonymous", ip=client_ip())


def role_required(*roles: str):
    """Refuse a signed-in member of the current team whose role is not one of `roles`."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            membership = getattr(g, "membership", None)
            if membership is None or membership.role not in roles:
                abort(403, f"this needs the {' or '.join(roles)} role in this team")
            return view(*args, **kwargs)

        return wrapped

    return decorator


def choose_team():
    """before_request for signed-in pages: the session's team, if the user still belongs to it.

    Sets `g.membership` and confines the request to that team; someone removed from the
    team they were looking at lands in another of theirs, or back at the login page.
    """
    if not current_user.is_authenticated:
        return None  # login_required answers
    memberships = accounts.memberships_of(current_user)
    if not memberships:
        return redirect(url_for("auth.login"))
    wanted = session.get("team_id")
    membership = next((m for m in memberships if str(m.team_id) == wanted), memberships[0])
    session["team_id"] = str(membership.team_id)
    g.membership = membership
    g.memberships = memberships
    set_request_team(membership.team_id)
    return None
