"""Brute-force nearest neighbours: exact, and fast enough for tens of thousands of vectors."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.plugin_api import (
    METRICS,
    Metric,
    VectorIndex,
    check_ids,
    distances,
    load_ids,
    save_ids,
)

VECTORS_FILE = "vectors.npy"


class ExactIndex(VectorIndex):
    """Linear scan with `plugin_api.distances`: exact results for every metric.

    Ties are broken by build order, so results are deterministic. `save` writes
    `vectors.npy` and `ids.npy` (fixed-width unicode, no pickle); `load` memory-maps the vectors.
    """

    name = "exact"
    metrics = METRICS

    def __init__(self, metric: Metric, dimensions: int, config: Mapping[str, Any]):
        super().__init__(metric, dimensions, config)
        self._ids = check_ids([])
        self._vectors = self.codec.empty()

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Index `vectors[i]` under `ids[i]`."""
        self._ids = check_ids(ids)
        self._vectors = self.codec.check_vectors(vectors, len(self._ids))

    def save(self, directory: str) -> list[str]:
        """Write vectors.npy and ids.npy into `directory`."""
        np.save(os.path.join(directory, VECTORS_FILE), self._vectors, allow_pickle=False)
        return [VECTORS_FILE, save_ids(directory, self._ids)]

    def load(self, directory: str) -> None:
        """Load what `save` wrote, memory-mapping the vectors."""
        ids = load_ids(directory)
        vectors = np.load(os.path.join(directory, VECTORS_FILE), mmap_mode="r", allow_pickle=False)
        width, dtype = self.codec.width, self.codec.dtype
        if vectors.shape != (len(ids), width) or vectors.dtype != dtype:
            raise ValueError(
                f"{VECTORS_FILE}: expected {dtype} ({len(ids)}, {width}), "
                f"got {vectors.dtype} {vectors.shape}"
            )
        self._ids, self._vectors = ids, vectors

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest ids with their distances, nearest first."""
        k = min(int(k), len(self._ids))
        if k <= 0:
            return []
        dist = distances(self.metric, self._vectors, self.codec.check_query(vector))
        if k < len(dist):
            # Everything tied with the k-th distance is a candidate, so ties are decided by
            # position below rather than by argpartition's arbitrary choice.
            kth = dist[np.argpartition(dist, k - 1)[k - 1]]
            candidates = np.flatnonzero(dist <= kth)
        else:
            candidates = np.arange(len(dist))
        order = candidates[np.lexsort((candidates, dist[candidates]))][:k]
        return [(str(self._ids[i]), float(dist[i])) for i in order]

    def __len__(self) -> int:
        return len(self._ids)
