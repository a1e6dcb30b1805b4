"""What every blueprint shares: who is asking, roles, the sign-in cookie, how a domain refusal
is answered over HTTP, pages that are also fragments, and stored files sent back safely."""

from __future__ import annotations

import hashlib
import unicodedata
from functools import wraps
from urllib.parse import quote

from flask import (
    abort,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_login import current_user, login_user
from werkzeug.datastructures import Headers

from app.errors import (
    Conflict,
    Forbidden,
    Invalid,
    InvalidImage,
    NotFound,
    ServiceError,
    Throttled,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.imaging.validate import ALLOWED_FORMATS
from app.models import Image, User
from app.net.fetch import FetchError
from app.runtime import storage
from app.services import accounts, renditions
from app.services.audit import Actor
from app.tenancy import set_request_team

# The cookie session's key for the login session it belongs to (see accounts.session_user);
# bandit takes this field name for a hard-coded password.
SESSION_TOKEN = "login_token"  # nosec B105


def client_ip() -> str | None:
    # ProxyFix has already replaced remote_addr when TRUSTED_PROXY_COUNT says to.
    return request.remote_addr if has_request_context() else None


def current_actor() -> Actor:
    if getattr(g, "api_key", None) is not None:
        return Actor.for_key(g.api_key, client_ip())
    if current_user.is_authenticated:
        return Actor.for_user(current_user, client_ip())
    return Actor("anonymous", "anonymous", ip=client_ip())


# How the HTTP faces (API and pages) answer what the services refuse: the status, and the
# API's error code (API.md). The nearest class of the exception found here decides.
HTTP_REFUSALS: dict[type[ServiceError], tuple[int, str]] = {
    ServiceError: (400, "bad_request"),
    Invalid: (400, "bad_request"),
    Unauthenticated: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    TooLarge: (413, "too_large"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    ValidationFailed: (422, "validation_error"),
    InvalidImage: (422, "invalid_image"),
    FetchError: (422, "fetch_failed"),
    Throttled: (429, "rate_limited"),
    Unavailable: (503, "unavailable"),
}


def http_refusal(exc: ServiceError) -> tuple[int, str]:
    """The HTTP status and API error code of a domain refusal."""
    return next(HTTP_REFUSALS[cls] for cls in type(exc).__mro__ if cls in HTTP_REFUSALS)


def http_status(exc: ServiceError) -> int:
    return http_refusal(exc)[0]


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


def use_session(user: User, token: str, team_id=None) -> None:
    """A fresh cookie session (new id, nothing carried over) naming a new login session."""
    session.clear()
    session[SESSION_TOKEN] = token
    if team_id is not None:
        session["team_id"] = str(team_id)
    login_user(user)


def team_for_error_page() -> None:
    """Pages answered outside a blueprint (an unknown path, a crash) still show the signed-in
    person's team and links in the header."""
    if getattr(g, "membership", None) is None and current_user.is_authenticated:
        choose_team()


def whole_number(raw: str) -> int | None:
    """A form or query field read as a whole number, or None if it is not one. ASCII digits
    only: `str.isdigit` also takes "²", which `int` refuses, and "٣", which it reads as 3; and
    at most nine, since `int` refuses thousands of them."""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


def user_agent() -> str | None:
    return request.headers.get("User-Agent")


def is_fragment_request() -> bool:
    # A history restore (the back button, on a miss of htmx's cache) asks as htmx does, and
    # wants the whole page.
    return bool(request.headers.get("HX-Request")) and not request.headers.get(
        "HX-History-Restore-Request"
    )


def fragment_or_page(fragment: str, page: str, status: int = 200, **context):
    """The partial for htmx, the whole page otherwise (one URL serves both)."""
    template = fragment if is_fragment_request() else page
    headers = {"Vary": "HX-Request, HX-History-Restore-Request"}
    return render_template(template, **context), status, headers


def send_variant(image: Image, variant: str, *, as_attachment: bool = False):
    """The bytes of one rendition, or a redirect to a short-lived direct URL."""
    key = renditions.source_key(image, variant)
    mimetype = image.content_type if variant == "original" else "image/webp"
    name = image.filename if variant == "original" else f"{variant}.webp"
    return send_stored(key, mimetype, name, as_attachment=as_attachment)


# Served inline only as what upload validation lets in (and the WebP renditions we make).
INLINE_TYPES = frozenset(ALLOWED_FORMATS.values()) | {"image/webp"}


def send_stored(key: str, mimetype: str, download_name: str, *, as_attachment: bool = False):
    """Stream a stored object (ETag from its key: stored objects never change), or redirect
    to the store's short-lived URL.

    Stored bytes come from users: the response may not run script or be sniffed as another
    type, and anything not an accepted image type is a download, never a page."""
    as_attachment = as_attachment or mimetype not in INLINE_TYPES
    # The store's URL answers with the name and disposition this response would have had.
    if url := storage().url(key, 300, _content_disposition(download_name, as_attachment)):
        return redirect(url, 302)
    response = send_file(
        storage().open(key),
        mimetype=mimetype,
        download_name=download_name,
        as_attachment=as_attachment,
        etag=hashlib.sha256(key.encode()).hexdigest()[:32],
        max_age=3600,
        conditional=True,
    )
    response.cache_control.private = True
    response.headers["Content-Security-Policy"] = "sandbox"  # nosniff: as on every response
    return response


def _content_disposition(download_name: str, as_attachment: bool) -> str:
    """The Content-Disposition header `send_file` writes for this name (RFC 6266: an ASCII
    `filename`, and `filename*` in UTF-8 when the name has more than ASCII)."""
    try:
        download_name.encode("ascii")
        names = {"filename": download_name}
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", download_name).encode("ascii", "ignore").decode()
        names = {
            "filename": simple,
            "filename*": f"UTF-8''{quote(download_name, safe=_ATTR_CHARS)}",
        }
    headers = Headers()
    headers.set("Content-Disposition", "attachment" if as_attachment else "inline", **names)
    return headers["Content-Disposition"]


_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 5987's attr-char, besides letters and digits
