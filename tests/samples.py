"""Images made on the spot for tests: deterministic, no downloads."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like picture: a colour gradient, shapes and grain, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    tilt = rng.uniform(-0.4, 0.4, (3, 2))
    channels = [base[c] + tilt[c, 0] * x * 640 / w + tilt[c, 1] * y * 480 / h for c in range(3)]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(w / 20, w / 3), y0 + rng.uniform(h / 20, h / 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    grain = rng.normal(0, 6, (h, w, 3))
    pixels = np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (640, 480), quality: int = 90) -> bytes:
    return encode(photo(seed, size), "JPEG", quality=quality)


def resized_copy(data: bytes, factor: float = 0.5, quality: int = 60) -> bytes:
    """The same picture made smaller and re-compressed: what a near-duplicate looks like."""
    image = Image.open(io.BytesIO(data))
    small = image.resize((int(image.width * factor), int(image.height * factor)), Image.LANCZOS)
    return encode(small, "JPEG", quality=quality)
