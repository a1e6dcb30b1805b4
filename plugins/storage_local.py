"""Storage in a directory on the local filesystem."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from typing import Any, BinaryIO

from app.plugin_api import ObjectNotFound, StorageBackend, StorageUnavailable, validate_key

# Temporary and probe files start with a dot: no valid key does, so they can never be
# mistaken for (or collide with) a stored object.
_TMP_PREFIX = ".tmp-"
_PROBE_PREFIX = ".probe-"
# No space left on the device, or the owner's quota is spent.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class LocalStorage(StorageBackend):
    """Objects as files under `STORAGE_ROOT`, one file per key, key segments as directories.

    - `save` streams into a temporary file in the target directory and renames it into place,
      so readers see the old object or the new one, never a partial file.
    - `open` raises `ObjectNotFound` for a missing key; `delete` of a missing key is a no-op and
      removes parent directories it leaves empty.
    - `url` and `presign_upload` are always None: the application streams local files itself
      and provides its own signed upload URL, whose handler stores the bytes with `save`.
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
        # A concurrent delete may prune the directory between makedirs and mkstemp; retry.
        for attempt in range(3):
            os.makedirs(directory, exist_ok=True)
            try:
                fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
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
        directory = os.path.dirname(path)
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:  # not empty (or already gone): stop pruning
                break
            directory = os.path.dirname(directory)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return os.path.isfile(self._path(key))

    def url(self, key: str, expires_in: int) -> str | None:
        """Always None: local files have no direct URL."""
        self._path(key)
        return None

    def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any] | None:
        """Always None: the application provides its own signed upload URL."""
        self._path(key)
        return None

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
