"""The text index: each image's search document (`image_search`: its filename, tags, labels and
collection name) and the database's own index over it, SQLite FTS5 or PostgreSQL full text.

Why triggers, not the services: the document joins four tables that many code paths write —
ingest, tag edits, processing's labels (replaced with a bulk DELETE, which no ORM event sees),
renames, collection renames and moves, deletes with their cascades, duplicate resolution, and
whatever comes next. A trigger in the database sees every one of them, bulk SQL and cascades
included, inside the writing transaction, so the document can never disagree with what
committed; a service-side refresh would be one forgotten call away from a stale index.

The same statements serve `db.create_all()` (the tests) and migration 0008 (`install`). A
SQLite migration that copies one of the source tables (Alembic's batch mode) drops its
triggers with the old table: call `install` again after it (`tests/test_text_search.py`
checks that every trigger exists at the head revision).

SQLite: `image_search_fts` is an FTS5 table over `image_search.document` (external content,
kept in step by the three triggers the FTS5 documentation gives), tokenized by unicode61
without folding diacritics. PostgreSQL: a GIN index over `to_tsvector('simple', document)`,
the document stored lower case with everything but letters and digits turned to spaces (the
default parser would read `IMG_0003.jpg` as one host name). Both find the same words.
"""

from __future__ import annotations

from sqlalchemy import event

FTS_TABLE = "image_search_fts"
PG_INDEX = "ix_image_search_words"
# FTS5 keeps its index in tables of its own; Alembic must leave them alone.
_SQLITE_SHADOWS = ("", "_data", "_idx", "_docsize", "_config", "_content")
MANAGED_NAMES = frozenset({FTS_TABLE + suffix for suffix in _SQLITE_SHADOWS} | {PG_INDEX})


def include_name(name, type_, parent_names) -> bool:
    """Alembic's filter: what this module creates is not part of the models' schema."""
    return name not in MANAGED_NAMES


# Bandit's B608 (SQL built from strings) is silenced below, line by line: these statements are put
# together from this module's constants and column names only; no input of any request or file
# ever reaches them.
def _sqlite_document(image_id: str) -> str:
    return f"""coalesce((
        SELECT i.filename
            || ' ' || coalesce((SELECT group_concat(t.name, ' ') FROM image_tag it
                                JOIN tag t ON t.id = it.tag_id WHERE it.image_id = i.id), '')
            || ' ' || coalesce((SELECT group_concat(l.name, ' ') FROM label l
                                WHERE l.image_id = i.id), '')
            || ' ' || coalesce((SELECT c.name FROM collection c
                                WHERE c.id = i.collection_id), '')
        FROM image i WHERE i.id = {image_id}), '')"""  # nosec B608


def _sqlite_refresh(image_id: str) -> str:
    return (
        f"UPDATE image_search SET document = {_sqlite_document(image_id)} "  # nosec B608
        f"WHERE image_id = {image_id};"
    )


def _sqlite_refresh_where(condition: str) -> str:
    return (
        f"UPDATE image_search SET document = {_sqlite_document('image_search.image_id')} "  # nosec B608
        f"WHERE image_id IN ({condition});"
    )


SQLITE_TRIGGERS = {
    # The FTS index follows the documents.
    "image_search_ai": "AFTER INSERT ON image_search BEGIN "  # nosec B608
    f"INSERT INTO {FTS_TABLE}(rowid, document) VALUES (new.id, new.document); END",
    "image_search_ad": "AFTER DELETE ON image_search BEGIN "  # nosec B608
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, document) "
    "VALUES ('delete', old.id, old.document); END",
    "image_search_au": "AFTER UPDATE OF document ON image_search BEGIN "  # nosec B608
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, document) "
    "VALUES ('delete', old.id, old.document); "
    f"INSERT INTO {FTS_TABLE}(rowid, document) VALUES (new.id, new.document); END",
    # The documents follow their sources.
    "image_search_image_ai": "AFTER INSERT ON image BEGIN "  # nosec B608
    "INSERT INTO image_search(team_id, image_id, document) "
    f"VALUES (new.team_id, new.id, {_sqlite_document('new.id')}); END",
    "image_search_image_au": "AFTER UPDATE OF filename, collection_id ON image BEGIN "
    f"{_sqlite_refresh('new.id')} END",
    # Also with foreign keys off (as during migrations), where no cascade would remove it.
    "image_search_image_ad": "AFTER DELETE ON image BEGIN "
    "DELETE FROM image_search WHERE image_id = old.id; END",
    "image_search_image_tag_ai": "AFTER INSERT ON image_tag BEGIN "
    f"{_sqlite_refresh('new.image_id')} END",
    "image_search_image_tag_ad": "AFTER DELETE ON image_tag BEGIN "
    f"{_sqlite_refresh('old.image_id')} END",
    "image_search_label_ai": f"AFTER INSERT ON label BEGIN {_sqlite_refresh('new.image_id')} END",
    "image_search_label_ad": f"AFTER DELETE ON label BEGIN {_sqlite_refresh('old.image_id')} END",
    "image_search_label_au": "AFTER UPDATE OF name, image_id ON label BEGIN "
    f"{_sqlite_refresh('old.image_id')} {_sqlite_refresh('new.image_id')} END",
    "image_search_tag_au": "AFTER UPDATE OF name ON tag BEGIN "
    f"{_sqlite_refresh_where('SELECT image_id FROM image_tag WHERE tag_id = new.id')} END",
    "image_search_collection_au": "AFTER UPDATE OF name ON collection BEGIN "
    f"{_sqlite_refresh_where('SELECT id FROM image WHERE collection_id = new.id')} END",
}

SQLITE_INSTALL = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(document, "
    "content='image_search', content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    *(f"CREATE TRIGGER IF NOT EXISTS {name} {body}" for name, body in SQLITE_TRIGGERS.items()),
]
SQLITE_BACKFILL = (
    "INSERT INTO image_search(team_id, image_id, document) "  # nosec B608
    f"SELECT image.team_id, image.id, {_sqlite_document('image.id')} FROM image "
    "WHERE image.id NOT IN (SELECT image_id FROM image_search)"
)
SQLITE_UNINSTALL = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS),
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
]

POSTGRESQL_TRIGGERS = {
    "image_search_image": "AFTER INSERT OR UPDATE OF filename, collection_id ON image",
    "image_search_image_tag": "AFTER INSERT OR DELETE ON image_tag",
    "image_search_label": "AFTER INSERT OR DELETE OR UPDATE OF name, image_id ON label",
    "image_search_tag": "AFTER UPDATE OF name ON tag",
    "image_search_collection": "AFTER UPDATE OF name ON collection",
}

POSTGRESQL_INSTALL = [
    f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON image_search "
    "USING gin (to_tsvector('simple', document))",
    """CREATE OR REPLACE FUNCTION image_search_document(target uuid) RETURNS text
    LANGUAGE sql STABLE AS $$
        SELECT coalesce(regexp_replace(lower(concat_ws(' ', i.filename,
            (SELECT string_agg(t.name, ' ') FROM image_tag it JOIN tag t ON t.id = it.tag_id
             WHERE it.image_id = i.id),
            (SELECT string_agg(l.name, ' ') FROM label l WHERE l.image_id = i.id),
            (SELECT c.name FROM collection c WHERE c.id = i.collection_id))),
            '[^[:alnum:]]+', ' ', 'g'), '')
        FROM image i WHERE i.id = target
    $$""",
    """CREATE OR REPLACE FUNCTION image_search_refresh() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'image' THEN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO image_search(team_id, image_id, document)
                VALUES (NEW.team_id, NEW.id, coalesce(image_search_document(NEW.id), ''));
            ELSE
                UPDATE image_search SET document = coalesce(image_search_document(NEW.id), '')
                WHERE image_id = NEW.id;
            END IF;
        ELSIF TG_TABLE_NAME IN ('image_tag', 'label') THEN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE image_search
                SET document = coalesce(image_search_document(OLD.image_id), '')
                WHERE image_id = OLD.image_id;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                UPDATE image_search
                SET document = coalesce(image_search_document(NEW.image_id), '')
                WHERE image_id = NEW.image_id;
            END IF;
        ELSIF TG_TABLE_NAME = 'tag' THEN
            UPDATE image_search s SET document = coalesce(image_search_document(s.image_id), '')
            WHERE s.image_id IN (SELECT image_id FROM image_tag WHERE tag_id = NEW.id);
        ELSIF TG_TABLE_NAME = 'collection' THEN
            UPDATE image_search s SET document = coalesce(image_search_document(s.image_id), '')
            WHERE s.image_id IN (SELECT id FROM image WHERE collection_id = NEW.id);
        END IF;
        RETURN NULL;
    END
    $$""",
    *(
        f"CREATE OR REPLACE TRIGGER {name} {when} "
        "FOR EACH ROW EXECUTE FUNCTION image_search_refresh()"
        for name, when in POSTGRESQL_TRIGGERS.items()
    ),
]
POSTGRESQL_BACKFILL = (
    "INSERT INTO image_search(team_id, image_id, document) "
    "SELECT image.team_id, image.id, image_search_document(image.id) FROM image "
    "WHERE image.id NOT IN (SELECT image_id FROM image_search)"
)
POSTGRESQL_UNINSTALL = [
    # Dropping the function drops the triggers that call it.
    "DROP FUNCTION IF EXISTS image_search_refresh() CASCADE",
    "DROP FUNCTION IF EXISTS image_search_document(uuid)",
    f"DROP INDEX IF EXISTS {PG_INDEX}",
]


def _statements(dialect: str, sqlite: list[str], postgresql: list[str]) -> list[str]:
    if dialect == "sqlite":
        return sqlite
    if dialect == "postgresql":
        return postgresql
    raise RuntimeError(f"text search supports SQLite and PostgreSQL, not {dialect}")


def install(connection) -> None:
    """Create the text index and its triggers (again: it is idempotent)."""
    for statement in _statements(connection.dialect.name, SQLITE_INSTALL, POSTGRESQL_INSTALL):
        connection.exec_driver_sql(statement)


def backfill(connection) -> None:
    """Write the document of every image that has none."""
    statement = _statements(connection.dialect.name, [SQLITE_BACKFILL], [POSTGRESQL_BACKFILL])
    connection.exec_driver_sql(statement[0])


def uninstall(connection) -> None:
    """Drop the text index and its triggers (the documents' table is the models')."""
    for statement in _statements(connection.dialect.name, SQLITE_UNINSTALL, POSTGRESQL_UNINSTALL):
        connection.exec_driver_sql(statement)


def trigger_names(dialect: str) -> list[str]:
    return list(_statements(dialect, list(SQLITE_TRIGGERS), list(POSTGRESQL_TRIGGERS)))


def attach(metadata, table_name: str = "image_search") -> None:
    """Have `metadata.create_all()` install the index once every table exists, and
    `drop_all()` remove what it would not know to."""

    def after_create(target, connection, tables=(), **kw):
        if any(table.name == table_name for table in tables):
            install(connection)

    def before_drop(target, connection, tables=(), **kw):
        if any(table.name == table_name for table in tables):
            uninstall(connection)

    event.listen(metadata, "after_create", after_create)
    event.listen(metadata, "before_drop", before_drop)
