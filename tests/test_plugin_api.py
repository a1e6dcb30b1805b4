"""The helpers the plugin contract gives every plugin and caller: the vector codec, the id
sidecar, and the layering (plugins see only the contract; the contract sees nothing of the app)."""

from __future__ import annotations

import ast
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from app.plugin_api import (
    IDS_FILE,
    VectorCodec,
    check_ids,
    load_ids,
    save_ids,
    vector_dtype,
)
from app.plugins import builtin_classes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("metric", "dimensions", "width", "dtype"),
    [
        ("hamming", 64, 8, np.uint8),
        ("angular", 136, 136, np.float32),
        ("euclidean", 3, 3, np.float32),
    ],
)
def test_codec_layout_per_metric(metric, dimensions, width, dtype):
    codec = VectorCodec(metric, dimensions)
    assert codec.width == width
    assert codec.dtype == np.dtype(dtype) == vector_dtype(metric)
    assert codec.empty().shape == (0, width) and codec.empty().dtype == dtype


@pytest.mark.parametrize(("metric", "dimensions"), [("hamming", 64), ("angular", 24)])
def test_codec_bytes_roundtrip(metric, dimensions):
    codec = VectorCodec(metric, dimensions)
    rng = np.random.default_rng(1)
    if metric == "hamming":
        vector = rng.integers(0, 256, codec.width, dtype=np.uint8)
    else:
        vector = rng.normal(size=codec.width).astype(np.float32)
    data = codec.to_bytes(vector)
    assert len(data) == codec.width * codec.dtype.itemsize
    back = codec.from_bytes(data)
    assert back.dtype == codec.dtype and back.shape == (codec.width,)
    np.testing.assert_array_equal(back, vector)


def test_codec_stores_floats_little_endian():
    # The database holds these bytes; a big-endian machine must read the same numbers.
    data = VectorCodec("euclidean", 2).to_bytes(np.array([1.0, -2.5], dtype=">f4"))
    assert data == struct.pack("<2f", 1.0, -2.5)


def test_codec_stack_builds_one_matrix():
    codec = VectorCodec("hamming", 16)
    rows = [codec.from_bytes(bytes([i, 255 - i])) for i in range(3)]
    matrix = codec.stack(rows)
    assert matrix.shape == (3, 2) and matrix.dtype == np.uint8
    assert matrix[:, 0].tolist() == [0, 1, 2]
    assert codec.stack([]).shape == (0, 2) and codec.stack([]).dtype == np.uint8
    with pytest.raises(ValueError):
        codec.stack([np.zeros(3, np.uint8)])


def test_check_vectors_copies_and_checks_the_shape():
    codec = VectorCodec("angular", 4)
    source = np.ones((2, 4), dtype=np.float64)
    checked = codec.check_vectors(source, 2)
    source[:] = 7  # the index owns its copy
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    assert checked.tolist() == [[1.0] * 4] * 2
    assert codec.check_vectors([], 0).shape == (0, 4)
    for bad, count in [(np.ones((2, 4)), 3), (np.ones((2, 5)), 2), (np.ones(8), 2)]:
        with pytest.raises(ValueError, match="shape"):
            codec.check_vectors(bad, count)


@pytest.mark.parametrize(
    ("metric", "vector", "message"),
    [
        ("angular", [1.0, float("nan"), 0.0, 0.0], "finite"),
        ("euclidean", [1.0, float("inf"), 0.0, 0.0], "finite"),
        ("angular", [1.0, 0.0, 0.0], "width 4"),
        ("angular", ["a", "b", "c", "d"], "finite"),
        ("hamming", [0, 0, 0, 256], "0..255"),
        ("hamming", [0, 0, 0, -1], "0..255"),
        ("hamming", [0.5, 0.0, 0.0, 0.0], "packed bits"),
        ("hamming", [0, 0, 0], "width 4"),
    ],
)
def test_codec_refuses_what_its_dtype_cannot_hold(metric, vector, message):
    codec = VectorCodec(metric, 32 if metric == "hamming" else 4)
    with pytest.raises(ValueError, match=message):
        codec.check_query(vector)
    with pytest.raises(ValueError, match=message):
        codec.to_bytes(vector)


def test_codec_refuses_stored_bytes_of_another_width():
    with pytest.raises(ValueError, match="holds 16 bytes, got 12"):
        VectorCodec("angular", 4).from_bytes(b"\0" * 12)


@pytest.mark.parametrize(
    ("metric", "dimensions"),
    [("cosine", 8), ("hamming", 60), ("angular", 0), ("angular", 2.5), ("angular", True)],
)
def test_codec_refuses_impossible_layouts(metric, dimensions):
    with pytest.raises(ValueError):
        VectorCodec(metric, dimensions)


def test_every_builtin_uses_the_codec_of_its_metric():
    for cls in builtin_classes("embedders").values():
        embedder = cls({})
        assert embedder.codec == VectorCodec(cls.metric, embedder.dimensions)
    for cls in builtin_classes("indexes").values():
        for metric in cls.metrics:
            index = cls(metric, 16, {"ANNOY_N_TREES": 2, "ANNOY_SEARCH_K": 10})
            assert index.codec == VectorCodec(metric, 16)


def test_id_sidecar_roundtrip(tmp_path):
    ids = check_ids(["b", "a", "long-image-id-0001"])
    assert save_ids(str(tmp_path), ids) == IDS_FILE
    assert load_ids(str(tmp_path)).tolist() == ["b", "a", "long-image-id-0001"]
    assert check_ids([]).shape == (0,)


@pytest.mark.parametrize("ids", [["a", "a"], ["a", ""], ["a", 3]])
def test_check_ids_refuses_duplicates_and_non_strings(ids):
    with pytest.raises(ValueError):
        check_ids(ids)


def test_load_ids_refuses_anything_but_strings(tmp_path):
    np.save(tmp_path / IDS_FILE, np.arange(3))
    with pytest.raises(ValueError, match="unicode"):
        load_ids(str(tmp_path))


# --- layers -----------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


FIRST_PARTY = ("app", "plugins", "config", "wsgi", "tests")


def _first_party(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in FIRST_PARTY}


@pytest.mark.parametrize(
    ("module", "libraries"),
    [
        ("app/plugin_api.py", {"numpy", "PIL"}),
        ("app/plugin_testing.py", {"numpy", "PIL", "pytest"}),
    ],
)
def test_the_contract_imports_nothing_of_the_app(module, libraries):
    imports = _imports(ROOT / module)
    assert _first_party(imports) <= {"app.plugin_api"}
    third_party = {n.split(".")[0] for n in imports - _first_party(imports)}
    assert third_party - set(sys.stdlib_module_names) - {"__future__"} <= libraries


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").glob("*.py")), ids=lambda p: p.name)
def test_plugins_import_only_the_contract(path):
    assert _first_party(_imports(path)) <= {"app.plugin_api"}
