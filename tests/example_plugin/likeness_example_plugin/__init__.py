"""An example third-party Likeness plugin: an embedder of tiny grey thumbnails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from app.plugin_api import Embedder


class GreyThumbnailEmbedder(Embedder):
    """The image shrunk to a `GREYTHUMB_SIDE` x `GREYTHUMB_SIDE` (default 8) grey thumbnail.

    Each pixel is a brightness in 0..1, so vectors are float32 of `side * side` dimensions,
    compared with euclidean distance: images that look alike at a glance (the same picture
    resized or recompressed) are near, whatever their colours.
    """

    name = "greythumb"
    version = "1"
    metric = "euclidean"
    preferred_index = "exact"
    input_size = 32  # a few source pixels per thumbnail pixel, for a fair average

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.side = int(config.get("GREYTHUMB_SIDE", 8))
        if self.side < 1:
            raise ValueError(f"GREYTHUMB_SIDE must be at least 1, got {self.side}")

    @property
    def dimensions(self) -> int:
        """One per thumbnail pixel."""
        return self.side * self.side

    def embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One row of thumbnail brightnesses per image, in order."""
        out = np.zeros((len(images), self.dimensions), dtype=self.codec.dtype)
        for row, image in enumerate(images):
            # BOX averages every source pixel that falls into a thumbnail pixel.
            thumbnail = image.convert("L").resize((self.side, self.side), Image.Resampling.BOX)
            out[row] = np.asarray(thumbnail, dtype=np.float32).reshape(-1) / 255.0
        return out
