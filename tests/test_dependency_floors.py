"""The parsers of hostile input have security floors in pyproject.toml, and what is installed
meets every declared range: a stale environment fails here rather than in production."""

from __future__ import annotations

import os
import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from config import BASE_DIR

# Each library that parses what users send, and the lowest floor it may declare (raise these
# with each security release; the reasons are beside the ranges in pyproject.toml).
SECURITY_FLOORS = {
    "pillow": "12.3",  # every uploaded image
    "werkzeug": "3.1.5",  # every multipart upload and HTTP request
    "urllib3": "2.6.3",  # every URL import, streamed from an untrusted server
}


def declared() -> dict[str, Requirement]:
    with open(os.path.join(BASE_DIR, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {requirement.name.lower(): requirement for requirement in requirements}


def floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(floors, default=None)


@pytest.mark.parametrize("name", sorted(SECURITY_FLOORS))
def test_each_parser_declares_its_security_floor(name):
    requirement = declared().get(name)
    assert requirement is not None, f"{name} must be a declared dependency, with a floor"
    assert floor(requirement) is not None and floor(requirement) >= Version(SECURITY_FLOORS[name])
    assert any(s.operator == "<" for s in requirement.specifier), f"{name} needs an upper bound"


@pytest.mark.parametrize("name", sorted(declared()))
def test_the_installed_version_meets_the_declared_range(name):
    requirement = declared()[name]
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        pytest.fail(f"{requirement.name} is declared but not installed: `make` installs it")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is installed; pyproject.toml asks for {requirement}"
    )


def test_every_declared_dependency_is_bounded_above():
    # A new major version may change parsing in ways nobody reviewed.
    unbounded = [
        str(r)
        for r in declared().values()
        if not any(s.operator in ("<", "==") for s in r.specifier)
    ]
    assert unbounded == []
