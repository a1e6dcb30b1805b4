"""The application the benchmarks run: a throw-away instance folder, as `make run` sets up."""

from __future__ import annotations

import os

from app import create_app
from app.extensions import db
from config import Config


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
