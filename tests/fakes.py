"""Test doubles: plugins that exist only to exercise the registry."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import numpy as np

from app.plugin_api import Embedder


class NotAPlugin:
    name = "notaplugin"


class TinyEmbedder(Embedder):
    """Two-number vectors (mean brightness, width/height), for registry tests."""

    name = "tiny"
    version = "1"
    metric = "euclidean"
    preferred_index = "exact"
    input_size = 8

    @property
    def dimensions(self) -> int:
        return 2

    def embed_batch(self, images):
        return np.array(
            [[np.asarray(i.convert("L")).mean() / 255, i.width / i.height] for i in images],
            dtype=np.float32,
        )


class MisnamedEmbedder(TinyEmbedder):
    name = "something-else"


class SpacedEmbedder(TinyEmbedder):
    name = "my embedder"  # a name no row or storage key can hold


class LongVersionEmbedder(TinyEmbedder):
    name = "long"
    version = "2026-12-02-experimental-build"  # over the 20 characters a row holds


class NeedyEmbedder(TinyEmbedder):
    """An embedder of an optional extra that is not installed."""

    name = "needy"
    requires = ("numpy", "likeness_no_such_module")


def entry_point(group: str, name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=target, group=group)
