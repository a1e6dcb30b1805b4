"""The exact scans (`plugin_api.ExactScan`, `distances`, the `exact` index) agree with a
straightforward reference implementation on random data, ties and zero vectors included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.plugin_api import ExactScan, VectorCodec, distances, save_ids
from plugins.index_exact import VECTORS_FILE, ExactIndex


def reference_distances(metric: str, matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The textbook definitions, in float64, one row at a time."""
    out = []
    for row in matrix:
        if metric == "hamming":
            out.append(
                sum(bin(int(a) ^ int(b)).count("1") for a, b in zip(row, vector, strict=True))
            )
        elif metric == "angular":
            row, query = row.astype(np.float64), vector.astype(np.float64)
            norms = np.linalg.norm(row) * np.linalg.norm(query)
            cos = row @ query / norms if norms > 0 else 0.0
            out.append(np.sqrt(max(0.0, 2.0 - 2.0 * cos)))
        else:
            out.append(np.linalg.norm(row.astype(np.float64) - vector.astype(np.float64)))
    return np.array(out, dtype=np.float64)


@st.composite
def vectors(draw, metric: str):
    """(dimensions, matrix, query): random rows with repeated rows, zero rows and the query
    itself among them now and then."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = draw(st.integers(0, 60))
    if metric == "hamming":
        width = draw(st.integers(1, 20))  # whole words, and widths that need padding
        matrix = rng.integers(0, 256, (rows, width), dtype=np.uint8)
        query = rng.integers(0, 256, width, dtype=np.uint8)
        dimensions = width * 8
    else:
        dimensions = width = draw(st.integers(1, 40))
        scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
        matrix = (rng.standard_normal((rows, width)) * scale).astype(np.float32)
        query = (rng.standard_normal(width) * scale).astype(np.float32)
        if rows and draw(st.booleans()):
            matrix[rng.integers(0, rows)] = 0.0
    if rows >= 4 and draw(st.booleans()):
        matrix[rng.integers(0, rows, 3)] = matrix[0]  # ties
        if draw(st.booleans()):
            query = matrix[0].copy()
    return dimensions, matrix, query


METRICS = ["hamming", "angular", "euclidean"]


@pytest.mark.parametrize("metric", METRICS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_distances_agree_with_the_reference(metric, data):
    _, matrix, query = data.draw(vectors(metric))
    np.testing.assert_allclose(
        distances(metric, matrix, query),
        reference_distances(metric, matrix, query),
        rtol=1e-5,
        atol=2e-3 if metric == "angular" else 1e-5,  # sqrt near 0 magnifies float32 rounding
    )


@pytest.mark.parametrize("metric", METRICS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_exact_index_returns_the_reference_top_k(metric, data):
    dimensions, matrix, query = data.draw(vectors(metric))
    k = data.draw(st.integers(0, 70))
    ids = [f"item-{i}" for i in range(len(matrix))]
    index = ExactIndex(metric, dimensions, {})
    index.build(ids, matrix)

    found = index.query(query, k)

    expected = reference_distances(metric, matrix, query)
    assert len(found) == min(k, len(matrix))
    positions = [int(i.split("-")[1]) for i, _ in found]
    # Nearest first, and nothing left out is nearer than anything returned.
    np.testing.assert_allclose([d for _, d in found], expected[positions], rtol=1e-5, atol=2e-3)
    if found:
        left_out = np.delete(expected, positions)
        assert (left_out >= expected[positions].max() - 1e-5).all()
    if metric == "hamming":  # integer distances: ties are exact and go by position
        order = sorted(range(len(matrix)), key=lambda i: (expected[i], i))[:k]
        assert positions == order


@pytest.mark.parametrize("metric", METRICS)
def test_many_queries_against_one_layout(metric):
    rng = np.random.default_rng(7)
    if metric == "hamming":
        codec = VectorCodec(metric, 64)
        matrix = rng.integers(0, 256, (500, 8), dtype=np.uint8)
    else:
        codec = VectorCodec(metric, 24)
        matrix = rng.standard_normal((500, 24)).astype(np.float32)
    scan = ExactScan.of_vectors(codec, matrix)
    for query in matrix[:20]:
        np.testing.assert_allclose(
            scan.distances(query), reference_distances(metric, matrix, query), atol=2e-3
        )


def test_angular_rows_are_stored_at_unit_length(tmp_path):
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((50, 16)).astype(np.float32) * 40
    index = ExactIndex("angular", 16, {})
    index.build([str(i) for i in range(50)], matrix)
    (saved, _) = index.save(str(tmp_path))
    rows = np.load(tmp_path / saved)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)


def test_builds_saved_before_unit_rows_still_load(tmp_path):
    # Builds made before rows were stored at unit length hold raw rows in vectors.npy.
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((40, 12)).astype(np.float32) * 9
    ids = np.array([f"old-{i}" for i in range(40)])
    np.save(tmp_path / VECTORS_FILE, matrix)
    save_ids(str(tmp_path), ids)
    index = ExactIndex("angular", 12, {})
    index.load(str(tmp_path))
    fresh = ExactIndex("angular", 12, {})
    fresh.build(list(ids), matrix)
    assert index.query(matrix[5], 7) == fresh.query(matrix[5], 7)
