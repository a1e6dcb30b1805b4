"""Brute-force nearest neighbours: exact, and fast enough for tens of thousands of vectors."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.plugin_api import METRICS, Metric, VectorIndex, distances

IDS_FILE = "ids.npy"
VECTORS_FILE = "vectors.npy"


def vector_width(metric: str, dimensions: int) -> int:
    """Columns per stored vector: packed bytes for hamming, else one per dimension."""
    return dimensions // 8 if metric == "hamming" else dimensions


def check_vectors(metric: str, dimensions: int, vectors: np.ndarray, count: int) -> np.ndarray:
    """Return `vectors` as an owned C-contiguous (count, width) array of the metric's dtype."""
    dtype = np.uint8 if metric == "hamming" else np.float32
    width = vector_width(metric, dimensions)
    vectors = np.array(vectors, dtype=dtype, copy=True, order="C")
    if count == 0 and vectors.size == 0:
        return vectors.reshape(0, width)
    if vectors.shape != (count, width):
        raise ValueError(f"expected vectors of shape ({count}, {width}), got {vectors.shape}")
    return vectors


def check_ids(ids: Sequence[str]) -> np.ndarray:
    """Ids as a fixed-width unicode array (saved without pickle); duplicates are an error."""
    ids = list(ids)
    if not all(isinstance(i, str) and i for i in ids):
        raise ValueError("index ids must be non-empty strings")
    if len(set(ids)) != len(ids):
        raise ValueError("index ids must be unique")
    return np.array(ids, dtype=str) if ids else np.zeros(0, dtype="<U1")


def check_query(metric: str, dimensions: int, vector: np.ndarray) -> np.ndarray:
    """One query vector, flattened, of the metric's dtype and width."""
    dtype = np.uint8 if metric == "hamming" else np.float32
    vector = np.asarray(vector, dtype=dtype).reshape(-1)
    if vector.shape[0] != vector_width(metric, dimensions):
        raise ValueError(
            f"expected a query of width {vector_width(metric, dimensions)}, got {vector.shape[0]}"
        )
    return vector


def save_ids(directory: str, ids: np.ndarray) -> str:
    """Write the id sidecar; returns its file name."""
    np.save(os.path.join(directory, IDS_FILE), ids, allow_pickle=False)
    return IDS_FILE


def load_ids(directory: str) -> np.ndarray:
    """Read the id sidecar written by `save_ids`."""
    ids = np.load(os.path.join(directory, IDS_FILE), allow_pickle=False)
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise ValueError(f"{IDS_FILE}: expected a 1-d unicode array, got {ids.dtype} {ids.shape}")
    return ids


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
        self._vectors = check_vectors(metric, dimensions, np.zeros(0), 0)

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Index `vectors[i]` under `ids[i]`."""
        self._ids = check_ids(ids)
        self._vectors = check_vectors(self.metric, self.dimensions, vectors, len(self._ids))

    def save(self, directory: str) -> list[str]:
        """Write vectors.npy and ids.npy into `directory`."""
        np.save(os.path.join(directory, VECTORS_FILE), self._vectors, allow_pickle=False)
        return [VECTORS_FILE, save_ids(directory, self._ids)]

    def load(self, directory: str) -> None:
        """Load what `save` wrote, memory-mapping the vectors."""
        ids = load_ids(directory)
        vectors = np.load(os.path.join(directory, VECTORS_FILE), mmap_mode="r", allow_pickle=False)
        width = vector_width(self.metric, self.dimensions)
        dtype = np.uint8 if self.metric == "hamming" else np.float32
        if vectors.shape != (len(ids), width) or vectors.dtype != dtype:
            raise ValueError(
                f"{VECTORS_FILE}: expected {dtype.__name__} ({len(ids)}, {width}), "
                f"got {vectors.dtype} {vectors.shape}"
            )
        self._ids, self._vectors = ids, vectors

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest ids with their distances, nearest first."""
        k = min(int(k), len(self._ids))
        if k <= 0:
            return []
        dist = distances(
            self.metric, self._vectors, check_query(self.metric, self.dimensions, vector)
        )
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
