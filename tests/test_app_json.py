"""app.json, the one-step deployment of a Heroku-compatible platform, agrees with the Procfile,
the configuration and the packaging."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import pytest

from config import BASE_DIR

# The keys of Heroku's app.json schema (devcenter.heroku.com/articles/app-json-schema).
SCHEMA_KEYS = {
    "name", "description", "keywords", "website", "repository", "logo", "success_url",
    "scripts", "env", "formation", "image", "addons", "buildpacks", "environments", "stack",
}  # fmt: skip
ENV_KEYS = {"description", "value", "required", "generator"}


def read(name: str) -> str:
    with open(os.path.join(BASE_DIR, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(read("app.json"))


@pytest.fixture(scope="module")
def procfile() -> dict[str, str]:
    lines = [line.split(":", 1) for line in read("Procfile").splitlines() if line.strip()]
    return {kind.strip(): command.strip() for kind, command in lines}


def settings_read() -> set[str]:
    """Every environment variable config.py or gunicorn.conf.py reads."""
    source = read("config.py") + read("gunicorn.conf.py")
    return set(re.findall(r"os\.environ(?:\.get\(|\[)\"([A-Z0-9_]+)\"", source))


def test_only_schema_keys(manifest):
    assert set(manifest) <= SCHEMA_KEYS
    assert manifest["name"] and len(manifest["name"]) <= 30
    for name, spec in manifest["env"].items():
        assert set(spec) <= ENV_KEYS, name
        assert spec.get("description"), name


def test_formation_runs_every_long_lived_process_of_the_procfile(manifest, procfile):
    assert set(manifest["formation"]) == set(procfile) - {"release"} == {"web", "worker"}
    assert all(spec["quantity"] >= 1 for spec in manifest["formation"].values())


def test_release_phase_migrates_the_database(procfile):
    # The platform runs the Procfile's release line on each deploy, before new dynos start.
    assert procfile["release"] == "flask --app wsgi db upgrade"
    commands = {line.split()[0] for line in procfile.values()}
    bin_dir = os.path.dirname(sys.executable)
    assert all(shutil.which(command, path=bin_dir) for command in commands), commands


def test_addons_provide_the_database_and_redis_the_configuration_reads(manifest):
    plans = {addon["plan"].split(":")[0]: addon.get("as") for addon in manifest["addons"]}
    assert plans == {"heroku-postgresql": "DATABASE", "heroku-redis": "REDIS"}
    # An add-on attached as X sets X_URL.
    assert {f"{name}_URL" for name in plans.values()} <= settings_read()


def test_every_variable_set_is_one_the_application_reads(manifest):
    assert set(manifest["env"]) <= settings_read(), set(manifest["env"]) - settings_read()


def test_the_secret_key_is_generated_and_production_settings_hold(manifest):
    env = manifest["env"]
    assert env["SECRET_KEY"] == {**env["SECRET_KEY"], "generator": "secret"}
    assert "value" not in env["SECRET_KEY"]
    assert env["LIKENESS_ENV"]["value"] == "production"
    assert env["TRUSTED_PROXY_COUNT"]["value"] == "1"  # behind the router, and only it
    # Dynos' disks do not survive a restart: files must go to S3, whose bucket is asked for.
    assert env["STORAGE_BACKEND"]["value"] == "s3"
    assert all(env[name].get("required") for name in ("S3_BUCKET", "S3_REGION"))


def test_the_platform_installs_the_project_with_its_entry_points(manifest):
    assert manifest["buildpacks"] == [{"url": "heroku/python"}]
    requirements = [line.strip() for line in read("requirements.txt").splitlines() if line.strip()]
    assert [line for line in requirements if not line.startswith("#")] == ["."]
    version = read(".python-version").strip()
    floor = re.search(r'requires-python = ">=(\d+\.\d+)"', read("pyproject.toml")).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))
