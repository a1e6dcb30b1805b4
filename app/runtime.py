"""Per-application runtime state kept in `app.extensions["likeness"]`, and accessors for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from app.plugin_api import StorageBackend
from app.plugins import Plugins

if TYPE_CHECKING:
    from app.services.search import IndexCache


@dataclass
class State:
    plugins: Plugins
    index_cache: IndexCache
    redis: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def state() -> State:
    return current_app.extensions["likeness"]


def plugins() -> Plugins:
    return state().plugins


def storage() -> StorageBackend:
    return state().plugins.storage
