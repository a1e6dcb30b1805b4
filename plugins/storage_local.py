"""Storage in a directory on the local filesystem."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from app.plugin_api import (
    ObjectNotFound,
    StorageBackend,
    StorageUnavailable,
    StoredObject,
    validate_key,
    validate_prefix,
)

# Temporary and probe files start with a dot: no valid key does, so they can never be
# mistaken for (or collide with) a stored object. A temporary file's name says which process
# on which host writes it ("<pid>@<host>."), so one a killed writer left (SIGKILL skips every
# cleanup) is recognised: the next save into its directory removes it, and so does
# `remove_abandoned` wherever it is.
_TMP_PREFIX = ".tmp-"
_PROBE_PREFIX = ".probe-"
_HOST = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname()) or "host"
# A temporary file this old is abandoned whoever wrote it (another host's writer is not ours
# to ask after); no save takes a day.
_ABANDONED_AFTER_SECONDS = 24 * 3600
# No space left on the device, or the owner's quota is spent.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class LocalStorage(StorageBackend):
    """Objects as files under `STORAGE_ROOT`, one file per key, key segments as directories.

    - `save` streams into a temporary file in the target directory and renames it into place,
      so readers see the old object or the new one, never a partial file. A writer killed
      mid-save (SIGKILL runs no cleanup) leaves its temporary file; the next save into that
      directory removes it (see `_TMP_PREFIX`), and `remove_abandoned` removes any, with the
      directories they leave empty.
    - `open` raises `ObjectNotFound` for a missing key; `delete` of a missing key is a no-op and
      removes parent directories it leaves empty.
    - `url` and `presign_upload` are always None: the application streams local files itself
      and provides its own signed upload URL, whose handler stores the bytes with `save`.
    - `list_objects` walks the files under the prefix's folder, leaving out temporary and probe
      files (their names start with a dot, as no key does) and anything else no key names.
    - Paths come only from validated keys, and each resolved path is checked to lie inside the
      root (so a symlink planted under the root cannot lead outside it).
    """

    name = "local"

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.root = os.path.realpath(os.fspath(config["STORAGE_ROOT"]))

    def _path(self, key: str) -> str:
        validate_key(key)
        path = os.path.join(self.root, *key.split("/"))
        resolved = os.path.realpath(path)
        if os.path.commonpath([self.root, resolved]) != self.root or resolved == self.root:
            raise ValueError(f"storage key {key!r} resolves outside the storage root")
        return path

    def save(self, key: str, fileobj: BinaryIO, content_type: str) -> None:
        """Write the whole stream under `key`, atomically replacing any existing object."""
        path = self._path(key)
        try:
            self._write(path, fileobj)
        except OSError as exc:
            if exc.errno in _FULL:
                # A full disk (at a new directory, the temporary file or its last block) is
                # an outage of the store, as a failing S3 is: callers that clean up after
                # StorageUnavailable then leave nothing behind.
                raise StorageUnavailable(f"local storage is full: {exc.strerror}") from exc
            raise

    @staticmethod
    def _write(path: str, fileobj: BinaryIO) -> None:
        directory = os.path.dirname(path)
        _remove_abandoned_temporaries(directory, _ABANDONED_AFTER_SECONDS)
        # A concurrent delete may prune the directory between makedirs and mkstemp; retry.
        for attempt in range(3):
            os.makedirs(directory, exist_ok=True)
            try:
                prefix = f"{_TMP_PREFIX}{os.getpid()}@{_HOST}."
                fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(fileobj, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            # mkstemp creates 0600; stored objects are ordinary data files.
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading; raise ObjectNotFound if there is none."""
        path = self._path(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns and closes the file
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        """Remove the object if present and prune directories left empty."""
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        self._prune(os.path.dirname(path))

    def _prune(self, directory: str) -> None:
        """Remove `directory` and its parents up to the root while they are empty."""
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:  # not empty (or already gone): stop pruning
                break
            directory = os.path.dirname(directory)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return os.path.isfile(self._path(key))

    def url(self, key: str, expires_in: int, content_disposition: str | None = None) -> str | None:
        """Always None: local files have no direct URL."""
        self._path(key)
        return None

    def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any] | None:
        """Always None: the application provides its own signed upload URL."""
        self._path(key)
        return None

    def remove_abandoned(self, older_than: float) -> int:
        """Remove, under the whole root, the temporary files whose writer is gone and the
        temporary and probe files older than `older_than` seconds, then the directories that
        leaves empty; return how many files."""
        removed = 0
        for directory, _, names in os.walk(self.root):
            if any(name.startswith((_TMP_PREFIX, _PROBE_PREFIX)) for name in names):
                found = _remove_abandoned_temporaries(directory, older_than)
                if found:
                    removed += found
                    self._prune(directory)
        return removed

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every stored object under `prefix`, with its modification time."""
        validate_prefix(prefix)
        top = os.path.join(self.root, *prefix.split("/"))
        if os.path.commonpath([self.root, os.path.realpath(top)]) != self.root:
            return  # a link planted under the root: nothing of ours is out there
        for directory, folders, names in os.walk(top):  # links inside are not followed
            folders[:] = [f for f in folders if not f.startswith(".")]
            for name in names:
                path = os.path.join(directory, name)
                key = os.path.relpath(path, self.root).replace(os.sep, "/")
                try:
                    validate_key(key)
                    modified = os.stat(path, follow_symlinks=False).st_mtime
                except (ValueError, FileNotFoundError):
                    continue  # a temporary file, a stranger's file, or deleted meanwhile
                if os.path.isfile(path) and not os.path.islink(path):
                    yield StoredObject(key, modified)

    def check(self) -> None:
        """Write, read back and delete a probe file; raise StorageUnavailable on failure."""
        probe = os.path.join(self.root, f"{_PROBE_PREFIX}{uuid.uuid4().hex}")
        payload = os.urandom(16)
        try:
            os.makedirs(self.root, exist_ok=True)
            with open(probe, "wb") as out:
                out.write(payload)
            with open(probe, "rb") as src:
                if src.read() != payload:
                    raise StorageUnavailable(f"storage root {self.root}: probe read back wrong")
        except OSError as exc:
            raise StorageUnavailable(f"storage root {self.root} is not usable: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)


def _remove_abandoned_temporaries(directory: str, older_than: float) -> int:
    """Remove the temporary and probe files in `directory` whose writer is gone (see
    `_TMP_PREFIX`) or that are older than `older_than` seconds; return how many."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for entry in entries:
        if entry.name.startswith((_TMP_PREFIX, _PROBE_PREFIX)) and _abandoned(entry, older_than):
            with contextlib.suppress(FileNotFoundError):  # another saver removed it first
                os.unlink(entry.path)
                removed += 1
    return removed


def _abandoned(entry: os.DirEntry, older_than: float) -> bool:
    try:
        if time.time() - entry.stat(follow_symlinks=False).st_mtime > older_than:
            return True
    except FileNotFoundError:
        return False
    if not entry.name.startswith(_TMP_PREFIX):
        return False  # a probe names no writer: by age only
    pid, _, rest = entry.name[len(_TMP_PREFIX) :].partition("@")
    host = rest.rpartition(".")[0]
    if host != _HOST or not pid.isdigit():
        return False  # another host's, or an older name without its writer: by age only
    return not _running(int(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    try:  # a killed process its parent has not reaped yet still exists, as a zombie
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): it exists, so it may still be writing
