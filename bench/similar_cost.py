"""CPU per request of GET /api/v1/images/{id}/similar against GET /healthz, in one run.

The load test (`make load`) asks /similar's throughput to be at least 0.7x /healthz's. With
one web worker both are bound by the CPU a request costs in the process (plus the database's
share), so this measures that cost in-process, through the Flask application (routing, API
key, team scope, index, delta, rows, JSON), on the seeded team `bench/seed.py` makes:

    TEST_REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python bench/similar_cost.py --postgres postgresql://postgres@127.0.0.1/db

The database named must exist (`createdb db`); its tables are dropped and created. Prints
per-request CPU (ms, median of rounds) and wall time of each endpoint and the ratio
healthz/similar, which estimates the load test's throughput ratio; `--profile FILE` writes a
cProfile of the /similar requests.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def per_request(call, items: list[str], rounds: int) -> tuple[float, float]:
    """Median over rounds of (CPU ms, wall ms) per request."""
    cpu, wall = [], []
    for _ in range(rounds):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        for item in items:
            call(item)
        cpu.append((time.process_time() - started_cpu) * 1000 / len(items))
        wall.append((time.perf_counter() - started_wall) * 1000 / len(items))
    return statistics.median(cpu), statistics.median(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres", help="an existing PostgreSQL database (tables dropped, created); else SQLite"
    )
    parser.add_argument("--redis", default=os.environ.get("TEST_REDIS_URL"))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100, help="per round and endpoint")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--profile", help="write a cProfile of the /similar requests here")
    parser.add_argument(
        "--reuse",
        help="a file keeping the seeded team's key and ids: seed and write it if it is missing, "
        "else measure the database as it is (compare two versions of the code on one seed)",
    )
    args = parser.parse_args()

    from app.extensions import db
    from bench._app import LIFTED_RATE_LIMITS, make_app
    from bench.seed import seed
    from config import normalise_database_url

    work = tempfile.mkdtemp(prefix="lk-similar-cost-", dir="/tmp")
    redis = None
    redis_url = args.redis
    if redis_url is None:
        from tests.redis_server import RedisServer

        redis = RedisServer(tempfile.mkdtemp(prefix="lk-bench-redis-", dir="/tmp"))
        redis_url = redis.start()
    settings = dict(LIFTED_RATE_LIMITS)
    if args.postgres:
        settings["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(args.postgres)
    try:
        if args.reuse and os.path.exists(args.reuse):
            with open(args.reuse) as kept:
                seeded = json.load(kept)
            settings["STORAGE_ROOT"] = seeded["storage"]
            app = make_app(os.path.join(work, "app"), redis_url, **settings)
            key, ids = seeded["key"], seeded["ids"]
        else:
            app = make_app(os.path.join(work, "app"), redis_url, **settings)
            with app.app_context():
                db.drop_all()
                db.create_all()
            started = time.perf_counter()
            _, key, ids = seed(app, args.images, "cost")
            print(f"seeded {args.images:,} images in {time.perf_counter() - started:.0f} s")
            if args.reuse:
                with open(args.reuse, "w") as kept:
                    json.dump({"key": key, "ids": ids, "storage": app.config["STORAGE_ROOT"]}, kept)
        client = app.test_client()
        headers = {"X-API-Key": key}
        asked = [ids[i] for i in np.random.default_rng(5).choice(len(ids), args.requests)]

        def similar(image_id: str):
            # The body is not parsed here: that would be the client's CPU, counted as the app's.
            response = client.get(f"/api/v1/images/{image_id}/similar?k={args.k}", headers=headers)
            assert response.status_code == 200, response.data
            return response

        assert len(similar(asked[0]).json["items"]) == min(args.k, len(ids) - 1)

        def healthz(_: str) -> None:
            # 503 without a worker is still the whole check: every probe ran.
            assert client.get("/healthz").status_code in (200, 503)

        for image_id in asked[:10]:  # warm: indexes loaded, deltas read, caches filled
            similar(image_id)
            healthz(image_id)
        health_cpu, health_wall = per_request(healthz, asked, args.rounds)
        similar_cpu, similar_wall = per_request(similar, asked, args.rounds)
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(per_request, similar, asked, 1)
            profile.dump_stats(args.profile)
    finally:
        if redis is not None:
            redis.stop()
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{len(ids):,} images on {database}, k={args.k}, {args.requests} x {args.rounds}")
    print(f"GET /healthz                 CPU {health_cpu:6.2f} ms  wall {health_wall:6.2f} ms")
    print(f"GET /images/{{id}}/similar    CPU {similar_cpu:6.2f} ms  wall {similar_wall:6.2f} ms")
    print(
        f"similar/healthz throughput estimate: CPU {health_cpu / similar_cpu:.2f}x, "
        f"wall {health_wall / similar_wall:.2f}x (target >= 0.7x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
