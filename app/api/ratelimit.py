"""Rate limits of the API with flask-limiter, counted in the application's Redis.

Each request counts once against the general limit of whoever makes it: the API key (by its
id, so X-API-Key and Bearer share one bucket) or, for a request without a valid key (public
endpoints, and every refused key: guessing keys is limited too), the client address. Requests
that add images and searches also count against a limit of their own. Over a limit the API
answers 429 `rate_limited` with `Retry-After`.

The check runs after the key is authenticated, which is after flask-limiter's own
before-request hook; so the limits are not registered on routes but entered from the API's
authentication hook (`enforce_rate_limits`), the way flask-limiter lets a block of code be
limited. When Redis cannot be reached the limits fail open: the request is served and the
error logged (flask-limiter's `swallow_errors`), since an outage of the counters must not take
the API down with it.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from flask import Flask, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded, RouteLimit
from limits import parse_many

from app.api.errors import error_response
from app.views import client_ip

EXTENSION = "likeness.api_rate_limits"
API_PREFIX = "/api/v1"

# (method, rule under /api/v1, converters left out): what each special limit covers.
UPLOAD_ROUTES = {("POST", "/images"), ("POST", "/uploads"), ("POST", "/imports")}
SEARCH_ROUTES = {("GET", "/search"), ("POST", "/search"), ("GET", "/images/<image_id>/similar")}
LIMIT_SETTINGS = (
    "API_RATE_LIMIT",
    "API_RATE_LIMIT_ANONYMOUS",
    "API_RATE_LIMIT_UPLOADS",
    "API_RATE_LIMIT_SEARCHES",
)


@dataclass
class _State:
    limiter: Limiter
    limits: tuple[RouteLimit, ...]


def caller_identity() -> str:
    """The bucket a request counts in: its API key's id, else the client's address."""
    key = getattr(g, "api_key", None)
    if key is not None:
        return f"key:{key.id}"
    return f"address:{client_ip() or 'unknown'}"


def _route() -> tuple[str, str]:
    rule = request.url_rule.rule if request.url_rule else request.path
    rule = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"<\1>", rule.removeprefix(API_PREFIX))
    return request.method, rule


def _general_limit() -> str:
    authenticated = getattr(g, "api_key", None) is not None
    return current_app.config["API_RATE_LIMIT" if authenticated else "API_RATE_LIMIT_ANONYMOUS"]


def _setting(name: str):
    return lambda: current_app.config[name]


def _turned_off(setting: str):
    # An empty setting turns that limit off; which routes a limit covers is decided where it
    # is entered (`enforce_rate_limits`).
    return lambda: not current_app.config[setting]


class ApiRateLimits:
    """The API's limiter, one per application (flask-limiter keeps its storage and
    configuration on the instance), kept in `app.extensions`."""

    def init_app(self, app: Flask) -> None:
        for name in LIMIT_SETTINGS:
            try:
                if app.config[name]:
                    parse_many(app.config[name])
            except ValueError:
                raise ValueError(
                    f"{name}={app.config[name]!r} is not a rate limit such as "
                    "'600 per minute' or '10 per second; 1000 per hour'"
                ) from None
        limiter = Limiter(
            key_func=caller_identity,
            # The application's own Redis client and pool (a unix socket under `make run`).
            storage_uri="redis://",
            storage_options={"connection_pool": app.extensions["redis"].connection_pool},
            strategy=app.config["API_RATE_LIMIT_STRATEGY"],
            key_prefix="likeness-api",
            swallow_errors=True,
            enabled=app.config["API_RATE_LIMIT_ENABLED"],
        )
        limiter.init_app(app)
        limits = (
            limiter.shared_limit(_general_limit, scope="api"),
            limiter.shared_limit(
                _setting("API_RATE_LIMIT_UPLOADS"),
                scope="uploads",
                exempt_when=_turned_off("API_RATE_LIMIT_UPLOADS"),
            ),
            limiter.shared_limit(
                _setting("API_RATE_LIMIT_SEARCHES"),
                scope="searches",
                exempt_when=_turned_off("API_RATE_LIMIT_SEARCHES"),
            ),
        )
        app.extensions[EXTENSION] = _State(limiter, limits)
        app.register_error_handler(RateLimitExceeded, rate_limited)


api_rate_limits = ApiRateLimits()


def enforce_rate_limits() -> None:
    """Count this request against each limit that covers it; RateLimitExceeded over one."""
    state: _State = current_app.extensions[EXTENSION]
    if not state.limiter.enabled:
        return
    general, uploads, searches = state.limits
    # flask-limiter checks (and counts) a limit on entering it, and files it under the line that
    # enters it: one line per limit, so that concurrent requests never swap them. A limit that
    # does not cover the request is not entered at all (entering one costs a stack walk).
    with general:
        pass
    route = _route()
    if route in UPLOAD_ROUTES:
        with uploads:
            pass
    if route in SEARCH_ROUTES:
        with searches:
            pass


def rate_limited(exc: RateLimitExceeded):
    state: _State = current_app.extensions[EXTENSION]
    breached = state.limiter.current_limit
    window = exc.limit.limit.get_expiry()
    retry_after = window
    if breached is not None:
        try:
            # The storage rounds the window's end up to a whole second: never past the window.
            retry_after = min(window, max(1, math.ceil(breached.reset_at - time.time())))
        except Exception:  # the counters went away meanwhile: the whole window is safe
            current_app.logger.exception("rate limit window unreadable")
    who = "this API key" if getattr(g, "api_key", None) is not None else "this address"
    scope = exc.limit.scope if isinstance(exc.limit.scope, str) else "api"
    what = {"uploads": "uploads", "searches": "searches"}.get(scope, "requests")
    message = (
        f"too many {what} from {who}: the limit is {exc.limit.limit}; "
        f"retry in {retry_after} second{'s' if retry_after != 1 else ''}"
    )
    return error_response(429, message, "rate_limited", headers={"Retry-After": str(retry_after)})
