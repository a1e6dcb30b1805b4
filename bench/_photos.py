"""Photo-like 12-megapixel JPEGs for the benchmarks, generated once and cached."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_DIR = os.path.join(tempfile.gettempdir(), "likeness-bench")


def photo_jpeg(seed: int, size: tuple[int, int] = (4000, 3000), quality: int = 90) -> bytes:
    """Gradients, soft shapes and sensor-like grain: compresses like a real photo (~3-5 MB)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = []
    for c in range(3):
        base = rng.uniform(40, 200)
        tilt_x, tilt_y = rng.uniform(-60, 60, 2)
        wave = rng.uniform(10, 40) * np.sin(x / rng.uniform(80, 600) + y / rng.uniform(80, 600) + c)
        channels.append(base + tilt_x * x / w + tilt_y * y / h + wave)
    pixels = np.stack(channels, axis=-1)
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(40):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(w / 30, w / 4), y0 + rng.uniform(h / 30, h / 4)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    grain = rng.normal(0, 9, (h, w, 3)).astype(np.float32)
    pixels = np.clip(np.asarray(canvas, np.float32) + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def photos(
    count: int, directory: str = DEFAULT_DIR, size: tuple[int, int] = (4000, 3000)
) -> list[str]:
    """Paths of `count` distinct JPEGs (4000x3000 unless `size` says), generating the missing."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for seed in range(count):
        path = os.path.join(directory, f"photo-{seed:03d}-{size[0]}x{size[1]}-q90.jpg")
        if not os.path.exists(path):
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as f:
                f.write(photo_jpeg(seed, size))
            os.replace(tmp, path)
        paths.append(path)
    return paths


def pin_to_one_core() -> str:
    """Run on a single CPU, as the per-core targets assume; returns a note for the report."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity here)"
