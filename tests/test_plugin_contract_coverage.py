"""The contract suites use every abstract method and property of every contract.

The suites of app.plugin_testing run, in a separate pytest process, against spied built-ins
(tests/contract_spy.py) that note each abstract member the suite code itself uses. A member
no suite uses — say, a new abstract method added to a contract without a test — fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.plugins import builtin_classes
from tests import contract_spy

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

# The nested session writes what the spies saw when it ends.
CONFTEST = """
import json

from tests import contract_spy


def pytest_sessionfinish(session):
    with open({report!r}, "w") as out:
        json.dump(contract_spy.report(), out)
"""

# What adding `@abstractmethod def copy(...)` to StorageBackend (and to the plugin) amounts to.
ADD_AN_ABSTRACT_METHOD = """
from app.plugin_api import StorageBackend
from plugins.storage_local import LocalStorage

StorageBackend.__abstractmethods__ |= {"copy"}
LocalStorage.copy = lambda self, source, target: None
"""

# The built-ins that need no server, each wrapped in a spy, under every suite.
SPIED_SUITES = """
import pytest

from app.plugin_testing import EmbedderContract, StorageContract, VectorIndexContract
from app.plugins import builtin_classes
from tests.contract_spy import spy


class TestSpiedLocalStorage(StorageContract):
    plugin_class = spy(builtin_classes("storage")["local"])

    @pytest.fixture
    def plugin_config(self, tmp_path):
        return {"STORAGE_ROOT": str(tmp_path / "root")}


class TestSpiedPHash(EmbedderContract):
    plugin_class = spy(builtin_classes("embedders")["phash"])


class TestSpiedColor(EmbedderContract):
    plugin_class = spy(builtin_classes("embedders")["color"])


class TestSpiedExactIndex(VectorIndexContract):
    plugin_class = spy(builtin_classes("indexes")["exact"])
"""


@pytest.fixture
def run_suites(pytester, monkeypatch):
    """Run the spied suites in a pytest process; every test must pass. Returns the report."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # for `tests.contract_spy`

    def run(*args: str, before: str = "") -> dict:
        report = pytester.path / "report.json"
        pytester.makeconftest(before + CONFTEST.format(report=str(report)))
        pytester.makepyfile(test_spied_suites=SPIED_SUITES)
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *args)
        assert result.ret == 0, result.stdout.str()[-3000:]
        return json.loads(report.read_text())

    return run


def test_the_suites_use_every_abstract_member_of_every_contract(run_suites):
    report = run_suites()
    assert contract_spy.uncalled(report) == {}
    # Not vacuous: the three contracts, their properties and dunders are all there.
    assert set(report["abstract"]) == {"StorageBackend", "Embedder", "VectorIndex"}
    used = {tuple(call) for call in report["used"]}
    assert {("Embedder", "dimensions"), ("VectorIndex", "__len__")} <= used
    assert ("StorageBackend", "presign_upload") in used


def test_a_member_no_suite_uses_is_reported(run_suites):
    # Without the tests that presign uploads, nothing else in the suite does it.
    report = run_suites("-k", "LocalStorage and not presign and not bad_keys")
    assert contract_spy.uncalled(report, ["StorageBackend"]) == {
        "StorageBackend": ["presign_upload"]
    }


def test_an_abstract_method_added_without_a_test_is_reported(run_suites):
    report = run_suites("-k", "LocalStorage", before=ADD_AN_ABSTRACT_METHOD)
    assert "copy" in report["abstract"]["StorageBackend"]
    assert contract_spy.uncalled(report, ["StorageBackend"]) == {"StorageBackend": ["copy"]}


def test_spies_count_only_what_the_suite_code_uses():
    # A use from anywhere but app.plugin_testing (here: this test) is not a suite's use.
    contract_spy.CALLS.clear()
    embedder = contract_spy.spy(builtin_classes("embedders")["phash"])({})
    index = contract_spy.spy(builtin_classes("indexes")["exact"])("hamming", 64, {})
    assert embedder.dimensions == 64 and len(index) == 0
    assert not contract_spy.CALLS
    assert contract_spy.uncalled(contract_spy.report(), ["Embedder", "VectorIndex"]) == {
        "Embedder": ["dimensions", "embed_batch"],
        "VectorIndex": ["__len__", "build", "load", "query", "save"],
    }
