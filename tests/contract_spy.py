"""Spies for the contract meta-test: plugin subclasses that note which abstract members of
their contract the suites in app.plugin_testing use.

Only uses made directly by code of app.plugin_testing count, so a plugin that calls its own
methods internally cannot make an untested method look tested.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Iterable

from app.plugin_api import Embedder, StorageBackend, VectorIndex

CONTRACTS: tuple[type, ...] = (StorageBackend, Embedder, VectorIndex)
SUITE_MODULE = "app.plugin_testing"

# (contract name, member name) for every abstract member a suite has used.
CALLS: set[tuple[str, str]] = set()


def _record(contract: type, name: str) -> None:
    # Frame 0 is this function, 1 the spy's wrapper, 2 whoever used the member.
    if sys._getframe(2).f_globals.get("__name__") == SUITE_MODULE:
        CALLS.add((contract.__name__, name))


def contract_of(cls: type) -> type:
    return next(contract for contract in CONTRACTS if issubclass(cls, contract))


def spy(cls: type) -> type:
    """A subclass of `cls` that records every use of its contract's abstract members."""
    contract = contract_of(cls)
    namespace: dict[str, object] = {"__module__": __name__}
    for name in sorted(contract.__abstractmethods__):
        member = inspect.getattr_static(cls, name)
        if inspect.isfunction(member):
            namespace[name] = _spy_method(contract, name, member)
        else:  # a property (or a plain attribute standing in for one)
            namespace[name] = _spy_attribute(contract, name, member)
    spied = type(cls.__name__, (cls,), namespace)
    spied.__qualname__ = f"spy({cls.__qualname__})"
    return spied


def _spy_method(contract: type, name: str, method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        _record(contract, name)
        return method(self, *args, **kwargs)

    return wrapper


def _spy_attribute(contract: type, name: str, member: object) -> property:
    def getter(self):
        _record(contract, name)
        return member.__get__(self, type(self)) if hasattr(member, "__get__") else member

    return property(getter)


def report() -> dict:
    """What the meta-test checks: every contract's abstract members, and the ones used."""
    return {
        "abstract": {c.__name__: sorted(c.__abstractmethods__) for c in CONTRACTS},
        "used": sorted(CALLS),
    }


def uncalled(report: dict, contracts: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Per contract (all, or those named), the abstract members no suite used."""
    used = {tuple(call) for call in report["used"]}
    missing = {
        contract: [name for name in names if (contract, name) not in used]
        for contract, names in report["abstract"].items()
        if contracts is None or contract in contracts
    }
    return {contract: names for contract, names in missing.items() if names}
