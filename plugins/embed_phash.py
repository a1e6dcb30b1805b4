"""Perceptual hash: 64 bits that survive resizing, recompression and mild edits."""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
from PIL import Image

from app.plugin_api import Embedder

_HASH_SIZE = 8


class PHashEmbedder(Embedder):
    """DCT perceptual hash (`imagehash.phash`, hash_size 8) as 64 packed bits.

    Vectors are uint8, shape (n, 8), `np.packbits` order of the row-major 8x8 hash; compare
    with hamming distance. Near-duplicates are typically under 10 bits apart, unrelated images
    around 32. phash reduces to 32x32 greyscale first, so a 64px decode loses nothing.
    """

    name = "phash"
    version = "1"
    metric = "hamming"
    preferred_index = "exact"
    input_size = 64

    @property
    def dimensions(self) -> int:
        """Bits per hash."""
        return _HASH_SIZE * _HASH_SIZE

    def embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One packed 64-bit hash per image, in order."""
        codec = self.codec  # packed bits: width dimensions // 8, uint8
        out = np.zeros((len(images), codec.width), dtype=codec.dtype)
        for row, image in enumerate(images):
            bits = imagehash.phash(image, hash_size=_HASH_SIZE).hash
            out[row] = np.packbits(np.asarray(bits, dtype=bool).reshape(-1))
        return out
