"""API-key authentication for every API request, and scope checks for views."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app.api import bp
from app.api.errors import ApiError
from app.services.keys import authenticate_key
from app.tenancy import set_request_team

PUBLIC_ENDPOINTS = {"api.openapi"}


def _presented_key() -> str | None:
    if key := request.headers.get("X-API-Key"):
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


@bp.before_request
def authenticate_api_key():
    # Session cookies play no part here: a browser session is never an API credential.
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    raw = _presented_key()
    if raw is None:
        raise ApiError(401, "send an API key in the X-API-Key header or as a Bearer token")
    key = authenticate_key(raw)
    if key is None:
        raise ApiError(401, "the API key is malformed, unknown, revoked or expired")
    g.api_key = key
    set_request_team(key.team_id)
    return None


def scope_required(scope: str):
    """Refuse with 403, naming the scope, a key that lacks it."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if scope not in g.api_key.scopes:
                raise ApiError(403, f"this API key lacks the {scope!r} scope")
            return view(*args, **kwargs)

        return wrapped

    return decorator
