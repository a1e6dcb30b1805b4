"""Throughput of the upload hash path on 12-megapixel JPEGs, against a naive pipeline.

Hash path = what an upload costs in CPU: sha256, validation with a full decode, metadata,
dominant colours, the thumbnail, plus the phash and colour embeddings of the same decode.
The naive pipeline does the obvious thing with full-size decodes: `imagehash.phash(Image.open(f))`,
a thumbnail from a full decode, and the colour embedding of the full image.

    .venv/bin/python bench/bench_ingest.py [--images 8] [--seconds 10]

Targets: >= 15 images/s on one core and >= 3x the naive pipeline. Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import imagehash  # noqa: E402
from PIL import Image  # noqa: E402

from app.imaging import validate  # noqa: E402
from bench._photos import DEFAULT_DIR, photos, pin_to_one_core  # noqa: E402
from plugins.embed_color import ColorEmbedder  # noqa: E402
from plugins.embed_phash import PHashEmbedder  # noqa: E402

TARGET_RATE, TARGET_RATIO = 15.0, 3.0
LIMITS = validate.Limits(max_bytes=50 * 1024 * 1024)
PHASH, COLOR = PHashEmbedder({}), ColorEmbedder({})


def hash_path(data: bytes) -> None:
    stream = io.BytesIO(data)
    validate.measure(stream, LIMITS.max_bytes)
    found = validate.analyse(stream, LIMITS)
    pixels = found.working.convert("RGB")
    PHASH.embed_batch([pixels])
    COLOR.embed_batch([pixels])


def naive(data: bytes) -> None:
    hashlib.sha256(data).hexdigest()
    imagehash.phash(Image.open(io.BytesIO(data)))
    full = Image.open(io.BytesIO(data))
    full.load()
    thumb = full.copy()
    thumb.thumbnail((LIMITS.thumbnail_size, LIMITS.thumbnail_size))
    thumb.save(io.BytesIO(), "WEBP", quality=80)
    COLOR.embed_batch([full])


def rate(pipeline, files: list[bytes], seconds: float) -> tuple[float, int]:
    """Images per second over whole passes through `files`, for at least `seconds`."""
    pipeline(files[0])  # warm-up: imports, first-call allocations
    done, start = 0, time.perf_counter()
    while True:
        for data in files:
            pipeline(data)
        done += len(files)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="distinct JPEGs (default 8)")
    parser.add_argument("--seconds", type=float, default=10, help="per pipeline (default 10)")
    parser.add_argument("--data", default=DEFAULT_DIR, help="where generated JPEGs are cached")
    args = parser.parse_args()

    note = pin_to_one_core()
    paths = photos(args.images, args.data)
    files = []
    for path in paths:
        with open(path, "rb") as f:
            files.append(f.read())
    mean_mb = sum(map(len, files)) / len(files) / 1e6
    print(f"{len(files)} JPEGs 4000x3000 q90, mean {mean_mb:.1f} MB; {note}")

    fast, fast_n = rate(hash_path, files, args.seconds)
    slow, slow_n = rate(naive, files, args.seconds)
    ratio = fast / slow
    print(f"hash path : {fast:6.1f} images/s  ({1000 / fast:5.1f} ms/image, {fast_n} images)")
    print(f"naive     : {slow:6.1f} images/s  ({1000 / slow:5.1f} ms/image, {slow_n} images)")
    print(f"ratio     : {ratio:6.1f}x")
    ok = fast >= TARGET_RATE and ratio >= TARGET_RATIO
    print(
        f"targets   : >= {TARGET_RATE:g} images/s and >= {TARGET_RATIO:g}x -> "
        + ("met" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
