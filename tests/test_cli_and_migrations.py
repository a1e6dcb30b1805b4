"""The flask commands, and that migrations build exactly the models' schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app import search_schema
from app.extensions import db
from app.models import ApiKey
from config import BASE_DIR, normalise_database_url
from tests.conftest import wait_until
from tests.make_run import free_port


def last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


def test_teams_users_keys(app, runner, client):
    result = runner.invoke(args=["teams", "create", "Acme Photos"])
    assert result.exit_code == 0, result.output
    assert last_line(result) == "acme-photos"

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


def test_a_second_team_of_the_same_name_is_refused(app, runner, client):
    made = client.post(
        "/setup",
        data={"team": "Acme Photos", "email": "boss@acme.test", "password": "a long password"},
    )
    assert made.status_code == 302
    for name in ("Acme Photos", "acme  PHOTOS"):
        again = runner.invoke(args=["teams", "create", name])
        assert again.exit_code != 0
        assert "a team named 'Acme Photos' already exists (slug acme-photos)" in again.output
    listed = runner.invoke(args=["teams", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == ["acme-photos  Acme Photos  1 member", "1 team"]
    # Another name that makes the same slug is another team, with a slug of its own.
    assert last_line(runner.invoke(args=["teams", "create", "Acme-Photos"])) == "acme-photos-2"
    assert last_line(runner.invoke(args=["teams", "list"])) == "2 teams"


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


def empty_database_env(app_env, tmp_path) -> dict[str, str]:
    """The environment of a `flask` process over an empty database (no app fixture here)."""
    from tests.conftest import TEST_DATABASE_URL

    env = {**os.environ, **app_env}
    if TEST_DATABASE_URL is None:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        engine = create_engine(normalise_database_url(TEST_DATABASE_URL))
        db.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()
    return env


def db_upgrade(env, revision: str = "head", command: str = "upgrade") -> None:
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    result = subprocess.run(
        [flask, "--app", "wsgi", "db", command, revision],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def drop_everything(engine) -> None:
    db.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


def test_migrations_build_exactly_the_models_schema(app_env, tmp_path):
    env = empty_database_env(app_env, tmp_path)
    db_upgrade(env)
    engine = create_engine(normalise_database_url(env["DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={"compare_type": True, "include_name": search_schema.include_name},
            )
            diff = compare_metadata(context, db.metadata)
        assert diff == []
        tables = set(inspect(engine).get_table_names()) - search_schema.MANAGED_NAMES
        assert tables == set(db.metadata.tables) | {"alembic_version"}
    finally:
        drop_everything(engine)


def lightweight_table(table: str, meta: sa.MetaData, /, **columns) -> sa.Table:
    """A table as an old revision had it: only the columns named, with their types."""
    return sa.Table(table, meta, *(sa.Column(col, kind) for col, kind in columns.items()))


def test_migration_moves_sign_ins_out_of_team_logs(app_env, tmp_path):
    """Revision 0004: one personal event per sign-in, instead of a copy in every team's log."""
    env = empty_database_env(app_env, tmp_path)
    db_upgrade(env, "0003")
    meta, key, when, text = sa.MetaData(), sa.Uuid(), sa.DateTime(timezone=True), sa.String()
    team = lightweight_table("team", meta, id=key, name=text, slug=text, created_at=when)
    user = lightweight_table("user", meta, id=key, email=text, password_hash=text, created_at=when)
    login_session = lightweight_table(
        "login_session",
        meta,
        id=key,
        token_hash=text,
        user_id=key,
        created_at=when,
        last_seen_at=when,
    )
    events = lightweight_table(
        "audit_event",
        meta,
        id=sa.Integer(),
        team_id=key,
        user_id=key,
        at=when,
        actor_type=text,
        actor_user_id=key,
        actor=text,
        action=text,
        target=text,
        ip=text,
        details=sa.JSON(),
    )
    team_a, team_b, person = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def event(n, team_id, action, seconds, **fields):
        return {
            "id": n,
            "team_id": team_id,
            "at": start + timedelta(seconds=seconds),
            "actor_type": "user",
            "actor_user_id": person,
            "actor": "p@example.com",
            "action": action,
            "target": "p@example.com",
            "ip": "198.51.100.7",
            "details": {},
            **fields,
        }

    stranger = {"actor_type": "anonymous", "actor_user_id": None, "actor": "x@example.com"}
    engine = create_engine(normalise_database_url(env["DATABASE_URL"]))
    try:
        with engine.begin() as conn:
            conn.execute(
                team.insert(),
                [
                    {"id": team_a, "name": "A", "slug": "a", "created_at": start},
                    {"id": team_b, "name": "B", "slug": "b", "created_at": start},
                ],
            )
            conn.execute(
                user.insert(),
                {"id": person, "email": "p@example.com", "password_hash": "x", "created_at": start},
            )
            conn.execute(
                login_session.insert(),
                {
                    "id": uuid.uuid4(),
                    "token_hash": "t" * 64,
                    "user_id": person,
                    "created_at": start,
                },
            )
            conn.execute(
                events.insert(),
                [
                    event(1, team_a, "auth.login", 0),  # one login, copied to both teams
                    event(2, team_b, "auth.login", 0.01),
                    event(3, team_a, "member.add", 60, target="q@example.com"),  # A's own
                    event(4, team_a, "auth.login_failed", 120),  # one failure, copied to both
                    event(5, team_b, "auth.login_failed", 120.01),
                    event(6, team_a, "auth.login", 900),  # a second login, later
                    event(7, team_b, "auth.login", 900.01),
                    event(8, None, "auth.login_failed", 901, target="x@example.com", **stranger),
                ],
            )
        db_upgrade(env)
        with engine.connect() as conn:
            columns = (events.c.id, events.c.team_id, events.c.user_id, events.c.action)
            rows = conn.execute(sa.select(*columns, events.c.actor_type).order_by(events.c.id))
            last_seen = conn.execute(sa.select(login_session.c.last_seen_at)).scalar_one()
            assert [tuple(row) for row in rows] == [
                (1, None, person, "auth.login", "user"),
                (3, team_a, None, "member.add", "user"),
                (4, None, person, "auth.login_failed", "anonymous"),
                (6, None, person, "auth.login", "user"),
                (8, None, None, "auth.login_failed", "anonymous"),
            ]
        assert last_seen.replace(tzinfo=UTC) == start
    finally:
        drop_everything(engine)


def test_collections_migration_keeps_what_refers_to_images_and_imports(app_env, tmp_path):
    """Revision 0006 adds `collection_id` to images, direct uploads and import batches. On
    SQLite that copies the tables: the labels, tags, embeddings and import items that refer to
    them must survive it, up and down again."""
    env = empty_database_env(app_env, tmp_path)
    db_upgrade(env, "0005")
    meta, key, when, text = sa.MetaData(), sa.Uuid(), sa.DateTime(timezone=True), sa.String()
    number = sa.Integer()
    team = lightweight_table("team", meta, id=key, name=text, slug=text, created_at=when)
    image = lightweight_table(
        "image",
        meta,
        id=key,
        team_id=key,
        filename=text,
        content_type=text,
        size_bytes=number,
        width=number,
        height=number,
        sha256=text,
        status=text,
        storage_key=text,
        thumbnail_key=text,
        metadata=sa.JSON(),
        created_at=when,
    )
    tag = lightweight_table("tag", meta, id=number, team_id=key, name=text)
    image_tag = lightweight_table("image_tag", meta, image_id=key, tag_id=number)
    label = lightweight_table(
        "label", meta, id=number, team_id=key, image_id=key, embedder=text, name=text, score=number
    )
    embedding = lightweight_table(
        "embedding",
        meta,
        id=number,
        team_id=key,
        image_id=key,
        embedder=text,
        version=text,
        vector=sa.LargeBinary(),
        created_at=when,
    )
    batch = lightweight_table(
        "import_batch", meta, id=key, team_id=key, created_at=when, total=number, tags=sa.JSON()
    )
    item = lightweight_table(
        "import_item",
        meta,
        id=number,
        team_id=key,
        batch_id=key,
        position=number,
        url=text,
        tags=sa.JSON(),
        status=text,
        image_id=key,
    )
    team_id, image_id, batch_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    engine = create_engine(normalise_database_url(env["DATABASE_URL"]))

    def referring_rows() -> list:
        with engine.connect() as conn:
            return [
                conn.execute(sa.select(image_tag.c.tag_id)).all(),
                conn.execute(sa.select(label.c.name)).all(),
                conn.execute(sa.select(embedding.c.embedder)).all(),
                conn.execute(sa.select(item.c.image_id, item.c.batch_id)).all(),
            ]

    try:
        with engine.begin() as conn:
            conn.execute(
                team.insert(), {"id": team_id, "name": "A", "slug": "a", "created_at": start}
            )
            conn.execute(
                image.insert(),
                {
                    "id": image_id,
                    "team_id": team_id,
                    "filename": "a.jpg",
                    "content_type": "image/jpeg",
                    "size_bytes": 10,
                    "width": 1,
                    "height": 1,
                    "sha256": "0" * 64,
                    "status": "ready",
                    "storage_key": "k",
                    "thumbnail_key": "t",
                    "metadata": {},
                    "created_at": start,
                },
            )
            conn.execute(tag.insert(), {"id": 1, "team_id": team_id, "name": "beach"})
            conn.execute(image_tag.insert(), {"image_id": image_id, "tag_id": 1})
            conn.execute(
                label.insert(),
                {
                    "id": 1,
                    "team_id": team_id,
                    "image_id": image_id,
                    "embedder": "cnn",
                    "name": "seashore",
                    "score": 1,
                },
            )
            conn.execute(
                embedding.insert(),
                {
                    "id": 1,
                    "team_id": team_id,
                    "image_id": image_id,
                    "embedder": "phash",
                    "version": "1",
                    "vector": b"\x00" * 8,
                    "created_at": start,
                },
            )
            conn.execute(
                batch.insert(),
                {"id": batch_id, "team_id": team_id, "created_at": start, "total": 1, "tags": []},
            )
            conn.execute(
                item.insert(),
                {
                    "id": 1,
                    "team_id": team_id,
                    "batch_id": batch_id,
                    "position": 0,
                    "url": "http://example.com/a.jpg",
                    "tags": [],
                    "status": "done",
                    "image_id": image_id,
                },
            )
        before = referring_rows()
        assert before == [[(1,)], [("seashore",)], [("phash",)], [(image_id, batch_id)]]

        db_upgrade(env)
        assert referring_rows() == before
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT collection_id FROM image")).all() == [(None,)]

        db_upgrade(env, "0005", command="downgrade")
        assert referring_rows() == before
        assert "collection_id" not in {c["name"] for c in inspect(engine).get_columns("image")}
        assert "collection" not in inspect(engine).get_table_names()
    finally:
        drop_everything(engine)


# --- without SECRET_KEY: every command still works, no web server starts ---------------------


def production_env(app_env, **changes) -> dict[str, str]:
    """A production process's environment, SECRET_KEY left out unless given in `changes`."""
    env = {k: v for k, v in {**os.environ, **app_env}.items() if k != "SECRET_KEY"}
    return {**env, "LIKENESS_ENV": "production", **changes}


def test_flask_help_lists_every_command_without_a_secret_key(app_env):
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    result = subprocess.run(
        [flask, "--app", "wsgi", "--help"],
        cwd=BASE_DIR,
        env=production_env(app_env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    commands = {
        line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line
    }
    assert {"db", "teams", "users", "keys", "members", "worker", "reconcile", "index"} <= commands


def gunicorn(env, port: int) -> subprocess.Popen:
    """The Procfile's web line, reading gunicorn.conf.py from the repository as it does."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "gunicorn"),
        "wsgi:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--no-control-socket",
    ]
    return subprocess.Popen(
        command, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_gunicorn_refuses_to_start_without_a_secret_key(app_env):
    port = free_port()
    server = gunicorn(production_env(app_env), port)
    try:
        output, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode != 0
    # Refused before any worker boots: one line saying why, not an application that crashed.
    assert "SECRET_KEY must be set" in output and "Traceback" not in output
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing ever listened


def test_gunicorn_serves_with_a_secret_key(app_env):
    port = free_port()
    server = gunicorn(production_env(app_env, SECRET_KEY="a real secret"), port)
    try:
        answer = wait_until(
            lambda: healthz_status(port), 60, "gunicorn never answered with a SECRET_KEY"
        )
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert answer in (200, 503)  # the checks may fail here (no worker); the server answers


def healthz_status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # not up yet, or booting
        return None
