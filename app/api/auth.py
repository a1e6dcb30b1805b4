"""API-key authentication for every API request and scope checks for views (app/request_log.py
writes the access log)."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app.api import bp
from app.api.errors import ApiError
from app.api.ratelimit import enforce_rate_limits
from app.services import keys
from app.tenancy import set_request_team
from app.views import client_ip

# Endpoints with their own credential: a signed upload URL carries its token. (The OpenAPI
# document and the docs page are served by flask-smorest's own blueprint, outside this one.)
PUBLIC_ENDPOINTS = {"api.receive_upload"}


def _presented_key() -> str | None:
    # Only headers: a key in a query string ends up in proxy logs and browser history.
    header = request.headers.get("X-API-Key", "").strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if header and bearer and header != bearer:
        # Which one was meant? Acting as either could act for the wrong team.
        raise ApiError(401, "two different API keys were sent (X-API-Key and Bearer); send one")
    return header or bearer or None


@bp.before_request
def authenticate_api_key():
    g.api_key = None
    try:
        _authenticate()
    finally:
        # Refused keys count too, against their address: guessing keys is limited.
        enforce_rate_limits()


def _authenticate():
    # Session cookies play no part here: a browser session is never an API credential.
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    raw = _presented_key()
    if raw is None:
        raise ApiError(401, "send an API key in the X-API-Key header or as a Bearer token")
    found = keys.authenticate(raw)
    if found is None:
        raise ApiError(401, "the API key is malformed, unknown, revoked or expired")
    key, g.api_creator_role = found
    g.api_key = key
    g.api_scopes = keys.effective_scopes(key, g.api_creator_role)
    keys.touch(key, client_ip())
    set_request_team(key.team_id)
    return None


def scope_required(scope: str):
    """Refuse with 403, naming the scope, a key that lacks it; the OpenAPI document names the
    scope of the operation in `x-scopes`. Put it above the arguments: a key without the scope
    learns nothing about what the input should have been."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if scope not in g.api_scopes:
                raise ApiError(403, f"this API key lacks the {scope!r} scope")
            return view(*args, **kwargs)

        documented = bp.errors(401, 403)(wrapped)
        return bp.doc(**{"x-scopes": [scope]})(documented)

    return decorator
