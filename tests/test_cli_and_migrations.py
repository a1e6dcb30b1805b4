"""The flask commands, and that migrations build exactly the models' schema."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.extensions import db
from app.models import ApiKey
from config import BASE_DIR


def last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


def test_teams_users_keys(app, runner, client):
    result = runner.invoke(args=["teams", "create", "Acme Photos"])
    assert result.exit_code == 0, result.output
    assert last_line(result) == "acme-photos"
    assert last_line(runner.invoke(args=["teams", "create", "Acme Photos"])) == "acme-photos-2"

    result = runner.invoke(
        args=[
            "users",
            "create",
            "Eve@Example.com",
            "--team",
            "acme-photos",
            "--role",
            "viewer",
            "--password",
            "a long password",
        ]
    )
    assert result.exit_code == 0, result.output
    assert last_line(result) == "eve@example.com"
    login = client.post("/login", data={"email": "eve@example.com", "password": "a long password"})
    assert login.status_code == 302

    result = runner.invoke(
        args=[
            "keys",
            "create",
            "--team",
            "acme-photos",
            "--name",
            "ci",
            "--scopes",
            "read,write",
            "--expires-in-days",
            "30",
        ]
    )
    assert result.exit_code == 0, result.output
    key = last_line(result)
    assert key.startswith("lk_")
    assert client.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 200
    with app.app_context():
        stored = db.session.query(ApiKey).filter_by(name="ci").one()
        assert stored.scopes == ["read", "write"] and stored.expires_at is not None


def test_cli_errors_are_clear(runner):
    result = runner.invoke(
        args=["users", "create", "a@b.test", "--team", "nope", "--password", "x" * 12]
    )
    assert result.exit_code != 0 and "no team with slug 'nope'" in result.output
    runner.invoke(args=["teams", "create", "T"])
    result = runner.invoke(
        args=["keys", "create", "--team", "t", "--name", "k", "--scopes", "read,root"]
    )
    assert result.exit_code != 0 and "scopes must be some of" in result.output
    result = runner.invoke(
        args=["users", "create", "a@b.test", "--team", "t", "--password", "short"]
    )
    assert result.exit_code != 0 and "at least 10 characters" in result.output
    result = runner.invoke(args=["index", "rebuild", "--team", "t", "--embedder", "nope"])
    assert result.exit_code != 0 and "unknown embedder 'nope'" in result.output


def test_index_rebuild_of_an_empty_team(runner):
    runner.invoke(args=["teams", "create", "Empty"])
    result = runner.invoke(args=["index", "rebuild", "--team", "empty", "--embedder", "color"])
    assert result.exit_code == 0, result.output
    assert last_line(result) == "color=v1"


def test_migrations_build_exactly_the_models_schema(app_env, tmp_path):
    from tests.conftest import TEST_DATABASE_URL

    env = {**os.environ, **app_env}
    if TEST_DATABASE_URL is None:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        # Start from an empty database: the app fixture is not used here.
        from config import normalise_database_url

        engine = create_engine(normalise_database_url(TEST_DATABASE_URL))
        db.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    result = subprocess.run(
        [flask, "--app", "wsgi", "db", "upgrade"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr

    from config import normalise_database_url

    engine = create_engine(normalise_database_url(env["DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata
            )
        assert diff == []
        assert set(inspect(engine).get_table_names()) == set(db.metadata.tables) | {
            "alembic_version"
        }
    finally:
        db.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()
