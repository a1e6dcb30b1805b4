"""The application the benchmarks run: a throw-away instance folder, as `make run` sets up."""

from __future__ import annotations

import os

from app import create_app
from app.extensions import db
from config import Config

# Benchmarks make every request with one key or from one address: limits far above what they
# send keep the API's rate limiter running (its cost is part of what is measured) without
# refusing the requests it is meant to measure.
LIFTED_RATE_LIMITS = {
    name: "1000000 per minute"
    for name in (
        "API_RATE_LIMIT",
        "API_RATE_LIMIT_ANONYMOUS",
        "API_RATE_LIMIT_UPLOADS",
        "API_RATE_LIMIT_SEARCHES",
    )
}


def make_app(instance: str, redis_url: str, **settings):
    """SQLite, local storage and the given Redis under `instance`; tables created."""
    config = type(
        "BenchConfig",
        (Config,),
        {
            "ENV": "bench",
            "SECRET_KEY": "bench",
            "INSTANCE_PATH": instance,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{os.path.join(instance, 'bench.db')}",
            "REDIS_URL": redis_url,
            "QUEUE_NAME": "likeness-bench",
            "STORAGE_ROOT": os.path.join(instance, "storage"),
            "INDEX_CACHE_DIR": os.path.join(instance, "index-cache"),
            "PLUGINS_BUILTIN_ONLY": True,
            **settings,
        },
    )
    app = create_app(config)
    with app.app_context():
        db.create_all()
    return app
