"""Vectors for the search benchmark: what each embedder's vectors look like, generated once.

Three kinds, each cached as .npy files in the benchmark data folder:

- `hashes`: 64-bit perceptual hashes packed as 8 bytes (the `phash` layout). Every fifth item
  is a near-duplicate of an earlier one (1-6 bits flipped, as recompression or resizing does),
  the rest are independent. Queries are fresh near-duplicates (0-6 bits) of stored items.
- `colour_histograms`: the real `color` embedder (136-d HSV histograms, Hellinger-normalised)
  run on small generated pictures of eight themes (`THEMES`: product shots on white, skies,
  foliage, skin, night, sunsets, greys, anything). Many pictures of one theme have nearly the
  same colour distribution, so the nearest neighbours are crowded together: hard data for
  tree-based search.
- `cnn_like`: 1280-d vectors shaped like a CNN's pooled features (non-negative, clustered,
  angular): 1,000 classes of Zipf-distributed sizes; class c is a point in a 64-d latent space
  plus its own 8 directions of variation (pose, light), mapped to 1280-d by one random linear
  map, plus isotropic noise, then ReLU. `hard=True` replaces the 8 class directions by spread
  over all 64 latent dimensions: neighbours inside a class become nearly equidistant, which no
  approximate index handles well (a stress test, not what trained embedders produce).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def cached(directory: str, name: str, make) -> np.ndarray:
    """`make()` saved as `<directory>/<name>.npy` the first time, loaded after that."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.npy")
    if not os.path.exists(path):
        array = make()
        np.save(f"{path}.tmp.npy", array, allow_pickle=False)
        os.replace(f"{path}.tmp.npy", path)
    return np.load(path, allow_pickle=False)


# --- perceptual hashes --------------------------------------------------------------------------


def _flip_bits(rng: np.random.Generator, words: np.ndarray, max_flips: int) -> np.ndarray:
    """Each 64-bit word with 0..max_flips of its bits flipped."""
    out = words.copy()
    flips = rng.integers(0, max_flips + 1, len(words))
    for i, count in enumerate(flips):
        for bit in rng.choice(64, count, replace=False):
            out[i] ^= np.uint64(1) << np.uint64(bit)
    return out


def hashes(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8) stored hashes and (queries, 8) query hashes, uint8 (np.packbits layout)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    copies = np.arange(5, n, 5)
    originals = rng.integers(0, copies)  # an earlier item for each near-duplicate
    words[copies] = _flip_bits(rng, words[originals], 6)
    asked = _flip_bits(rng, words[rng.integers(0, n, queries)], 6)
    as_bytes = lambda w: w.astype(">u8").view(np.uint8).reshape(-1, 8)  # noqa: E731
    return as_bytes(words), as_bytes(asked)


# --- colour histograms --------------------------------------------------------------------------

# Picture themes: (background hue in degrees, hue jitter, saturation range, value range), and
# the share of pictures of each. A photo library is crowded: product shots on white, skies,
# foliage, skin, night scenes, grey streets; many pictures of one theme have nearly the same
# colour distribution, so the nearest neighbours are many and close together.
THEMES = [
    ((0, 180, 0.00, 0.06, 0.88, 1.00), 0.25),  # product shot on white
    ((205, 15, 0.25, 0.70, 0.55, 0.95), 0.12),  # sky, sea
    ((105, 25, 0.30, 0.80, 0.25, 0.70), 0.12),  # foliage
    ((25, 10, 0.25, 0.60, 0.35, 0.85), 0.12),  # skin, warm interiors
    ((0, 180, 0.00, 0.30, 0.00, 0.18), 0.10),  # night, dark rooms
    ((30, 20, 0.60, 1.00, 0.60, 1.00), 0.07),  # sunsets
    ((0, 180, 0.00, 0.12, 0.35, 0.80), 0.12),  # overcast, concrete
    ((0, 180, 0.00, 1.00, 0.00, 1.00), 0.10),  # anything
]


def _theme_colour(rng: np.random.Generator, hue, jitter, s0, s1, v0, v1) -> np.ndarray:
    import colorsys

    h = rng.uniform(0, 1) if jitter >= 180 else ((hue + rng.uniform(-jitter, jitter)) % 360) / 360
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))) * 255


def _tiny_picture(rng: np.random.Generator, width: int = 64, height: int = 48):
    """A 64x48 picture of one theme: a two-colour gradient, up to four shapes (mostly in the
    theme's colours), grain."""
    from PIL import Image, ImageDraw

    spec = THEMES[rng.choice(len(THEMES), p=[share for _, share in THEMES])][0]
    first, second = _theme_colour(rng, *spec), _theme_colour(rng, *spec)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = x / width * rng.uniform(-1, 1) + y / height * rng.uniform(-1, 1)
    ramp = ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-6))[..., None]
    canvas = Image.fromarray(
        np.clip(first * (1 - ramp) + second * ramp, 0, 255).astype(np.uint8), "RGB"
    )
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 5)):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.uniform(width / 12, width / 3), y0 + rng.uniform(height / 12, height / 3)
        own = rng.random() < 0.6
        colour = _theme_colour(rng, *spec) if own else rng.integers(0, 256, 3)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=tuple(int(c) for c in colour))
    grain = rng.normal(0, 4, (height, width, 3))
    pixels = np.clip(np.asarray(canvas, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _histogram_chunk(args: tuple[int, int]) -> np.ndarray:
    from plugins.embed_color import ColorEmbedder

    seed, count = args
    rng = np.random.default_rng(seed)
    return ColorEmbedder({}).embed_batch([_tiny_picture(rng) for _ in range(count)])


def colour_histograms(n: int, seed: int = 0) -> np.ndarray:
    """(n, 136) float32 vectors of the `color` embedder, computed on every core (~1 ms each)."""
    chunk = 2000
    jobs = [(seed * 1_000_003 + start, min(chunk, n - start)) for start in range(0, n, chunk)]
    with ProcessPoolExecutor() as pool:
        return np.concatenate(list(pool.map(_histogram_chunk, jobs)))


# --- CNN-like features --------------------------------------------------------------------------


def cnn_like(
    n: int, dims: int = 1280, seed: int = 0, hard: bool = False, classes: int = 1000
) -> np.ndarray:
    """(n, dims) float32 clustered non-negative vectors (see the module docstring)."""
    latent, rank = 64, 8
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((latent, dims), dtype=np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((classes, latent), dtype=np.float32)
    sizes = rng.zipf(1.5, classes).astype(np.float64)
    which = rng.choice(classes, n, p=sizes / sizes.sum())
    if not hard:
        bases = rng.standard_normal((classes, rank, latent), dtype=np.float32) / np.sqrt(rank)
    out = np.empty((n, dims), np.float32)
    for start in range(0, n, 10_000):
        members = which[start : start + 10_000]
        if hard:
            z = centres[members] + 0.6 * rng.standard_normal((len(members), latent), np.float32)
            noise = 0.35
        else:
            u = 0.6 * rng.standard_normal((len(members), rank), dtype=np.float32)
            z = centres[members] + np.einsum("nr,nrl->nl", u, bases[members])
            noise = 0.1
        x = z @ mix + noise * rng.standard_normal((len(members), dims), dtype=np.float32)
        out[start : start + 10_000] = np.maximum(x, 0.0)
    return out
