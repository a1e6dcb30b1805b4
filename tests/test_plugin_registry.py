"""Plugin discovery and selection fail fast, naming what is installed."""

from __future__ import annotations

import sys

import pytest

from app.plugins import PluginError, builtin_classes, default_embedders, discover, load_plugins
from tests.cnn import requires_cnn
from tests.fakes import entry_point

STORAGE = entry_point("likeness.storage", "local", "plugins.storage_local:LocalStorage")
PHASH = entry_point("likeness.embedders", "phash", "plugins.embed_phash:PHashEmbedder")
COLOR = entry_point("likeness.embedders", "color", "plugins.embed_color:ColorEmbedder")
EXACT = entry_point("likeness.indexes", "exact", "plugins.index_exact:ExactIndex")
ANNOY = entry_point("likeness.indexes", "annoy", "plugins.index_annoy:AnnoyIndex")


def installed(**extra):
    points = {"storage": [STORAGE], "embedders": [PHASH, COLOR], "indexes": [EXACT, ANNOY]}
    for kind, eps in extra.items():
        points[kind] = points[kind] + eps
    return points


def config(tmp_path, **overrides):
    return {
        "STORAGE_BACKEND": "local",
        "STORAGE_ROOT": str(tmp_path),
        "EMBEDDERS": ["phash", "color"],
        "EMBEDDER_INDEXES": {},
        "VECTOR_INDEX": None,
        "ANNOY_N_TREES": 8,
        "ANNOY_SEARCH_K": 1000,
        **overrides,
    }


def test_builtins_are_what_pyproject_declares():
    assert set(builtin_classes("storage")) == {"local", "s3"}
    assert set(builtin_classes("embedders")) == {"phash", "color", "cnn"}
    assert set(builtin_classes("indexes")) == {"exact", "annoy"}


def test_default_selection_uses_each_embedders_preferred_index(tmp_path):
    plugins = load_plugins(config(tmp_path), installed())
    assert plugins.storage.name == "local"
    assert list(plugins.embedders) == ["phash", "color"]
    assert plugins.index_name("phash") == "exact"
    assert plugins.index_name("color") == "annoy"


def test_overrides_per_embedder_and_for_all(tmp_path):
    plugins = load_plugins(config(tmp_path, EMBEDDER_INDEXES={"color": "exact"}), installed())
    assert plugins.index_name("color") == "exact"
    # VECTOR_INDEX applies where the index supports the metric: annoy cannot do hamming.
    plugins = load_plugins(config(tmp_path, VECTOR_INDEX="exact"), installed())
    assert plugins.index_name("color") == "exact" and plugins.index_name("phash") == "exact"
    plugins = load_plugins(config(tmp_path, VECTOR_INDEX="annoy"), installed())
    assert plugins.index_name("color") == "annoy" and plugins.index_name("phash") == "exact"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"STORAGE_BACKEND": "ftp"},
            "STORAGE_BACKEND: unknown storage plugin 'ftp'; installed: local",
        ),
        (
            {"EMBEDDERS": ["phash", "clip"]},
            "unknown embedder plugin 'clip'; installed: color, phash",
        ),
        ({"EMBEDDERS": []}, "at least one embedder"),
        ({"EMBEDDERS": ["phash", "phash"]}, "listed twice"),
        ({"VECTOR_INDEX": "faiss"}, "unknown index plugin 'faiss'; installed: annoy, exact"),
        ({"EMBEDDER_INDEXES": {"phash": "annoy"}}, "does not support phash's metric 'hamming'"),
        ({"EMBEDDER_INDEXES": {"cnn": "exact"}}, "'cnn' is not an enabled embedder"),
    ],
)
def test_bad_configuration_fails_naming_what_is_installed(tmp_path, overrides, message):
    with pytest.raises(PluginError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_plugins(config(tmp_path, **overrides), installed())


def test_duplicate_name_fails():
    other = entry_point("likeness.embedders", "phash", "otherpkg.hashes:BetterPHash")
    with pytest.raises(PluginError, match="'phash' is claimed twice"):
        discover("embedders", [PHASH, other])


def test_same_entry_point_seen_twice_is_one_plugin():
    assert list(discover("embedders", [PHASH, PHASH])) == ["phash"]


def test_wrong_base_class_fails(tmp_path):
    bad = entry_point("likeness.embedders", "notaplugin", "tests.fakes:NotAPlugin")
    with pytest.raises(PluginError, match="not a subclass of Embedder"):
        load_plugins(config(tmp_path, EMBEDDERS=["notaplugin"]), installed(embedders=[bad]))


def test_registered_name_must_match_class_name(tmp_path):
    bad = entry_point("likeness.embedders", "misnamed", "tests.fakes:MisnamedEmbedder")
    with pytest.raises(PluginError, match="registered as 'misnamed'"):
        load_plugins(config(tmp_path, EMBEDDERS=["misnamed"]), installed(embedders=[bad]))


@pytest.mark.parametrize(
    ("name", "target", "message"),
    [
        ("my embedder", "SpacedEmbedder", "'my embedder' .* must be 1-50 letters"),
        ("long", "LongVersionEmbedder", "version '2026-12-02-experimental-build': it must be"),
    ],
)
def test_names_and_versions_that_rows_and_keys_cannot_hold_fail(tmp_path, name, target, message):
    """Else every index build of the embedder fails on its storage key, or its rows overflow
    their columns on PostgreSQL: a 500 long after start-up."""
    bad = entry_point("likeness.embedders", name, f"tests.fakes:{target}")
    with pytest.raises(PluginError, match=message):
        load_plugins(config(tmp_path, EMBEDDERS=[name]), installed(embedders=[bad]))


def test_unimportable_plugin_fails_only_when_selected(tmp_path):
    broken = entry_point("likeness.embedders", "broken", "nosuchmodule:Thing")
    assert load_plugins(config(tmp_path), installed(embedders=[broken]))  # not selected: fine
    with pytest.raises(PluginError, match="'broken' .* failed to load"):
        load_plugins(config(tmp_path, EMBEDDERS=["broken"]), installed(embedders=[broken]))


def test_a_third_party_embedder_is_used_like_a_builtin(tmp_path):
    tiny = entry_point("likeness.embedders", "tiny", "tests.fakes:TinyEmbedder")
    plugins = load_plugins(config(tmp_path, EMBEDDERS=["tiny"]), installed(embedders=[tiny]))
    assert plugins.embedders["tiny"].dimensions == 2
    assert plugins.index_name("tiny") == "exact"


NEEDY = entry_point("likeness.embedders", "needy", "tests.fakes:NeedyEmbedder")


def test_unset_embedders_enable_every_builtin_that_can_run(tmp_path):
    plugins = load_plugins(config(tmp_path, EMBEDDERS=None), installed(embedders=[NEEDY]))
    assert list(plugins.embedders) == ["color", "phash"]  # not needy: a module is missing
    assert default_embedders([PHASH, NEEDY, COLOR]) == ["color", "phash"]


def test_unset_embedders_never_enable_a_third_party_plugin():
    assert "greythumb" in discover("embedders")  # tests/example_plugin, installed by make test
    assert {"phash", "color"} <= set(default_embedders()) <= {"phash", "color", "cnn"}


def test_a_configured_embedder_that_cannot_run_stops_start_up(tmp_path):
    with pytest.raises(
        PluginError,
        match="EMBEDDERS: embedder 'needy' cannot run here: "
        "needy needs likeness_no_such_module, not installed",
    ):
        load_plugins(config(tmp_path, EMBEDDERS=["phash", "needy"]), installed(embedders=[NEEDY]))


def test_without_the_cnn_extra_the_app_starts_with_the_other_builtins(app_env, monkeypatch):
    """The cnn entry point is always registered; without torch it is "not installed"."""
    from app import create_app
    from app.runtime import plugins
    from tests.conftest import make_config

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    app = create_app(make_config(app_env, EMBEDDERS=None))
    with app.app_context():
        assert list(plugins().embedders) == ["color", "phash"]
    # Without the extra at all, its other modules are missing too: torch is among them either way.
    with pytest.raises(PluginError, match=r"'cnn' cannot run here: cnn needs [^;]*\btorch\b"):
        create_app(make_config(app_env, EMBEDDERS=["phash", "cnn"]))
    with pytest.raises(PluginError, match=r"pip install -e '\.\[cnn\]'"):
        create_app(make_config(app_env, EMBEDDERS=["cnn"]))


@requires_cnn
def test_with_the_cnn_extra_unset_embedders_include_cnn(app_env):
    from app import create_app
    from app.runtime import plugins
    from tests.conftest import make_config

    app = create_app(make_config(app_env, EMBEDDERS=None))
    with app.app_context():
        assert list(plugins().embedders) == ["cnn", "color", "phash"]


def test_app_start_up_fails_fast_on_unknown_plugin(app_env):
    from app import create_app
    from tests.conftest import make_config

    with pytest.raises(PluginError, match="installed: cnn, color, phash"):
        create_app(make_config(app_env, EMBEDDERS=["phash", "nope"]))
