"""Flask extensions, created unbound and bound to an application by `init_app`."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import redis
from flask import Flask, current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    # Named constraints, so migrations can alter them on every database.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


class RedisConnection:
    """The application's Redis client: the job queue, login throttles, rendition slots and
    worker heartbeats all use it. redis-py connects on first use and opens a new pool in a
    forked process, so one client per application is safe under gunicorn and RQ."""

    def init_app(self, app: Flask) -> None:
        app.extensions["redis"] = connect_redis(
            app.config["REDIS_URL"],
            ssl_cert_reqs=app.config.get("REDIS_SSL_CERT_REQS"),
            ssl_ca_certs=app.config.get("REDIS_SSL_CA_CERTS"),
        )

    @property
    def client(self) -> redis.Redis:
        return current_app.extensions["redis"]


redis_connection = RedisConnection()

SSL_CERT_REQS = ("required", "optional", "none")


def connect_redis(
    url: str, *, ssl_cert_reqs: str | None = None, ssl_ca_certs: str | None = None
) -> redis.Redis:
    """A client for `redis://`, `rediss://` (TLS) or `unix://` URLs.

    Over TLS the server's certificate is verified against the system's CAs, or `ssl_ca_certs`;
    `ssl_cert_reqs="none"` accepts any certificate, for managed Redis services that present a
    self-signed one (Heroku Redis). Options in the URL's query (`?ssl_cert_reqs=none`) work
    too; these, from the configuration, win.
    """
    options: dict[str, object] = {"socket_connect_timeout": 2, "socket_timeout": 10}
    if urlsplit(url).scheme == "rediss":
        if ssl_cert_reqs:
            if ssl_cert_reqs not in SSL_CERT_REQS:
                raise ValueError(
                    f"REDIS_SSL_CERT_REQS must be one of {', '.join(SSL_CERT_REQS)}, "
                    f"not {ssl_cert_reqs!r}"
                )
            options["ssl_cert_reqs"] = ssl_cert_reqs
            # A name cannot be checked on a certificate that is not verified.
            options["ssl_check_hostname"] = ssl_cert_reqs == "required"
        if ssl_ca_certs:
            options["ssl_ca_certs"] = ssl_ca_certs
    elif ssl_cert_reqs or ssl_ca_certs:
        # Not an error: a platform may hand out a plain URL on some plans and TLS on others.
        logging.getLogger(__name__).warning(
            "REDIS_SSL_CERT_REQS and REDIS_SSL_CA_CERTS apply to rediss:// URLs only; ignored"
        )
    return redis.Redis.from_url(url, **options)
