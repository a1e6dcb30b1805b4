"""Every built-in plugin honours the contract: the suites of app.plugin_testing, subclassed.

Plugins come from the entry points of the "likeness" distribution only, so a plugin that is
merely installed in the environment never runs here. Below the suites, what only one built-in
does (local paths, exact ties, Annoy against exact).
"""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime
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
from tests.conftest import wait_until
from tests.killed_writers import killed, temporaries, writers_mid_save
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


def test_local_the_next_save_removes_the_temporary_file_a_killed_writer_left(tmp_path):
    config = plugin_config(tmp_path)
    directory = tmp_path / "root" / "t" / "index"
    with writers_mid_save("local", config, ["t/index/a", "t/index/a"]) as (dying, writing):
        wait_until(lambda: len(temporaries(directory)) == 2, 30, "the writers never started")
        pid = killed(dying)
        (left,) = {name for name in temporaries(directory) if name.startswith(f".tmp-{pid}@")}
        (in_progress,) = temporaries(directory) - {left}

        storage = STORAGE["local"](config)
        storage.save("t/index/b", io.BytesIO(b"the next build"), "text/plain")

        assert temporaries(directory) == {in_progress}  # a live writer's file is not touched
        assert storage.open("t/index/b").read() == b"the next build"


def test_local_remove_abandoned_finds_a_killed_writers_file_anywhere(tmp_path):
    config = plugin_config(tmp_path)
    storage = STORAGE["local"](config)
    storage.save("t/images/kept/original", io.BytesIO(b"kept"), "image/jpeg")
    root = tmp_path / "root"
    keys = ["t/images/new/original", "t/images/other/original"]
    with writers_mid_save("local", config, keys) as (dying, writing):
        wait_until(
            lambda: all(temporaries(root / "t" / "images" / name) for name in ("new", "other")),
            30,
            "the writers never started",
        )
        killed(dying)

        # Nothing else is ever saved into the killed upload's folder: only the sweep finds it.
        assert storage.remove_abandoned(24 * 3600) == 1

        assert sorted(p.name for p in (root / "t" / "images").iterdir()) == ["kept", "other"]
        assert len(temporaries(root / "t" / "images" / "other")) == 1  # still being written
        assert storage.open("t/images/kept/original").read() == b"kept"
        assert storage.remove_abandoned(24 * 3600) == 0


def test_local_removes_a_day_old_temporary_file_from_any_host(tmp_path):
    storage = STORAGE["local"](plugin_config(tmp_path))
    storage.save("t/x/kept", io.BytesIO(b"1"), "text/plain")
    directory = tmp_path / "root" / "t" / "x"
    (directory / ".tmp-1234@elsewhere.abcd1234").write_bytes(b"half")
    (directory / ".tmp-5678@elsewhere.efgh5678").write_bytes(b"half")
    a_day_ago = time.time() - 24 * 3600 - 60
    os.utime(directory / ".tmp-1234@elsewhere.abcd1234", (a_day_ago, a_day_ago))

    storage.save("t/x/next", io.BytesIO(b"2"), "text/plain")

    # Another host's recent file may still be written to; a day-old one is abandoned.
    assert sorted(p.name for p in directory.iterdir()) == [
        ".tmp-5678@elsewhere.efgh5678",
        "kept",
        "next",
    ]
    assert storage.remove_abandoned(24 * 3600) == 0
    assert storage.remove_abandoned(0) == 1  # the sweep's age is what it is told
    assert sorted(p.name for p in directory.iterdir()) == ["kept", "next"]


def test_s3_remove_abandoned_aborts_a_killed_writers_multipart_upload(moto_endpoint, s3_bucket):
    config = s3_config(moto_endpoint, s3_bucket)
    storage = STORAGE["s3"](config)
    storage.save("t/images/kept/original", io.BytesIO(b"kept"), "image/jpeg")
    client = admin_client(moto_endpoint)

    def unfinished():
        return client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])

    # More than boto3's multipart threshold (8 MB), so its first part goes up before it waits.
    with writers_mid_save("s3", config, ["t/images/new/original"], 9 * 1024 * 1024) as (dying,):
        wait_until(unfinished, 60, "the writer never began its multipart upload")
        killed(dying)
        (upload,) = unfinished()
        assert upload["Key"] == "t/images/new/original"
        # S3 cannot tell a dead writer from a slow one: only the upload's age can. (moto reports
        # a fixed begin time, in 2010, so the ages are taken from what it reports.)
        age = (datetime.now(UTC) - upload["Initiated"]).total_seconds()
        assert storage.remove_abandoned(age + 3600) == 0
        assert len(unfinished()) == 1

        assert storage.remove_abandoned(age - 3600) == 1

        assert unfinished() == []
        assert not storage.exists("t/images/new/original")
        assert storage.open("t/images/kept/original").read() == b"kept"


def test_local_list_objects_leaves_out_half_written_files_and_links_out(tmp_path):
    storage = STORAGE["local"](plugin_config(tmp_path))
    storage.save("t/images/a/original", io.BytesIO(b"a"), "image/jpeg")
    folder = tmp_path / "root" / "t" / "images" / "a"
    (folder / ".tmp-1234@host.abcd").write_bytes(b"half")  # a writer still at work
    (tmp_path / "secret").write_bytes(b"outside")
    (folder / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "root" / "t" / "Not a key!").write_bytes(b"put there by hand")

    assert [found.key for found in storage.list_objects("")] == ["t/images/a/original"]
    (tmp_path / "elsewhere" / "x").mkdir(parents=True)
    (tmp_path / "elsewhere" / "x" / "file").write_bytes(b"outside")
    (tmp_path / "root" / "u").symlink_to(tmp_path / "elsewhere")
    assert list(storage.list_objects("u/")) == []


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
