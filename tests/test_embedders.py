"""What users notice: near-duplicates are near, different images are far.

Images are drawn with Pillow from a seeded RNG, and decoded the way the pipeline does it:
JPEGs through `Image.draft` to no less than the embedder's `input_size`, then RGB.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from app.plugin_api import Embedder, distances
from app.plugins import builtin_classes

EMBEDDERS = builtin_classes("embedders")


def photo(seed: int, size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A photo-like image: sky-like gradient, a soft light, overlapping shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (y / h)[..., None]
    base = rng.uniform(0, 255, 3) * (1 - t) + rng.uniform(0, 255, 3) * t
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    glow = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.3 * w) ** 2))[..., None]
    base = base + glow * rng.uniform(-80, 80, 3)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = rng.uniform(-0.1 * w, w), rng.uniform(-0.1 * h, h)
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.5) * h
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            points = [(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))) for _ in range(5)]
            draw.polygon(points, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decode(data: bytes, min_edge: int | None = None) -> Image.Image:
    """Decode like the pipeline: a reduced JPEG decode when `min_edge` is given."""
    image = Image.open(io.BytesIO(data))
    if min_edge is not None:
        image.draft("RGB", (min_edge, min_edge))
    return image.convert("RGB")


def distance(embedder: Embedder, a: Image.Image, b: Image.Image) -> float:
    vectors = embedder.embed_batch([a, b])
    return float(distances(embedder.metric, vectors[:1], vectors[1])[0])


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    original = photo(seed=1)
    return {
        "original": jpeg(original, 92),
        "copy": jpeg(original.resize((600, 450), Image.Resampling.LANCZOS), 60),
        "different": jpeg(photo(seed=2), 92),
    }


@pytest.fixture
def phash() -> Embedder:
    return EMBEDDERS["phash"]({})


@pytest.fixture
def color() -> Embedder:
    return EMBEDDERS["color"]({})


@pytest.mark.parametrize("reduced", [False, True], ids=["full-decode", "draft-decode"])
def test_phash_separates_copies_from_different_images(phash, images, reduced):
    size = phash.input_size if reduced else None
    original, copy, different = (decode(images[k], size) for k in ("original", "copy", "different"))
    assert distance(phash, original, copy) < 10
    assert distance(phash, original, different) > 20


def test_phash_survives_draft_decoding(phash, images):
    for key in ("original", "copy", "different"):
        full = decode(images[key])
        reduced = decode(images[key], phash.input_size)
        assert min(reduced.size) < min(full.size) and min(reduced.size) >= phash.input_size
        assert distance(phash, full, reduced) <= 4


@pytest.mark.parametrize("reduced", [False, True], ids=["full-decode", "draft-decode"])
def test_color_separates_copies_from_different_images(color, images, reduced):
    size = color.input_size if reduced else None
    original, copy, different = (decode(images[k], size) for k in ("original", "copy", "different"))
    near, far = distance(color, original, copy), distance(color, original, different)
    assert near < 0.15
    assert far > 4 * near


def test_color_greys_do_not_scatter_across_hues(color):
    """Faint colour noise in a greyscale photo gives pixels random hues; that must not matter."""
    grey = np.asarray(photo(seed=3).convert("L"), np.float32)
    rng = np.random.default_rng(0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    tinted = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    clean = Image.fromarray(rgb.astype(np.uint8), "RGB")
    assert distance(color, clean, Image.fromarray(tinted, "RGB")) < 0.1
    assert distance(color, clean, photo(seed=3)) > 0.5


def test_color_hue_wraps_around_red(color):
    """Reds just either side of hue 0 are neighbours, not opposite ends of the histogram."""
    hsv = [Image.new("HSV", (64, 64), (hue, 200, 200)) for hue in (2, 253, 85)]
    warm, also_warm, green = (image.convert("RGB") for image in hsv)
    assert distance(color, warm, also_warm) < 0.5 * distance(color, warm, green)
