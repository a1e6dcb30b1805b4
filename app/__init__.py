"""Likeness: a self-hosted image library for teams."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from urllib.parse import urlsplit

from flask import Flask, render_template, request
from flask.logging import default_handler
from PIL import Image as PILImage
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import RequestRedirect

from app import request_log, tenancy
from app.extensions import csrf, db, login_manager, migrate, redis_connection
from app.logs import configure_logging
from app.plugins import load_plugins
from app.runtime import IndexCache, State
from app.strict_json import StrictJSONProvider
from app.strict_params import StrictRequest
from config import BASE_DIR, Config


def create_app(config_class: type[Config] = Config) -> Flask:
    app = Flask(
        __name__,
        instance_path=config_class.INSTANCE_PATH,
        template_folder=os.path.join(BASE_DIR, "templates"),
        static_folder=os.path.join(BASE_DIR, "static"),
    )
    app.json = StrictJSONProvider(app)  # request.get_json anywhere parses strictly
    app.request_class = StrictRequest  # query strings and forms: no NUL
    # `images//similar` is an id left empty: a 404, not a redirect to `images/similar`, which
    # Werkzeug would answer itself, in HTML (see _register_error_handlers).
    app.url_map.merge_slashes = False
    app.config.from_object(config_class)
    if not app.testing:  # tests capture logs their own way
        configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
        app.logger.removeHandler(default_handler)  # the root's handler writes every line once
    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config["SECRET_KEY"]:
        if app.config["ENV"] == "development":
            app.config["SECRET_KEY"] = _development_secret(app.instance_path)
        elif not app.testing:
            # Commands (`flask --help`, `db upgrade`, `worker`) need no secret; requests do.
            # gunicorn.conf.py stops a web server from starting without one.
            app.logger.error(MISSING_SECRET_KEY)
            app.before_request(_refuse_without_secret_key)

    # Process-wide: Pillow refuses images above this many pixels (a decompression bomb).
    PILImage.MAX_IMAGE_PIXELS = app.config["MAX_IMAGE_PIXELS"]

    if app.config["TRUSTED_PROXY_COUNT"] > 0:
        # Only then is X-Forwarded-For believed, and only the hops the proxies appended.
        count = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=0)

    request_log.init_app(app)  # first, so that it times and names every request
    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(BASE_DIR, "migrations"))
    login_manager.init_app(app)
    redis_connection.init_app(app)
    csrf.init_app(app)
    tenancy.init_app(app)

    app.extensions["likeness"] = State(
        plugins=load_plugins(app.config), index_cache=IndexCache(app.config["INDEX_CACHE_DIR"])
    )

    from app.api import bp as api_bp
    from app.api.openapi import init_api
    from app.api.ratelimit import api_rate_limits
    from app.auth import bp as auth_bp
    from app.gallery import bp as gallery_bp
    from app.ops import bp as ops_bp
    from app.settings import bp as settings_bp

    csrf.exempt(api_bp)  # keys, not cookies, authenticate the API
    api_rate_limits.init_app(app)
    init_api(app, api_bp)  # at /api/v1, with /api/v1/openapi.json and /api/docs
    app.register_blueprint(ops_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(gallery_bp)
    app.register_blueprint(settings_bp, url_prefix="/settings")

    _register_error_handlers(app)

    from app.cli import register_cli

    register_cli(app)

    content_security_policy = _content_security_policy(app.config)

    @app.after_request
    def security_headers(response):
        # Stored files set their own (sandbox); pages get the strict one.
        response.headers.setdefault("Content-Security-Policy", content_security_policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # Only over HTTPS (ProxyFix has applied a trusted X-Forwarded-Proto): a browser ignores
        # it over plain HTTP, and a deployment reached by HTTP alone must not promise HTTPS.
        if request.is_secure and app.config["HSTS_SECONDS"] > 0:
            response.headers.setdefault(
                "Strict-Transport-Security", f"max-age={app.config['HSTS_SECONDS']}"
            )
        return response

    return app


def _content_security_policy(config) -> str:
    """Scripts and styles only from our own static files (no inline ones, no eval), no
    framing. Images may also come from the object store's short-lived URLs."""
    images = ["'self'", "data:", "blob:"]
    if config.get("S3_BUCKET"):
        endpoint = config.get("S3_ENDPOINT_URL")
        images.append(_origin(endpoint) if endpoint else "https://*.amazonaws.com")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# bandit takes the name for a password: it is the message saying one is missing.
MISSING_SECRET_KEY = "SECRET_KEY must be set (or LIKENESS_ENV=development)"  # nosec B105


def _refuse_without_secret_key():
    return {"error": {"code": "unavailable", "message": MISSING_SECRET_KEY}}, 503


def _development_secret(instance_path: str) -> str:
    """A random key kept in the instance folder, so development sessions survive restarts."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=instance_path)  # created 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        # link() publishes the whole file or fails if another process already did.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        os.unlink(tmp)
    with open(path) as f:
        return f.read().strip()


def _register_error_handlers(app: Flask) -> None:
    from app.api.errors import ApiError, error_response, http_error_response, wants_json
    from app.errors import ServiceError
    from app.plugin_api import ObjectNotFound, StorageUnavailable
    from app.views import http_refusal, team_for_error_page

    def error_page(status: int, message: str | None):
        # Whatever failed, the page itself must render: without the team, if need be.
        try:
            team_for_error_page()
        except Exception:
            db.session.rollback()
            app.logger.exception("no team for the error page")
        return render_template("error.html", status=status, message=message), status

    @app.before_request
    def refuse_api_redirects():
        # Werkzeug's own routing redirects (to add a trailing slash) skip every error handler
        # and answer HTML; no API path redirects, so it is the JSON 404 instead.
        if isinstance(request.routing_exception, RequestRedirect) and wants_json():
            raise NotFound()

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, fields=exc.fields)

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError):
        # The service that refused has rolled its own work back.
        status, code = http_refusal(exc)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        if wants_json():
            return error_response(status, exc.message, code, headers=headers)
        page, status = error_page(status, exc.message)
        return page, status, headers

    @app.errorhandler(StorageUnavailable)
    def storage_unavailable(exc: StorageUnavailable):
        app.logger.error("storage unavailable: %s", exc)
        message = "file storage cannot be reached just now; nothing was saved, try again shortly"
        if wants_json():
            return error_response(503, message, headers={"Retry-After": "30"})
        return error_page(503, message)

    @app.errorhandler(ObjectNotFound)
    def object_missing(exc: ObjectNotFound):
        # A row names an object the store does not hold: lost or deleted behind the app's back.
        # Not the client's doing and not a moment's outage: the operator must hear of it, the
        # client gets a plain answer rather than a 500.
        key = exc.args[0] if exc.args else "?"
        app.logger.error("stored object missing: %s (%s %s)", key, request.method, request.path)
        message = (
            "the stored file is missing; the team's administrator can delete the image "
            "and upload it again"
        )
        if wants_json():
            return error_response(404, message)
        return error_page(404, message[0].upper() + message[1:])

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError):
        # A connection that dropped (a restarted or failed-over server, a terminated backend)
        # or a database that cannot be reached is a moment's outage, not a bug: the pool has
        # discarded the dead connection, so the next request gets a new one.
        if not (exc.connection_invalidated or isinstance(exc, OperationalError)):
            return unexpected_error(exc)
        with contextlib.suppress(DBAPIError):
            db.session.rollback()
        app.logger.error("database unavailable: %s", exc.orig)
        message = "the database cannot be reached just now; try again shortly"
        if wants_json():
            return error_response(503, message, headers={"Retry-After": "5"})
        page = render_template("error.html", status=503, message=message[0].upper() + message[1:])
        return page, 503, {"Retry-After": "5"}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if wants_json():
            return http_error_response(exc)
        # Werkzeug's stock wording ("The requested URL was not found…") says less than the page.
        told = exc.description if exc.description != type(exc).description else None
        return error_page(exc.code or 500, told)

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        # The one rollback outside the services: whatever failed outside their units of work
        # (a query that broke, a bug) may have left the session unusable, and the page below
        # still reads the signed-in user.
        db.session.rollback()
        app.logger.exception("unhandled error")
        if wants_json():
            return error_response(500, "something went wrong on our side")
        return error_page(500, None)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    # SQLite enforces foreign keys only when asked, per connection; WAL lets web and worker
    # read while the other writes.
    if dbapi_connection.__class__.__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
