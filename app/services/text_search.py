"""Text search over the images' search documents (filename, tags, labels, collection name),
through the database's own full-text index: FTS5 on SQLite, tsvector + GIN on PostgreSQL.

A query is its words: runs of letters and digits. A word matches as typed (each database
folding its case as it folds the documents') or as Python lowers it (tags are stored
case-folded by Python, whose lower() knows letters SQLite's Unicode 6.1 does not, and turns
'İ' into an 'i' and a mark). Every word must match (AND); the last one matches as a prefix, so
results follow a person typing. Everything else in the query (quotes, `*`, `-`, `NEAR`,
parentheses, NUL) only separates words: the database's query syntax is built from the words
alone, each quoted, so no input can make it fail.
"""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import column, false, func, literal_column, select, table

from app.errors import Invalid
from app.extensions import db
from app.models import Image, ImageSearch
from app.search_schema import FTS_TABLE

MAX_QUERY_CHARS = 200
MAX_WORDS = 16
MAX_WORD_CHARS = 100  # a longer word is matched by its first 100 characters, as a prefix
_WORD = re.compile(r"[^\W_]+")

_fts = table(FTS_TABLE, column("rowid"), column("document"))


def _forms(word: str, *, split: bool) -> list[list[str]]:
    """The ways a word may be written in a document, each as its tokens: as typed, and as
    Python lowers it, which may put a mark in it ('İ' is 'i' and a dot above). FTS5 reads such
    a mark as part of the word, PostgreSQL's documents cut the word there (`split`)."""
    lowered = word.lower()
    if lowered == word:
        return [[word]]
    return [[word], _WORD.findall(lowered) if split else [lowered]]


def words_of(text: str) -> list[tuple[str, bool]]:
    """The query's words, each with whether it matches as a prefix; Invalid for a query with
    nothing but spaces, as the API's document says them (ASCII whitespace). A query of
    punctuation or other separators only has no words, and matches nothing."""
    if not text.strip(" \t\n\r\f\v"):
        raise Invalid("q must not be empty")
    text = " ".join(text.split())
    found = _WORD.findall(unicodedata.normalize("NFC", text[:MAX_QUERY_CHARS]))
    found = found[:MAX_WORDS]
    return [
        (word[:MAX_WORD_CHARS], last or len(word) > MAX_WORD_CHARS)
        for last, word in ((i == len(found) - 1, w) for i, w in enumerate(found))
    ]


def _fts5_query(words: list[tuple[str, bool]]) -> str:
    """FTS5: each form of a word a quoted string (only letters, digits and marks: nothing to
    escape), `*` for a prefix; a word's forms ORed, the words ANDed."""

    def phrase(form: list[str], prefix: bool) -> str:
        return f'"{" ".join(form)}"' + ("*" if prefix else "")

    return " AND ".join(
        "(" + " OR ".join(phrase(form, prefix) for form in _forms(word, split=False)) + ")"
        for word, prefix in words
    )


def _tsquery(words: list[tuple[str, bool]]) -> str:
    """The same for PostgreSQL's to_tsquery: quoted lexemes, a form's tokens side by side."""

    def phrase(form: list[str], prefix: bool) -> str:
        return " <-> ".join(f"'{token}'" for token in form) + (":*" if prefix else "")

    return " & ".join(
        "(" + " | ".join(phrase(form, prefix) for form in _forms(word, split=True)) + ")"
        for word, prefix in words
    )


# With more matches than this in the team, the newest page is found sooner by walking the
# team's images newest first and keeping those that match, than by sorting every match.
BROAD_MATCHES = 1000


def image_filter(words: list[tuple[str, bool]]):
    """The condition on Image keeping the current team's images whose document has every
    word; `false()` when there are no words (nothing matches)."""
    if not words:
        return false()
    dialect = db.session.get_bind().dialect.name
    if dialect == "sqlite":
        expression = _fts5_query(words)
        documents = select(_fts.c.rowid).where(_fts.c.document.op("MATCH")(expression))
        matching = select(ImageSearch.image_id).where(ImageSearch.id.in_(documents))
        # Only a choice of plan, so the count streams from the FTS index alone, over teams.
        found = db.session.scalar(
            select(func.count()).select_from(documents.limit(BROAD_MATCHES).subquery())
        )
        if found >= BROAD_MATCHES:
            # SQLite's planner would look every match up and sort them all. Asked per image, it
            # walks the team's images newest first (ix_image_team_created) and probes the
            # matching documents, stopping at the page's end.
            return (
                select(ImageSearch.id)
                .where(ImageSearch.image_id == Image.id, ImageSearch.id.in_(documents))
                .exists()
            )
        return Image.id.in_(matching)
    # PostgreSQL: the same words as a tsquery; the expression is the GIN index's, so it is used,
    # and the planner chooses between the two plans above from its statistics.
    expression = _tsquery(words)
    simple = literal_column("'simple'")
    matching = select(ImageSearch.image_id).where(
        func.to_tsvector(simple, ImageSearch.document).bool_op("@@")(
            func.to_tsquery(simple, expression)
        )
    )
    return Image.id.in_(matching)
