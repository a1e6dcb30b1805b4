"""Plugin discovery through entry points, and selection by configuration.

Start-up fails fast, naming what is installed, when a configured name is unknown, when two
packages claim one name, when an entry point is not a class of the right contract, or when a
configured embedder lacks a module it requires (`Embedder.requires`). EMBEDDERS left unset
selects every built-in embedder that can run here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from app.plugin_api import ENTRY_POINT_GROUPS, Embedder, StorageBackend, VectorIndex

BASES: dict[str, type] = {
    "storage": StorageBackend,
    "embedders": Embedder,
    "indexes": VectorIndex,
}
BASE_KIND = {"storage": "storage", "embedder": "embedders", "index": "indexes"}
BUILTIN_DISTRIBUTION = "likeness"

log = logging.getLogger(__name__)


class PluginError(RuntimeError):
    """A plugin cannot be found, is claimed twice, or breaks the contract."""


def _entry_points(kind: str, builtin_only: bool) -> list[metadata.EntryPoint]:
    found = metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])
    if builtin_only:
        found = [ep for ep in found if ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION]
    return list(found)


def discover(
    kind: str, entry_points: Iterable[metadata.EntryPoint] | None = None, builtin_only: bool = False
) -> dict[str, metadata.EntryPoint]:
    """Every installed plugin of one kind ("storage", "embedders", "indexes"), by name.

    Nothing is imported here, so a broken plugin that is not configured cannot stop start-up.
    """
    if entry_points is None:
        entry_points = _entry_points(kind, builtin_only)
    found: dict[str, metadata.EntryPoint] = {}
    for ep in entry_points:
        if ep.name in found:
            # One distribution can be visible twice (an egg-info beside an editable install).
            if found[ep.name].value == ep.value:
                continue
            raise PluginError(
                f"{kind} plugin name {ep.name!r} is claimed twice: "
                f"{found[ep.name].value} and {ep.value}; uninstall one of them"
            )
        found[ep.name] = ep
    return found


def load_class(kind: str, ep: metadata.EntryPoint) -> type:
    """Import one plugin and check that it keeps the contract's shape."""
    base = BASES[kind]
    try:
        cls = ep.load()
    except Exception as exc:
        raise PluginError(f"{kind} plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(
            f"{kind} plugin {ep.name!r} ({ep.value}) is not a subclass of {base.__name__}"
        )
    if getattr(cls, "name", None) != ep.name:
        raise PluginError(
            f"{kind} plugin {ep.value} is registered as {ep.name!r} "
            f"but its name attribute is {getattr(cls, 'name', None)!r}"
        )
    # Names and versions are written in rows and in storage keys (an index's folder).
    if not _NAME_RE.fullmatch(ep.name):
        raise PluginError(
            f"{kind} plugin name {ep.name!r} ({ep.value}) must be 1-50 letters, digits, '.', "
            "'_' or '-', beginning with a letter or a digit"
        )
    version = getattr(cls, "version", None)
    if kind == "embedders" and not (isinstance(version, str) and _VERSION_RE.fullmatch(version)):
        raise PluginError(
            f"embedder {ep.name!r} ({ep.value}) has version {version!r}: it must be a string of "
            "1-20 letters, digits, '.', '_' or '-'"
        )
    return cls


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}")
_VERSION_RE = re.compile(r"[A-Za-z0-9._-]{1,20}")


def builtin_classes(kind: str) -> dict[str, type]:
    """The plugins Likeness itself ships for one kind."""
    return {name: load_class(kind, ep) for name, ep in discover(kind, builtin_only=True).items()}


def _pick(kind: str, available: Mapping[str, metadata.EntryPoint], name: str, setting: str) -> type:
    if name not in available:
        installed = ", ".join(sorted(available)) or "none"
        raise PluginError(f"{setting}: unknown {kind} plugin {name!r}; installed: {installed}")
    return load_class(BASE_KIND[kind], available[name])


def default_embedders(entry_points: Iterable[metadata.EntryPoint] | None = None) -> list[str]:
    """What EMBEDDERS unset means: every built-in embedder whose requirements are installed
    (`entry_points`, when given, stands for the built-ins), by name."""
    names = []
    for name, ep in sorted(discover("embedders", entry_points, builtin_only=True).items()):
        reason = load_class("embedders", ep).unavailable()
        if reason is None:
            names.append(name)
        else:
            log.info("embedder %s is not enabled: %s", name, reason)
    return names


@dataclass
class Plugins:
    """The plugin instances and classes one application uses."""

    storage: StorageBackend
    embedders: dict[str, Embedder]
    index_classes: dict[str, type[VectorIndex]] = field(default_factory=dict)

    def new_index(self, embedder_name: str, config: Mapping[str, Any]) -> VectorIndex:
        embedder = self.embedders[embedder_name]
        return self.index_classes[embedder_name](embedder.metric, embedder.dimensions, config)

    def index_name(self, embedder_name: str) -> str:
        return self.index_classes[embedder_name].name


def load_plugins(
    config: Mapping[str, Any], entry_points: Mapping[str, Iterable] | None = None
) -> Plugins:
    """Select and build the configured plugins, failing fast with what is installed."""
    builtin_only = bool(config.get("PLUGINS_BUILTIN_ONLY"))
    available = {
        kind: discover(
            kind, None if entry_points is None else entry_points.get(kind, ()), builtin_only
        )
        for kind in BASES
    }
    storage_cls = _pick(
        "storage", available["storage"], config["STORAGE_BACKEND"], "STORAGE_BACKEND"
    )

    if config.get("EMBEDDERS") is None:
        names = default_embedders(None if entry_points is None else entry_points.get("embedders"))
    else:
        names = list(config["EMBEDDERS"])
    if not names:
        raise PluginError("EMBEDDERS: at least one embedder must be enabled")
    if len(set(names)) != len(names):
        raise PluginError(f"EMBEDDERS: a name is listed twice: {', '.join(names)}")
    embedders: dict[str, Embedder] = {}
    index_classes: dict[str, type[VectorIndex]] = {}
    overrides = dict(config.get("EMBEDDER_INDEXES") or {})
    for unknown in set(overrides) - set(names):
        raise PluginError(f"EMBEDDER_INDEXES: {unknown!r} is not an enabled embedder")
    for name in names:
        embedder_cls = _pick("embedder", available["embedders"], name, "EMBEDDERS")
        if (reason := embedder_cls.unavailable()) is not None:
            raise PluginError(f"EMBEDDERS: embedder {name!r} cannot run here: {reason}")
        index_name, setting = embedder_cls.preferred_index, f"{name}'s preferred index"
        if config.get("VECTOR_INDEX"):
            candidate = _pick("index", available["indexes"], config["VECTOR_INDEX"], "VECTOR_INDEX")
            if embedder_cls.metric in candidate.metrics:
                index_name, setting = config["VECTOR_INDEX"], "VECTOR_INDEX"
        if name in overrides:
            index_name, setting = overrides[name], "EMBEDDER_INDEXES"
        index_cls = _pick("index", available["indexes"], index_name, setting)
        if embedder_cls.metric not in index_cls.metrics:
            raise PluginError(
                f"{setting}: index {index_name!r} does not support {name}'s metric "
                f"{embedder_cls.metric!r} (it supports {', '.join(sorted(index_cls.metrics))})"
            )
        embedders[name] = embedder_cls(config)
        index_classes[name] = index_cls
    return Plugins(storage=storage_cls(config), embedders=embedders, index_classes=index_classes)
