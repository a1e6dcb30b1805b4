"""The plugin contract as reusable tests: subclass one class per plugin in your own test suite.

    import pytest
    from app.plugin_testing import EmbedderContract
    from mypkg.embedders import TinyEmbedder

    class TestTinyEmbedder(EmbedderContract):
        plugin_class = TinyEmbedder

        @pytest.fixture
        def plugin_config(self, tmp_path):  # optional: the settings the plugin reads
            return {"TINY_SIZE": 8}

Every `test_*` method then runs against the plugin. The classes here do not start with "Test",
so importing them collects nothing by itself. A subclass may instead override the fixture that
builds the plugin (`storage`, `embedder`, or `make_index(dimensions)`, built once per supported
metric). Storage subclasses may also override `stored_names` so the suite can check that
refused and failed writes leave nothing behind.

Likeness runs these classes over every built-in (tests/test_plugin_contract.py), and a
meta-test checks that they call every abstract method of every contract. This module needs
only pytest, numpy and Pillow. For detailed assertion messages, call
`pytest.register_assert_rewrite("app.plugin_testing")` in your conftest.py before importing it.
"""

from __future__ import annotations

import io
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.plugin_api import (
    ENTRY_POINT_GROUPS,
    METRICS,
    Embedder,
    ObjectNotFound,
    StorageBackend,
    VectorCodec,
    VectorIndex,
    distances,
)

# Keys every backend must refuse with ValueError, before touching the store.
BAD_KEYS = ["../x", "/abs", "a/../b", "", "a//b", ".hidden", "a/.hidden", "a/", "a\n", "a b"]


def _registered(kind: str, name: str) -> list[type]:
    """The classes installed under `name` in one entry-point group."""
    group = ENTRY_POINT_GROUPS[kind]
    return [ep.load() for ep in metadata.entry_points(group=group) if ep.name == name]


# --- storage ----------------------------------------------------------------------------------


class BrokenStream(io.RawIOBase):
    """An upload stream that fails part-way through, like a client that goes away."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.calls += 1
        if self.calls > 2:
            raise OSError("client went away")
        buffer[:4] = b"part"
        return 4


def _read(storage: StorageBackend, key: str) -> bytes:
    with storage.open(key) as f:
        return f.read()


def _post_form(upload: Mapping[str, Any], content: bytes, content_type: str) -> int:
    """Perform a `presign_upload` answer as a browser would: every field, then `file`."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in upload["fields"].items():
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        body.write(f"{value}\r\n".encode())
    body.write(
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="upload"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
    )
    body.write(content + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        upload["url"],
        data=body.getvalue(),
        method=upload["method"],
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


class StorageContract:
    """Behaviour every `StorageBackend` keeps. Set `plugin_class`; override `plugin_config`."""

    plugin_class: ClassVar[type[StorageBackend]]

    @pytest.fixture
    def plugin_config(self) -> Mapping[str, Any]:
        """The configuration the backend is built with."""
        return {}

    @pytest.fixture
    def storage(self, plugin_config) -> StorageBackend:
        """The backend under test, empty."""
        return self.plugin_class(plugin_config)

    def stored_names(self, storage: StorageBackend) -> list[str] | None:
        """Everything the store holds (temporary files included), or None if unknown.

        Override it to let the suite check that failed, refused and probing writes leave
        nothing behind.
        """
        return None

    def test_save_open_roundtrip(self, storage):
        payload = os.urandom(3 * 1024 * 1024 + 7)  # more than one copy buffer
        storage.save("originals/t1/abc.jpg", io.BytesIO(payload), "image/jpeg")
        assert storage.exists("originals/t1/abc.jpg")
        assert _read(storage, "originals/t1/abc.jpg") == payload

    def test_save_replaces(self, storage):
        storage.save("k", io.BytesIO(b"first, longer content"), "text/plain")
        storage.save("k", io.BytesIO(b"second"), "text/plain")
        assert _read(storage, "k") == b"second"

    def test_failed_save_keeps_old_object(self, storage):
        storage.save("a/k", io.BytesIO(b"old"), "text/plain")
        before = self.stored_names(storage)
        with pytest.raises(OSError, match="went away"):
            storage.save("a/k", io.BufferedReader(BrokenStream()), "text/plain")
        assert _read(storage, "a/k") == b"old"
        with pytest.raises(OSError, match="went away"):
            storage.save("a/new", io.BufferedReader(BrokenStream()), "text/plain")
        assert not storage.exists("a/new")
        assert self.stored_names(storage) == before  # no partial or temporary object

    def test_open_missing_raises_object_not_found(self, storage):
        with pytest.raises(ObjectNotFound):
            storage.open("missing/key")
        storage.save("dir/file", io.BytesIO(b"x"), "text/plain")
        with pytest.raises(ObjectNotFound):
            storage.open("dir")  # a key prefix is not an object
        assert isinstance(ObjectNotFound("k"), KeyError)

    def test_delete_is_idempotent(self, storage):
        storage.save("x/y/z", io.BytesIO(b"data"), "text/plain")
        storage.delete("x/y/z")
        assert not storage.exists("x/y/z")
        with pytest.raises(ObjectNotFound):
            storage.open("x/y/z")
        storage.delete("x/y/z")
        storage.delete("never/existed")

    def test_exists(self, storage):
        assert not storage.exists("a/b")
        storage.save("a/b", io.BytesIO(b""), "application/octet-stream")
        assert storage.exists("a/b")
        assert _read(storage, "a/b") == b""
        assert not storage.exists("a")

    def test_url_serves_the_bytes_or_is_none(self, storage):
        storage.save("k", io.BytesIO(b"data"), "text/plain")
        url = storage.url("k", 60)
        assert url is None or (isinstance(url, str) and url)
        if url:  # a direct URL serves the bytes to a plain HTTP client
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.read() == b"data"

    def test_url_answers_with_the_content_disposition_asked(self, storage):
        storage.save("k", io.BytesIO(b"data"), "text/plain")
        disposition = "attachment; filename=Eclair.jpg; filename*=UTF-8''%C3%89clair.jpg"
        url = storage.url("k", 60, disposition)
        assert url is None or (isinstance(url, str) and url)
        if url:  # the name and disposition of the download, as the application would send
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.headers["Content-Disposition"] == disposition
                assert response.read() == b"data"

    def test_check_passes_and_leaves_nothing(self, storage):
        storage.save("k", io.BytesIO(b"data"), "text/plain")
        before = self.stored_names(storage)
        storage.check()
        storage.check()  # a probe cleans up after itself
        assert self.stored_names(storage) == before
        assert _read(storage, "k") == b"data"

    def test_remove_abandoned_never_touches_a_stored_object(self, storage):
        storage.save("a/one", io.BytesIO(b"one"), "text/plain")
        storage.save("a/b/two", io.BytesIO(b"two"), "text/plain")
        before = self.stored_names(storage)
        assert storage.remove_abandoned(0) == 0  # however old, a stored object is no leftover
        assert _read(storage, "a/one") == b"one"
        assert _read(storage, "a/b/two") == b"two"
        assert self.stored_names(storage) == before

    def _listed(self, storage, prefix: str) -> dict[str, float] | None:
        try:
            return {found.key: found.modified for found in storage.list_objects(prefix)}
        except NotImplementedError:
            return None  # optional: the store is left out of the daily orphan sweep

    def test_list_objects_names_every_stored_object_under_a_prefix(self, storage):
        began = time.time()
        for key in ("a/one", "a/b/two", "ab/three", "c"):
            storage.save(key, io.BytesIO(key.encode()), "text/plain")
        storage.check()  # a probe is no object
        listed = self._listed(storage, "")
        if listed is None:
            pytest.skip("this store does not list its objects (optional)")
        assert sorted(listed) == ["a/b/two", "a/one", "ab/three", "c"]
        # The store's clock is another machine's: a minute either way.
        assert all(began - 60 <= modified <= time.time() + 60 for modified in listed.values())
        assert sorted(self._listed(storage, "a/")) == ["a/b/two", "a/one"]
        assert sorted(self._listed(storage, "a/b/")) == ["a/b/two"]
        assert self._listed(storage, "nothing/") == {}
        storage.delete("a/one")
        assert sorted(self._listed(storage, "a/")) == ["a/b/two"]

    @pytest.mark.parametrize("prefix", ["a", "/a/", "../", "a//", "a/../b/"])
    def test_list_objects_refuses_a_malformed_prefix(self, storage, prefix):
        with pytest.raises((ValueError, NotImplementedError)):
            list(storage.list_objects(prefix))

    def test_presign_upload_is_a_form_post_that_stores_the_bytes(self, storage):
        upload = storage.presign_upload("uploads/t1/new.png", "image/png", 1000, 300)
        if upload is None:  # the application signs its own upload URL and calls `save`
            return
        assert set(upload) == {"url", "method", "fields"}
        assert upload["method"] == "POST"
        assert isinstance(upload["url"], str) and upload["url"]
        assert isinstance(upload["fields"], dict) and "file" not in upload["fields"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in upload["fields"].items())
        assert not storage.exists("uploads/t1/new.png")  # presigning stores nothing
        payload = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
        assert 200 <= _post_form(upload, payload, "image/png") < 300
        assert _read(storage, "uploads/t1/new.png") == payload

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_rejects_bad_keys(self, storage, key):
        before = self.stored_names(storage)
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
        assert self.stored_names(storage) == before


# --- embedders --------------------------------------------------------------------------------


def sample_images() -> list[Image.Image]:
    """Noise with coloured patches at several sizes, a flat grey and a tiny black image."""
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


class EmbedderContract:
    """Behaviour every `Embedder` keeps. Set `plugin_class`; override `plugin_config`.

    The plugin must be installed: the suite checks that its entry point finds it. The first
    three of `images()` must be told apart; override it to test on images of your own.
    """

    plugin_class: ClassVar[type[Embedder]]

    @pytest.fixture
    def plugin_config(self) -> Mapping[str, Any]:
        """The configuration the embedder is built with."""
        return {}

    @pytest.fixture
    def embedder(self, plugin_config) -> Embedder:
        """The embedder under test."""
        return self.plugin_class(plugin_config)

    def images(self) -> list[Image.Image]:
        """RGB images, as the pipeline hands them over (EXIF orientation applied)."""
        return sample_images()

    def test_class_attributes(self, embedder):
        cls = type(embedder)
        assert isinstance(cls.name, str) and cls.name
        assert isinstance(cls.version, str) and cls.version
        assert cls.metric in METRICS
        assert isinstance(cls.preferred_index, str) and cls.preferred_index
        assert isinstance(cls.input_size, int) and cls.input_size > 0
        assert isinstance(cls.requires, tuple) and all(isinstance(m, str) for m in cls.requires)
        # The suite runs where the embedder can: every module it requires is installed.
        assert cls.unavailable() is None
        dimensions = embedder.dimensions
        assert isinstance(dimensions, int) and dimensions > 0
        # The codec refuses a layout the metric cannot have (hamming: whole bytes).
        assert embedder.codec == VectorCodec(cls.metric, dimensions)

    def test_registered_under_its_name(self, embedder):
        registered = _registered("embedders", type(embedder).name)
        assert registered, f"no likeness.embedders entry point is named {type(embedder).name!r}"
        assert any(isinstance(embedder, cls) for cls in registered)

    def test_preferred_index_is_installed_and_supports_the_metric(self, embedder):
        indexes = _registered("indexes", embedder.preferred_index)
        assert indexes, f"no likeness.indexes entry point is named {embedder.preferred_index!r}"
        assert all(embedder.metric in index.metrics for index in indexes)

    def test_shape_and_dtype(self, embedder):
        images = self.images()
        vectors = embedder.embed_batch(images)
        codec = embedder.codec
        assert isinstance(vectors, np.ndarray)
        assert vectors.shape == (len(images), codec.width)
        assert vectors.dtype == codec.dtype
        codec.check_vectors(vectors, len(images))  # finite floats, whole bytes
        if embedder.metric == "angular":
            assert (np.linalg.norm(vectors, axis=1) > 0).all()  # a zero vector has no angle
        empty = embedder.embed_batch([])
        assert empty.shape == (0, codec.width) and empty.dtype == codec.dtype

    def test_deterministic_and_keeps_order(self, embedder):
        images = self.images()
        first = embedder.embed_batch(images)
        again = type(embedder)(embedder.config).embed_batch(images)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(embedder.embed_batch(images[::-1]), first[::-1])
        for i, image in enumerate(images):
            np.testing.assert_array_equal(embedder.embed_batch([image])[0], first[i])
        assert len({row.tobytes() for row in first[:3]}) == 3  # different images, vectors

    def test_vectors_survive_storage_and_are_nearest_to_themselves(self, embedder):
        vectors = embedder.embed_batch(self.images())
        codec = embedder.codec
        for i, row in enumerate(vectors):
            np.testing.assert_array_equal(codec.from_bytes(codec.to_bytes(row)), row)
            assert distances(embedder.metric, vectors, row)[i] == pytest.approx(0.0, abs=1e-3)

    def test_labels_name_what_each_image_shows_or_are_none(self, embedder):
        images = self.images()
        labels = embedder.labels(images)
        if labels is None:
            return
        assert isinstance(labels, list) and len(labels) == len(images)
        for per_image in labels:
            for label, score in per_image:
                assert isinstance(label, str) and label
                assert isinstance(score, float) and 0.0 <= score <= 1.0
            scores = [score for _, score in per_image]
            assert scores == sorted(scores, reverse=True)  # the likeliest first
            assert len({label for label, _ in per_image}) == len(per_image)  # each name once
        assert embedder.labels([]) == []

    def test_embed_and_label_agrees_with_embed_batch_and_labels(self, embedder):
        images = self.images()
        vectors, labels = embedder.embed_and_label(images)
        np.testing.assert_array_equal(vectors, embedder.embed_batch(images))
        assert vectors.dtype == embedder.codec.dtype
        assert labels == embedder.labels(images)
        vectors, labels = embedder.embed_and_label([])
        assert vectors.shape == (0, embedder.codec.width)
        assert labels in (None, [])


# --- indexes ----------------------------------------------------------------------------------


def sample_vectors(metric: str, n: int, seed: int = 0) -> tuple[int, list[str], np.ndarray]:
    """(dimensions, ids, vectors) of `n` random vectors laid out for `metric`."""
    rng = np.random.default_rng(seed)
    ids = [f"img-{i}" for i in range(n)]
    if metric == "hamming":
        codec = VectorCodec(metric, 64)
        return 64, ids, rng.integers(0, 256, (n, codec.width), dtype=codec.dtype)
    return 24, ids, rng.normal(size=(n, 24)).astype(VectorCodec(metric, 24).dtype)


class VectorIndexContract:
    """Behaviour every `VectorIndex` keeps, once per metric in `plugin_class.metrics`.

    Set `plugin_class`; override `plugin_config` (e.g. so an approximate index searches widely
    enough to find a vector's own nearest neighbours).
    """

    plugin_class: ClassVar[type[VectorIndex]]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run every test that builds an index once per supported metric."""
        if "metric" in metafunc.fixturenames:
            metafunc.parametrize("metric", sorted(self.plugin_class.metrics))

    @pytest.fixture
    def plugin_config(self) -> Mapping[str, Any]:
        """The configuration the index is built with."""
        return {}

    @pytest.fixture
    def make_index(self, metric, plugin_config) -> Callable[[int], VectorIndex]:
        """Builds an empty index of `metric` with the given dimensions."""
        return lambda dimensions: self.plugin_class(metric, dimensions, plugin_config)

    def test_metrics_are_known_and_others_refused(self, plugin_config):
        metrics = self.plugin_class.metrics
        assert metrics and metrics <= METRICS
        for metric in METRICS - metrics:
            with pytest.raises(ValueError):
                self.plugin_class(metric, 64, plugin_config)

    def test_query_nearest_first(self, metric, make_index):
        dims, ids, vectors = sample_vectors(metric, 300)
        index = make_index(dims)
        index.build(ids, vectors)
        assert len(index) == 300
        query = sample_vectors(metric, 1, seed=99)[2][0]
        results = index.query(query, 20)
        assert len(results) == 20
        found = [d for _, d in results]
        assert found == sorted(found)
        position = {id_: i for i, id_ in enumerate(ids)}
        expected = distances(metric, vectors[[position[id_] for id_, _ in results]], query)
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)
        assert all(isinstance(id_, str) and isinstance(d, float) for id_, d in results)

    def test_self_query_finds_itself(self, metric, make_index):
        dims, ids, vectors = sample_vectors(metric, 300)
        index = make_index(dims)
        index.build(ids, vectors)
        for i in range(0, 300, 17):
            (found, distance), *_ = index.query(vectors[i], 1)
            assert found == ids[i]
            assert distance == pytest.approx(0.0, abs=1e-3)

    def test_k_clamps_and_ids_never_repeat(self, metric, make_index):
        dims, ids, vectors = sample_vectors(metric, 50)
        index = make_index(dims)
        index.build(ids, vectors)
        results = index.query(vectors[0], 500)
        assert len(results) == 50
        assert len({id_ for id_, _ in results}) == 50
        assert index.query(vectors[0], 0) == []

    def test_ties_do_not_repeat_ids(self, metric, make_index):
        dims, ids, vectors = sample_vectors(metric, 40)
        vectors[10:30] = vectors[0]  # many exact duplicates under distinct ids
        index = make_index(dims)
        index.build(ids, vectors)
        results = index.query(vectors[0], 25)
        assert len({id_ for id_, _ in results}) == len(results) == 25
        assert {id_ for id_, _ in results[:21]} == {ids[0], *ids[10:30]}

    def test_save_load_roundtrip(self, metric, make_index, tmp_path):
        dims, ids, vectors = sample_vectors(metric, 200)
        index = make_index(dims)
        index.build(ids, vectors)
        directory = tmp_path / "saved"
        directory.mkdir()
        names = index.save(str(directory))
        assert names and len(set(names)) == len(names)
        assert sorted(names) == sorted(p.name for p in directory.iterdir())
        loaded = make_index(dims)
        loaded.load(str(directory))
        assert len(loaded) == 200
        for query in sample_vectors(metric, 5, seed=3)[2]:
            assert loaded.query(query, 10) == index.query(query, 10)

    def test_empty(self, metric, make_index, tmp_path):
        dims, _, vectors = sample_vectors(metric, 1)
        index = make_index(dims)
        assert len(index) == 0
        assert index.query(vectors[0], 5) == []
        index.build([], vectors[:0])
        assert len(index) == 0
        assert index.query(vectors[0], 5) == []
        directory = tmp_path / "saved"
        directory.mkdir()
        names = index.save(str(directory))
        loaded = make_index(dims)
        loaded.load(str(directory))
        assert len(loaded) == 0 and loaded.query(vectors[0], 5) == []
        assert sorted(names) == sorted(p.name for p in directory.iterdir())

    def test_rejects_mismatched_input(self, metric, make_index):
        dims, ids, vectors = sample_vectors(metric, 10)
        index = make_index(dims)
        with pytest.raises(ValueError):
            index.build(ids[:5], vectors)
        with pytest.raises(ValueError):
            index.build(ids[:9] + ids[:1], vectors)  # duplicate id
        with pytest.raises(ValueError):
            index.build(ids, vectors[:, :-1])  # too narrow
        index.build(ids, vectors)
        with pytest.raises(ValueError):
            index.query(vectors[0][:-1], 3)
        assert len(index) == 10  # a refused query changes nothing
