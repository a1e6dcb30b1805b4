"""Approximate nearest neighbours with Annoy: random-projection trees in a memory-mapped file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from annoy import AnnoyIndex as _Annoy

from app.plugin_api import Metric, VectorIndex, check_ids, load_ids, save_ids

INDEX_FILE = "index.ann"
# Annoy's build is reproducible for a given seed only when it runs on one thread (with several,
# trees are split across per-thread generators and collected in completion order).
_SEED = 20240601


class AnnoyIndex(VectorIndex):
    """Annoy forest over float vectors; items are 0..n-1, mapped back through `ids.npy`.

    `ANNOY_N_TREES` trees are built with a fixed seed on one thread, so the same input gives
    the same file. Queries inspect `ANNOY_SEARCH_K` nodes (at least `k * n_trees`, Annoy's
    own floor). Annoy reports angular distance as sqrt(2 - 2 cos), the units of
    `plugin_api.distances`. `save` writes `index.ann` and `ids.npy`; `load` memory-maps the
    forest.
    """

    name = "annoy"
    metrics = frozenset({"angular", "euclidean"})

    def __init__(self, metric: Metric, dimensions: int, config: Mapping[str, Any]):
        super().__init__(metric, dimensions, config)
        self.n_trees = int(config["ANNOY_N_TREES"])
        self.search_k = int(config["ANNOY_SEARCH_K"])
        self._ids = check_ids([])
        self._annoy = self._new()
        self._annoy.build(self.n_trees, n_jobs=1)

    def _new(self) -> _Annoy:
        annoy = _Annoy(self.dimensions, self.metric)
        annoy.set_seed(_SEED)
        return annoy

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Index `vectors[i]` under `ids[i]`."""
        new_ids = check_ids(ids)
        vectors = self.codec.check_vectors(vectors, len(new_ids))
        annoy = self._new()
        for item, vector in enumerate(vectors):
            annoy.add_item(item, vector)
        annoy.build(self.n_trees, n_jobs=1)
        self._ids, self._annoy = new_ids, annoy

    def save(self, directory: str) -> list[str]:
        """Write index.ann and ids.npy into `directory`."""
        if not self._annoy.save(os.path.join(directory, INDEX_FILE)):
            raise OSError(f"annoy could not save {INDEX_FILE} into {directory}")
        # Annoy's save re-maps the index from the file it wrote; on POSIX the mapping stays
        # valid even if the caller deletes the directory after copying the files away.
        return [INDEX_FILE, save_ids(directory, self._ids)]

    def load(self, directory: str) -> None:
        """Memory-map index.ann and read ids.npy."""
        ids = load_ids(directory)
        annoy = _Annoy(self.dimensions, self.metric)
        if not annoy.load(os.path.join(directory, INDEX_FILE), prefault=False):
            raise OSError(f"annoy could not load {INDEX_FILE} from {directory}")
        if annoy.get_n_items() != len(ids):
            raise ValueError(
                f"{INDEX_FILE} holds {annoy.get_n_items()} items but {len(ids)} ids were saved"
            )
        self._ids, self._annoy = ids, annoy

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The (approximately) k nearest ids with their distances, nearest first."""
        k = min(int(k), len(self._ids))
        if k <= 0:
            return []
        vector = self.codec.check_query(vector)
        items, dists = self._annoy.get_nns_by_vector(
            vector.tolist(),
            k,
            search_k=max(self.search_k, k * self.n_trees),
            include_distances=True,
        )
        results: list[tuple[str, float]] = []
        seen: set[int] = set()
        for item, dist in zip(items, dists, strict=True):
            if item not in seen:  # Annoy deduplicates already; the contract requires it
                seen.add(item)
                results.append((str(self._ids[item]), float(dist)))
        return results

    def __len__(self) -> int:
        return len(self._ids)
