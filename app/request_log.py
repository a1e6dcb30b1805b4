"""The request id and the access log of every request, pages and API alike.

The access line names the method, the path (without its query string, where signed download
URLs carry their signature), the status, the duration, the team and the API key's public
prefix, never a secret: a path segment that is itself a credential (an invite or a signed
upload token) is replaced by `[redacted]`.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, current_app, g, request
from flask_login import current_user

from app import logs
from app.tenancy import current_team_id

access_log = logging.getLogger("likeness.access")

# URL variables that are credentials in themselves.
SECRET_VIEW_ARGS = frozenset({"token"})


def init_app(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_forget_request_id)


def _start_request() -> None:
    g.request_started = time.perf_counter()
    # Behind trusted proxies (ProxyFix is on) the router's id is kept, so its logs and ours
    # tell the same story; from anyone else it could be forged, so a new one is made.
    trusted = current_app.config["TRUSTED_PROXY_COUNT"] > 0
    g.request_id = logs.accept_request_id(request.headers.get(logs.REQUEST_ID_HEADER), trusted)
    logs.set_request_id(g.request_id)


def _finish_request(response):
    request_id = getattr(g, "request_id", None)
    if request_id:
        response.headers[logs.REQUEST_ID_HEADER] = request_id
    started = getattr(g, "request_started", None)
    key = getattr(g, "api_key", None)
    team_id = current_team_id() or (key.team_id if key is not None else None)
    access_log.info(
        "%s %s %s",
        request.method,
        loggable_path(),
        response.status_code,
        extra={
            "method": request.method,
            "path": loggable_path(),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
            "team_id": str(team_id) if team_id else None,
            "key_prefix": key.prefix if key is not None else None,
            "user_id": _user_id(),
            "ip": request.remote_addr,
        },
    )
    return response


def loggable_path() -> str:
    path = request.path
    for name, value in (request.view_args or {}).items():
        if name in SECRET_VIEW_ARGS and value:
            path = path.replace(str(value), "[redacted]")
    return path


def _user_id() -> str | None:
    # The API never signs people in; reading current_user there would load the session for
    # nothing.
    if getattr(g, "api_key", None) is not None or "_login_user" not in g:
        return None
    return str(current_user.id) if current_user.is_authenticated else None


def _forget_request_id(_exc=None) -> None:
    logs.set_request_id(None)
