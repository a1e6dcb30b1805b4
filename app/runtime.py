"""Per-application runtime state kept in `app.extensions["likeness"]`: the plugin instances and
the index builds this process has loaded; accessors for them."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from flask import current_app

from app.plugin_api import ExactScan, StorageBackend, VectorIndex
from app.plugins import Plugins

if TYPE_CHECKING:
    from app.models import IndexBuild

log = logging.getLogger(__name__)

# The folder of one build's copy, as `IndexCache._fetch` names it: v<version>-<build id>.
_VERSION_FOLDER = re.compile(r"v(\d+)-\w+")


class IndexCache:
    """Index builds loaded in this process, keyed by (team, embedder).

    Files are copied from storage into a local folder once per build and loaded from there
    (memory-mapped where the index allows), so web processes share nothing but storage.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._loaded: dict[tuple[uuid.UUID, str], tuple[int, VectorIndex]] = {}
        self._lock = threading.Lock()

    def get(self, build: IndexBuild) -> VectorIndex:
        key = (build.team_id, build.embedder)
        with self._lock:
            cached = self._loaded.get(key)
            if cached and cached[0] == build.id:
                return cached[1]
            index = plugins().new_index(build.embedder, current_app.config)
            index.load(self._fetch(build))
            self._loaded[key] = (build.id, index)
        # Outside the lock: this process's searches of other indexes need not wait on it.
        self._remove_older(build)
        return index

    def _fetch(self, build: IndexBuild) -> str:
        target = os.path.join(
            self.directory, str(build.team_id), build.embedder, f"v{build.version}-{build.id}"
        )
        if os.path.isdir(target):
            return target
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".partial-")
        try:
            for key in build.storage_keys:
                with (
                    storage().open(key) as src,
                    open(os.path.join(partial, key.rsplit("/", 1)[-1]), "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
            os.rename(partial, target)  # complete or absent, never half there
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            # Another web process fetched the same build meanwhile: renaming onto its folder
            # fails (EEXIST, or ENOTEMPTY as Linux says for a folder), and its copy serves.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not os.path.isdir(target):
                raise
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target

    def _remove_older(self, build: IndexBuild) -> None:
        """Delete the copies of this pair's builds older than the one before `build`, logging
        what fails: a search must not fail over a stale copy.

        The one before stays: another web process sharing the folder may still be opening its
        files (a process that has loaded an index keeps it, memory-mapped, once its files are
        unlinked; one opening them would fail). Copies newer than `build` stay, another
        process's, as do names of no version (`.partial-*`: a copy in progress).
        """
        parent = os.path.join(self.directory, str(build.team_id), build.embedder)
        try:
            versions = {
                name: int(match[1])
                for name in os.listdir(parent)
                if (match := _VERSION_FOLDER.fullmatch(name))
            }
        except OSError:
            log.exception("could not list the index copies in %s", parent)
            return
        previous = max((v for v in versions.values() if v < build.version), default=None)
        for name, version in versions.items():
            if previous is None or version >= previous:
                continue
            # Renamed away first: a removal cut short must not leave a version folder that
            # `_fetch` takes for a whole copy; and of two processes removing it, one renames it
            # and the other finds it gone.
            doomed = os.path.join(parent, f".removing-{uuid.uuid4().hex[:12]}")
            try:
                os.rename(os.path.join(parent, name), doomed)
            except FileNotFoundError:
                continue
            except OSError:
                log.exception("could not remove the index copy %s in %s", name, parent)
                continue
            try:
                shutil.rmtree(doomed)
            except OSError:
                log.exception("could not remove the index copy %s (was %s)", doomed, name)


@dataclass(frozen=True)
class Delta:
    """The embeddings of one (team, embedder) above an index build's watermark, laid out for
    the exact scan that searches add to the index. `key` is (embedder version, watermark);
    `last_id` the highest embedding id it holds."""

    key: tuple[str, int]
    last_id: int
    ids: list[str]
    vectors: np.ndarray  # as stored, so that newer rows can be appended
    scan: ExactScan


class DeltaCache:
    """The delta each (team, embedder) had at its last search in this process, so that a
    search reads only the embeddings that came since, not the whole delta again."""

    def __init__(self) -> None:
        self._deltas: dict[tuple[uuid.UUID, str], Delta] = {}
        self._lock = threading.Lock()

    def get(self, team_id: uuid.UUID, embedder: str) -> Delta | None:
        with self._lock:
            return self._deltas.get((team_id, embedder))

    def put(self, team_id: uuid.UUID, embedder: str, delta: Delta) -> None:
        with self._lock:
            self._deltas[(team_id, embedder)] = delta


@dataclass
class State:
    plugins: Plugins
    index_cache: IndexCache
    delta_cache: DeltaCache = field(default_factory=DeltaCache)


def state() -> State:
    return current_app.extensions["likeness"]


def plugins() -> Plugins:
    return state().plugins


def storage() -> StorageBackend:
    return state().plugins.storage


def delete_objects(keys: Iterable[str], of: str) -> None:
    """Delete stored objects `of` something (for the log), logging what fails rather than
    raising: callers clean up after a commit or during an error, where an unreferenced object
    is the worst outcome and the error being handled matters more."""
    for key in keys:
        try:
            storage().delete(key)
        except Exception:
            log.exception("could not delete %s of %s", key, of)


def index_cache() -> IndexCache:
    return state().index_cache


def delta_cache() -> DeltaCache:
    return state().delta_cache
