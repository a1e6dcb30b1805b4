"""Brute-force nearest neighbours: exact, one pass over vectors laid out for the metric."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.plugin_api import (
    METRICS,
    ExactScan,
    Metric,
    VectorIndex,
    check_ids,
    load_ids,
    save_ids,
)

VECTORS_FILE = "vectors.npy"
# Angular rows are saved scaled to unit length, under a name of their own: builds saved before
# (raw rows in vectors.npy) are still read, and scaled when loaded.
UNIT_VECTORS_FILE = "unit_vectors.npy"


class ExactIndex(VectorIndex):
    """A linear scan (`plugin_api.ExactScan`): exact results for every metric.

    Hamming vectors are compared 64 bits at a time by popcount, angular vectors are stored at
    unit length so that a query is one matrix-vector product, and euclidean differences are
    taken a block at a time. Ties are broken by build order, so results are deterministic.
    `save` writes the laid-out rows and `ids.npy` (fixed-width unicode, no pickle); `load`
    memory-maps the rows, so processes that load the same files share one copy.
    """

    name = "exact"
    metrics = METRICS

    def __init__(self, metric: Metric, dimensions: int, config: Mapping[str, Any]):
        super().__init__(metric, dimensions, config)
        self._ids = check_ids([])
        self._scan = ExactScan.of_vectors(self.codec, self.codec.empty())

    @property
    def _file(self) -> str:
        return UNIT_VECTORS_FILE if self.metric == "angular" else VECTORS_FILE

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Index `vectors[i]` under `ids[i]`."""
        new_ids = check_ids(ids)
        vectors = self.codec.check_vectors(vectors, len(new_ids))  # an owned copy
        self._scan = ExactScan.of_vectors(self.codec, vectors, copy=False)
        self._ids = new_ids

    def save(self, directory: str) -> list[str]:
        """Write the laid-out rows and ids.npy into `directory`."""
        np.save(os.path.join(directory, self._file), self._scan.rows, allow_pickle=False)
        return [self._file, save_ids(directory, self._ids)]

    def load(self, directory: str) -> None:
        """Load what `save` wrote, memory-mapping the rows."""
        ids = load_ids(directory)
        path = os.path.join(directory, self._file)
        if self.metric == "angular" and not os.path.exists(path):
            rows = np.load(os.path.join(directory, VECTORS_FILE), allow_pickle=False)
            scan = ExactScan.of_vectors(self.codec, self._checked(rows, ids, self.codec.width))
        else:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
            width = ExactScan.row_width(self.codec)
            if self.metric == "hamming" and rows.ndim == 2 and rows.shape[1] == self.codec.width:
                width = self.codec.width  # saved unpadded before; padded when laid out below
            rows = self._checked(rows, ids, width)
            scan = (
                ExactScan(self.codec, rows)
                if width == ExactScan.row_width(self.codec)
                else ExactScan.of_vectors(self.codec, rows)
            )
        self._ids, self._scan = ids, scan

    def _checked(self, rows: np.ndarray, ids: np.ndarray, width: int) -> np.ndarray:
        dtype = self.codec.dtype
        if rows.shape != (len(ids), width) or rows.dtype != dtype:
            raise ValueError(
                f"{self._file}: expected {dtype} ({len(ids)}, {width}), "
                f"got {rows.dtype} {rows.shape}"
            )
        return rows

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest ids with their distances, nearest first."""
        vector = self.codec.check_query(vector)
        positions, dists = self._scan.nearest(vector, k)
        return [(str(self._ids[p]), float(d)) for p, d in zip(positions, dists, strict=True)]

    def __len__(self) -> int:
        return len(self._ids)
