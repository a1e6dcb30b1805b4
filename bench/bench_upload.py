"""Latency of one API upload of a 4 MB JPEG: request in, original and thumbnail stored,
row committed, processing queued, 201 out.

The app runs in this process against a throw-away instance folder: SQLite, local storage
(which fsyncs every object) and the embedded Redis, as `make run` does. Requests go through
Flask's test client by default, or a real werkzeug server over a socket with `--server`.

    .venv/bin/python bench/bench_upload.py [--uploads 30] [--server]

Target: median < 150 ms. Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from werkzeug.serving import make_server  # noqa: E402
from werkzeug.test import encode_multipart  # noqa: E402

from app.extensions import db  # noqa: E402
from app.services import accounts, keys  # noqa: E402
from bench._app import make_app as make_bench_app  # noqa: E402
from bench._photos import DEFAULT_DIR, photo_jpeg  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TARGET_MS = 150.0


def four_mb_jpeg(directory: str) -> bytes:
    """A 4000x3000 photo-like JPEG of about 4 MB, cached next to the ingest benchmark's."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "upload-4000x3000-q92.jpg")
    if not os.path.exists(path):
        with open(f"{path}.tmp", "wb") as f:
            f.write(photo_jpeg(1000, quality=92))
        os.replace(f"{path}.tmp", path)
    with open(path, "rb") as f:
        return f.read()


def variant(jpeg: bytes, n: int) -> bytes:
    """The same picture with a different JPEG comment: new bytes, so never an exact re-upload."""
    comment = f"likeness bench upload {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def make_app(instance: str, redis_url: str):
    app = make_bench_app(instance, redis_url)
    with app.app_context():
        team = accounts.create_team("Bench")
        _, key = keys.create_key(team, "bench", ["read", "write"])
        db.session.commit()
    return app, key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=30, help="timed uploads (default 30)")
    parser.add_argument("--server", action="store_true", help="over a real socket")
    parser.add_argument("--data", default=DEFAULT_DIR, help="where the JPEG is cached")
    args = parser.parse_args()

    jpeg = four_mb_jpeg(args.data)
    work = tempfile.mkdtemp(prefix="lk-bench-", dir="/tmp")  # short: a Unix socket lives here
    redis = RedisServer(os.path.join(work, "redis"))
    os.makedirs(redis.directory)
    try:
        app, key = make_app(os.path.join(work, "instance"), redis.start())
        bodies = []
        for n in range(args.uploads + 3):
            boundary, body = encode_multipart({"file": _file(variant(jpeg, n))})
            bodies.append((f"multipart/form-data; boundary={boundary}", body))
        post = ServerPost(app) if args.server else ClientPost(app)
        times, thumbnails = [], 0
        for n, (content_type, body) in enumerate(bodies):
            started = time.perf_counter()
            status, item = post(key, content_type, body)
            elapsed = (time.perf_counter() - started) * 1000
            if status != 201:
                raise SystemExit(f"upload {n} answered {status}: {item}")
            if n >= 3:  # the first requests pay for imports and warm caches
                times.append(elapsed)
            thumbnails += _has_thumbnail(app, key, item)
        post.close()
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    median = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1]
    via = "werkzeug server over TCP" if args.server else "Flask test client"
    print(f"{len(times)} uploads of a {len(jpeg) / 1e6:.1f} MB 4000x3000 JPEG via {via}")
    print(f"median {median:6.1f} ms   p90 {p90:6.1f} ms   min {min(times):6.1f} ms")
    print(f"thumbnails stored: {thumbnails}/{len(bodies)}")
    ok = median < TARGET_MS and thumbnails == len(bodies)
    print(f"target: median < {TARGET_MS:g} ms -> " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


def _file(data: bytes):
    from io import BytesIO

    from werkzeug.datastructures import FileStorage

    return FileStorage(BytesIO(data), filename="photo.jpg", content_type="image/jpeg")


def _has_thumbnail(app, key: str, item: dict) -> int:
    with app.test_client() as client:
        response = client.get(
            f"/api/v1/images/{item['id']}/file?variant=thumbnail", headers={"X-API-Key": key}
        )
        return int(response.status_code == 200 and response.data[:4] == b"RIFF")


class ClientPost:
    def __init__(self, app):
        self.client = app.test_client()

    def __call__(self, key: str, content_type: str, body: bytes):
        response = self.client.post(
            "/api/v1/images", data=body, content_type=content_type, headers={"X-API-Key": key}
        )
        return response.status_code, (response.json or {}).get("items", [response.json])[0]

    def close(self) -> None:
        pass


class ServerPost:
    def __init__(self, app):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __call__(self, key: str, content_type: str, body: bytes):
        import json

        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        connection.request(
            "POST",
            "/api/v1/images",
            body=body,
            headers={"Content-Type": content_type, "X-API-Key": key},
        )
        response = connection.getresponse()
        payload = json.loads(response.read())
        connection.close()
        return response.status, payload.get("items", [payload])[0]

    def close(self) -> None:
        self.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
