"""gunicorn's settings for the `web` process; gunicorn reads this file from the working folder
(anything given on its command line still wins). Each setting comes from the environment, with
a default fit for production behind one proxy or platform router."""

import gc
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
# Heroku and others set WEB_CONCURRENCY from the dyno's memory; each worker is one process.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A sync worker silent this long is killed and replaced (an upload or a search is far shorter).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# After SIGTERM, requests in flight get this long to finish: under Heroku's 30 s to SIGKILL.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Only these peers may set the scheme with X-Forwarded-Proto at gunicorn's level. The client
# address (X-Forwarded-For) is the application's business: TRUSTED_PROXY_COUNT (ProxyFix).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Workers' heartbeat files on memory, not on a disk that may stall (containers' /tmp).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
control_socket_disable = True
# The application writes the access log itself (app/request_log.py): with the request id, team
# and key prefix, and without the query string, where signed download URLs carry a signature.
accesslog = None
errorlog = "-"

_development = os.environ.get("LIKENESS_ENV") == "development"
if (os.environ.get("LOG_FORMAT") or ("text" if _development else "json")) == "json":
    # gunicorn's own lines (boot, worker timeouts) as JSON too, like the application's.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "{asctime}{levelname}{name}{message}",
                "style": "{",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            }
        },
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        # The application gives the root logger its own handler when it loads (app/logs.py).
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            "gunicorn.error": {
                "level": "INFO",
                "handlers": ["error_console"],
                "propagate": False,
                "qualname": "gunicorn.error",
            }
        },
    }


def on_starting(server):
    # Fail fast: without a secret, sessions, CSRF tokens and signed upload URLs cannot work.
    if not os.environ.get("SECRET_KEY") and os.environ.get("LIKENESS_ENV") != "development":
        raise SystemExit("SECRET_KEY must be set (or LIKENESS_ENV=development)")


def post_worker_init(worker):
    # Each worker has loaded the application by now: its modules, mappers and schemas live as
    # long as the worker. Frozen out of the collector's view, they are not walked again by every
    # full collection, which otherwise lands on some request as a pause of tens of ms.
    gc.freeze()
