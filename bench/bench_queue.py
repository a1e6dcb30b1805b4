"""Queue overhead: a 1,000-image URL import through RQ against the same pipeline in-process.

Both runs do the same work per image: fetch it from a local HTTP origin through the guarded
fetcher, ingest it (validate, sha256, thumbnail, store, row), then process it (preview,
phash and colour embeddings). In-process, the import and the processing are called directly;
through RQ, the import is queued as the API queues it (one job per URL on the imports queue)
and the worker that `flask worker` runs (app/worker.py: jobs in its own process, no fork per
job, each in a fresh application context) drains both queues, uploads' processing first.
Same process, same machine, one after the other.

    .venv/bin/python bench/bench_queue.py [--images 1000]

Target: RQ throughput >= 0.9x in-process. Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import func, select  # noqa: E402

from app.extensions import db  # noqa: E402
from app.models import Image, ImportItem  # noqa: E402
from app.queue import get_queue  # noqa: E402
from app.services import accounts, imports, processing  # noqa: E402
from app.tenancy import team_scope  # noqa: E402
from app.worker import LikenessWorker  # noqa: E402
from bench._app import make_app as make_bench_app  # noqa: E402
from bench._photos import DEFAULT_DIR, photo_jpeg  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TARGET_RATIO = 0.9


def photos(directory: str, count: int) -> list[bytes]:
    """`count` distinct 640x480 photo-like JPEGs, generated once and cached."""
    folder = os.path.join(directory, "queue-640x480")
    os.makedirs(folder, exist_ok=True)
    out = []
    for n in range(count):
        path = os.path.join(folder, f"{n}.jpg")
        if not os.path.exists(path):
            with open(f"{path}.tmp", "wb") as f:
                f.write(photo_jpeg(10_000 + n, size=(640, 480), quality=88))
            os.replace(f"{path}.tmp", path)
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def serve(images: list[bytes]) -> ThreadingHTTPServer:
    class Origin(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            body = images[int(self.path.strip("/").split(".")[0])]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_app(instance: str, redis_url: str):
    return make_bench_app(
        instance, redis_url, IMPORT_ALLOW_NETWORKS=["127.0.0.1/32"], IMPORT_MAX_URLS=100_000
    )


def in_process(app, urls: list[str]) -> float:
    with app.app_context():
        team = accounts.create_team("In process")
        db.session.commit()
        requests = [imports.ItemRequest(url=u) for u in urls]
        started = time.perf_counter()
        batch = imports.create_batch(team.id, requests, [], enqueue=False)
        with team_scope(team.id):
            imports.run_items(batch.id, 0, batch.total)
            image_ids = db.session.scalars(select(Image.id)).all()
        for image_id in image_ids:
            processing.process_image(image_id)
        elapsed = time.perf_counter() - started
        get_queue().empty()  # the processing jobs ingest queued were done by hand above
        _check(team.id, len(urls))
    return elapsed


def through_rq(app, urls: list[str]) -> float:
    with app.app_context():
        team = accounts.create_team("Through RQ")
        db.session.commit()
        requests = [imports.ItemRequest(url=u) for u in urls]
        started = time.perf_counter()
        imports.create_batch(team.id, requests, [])
        LikenessWorker(app).work(burst=True, logging_level="WARNING")
        elapsed = time.perf_counter() - started
        _check(team.id, len(urls))
    return elapsed


def _check(team_id, count: int) -> None:
    with team_scope(team_id):
        done = db.session.scalar(
            select(func.count()).select_from(ImportItem).where(ImportItem.status == "done")
        )
        ready = db.session.scalar(
            select(func.count()).select_from(Image).where(Image.status == "ready")
        )
    if done != count or ready != count:
        raise SystemExit(f"expected {count} imported and ready, got {done} and {ready}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data", default=DEFAULT_DIR, help="where the JPEGs are cached")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    images = photos(args.data, args.images)
    origin = serve(images)
    urls = [f"http://127.0.0.1:{origin.server_port}/{n}.jpg" for n in range(args.images)]
    work = tempfile.mkdtemp(prefix="lk-bench-", dir="/tmp")
    redis = RedisServer(os.path.join(work, "redis"))
    os.makedirs(redis.directory)
    try:
        app = make_app(os.path.join(work, "instance"), redis.start())
        direct = in_process(app, urls)
        queued = through_rq(app, urls)
    finally:
        origin.shutdown()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    ratio = direct / queued
    print(f"{args.images} images, fetched, ingested and processed (640x480 JPEGs)")
    print(f"in-process: {direct:6.1f} s  {args.images / direct:6.1f} images/s")
    print(f"through RQ: {queued:6.1f} s  {args.images / queued:6.1f} images/s")
    print(
        f"RQ / in-process throughput: {ratio:.2f}x (target >= {TARGET_RATIO}x) -> "
        + ("met" if ratio >= TARGET_RATIO else "MISSED")
    )
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
