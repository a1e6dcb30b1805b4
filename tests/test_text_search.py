"""Text search: GET /api/v1/search?q= and the q filter of GET /api/v1/images, over filename,
tags, labels and collection name, on the database's full-text index kept by triggers."""

from __future__ import annotations

import contextlib
import io
import re
import uuid

import pytest
from sqlalchemy import create_engine, delete, insert, inspect, select, text

from app import search_schema
from app.extensions import db
from app.models import ImageSearch, Label
from app.services import collections, images, text_search
from app.services.audit import Actor
from app.services.ingest import Incoming, ingest
from app.tenancy import team_scope, unscoped
from config import normalise_database_url
from tests import samples
from tests.test_cli_and_migrations import db_upgrade, drop_everything, empty_database_env

ALICE = Actor("user", "alice@a.example")


@contextlib.contextmanager
def acting_for(app, team):
    with app.app_context(), team_scope(team.id):
        yield


def add(app, team, files: list[tuple[int, str]], tags=(), collection_id=None) -> list[str]:
    with acting_for(app, team):
        results = ingest(
            team.id,
            [Incoming(io.BytesIO(samples.jpeg(seed, size=(64, 48))), name) for seed, name in files],
            actor=ALICE,
            tags=list(tags),
            collection_id=collection_id,
        )
        return [str(r.image.id) for r in results]


def make_collection(app, team, name: str):
    with acting_for(app, team):
        return collections.create_collection(team.id, name, actor=ALICE).collection.id


def write_labels(app, image_id: str, names: list[str]) -> None:
    """What processing writes for an embedder that names things: its labels replaced with a
    bulk DELETE, then inserted."""
    with app.app_context(), unscoped():
        key = uuid.UUID(image_id)
        row = db.session.scalar(select(ImageSearch).where(ImageSearch.image_id == key))
        team_id, image_key = row.team_id, row.image_id
        db.session.execute(delete(Label).where(Label.image_id == image_key))
        for rank, name in enumerate(names):
            db.session.execute(
                insert(Label).values(
                    team_id=team_id,
                    image_id=image_key,
                    embedder="cnn",
                    name=name,
                    score=0.9 - rank / 10,
                )
            )
        db.session.commit()


def found(client, team, q, path="/api/v1/search", **params) -> list[str]:
    response = client.get(path, query_string={"q": q, **params}, headers=team.headers())
    assert response.status_code == 200, response.json
    return sorted(item["filename"] for item in response.json["items"])


def test_finds_by_filename_tag_label_and_collection_name(app, client, team_a, team_b):
    trip = make_collection(app, team_a, "Alps Trip 2024")
    beach, dog, _ = add(
        app, team_a, [(1, "IMG_0001_beach.jpg"), (2, "dog-park.png"), (3, "notes.jpg")]
    )
    add(app, team_a, [(4, "summit.jpg")], tags=["Mountain View"], collection_id=trip)
    write_labels(app, dog, ["golden retriever", "tennis ball"])
    add(app, team_b, [(5, "beach-of-b.jpg")], tags=["mountain"])

    for path in ("/api/v1/search", "/api/v1/images"):
        assert found(client, team_a, "beach", path) == ["IMG_0001_beach.jpg"]  # not team B's
        assert found(client, team_a, "img 0001", path) == ["IMG_0001_beach.jpg"]
        assert found(client, team_a, "IMG_000", path) == ["IMG_0001_beach.jpg"]  # a prefix
        assert found(client, team_a, "PNG", path) == ["dog-park.png"]
        assert found(client, team_a, "retriever", path) == ["dog-park.png"]  # a label
        assert found(client, team_a, "golden ret", path) == ["dog-park.png"]
        assert found(client, team_a, "mountain", path) == ["summit.jpg"]  # a tag
        assert found(client, team_a, "alps trip", path) == ["summit.jpg"]  # the collection
        assert found(client, team_a, "2024 summit", path) == ["summit.jpg"]  # across fields
        assert found(client, team_a, "beach mountain", path) == []  # every word must match
        assert found(client, team_a, "each", path) == []  # words, not any substring
        assert found(client, team_a, "jpg", path) == [
            "IMG_0001_beach.jpg",
            "notes.jpg",
            "summit.jpg",
        ]


def test_the_index_follows_every_change(app, client, team_a):
    winter = make_collection(app, team_a, "Winter")
    spring = make_collection(app, team_a, "Spring")
    first, second = add(app, team_a, [(1, "first.jpg"), (2, "second.jpg")], tags=["sunny"])
    client_patch = lambda image_id, body: client.patch(  # noqa: E731
        f"/api/v1/images/{image_id}", json=body, headers=team_a.headers()
    )

    assert found(client, team_a, "sunny") == ["first.jpg", "second.jpg"]
    assert client_patch(first, {"tags": ["cloudy"]}).status_code == 200
    assert found(client, team_a, "sunny") == ["second.jpg"]
    assert found(client, team_a, "cloudy") == ["first.jpg"]
    assert client_patch(first, {"tags": []}).status_code == 200
    assert found(client, team_a, "cloudy") == []

    assert client_patch(second, {"filename": "renamed.jpg"}).status_code == 200
    assert found(client, team_a, "second") == []
    assert found(client, team_a, "renamed") == ["renamed.jpg"]

    write_labels(app, first, ["snowmobile"])
    assert found(client, team_a, "snowmobile") == ["first.jpg"]
    write_labels(app, first, [])  # processed again: no label any more
    assert found(client, team_a, "snowmobile") == []

    with acting_for(app, team_a):
        collections.add_images(winter, [first, second], actor=ALICE)
    assert found(client, team_a, "winter") == ["first.jpg", "renamed.jpg"]
    with acting_for(app, team_a):
        collections.update_collection(winter, {"name": "Deep Winter"}, actor=ALICE)
        collections.add_images(spring, [second], actor=ALICE)  # moved
    assert found(client, team_a, "deep winter") == ["first.jpg"]
    assert found(client, team_a, "spring") == ["renamed.jpg"]
    with acting_for(app, team_a):
        collections.remove_images(spring, [second], actor=ALICE)
    assert found(client, team_a, "spring") == []

    assert client.delete(f"/api/v1/images/{first}", headers=team_a.headers()).status_code == 204
    assert found(client, team_a, "winter") == []
    with app.app_context(), unscoped():
        assert db.session.scalar(select(ImageSearch.image_id)) is not None
        documents = db.session.scalars(select(ImageSearch.image_id)).all()
    assert [str(d) for d in documents] == [second]


def test_text_combines_with_the_other_filters(app, client, team_a):
    album = make_collection(app, team_a, "Album")
    add(app, team_a, [(1, "cat-one.jpg"), (2, "cat-two.jpg")], tags=["pets"])
    add(app, team_a, [(3, "cat-three.jpg")], collection_id=album)
    add(app, team_a, [(4, "dog.jpg")], tags=["pets"], collection_id=album)

    for path in ("/api/v1/search", "/api/v1/images"):
        assert found(client, team_a, "cat", path, tag="pets") == ["cat-one.jpg", "cat-two.jpg"]
        assert found(client, team_a, "cat", path, collection_id=str(album)) == ["cat-three.jpg"]
        assert found(client, team_a, "pets", path, collection_id=str(album)) == ["dog.jpg"]
        assert found(client, team_a, "cat", path, status="pending") == [
            "cat-one.jpg",
            "cat-three.jpg",
            "cat-two.jpg",
        ]
        assert found(client, team_a, "cat", path, status="ready") == []
    with acting_for(app, team_a):
        listed, _ = images.list_images(10, text="album pets")  # what the gallery calls
    assert [i.filename for i in listed] == ["dog.jpg"]


@pytest.mark.parametrize("broad_from", [1, text_search.BROAD_MATCHES])
def test_results_paginate_newest_first(app, client, team_a, team_b, monkeypatch, broad_from):
    """Both plans (walking the team's images when many match, sorting the matches when few)
    give the same pages."""
    monkeypatch.setattr(text_search, "BROAD_MATCHES", broad_from)
    add(app, team_b, [(20, "page-of-b.jpg")])
    add(app, team_a, [(seed, f"page-{seed}.jpg") for seed in range(1, 8)])
    seen, cursor = [], None
    while True:
        params = {"q": "page", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/search", query_string=params, headers=team_a.headers()).json
        assert len(body["items"]) <= 3
        seen += [item["filename"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    listed = client.get("/api/v1/images?limit=50", headers=team_a.headers()).json["items"]
    assert seen == [item["filename"] for item in listed]
    assert len(seen) == 7


HOSTILE = [
    '"',
    '""',
    'cat"',
    '"cat',
    "*",
    "cat*",
    "-cat",
    "cat -dog",
    "NEAR(cat dog)",
    "cat NEAR dog",
    "cat AND",
    "OR",
    "NOT cat",
    "(",
    "cat)",
    "((cat)",
    "cat:*",
    "'cat'",
    "cat & | !dog",
    "<->",
    "^cat",
    "document:cat",
    "{cat dog}",
    "cat\x00dog",
    "\x00",
    "%",
    "_",
    "\\",
    "cat" * 300,
    "cat " * 400,
    "é" * 2000,
    "🐈 cat",
    "東京",
]


@pytest.mark.parametrize("q", HOSTILE, ids=[repr(q)[:30] for q in HOSTILE])
def test_hostile_queries_are_never_an_error(app, client, team_a, q):
    add(app, team_a, [(1, "cat.jpg"), (2, "dog.jpg")], tags=["東京"])
    for path in ("/api/v1/search", "/api/v1/images"):
        response = client.get(path, query_string={"q": q}, headers=team_a.headers())
        if len(q) > 1000:  # the schema's bound on q: a clear refusal
            assert response.status_code == 400, (q, response.json)
            assert "1000" in str(response.json["error"]["message"])
            continue
        if "\x00" in q:  # no field takes a NUL (app/strict_params.py)
            assert response.status_code == 400, (q, response.json)
            assert "'q' holds a NUL" in response.json["error"]["message"]
            continue
        assert response.status_code == 200, (q, response.json)
        names = {item["filename"] for item in response.json["items"]}
        assert names <= {"cat.jpg", "dog.jpg"}
    # Operators are only separators: these mean their words.
    assert found(client, team_a, "NEAR(cat dog)") == []
    assert found(client, team_a, "-cat") == ["cat.jpg"]
    assert found(client, team_a, "東京") == ["cat.jpg", "dog.jpg"]


@pytest.mark.parametrize("q", ["\u0085", "\u2028 \u3000", "\n\u0085"])
def test_a_query_of_other_separators_only_finds_nothing_as_the_document_allows(
    app, client, team_a, q
):
    """Spaces beyond ASCII are whitespace to Python, not to the document's pattern: such a
    query is taken (as one of punctuation only) and matches nothing."""
    add(app, team_a, [(1, "cat.jpg")])
    pattern = client.get("/api/v1/openapi.json").json["paths"]["/api/v1/search"]["get"]
    (q_schema,) = [p["schema"] for p in pattern["parameters"] if p["name"] == "q"]
    assert re.search(q_schema["pattern"], q)
    for path in ("/api/v1/search", "/api/v1/images"):
        response = client.get(path, query_string={"q": q}, headers=team_a.headers())
        assert response.status_code == 200, response.json
        assert response.json["items"] == []


@pytest.mark.parametrize("q", ["", " ", "\t\n"])
def test_an_empty_query_is_a_400_as_the_document_says(client, team_a, q):
    document = client.get("/api/v1/openapi.json").json
    for path in ("/api/v1/search", "/api/v1/images"):
        response = client.get(path, query_string={"q": q}, headers=team_a.headers())
        assert response.status_code == 400
        assert response.json["error"]["code"] == "bad_request"
        assert "q must not be empty or only spaces" in response.json["error"]["message"]
        (q_parameter,) = [
            p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "q"
        ]
        assert not re.search(q_parameter["schema"]["pattern"], q)
        assert re.search(q_parameter["schema"]["pattern"], f"{q}cat")


def test_search_needs_q_and_refuses_unknown_parameters(client, team_a):
    assert client.get("/api/v1/search", headers=team_a.headers()).status_code == 400
    response = client.get("/api/v1/search?q=a&team_id=x", headers=team_a.headers())
    assert response.status_code == 400 and "team_id" in response.json["error"]["message"]
    assert client.get("/api/v1/search?q=a&limit=0", headers=team_a.headers()).status_code == 400


def test_a_viewer_key_can_search_text(client, team_a, app):
    add(app, team_a, [(1, "cat.jpg")])
    response = client.get("/api/v1/search?q=cat", headers=team_a.headers(team_a.read_key))
    assert response.status_code == 200 and len(response.json["items"]) == 1


def test_the_query_uses_the_full_text_index(app, team_a):
    """The match goes through FTS5 / the GIN index, not a scan of every document."""
    add(app, team_a, [(1, "cat.jpg")])
    with acting_for(app, team_a):
        dialect = db.session.get_bind().dialect.name
        if dialect == "sqlite":
            plan = db.session.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT image_id FROM image_search JOIN image_search_fts "
                    "ON image_search_fts.rowid = image_search.id "
                    "WHERE image_search_fts.document MATCH '\"cat\"*'"
                )
            ).all()
            assert any("VIRTUAL TABLE INDEX" in row[-1] for row in plan), plan
        else:
            db.session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = db.session.execute(
                text(
                    "EXPLAIN SELECT image_id FROM image_search WHERE "
                    "to_tsvector('simple', document) @@ to_tsquery('simple', '''cat'':*')"
                )
            ).scalars()
            assert any(search_schema.PG_INDEX in line for line in plan)


def test_migration_backfills_documents_and_installs_every_trigger(app_env, tmp_path):
    """Revision 0008 on a database with images: each gets its document, searchable at once,
    and every trigger is there at the head revision."""

    from datetime import UTC, datetime

    env = empty_database_env(app_env, tmp_path)
    db_upgrade(env, "0007")
    engine = create_engine(normalise_database_url(env["DATABASE_URL"]))
    try:
        team_id, image_id, collection_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC)
        tables = db.metadata.tables
        with engine.begin() as conn:
            conn.execute(
                tables["team"].insert().values(id=team_id, name="T", slug="t", created_at=now)
            )
            conn.execute(
                tables["collection"]
                .insert()
                .values(
                    id=collection_id,
                    team_id=team_id,
                    name="Old Trips",
                    name_key="old trips",
                    description="",
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                tables["image"]
                .insert()
                .values(
                    id=image_id,
                    team_id=team_id,
                    filename="harbour.jpg",
                    content_type="image/jpeg",
                    size_bytes=1,
                    width=1,
                    height=1,
                    sha256="0" * 64,
                    status="ready",
                    storage_key="k",
                    thumbnail_key="t",
                    collection_id=collection_id,
                    metadata={},
                    created_at=now,
                )
            )
            conn.execute(tables["tag"].insert().values(id=1, team_id=team_id, name="boats"))
            conn.execute(tables["image_tag"].insert().values(image_id=image_id, tag_id=1))
        db_upgrade(env)
        dialect = engine.dialect.name
        with engine.connect() as conn:
            document = conn.execute(text("SELECT document FROM image_search")).scalar_one()
            assert {"harbour", "boats", "old", "trips"} <= set(document.lower().split()) | set(
                document.lower().replace(".", " ").split()
            )
            if dialect == "sqlite":
                names = conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                ).scalars()
                hits = conn.execute(
                    text(
                        "SELECT count(*) FROM image_search_fts "
                        'WHERE image_search_fts MATCH \'"boats" "trips"\''
                    )
                ).scalar_one()
            else:
                names = conn.execute(
                    text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
                ).scalars()
                hits = conn.execute(
                    text(
                        "SELECT count(*) FROM image_search WHERE to_tsvector('simple', document)"
                        " @@ to_tsquery('simple', 'boats & trips')"
                    )
                ).scalar_one()
            assert set(search_schema.trigger_names(dialect)) <= set(names)
            assert hits == 1
        db_upgrade(env, "0007", command="downgrade")
        assert "image_search" not in inspect(engine).get_table_names()
        assert not set(inspect(engine).get_table_names()) & search_schema.MANAGED_NAMES
        db_upgrade(env)
    finally:
        drop_everything(engine)
