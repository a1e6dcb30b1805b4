"""Colour distribution: which colours an image contains and in what proportion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from app.plugin_api import Embedder

_SIDE = 64  # longest edge after downscaling; ~3000 pixels is plenty for a histogram
_HUE_BINS, _SAT_BINS, _VAL_BINS, _GREY_BINS = 8, 4, 4, 8
_CHROMA_BINS = _HUE_BINS * _SAT_BINS * _VAL_BINS
# Below these (0..255) saturation / value, hue is noise: such pixels count as grey levels.
# The ramps blend the two sets of bins so a pixel near the threshold does not flip between them.
_SAT_GREY, _SAT_COLOUR = 24.0, 56.0
_VAL_GREY, _VAL_COLOUR = 24.0, 48.0


def _soft_bins(x: np.ndarray, lo: float, hi: float, n: int, circular: bool = False):
    """Linear interpolation between the two nearest of `n` bin centres over [lo, hi).

    Returns (lower bin, upper bin, weight of the upper bin); soft assignment keeps small shifts
    from recompression or resizing from moving a pixel's whole mass into another bin.
    """
    pos = (x - lo) / (hi - lo) * n
    if circular:  # bin centres at lo + k * width, so bin 0 is centred on `lo` (red, for hue)
        low = np.floor(pos)
        frac = pos - low
        low = low.astype(np.int64) % n
        return low, (low + 1) % n, frac
    pos = np.clip(pos - 0.5, 0.0, n - 1.0)  # centres at lo + (k + 0.5) * width
    low = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    return low, low + 1, pos - low


class ColorEmbedder(Embedder):
    """Hellinger-normalised joint HSV histogram, compared with angular distance.

    128 chromatic bins (8 hue x 4 saturation x 4 value, hue centred on red) plus 8 grey-level
    bins for unsaturated or dark pixels, whose hue is meaningless. Pixels are soft-assigned
    between neighbouring bins. The histogram sums to 1, is square-rooted (Hellinger) and
    L2-normalised, so the cosine of two vectors is the Bhattacharyya coefficient of the two
    colour distributions. float32, shape (n, 136).
    """

    name = "color"
    version = "1"
    metric = "angular"
    preferred_index = "annoy"
    input_size = 64

    @property
    def dimensions(self) -> int:
        """Histogram bins."""
        return _CHROMA_BINS + _GREY_BINS

    def embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One L2-normalised descriptor per image, in order."""
        out = np.zeros((len(images), self.codec.width), dtype=self.codec.dtype)
        for row, image in enumerate(images):
            out[row] = self._histogram(image)
        return out

    def _histogram(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        scale = _SIDE / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            # reducing_gap: box-reduce big images first, then a proper antialiased resize.
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        hsv = np.asarray(image.convert("HSV"), dtype=np.float32).reshape(-1, 3)
        h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]

        colour = np.clip((s - _SAT_GREY) / (_SAT_COLOUR - _SAT_GREY), 0.0, 1.0)
        colour *= np.clip((v - _VAL_GREY) / (_VAL_COLOUR - _VAL_GREY), 0.0, 1.0)
        hist = np.zeros(self.dimensions, dtype=np.float64)

        h0, h1, hw = _soft_bins(h, 0.0, 256.0, _HUE_BINS, circular=True)
        s0, s1, sw = _soft_bins(s, _SAT_GREY, 256.0, _SAT_BINS)
        v0, v1, vw = _soft_bins(v, _VAL_GREY, 256.0, _VAL_BINS)
        for hb, hwt in ((h0, 1.0 - hw), (h1, hw)):
            for sb, swt in ((s0, 1.0 - sw), (s1, sw)):
                for vb, vwt in ((v0, 1.0 - vw), (v1, vw)):
                    index = (hb * _SAT_BINS + sb) * _VAL_BINS + vb
                    hist[:_CHROMA_BINS] += np.bincount(
                        index, weights=colour * hwt * swt * vwt, minlength=_CHROMA_BINS
                    )
        g0, g1, gw = _soft_bins(v, 0.0, 256.0, _GREY_BINS)
        grey = 1.0 - colour
        hist[_CHROMA_BINS:] += np.bincount(g0, weights=grey * (1.0 - gw), minlength=_GREY_BINS)
        hist[_CHROMA_BINS:] += np.bincount(g1, weights=grey * gw, minlength=_GREY_BINS)

        total = hist.sum()
        if total <= 0:  # cannot happen for a non-empty image; keeps the vector non-zero anyway
            hist[_CHROMA_BINS] = total = 1.0
        vec = np.sqrt(hist / total)
        return (vec / np.linalg.norm(vec)).astype(np.float32)
