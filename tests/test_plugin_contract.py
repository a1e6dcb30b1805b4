"""Every built-in plugin honours the contract: the suites of app.plugin_testing, subclassed.

Plugins come from the entry points of the "likeness" distribution only, so a plugin that is
merely installed in the environment never runs here. Below the suites, what only one built-in
does (local paths, exact ties, Annoy against exact).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from app.plugin_testing import (
    BrokenStream,
    EmbedderContract,
    StorageContract,
    VectorIndexContract,
    sample_vectors,
)
from app.plugins import builtin_classes
from tests.cnn import requires_cnn
from tests.s3server import admin_client, s3_config

pytest_plugins = ["tests.s3server"]  # the moto_endpoint and s3_bucket fixtures

STORAGE = builtin_classes("storage")
EMBEDDERS = builtin_classes("embedders")
INDEXES = builtin_classes("indexes")


def plugin_config(tmp_path: Path) -> dict:
    return {"STORAGE_ROOT": str(tmp_path / "root"), "ANNOY_N_TREES": 16, "ANNOY_SEARCH_K": 5000}


# --- the contract suites, once per built-in --------------------------------------------------


class TestLocalStorage(StorageContract):
    plugin_class = STORAGE["local"]

    @pytest.fixture
    def plugin_config(self, tmp_path):
        return plugin_config(tmp_path)

    def stored_names(self, storage):
        # Everything beside the root too: a key that escaped it would land there.
        parent = Path(storage.root).parent
        return sorted(p.relative_to(parent).as_posix() for p in parent.rglob("*") if p.is_file())


class TestS3Storage(StorageContract):
    plugin_class = STORAGE["s3"]

    @pytest.fixture
    def plugin_config(self, moto_endpoint, s3_bucket):  # a fresh bucket on a real (moto) server
        return s3_config(moto_endpoint, s3_bucket)

    def stored_names(self, storage):
        listing = admin_client(storage.endpoint_url).list_objects_v2(Bucket=storage.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))


class TestPHashEmbedder(EmbedderContract):
    plugin_class = EMBEDDERS["phash"]


class TestColorEmbedder(EmbedderContract):
    plugin_class = EMBEDDERS["color"]


@requires_cnn
class TestCNNEmbedder(EmbedderContract):
    plugin_class = EMBEDDERS["cnn"]


class TestExactIndex(VectorIndexContract):
    plugin_class = INDEXES["exact"]


class TestAnnoyIndex(VectorIndexContract):
    plugin_class = INDEXES["annoy"]

    @pytest.fixture
    def plugin_config(self, tmp_path):
        return plugin_config(tmp_path)


SUITES = {
    "storage": (StorageContract, STORAGE),
    "embedders": (EmbedderContract, EMBEDDERS),
    "indexes": (VectorIndexContract, INDEXES),
}


@pytest.mark.parametrize("kind", sorted(SUITES))
def test_every_builtin_runs_its_contract_suite(kind):
    contract, builtins = SUITES[kind]
    tested = [
        suite.plugin_class
        for suite in globals().values()
        if isinstance(suite, type) and issubclass(suite, contract) and suite is not contract
    ]
    assert sorted(cls.name for cls in tested) == sorted(builtins)


def test_builtins_are_registered():
    assert {"local", "s3"} <= set(STORAGE)
    assert {"phash", "color", "cnn"} <= set(EMBEDDERS)
    assert {"exact", "annoy"} <= set(INDEXES)


# --- local storage specifics ---------------------------------------------------------------


def test_local_files_live_under_the_root_only(tmp_path):
    storage = STORAGE["local"](plugin_config(tmp_path))
    storage.save("t/a/b.png", io.BytesIO(b"png"), "image/png")
    with pytest.raises(OSError):
        storage.save("t/a/b.png", io.BufferedReader(BrokenStream()), "image/png")
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


# --- index specifics -------------------------------------------------------------------


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
    dims, ids, vectors = sample_vectors("angular", 500)
    files = []
    for name in ("a", "b"):
        index = INDEXES["annoy"]("angular", dims, plugin_config(tmp_path))
        index.build(ids, vectors)
        (tmp_path / name).mkdir()
        index.save(str(tmp_path / name))
        files.append((tmp_path / name / "index.ann").read_bytes())
    assert files[0] == files[1]
