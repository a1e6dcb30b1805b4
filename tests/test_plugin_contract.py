"""Every built-in plugin honours the contract in app/plugin_api.py.

Parametrised over the entry points of the "likeness" distribution only, so a plugin that is
merely installed in the environment never runs here.
"""

from __future__ import annotations

import io
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.plugin_api import (
    METRICS,
    Embedder,
    ObjectNotFound,
    StorageBackend,
    VectorIndex,
    distances,
)
from app.plugins import builtin_classes
from tests.s3server import s3_config

pytest_plugins = ["tests.s3server"]  # the moto_endpoint and s3_bucket fixtures

STORAGE = builtin_classes("storage")
EMBEDDERS = builtin_classes("embedders")
INDEXES = builtin_classes("indexes")

BAD_KEYS = ["../x", "/abs", "a/../b", "", "a//b", ".hidden", "a/.hidden", "a/", "a\n", "a b"]


def plugin_config(tmp_path: Path) -> dict:
    return {"STORAGE_ROOT": str(tmp_path / "root"), "ANNOY_N_TREES": 16, "ANNOY_SEARCH_K": 5000}


def test_builtins_are_registered():
    assert {"local", "s3"} <= set(STORAGE)
    assert {"phash", "color"} <= set(EMBEDDERS)
    assert {"exact", "annoy"} <= set(INDEXES)


# --- storage -----------------------------------------------------------------------------


@pytest.fixture(params=sorted(STORAGE))
def storage(request, tmp_path) -> StorageBackend:
    config = plugin_config(tmp_path)
    if request.param == "s3":  # a fresh bucket on a real (moto) S3 server
        endpoint = request.getfixturevalue("moto_endpoint")
        config |= s3_config(endpoint, request.getfixturevalue("s3_bucket"))
    return STORAGE[request.param](config)


def _read(storage: StorageBackend, key: str) -> bytes:
    with storage.open(key) as f:
        return f.read()


def test_storage_save_open_roundtrip(storage):
    payload = os.urandom(3 * 1024 * 1024 + 7)  # more than one copy buffer
    storage.save("originals/t1/abc.jpg", io.BytesIO(payload), "image/jpeg")
    assert storage.exists("originals/t1/abc.jpg")
    assert _read(storage, "originals/t1/abc.jpg") == payload


def test_storage_save_replaces(storage):
    storage.save("k", io.BytesIO(b"first, longer content"), "text/plain")
    storage.save("k", io.BytesIO(b"second"), "text/plain")
    assert _read(storage, "k") == b"second"


class Broken(io.RawIOBase):
    """An upload stream that fails part-way through."""

    def __init__(self):
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.calls += 1
        if self.calls > 2:
            raise OSError("client went away")
        buffer[:4] = b"part"
        return 4


def test_storage_failed_save_keeps_old_object(storage):
    storage.save("a/k", io.BytesIO(b"old"), "text/plain")
    with pytest.raises(OSError, match="went away"):
        storage.save("a/k", io.BufferedReader(Broken()), "text/plain")
    assert _read(storage, "a/k") == b"old"
    with pytest.raises(OSError, match="went away"):
        storage.save("a/new", io.BufferedReader(Broken()), "text/plain")
    assert not storage.exists("a/new")


def test_storage_open_missing_raises_object_not_found(storage):
    with pytest.raises(ObjectNotFound):
        storage.open("missing/key")
    storage.save("dir/file", io.BytesIO(b"x"), "text/plain")
    with pytest.raises(ObjectNotFound):
        storage.open("dir")  # a key prefix is not an object
    assert isinstance(ObjectNotFound("k"), KeyError)


def test_storage_delete_is_idempotent(storage):
    storage.save("x/y/z", io.BytesIO(b"data"), "text/plain")
    storage.delete("x/y/z")
    assert not storage.exists("x/y/z")
    with pytest.raises(ObjectNotFound):
        storage.open("x/y/z")
    storage.delete("x/y/z")
    storage.delete("never/existed")


def test_storage_exists(storage):
    assert not storage.exists("a/b")
    storage.save("a/b", io.BytesIO(b""), "application/octet-stream")
    assert storage.exists("a/b")
    assert _read(storage, "a/b") == b""
    assert not storage.exists("a")


def test_storage_url_and_check(storage):
    storage.save("k", io.BytesIO(b"data"), "text/plain")
    url = storage.url("k", 60)
    assert url is None or (isinstance(url, str) and url)
    if url:  # a direct URL serves the bytes to a plain HTTP client
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"data"
    storage.check()
    storage.check()  # the probe cleans up after itself


def test_storage_presign_upload(storage):
    upload = storage.presign_upload("uploads/t1/new.png", "image/png", 1000, 300)
    if upload is None:  # the application signs its own upload URL
        return
    assert set(upload) == {"url", "method", "fields"}
    assert upload["method"] == "POST"
    assert isinstance(upload["url"], str) and upload["url"]
    assert isinstance(upload["fields"], dict) and "file" not in upload["fields"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in upload["fields"].items())
    assert not storage.exists("uploads/t1/new.png")  # presigning stores nothing


@pytest.mark.parametrize("key", BAD_KEYS)
def test_storage_rejects_bad_keys(storage, tmp_path, key):
    (tmp_path / "root").mkdir(exist_ok=True)
    with pytest.raises(ValueError):
        storage.save(key, io.BytesIO(b"evil"), "text/plain")
    with pytest.raises(ValueError):
        storage.open(key)
    with pytest.raises(ValueError):
        storage.delete(key)
    with pytest.raises(ValueError):
        storage.exists(key)
    with pytest.raises(ValueError):
        storage.url(key, 60)
    with pytest.raises(ValueError):
        storage.presign_upload(key, "image/png", 1000, 60)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


# --- local storage specifics ---------------------------------------------------------------


def test_local_files_live_under_the_root_only(tmp_path):
    storage = STORAGE["local"](plugin_config(tmp_path))
    storage.save("t/a/b.png", io.BytesIO(b"png"), "image/png")
    with pytest.raises(OSError):
        storage.save("t/a/b.png", io.BufferedReader(Broken()), "image/png")
    storage.check()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["root/t/a/b.png"]  # no temp or probe files left behind
    assert storage.url("t/a/b.png", 60) is None
    assert storage.presign_upload("t/a/c.png", "image/png", 1000, 60) is None


def test_local_delete_prunes_empty_directories(tmp_path):
    storage = STORAGE["local"](plugin_config(tmp_path))
    storage.save("t/a/one", io.BytesIO(b"1"), "text/plain")
    storage.save("t/b/two", io.BytesIO(b"2"), "text/plain")
    storage.delete("t/a/one")
    assert sorted(p.name for p in (tmp_path / "root").rglob("*")) == ["b", "t", "two"]
    assert (tmp_path / "root").is_dir()


def test_local_refuses_a_symlink_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    storage = STORAGE["local"](plugin_config(tmp_path))
    with pytest.raises(ValueError):
        storage.open("link/secret")
    with pytest.raises(ValueError):
        storage.save("link/new", io.BytesIO(b"x"), "text/plain")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_local_check_fails_on_unusable_root(tmp_path):
    (tmp_path / "root").write_bytes(b"a file, not a directory")
    storage = STORAGE["local"](plugin_config(tmp_path))
    with pytest.raises(Exception):  # noqa: B017 - any error will do for /healthz
        storage.check()


# --- embedders ---------------------------------------------------------------------------


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    images = []
    for size, colour in [((96, 64), (200, 40, 40)), ((64, 130), (30, 160, 90)), ((300, 200), None)]:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB")
        if colour:
            ImageDraw.Draw(image).rectangle((5, 5, size[0] // 2, size[1] // 2), fill=colour)
        images.append(image)
    images.append(Image.new("RGB", (64, 64), (128, 128, 128)))  # flat grey
    images.append(Image.new("RGB", (20, 12), (0, 0, 0)))  # smaller than any input_size
    return images


@pytest.fixture(params=sorted(EMBEDDERS))
def embedder(request, tmp_path) -> Embedder:
    return EMBEDDERS[request.param](plugin_config(tmp_path))


def _width(embedder: Embedder) -> int:
    return embedder.dimensions // 8 if embedder.metric == "hamming" else embedder.dimensions


def test_embedder_class_attributes(embedder):
    cls = type(embedder)
    assert cls.name in EMBEDDERS and EMBEDDERS[cls.name] is cls
    assert isinstance(cls.version, str) and cls.version
    assert cls.metric in METRICS
    assert cls.preferred_index in INDEXES
    assert cls.metric in INDEXES[cls.preferred_index].metrics
    assert isinstance(cls.input_size, int) and cls.input_size > 0
    assert isinstance(embedder.dimensions, int) and embedder.dimensions > 0
    if cls.metric == "hamming":
        assert embedder.dimensions % 8 == 0


def test_embedder_shape_and_dtype(embedder):
    images = _images()
    vectors = embedder.embed_batch(images)
    assert isinstance(vectors, np.ndarray)
    assert vectors.shape == (len(images), _width(embedder))
    if embedder.metric == "hamming":
        assert vectors.dtype == np.uint8
    else:
        assert vectors.dtype == np.float32
        assert np.isfinite(vectors).all()
    if embedder.metric == "angular":
        assert (np.linalg.norm(vectors, axis=1) > 0).all()  # a zero vector has no angle
    empty = embedder.embed_batch([])
    assert empty.shape == (0, _width(embedder)) and empty.dtype == vectors.dtype


def test_embedder_is_deterministic_and_keeps_order(embedder, tmp_path):
    images = _images()
    first = embedder.embed_batch(images)
    again = type(embedder)(plugin_config(tmp_path)).embed_batch(images)
    np.testing.assert_array_equal(first, again)
    reversed_rows = embedder.embed_batch(images[::-1])
    np.testing.assert_array_equal(reversed_rows, first[::-1])
    for i, image in enumerate(images):
        np.testing.assert_array_equal(embedder.embed_batch([image])[0], first[i])
    # Different images get different vectors.
    assert len({row.tobytes() for row in first[:3]}) == 3


def test_embedder_labels(embedder):
    images = _images()
    labels = embedder.labels(images)
    if labels is None:
        return
    assert isinstance(labels, list) and len(labels) == len(images)
    for per_image in labels:
        for label, score in per_image:
            assert isinstance(label, str) and label
            assert isinstance(score, float)


# --- indexes -----------------------------------------------------------------------------

INDEX_CASES = [
    (name, metric) for name in sorted(INDEXES) for metric in sorted(INDEXES[name].metrics)
]
INDEX_IDS = [f"{name}-{metric}" for name, metric in INDEX_CASES]


def _dataset(metric: str, n: int, seed: int = 0) -> tuple[int, list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    if metric == "hamming":
        return 64, [f"img-{i}" for i in range(n)], rng.integers(0, 256, (n, 8), dtype=np.uint8)
    vectors = rng.normal(size=(n, 24)).astype(np.float32)
    return 24, [f"img-{i}" for i in range(n)], vectors


@pytest.fixture(params=INDEX_CASES, ids=INDEX_IDS)
def index_case(request, tmp_path):
    name, metric = request.param

    def make(dimensions: int) -> VectorIndex:
        return INDEXES[name](metric, dimensions, plugin_config(tmp_path))

    return metric, make


def test_index_metrics_are_known():
    for cls in INDEXES.values():
        assert cls.metrics and cls.metrics <= METRICS
    with pytest.raises(ValueError):
        INDEXES["annoy"]("hamming", 64, {"ANNOY_N_TREES": 4, "ANNOY_SEARCH_K": 100})


def test_index_query_nearest_first(index_case):
    metric, make = index_case
    dims, ids, vectors = _dataset(metric, 300)
    index = make(dims)
    index.build(ids, vectors)
    assert len(index) == 300
    query = _dataset(metric, 1, seed=99)[2][0]
    results = index.query(query, 20)
    assert len(results) == 20
    found = [d for _, d in results]
    assert found == sorted(found)
    position = {id_: i for i, id_ in enumerate(ids)}
    expected = distances(metric, vectors[[position[id_] for id_, _ in results]], query)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)
    assert all(isinstance(id_, str) and isinstance(d, float) for id_, d in results)


def test_index_self_query_finds_itself(index_case):
    metric, make = index_case
    dims, ids, vectors = _dataset(metric, 300)
    index = make(dims)
    index.build(ids, vectors)
    for i in range(0, 300, 17):
        (found, distance), *_ = index.query(vectors[i], 1)
        assert found == ids[i]
        assert distance == pytest.approx(0.0, abs=1e-3)


def test_index_k_clamps_and_ids_never_repeat(index_case):
    metric, make = index_case
    dims, ids, vectors = _dataset(metric, 50)
    index = make(dims)
    index.build(ids, vectors)
    results = index.query(vectors[0], 500)
    assert len(results) == 50
    assert len({id_ for id_, _ in results}) == 50
    assert index.query(vectors[0], 0) == []


def test_index_ties_do_not_repeat_ids(index_case):
    metric, make = index_case
    dims, ids, vectors = _dataset(metric, 40)
    vectors[10:30] = vectors[0]  # many exact duplicates under distinct ids
    index = make(dims)
    index.build(ids, vectors)
    results = index.query(vectors[0], 25)
    assert len({id_ for id_, _ in results}) == len(results) == 25
    assert {id_ for id_, _ in results[:21]} == {ids[0], *ids[10:30]}


def test_index_save_load_roundtrip(index_case, tmp_path):
    metric, make = index_case
    dims, ids, vectors = _dataset(metric, 200)
    index = make(dims)
    index.build(ids, vectors)
    directory = tmp_path / "saved"
    directory.mkdir()
    names = index.save(str(directory))
    assert names and len(set(names)) == len(names)
    assert sorted(names) == sorted(p.name for p in directory.iterdir())
    loaded = make(dims)
    loaded.load(str(directory))
    assert len(loaded) == 200
    for query in _dataset(metric, 5, seed=3)[2]:
        assert loaded.query(query, 10) == index.query(query, 10)


def test_index_empty(index_case, tmp_path):
    metric, make = index_case
    dims, _, vectors = _dataset(metric, 1)
    index = make(dims)
    assert len(index) == 0
    assert index.query(vectors[0], 5) == []
    index.build([], vectors[:0])
    assert len(index) == 0
    assert index.query(vectors[0], 5) == []
    names = index.save(str(tmp_path))
    loaded = make(dims)
    loaded.load(str(tmp_path))
    assert len(loaded) == 0 and loaded.query(vectors[0], 5) == []
    assert sorted(names) == sorted(p.name for p in tmp_path.iterdir())


def test_index_rejects_mismatched_input(index_case):
    metric, make = index_case
    dims, ids, vectors = _dataset(metric, 10)
    index = make(dims)
    with pytest.raises(ValueError):
        index.build(ids[:5], vectors)
    with pytest.raises(ValueError):
        index.build(ids[:9] + ids[:1], vectors)  # duplicate id
    index.build(ids, vectors)
    with pytest.raises(ValueError):
        index.query(vectors[0][:-1], 3)


def test_exact_breaks_ties_by_position(tmp_path):
    vectors = np.zeros((6, 8), dtype=np.uint8)
    vectors[[1, 3]] = 255
    index = INDEXES["exact"]("hamming", 64, plugin_config(tmp_path))
    index.build(["a", "b", "c", "d", "e", "f"], vectors)
    assert [id_ for id_, _ in index.query(vectors[0], 3)] == ["a", "c", "e"]
    assert index.query(vectors[1], 6) == [
        ("b", 0.0),
        ("d", 0.0),
        ("a", 64.0),
        ("c", 64.0),
        ("e", 64.0),
        ("f", 64.0),
    ]


def test_annoy_agrees_with_exact(tmp_path):
    config = plugin_config(tmp_path)
    rng = np.random.default_rng(42)
    vectors = rng.normal(size=(400, 64)).astype(np.float32)
    ids = [f"img-{i}" for i in range(len(vectors))]
    exact = INDEXES["exact"]("angular", 64, config)
    annoy = INDEXES["annoy"]("angular", 64, config)
    exact.build(ids, vectors)
    annoy.build(ids, vectors)
    recalls = []
    for query in rng.normal(size=(40, 64)).astype(np.float32):
        truth = dict(exact.query(query, 10))
        approx = dict(annoy.query(query, 10))
        recalls.append(len(truth.keys() & approx.keys()) / 10)
        for id_ in truth.keys() & approx.keys():  # same units: sqrt(2 - 2 cos)
            assert approx[id_] == pytest.approx(truth[id_], abs=1e-4)
    assert np.mean(recalls) >= 0.9


def test_annoy_build_is_reproducible(tmp_path):
    dims, ids, vectors = _dataset("angular", 500)
    files = []
    for name in ("a", "b"):
        index = INDEXES["annoy"]("angular", dims, plugin_config(tmp_path))
        index.build(ids, vectors)
        (tmp_path / name).mkdir()
        index.save(str(tmp_path / name))
        files.append((tmp_path / name / "index.ann").read_bytes())
    assert files[0] == files[1]
