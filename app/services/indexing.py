"""Building the nearest-neighbour index of one (team, embedder) from its embeddings."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from datetime import timedelta

import numpy as np
from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Embedding, IndexBuild, utcnow
from app.runtime import plugins, storage
from app.services.transaction import unit_of_work

log = logging.getLogger(__name__)


def current_build(team_id: uuid.UUID, embedder: str) -> IndexBuild | None:
    """The newest build of this pair: the one searches read."""
    return db.session.scalar(
        select(IndexBuild)
        .where(IndexBuild.team_id == team_id, IndexBuild.embedder == embedder)
        .order_by(IndexBuild.version.desc())
        .limit(1)
    )


def embeddings_query(team_id: uuid.UUID, embedder: str, after_id: int = 0):
    """Current-version embeddings of one pair with ids above `after_id`, oldest first."""
    version = plugins().embedders[embedder].version
    return (
        select(Embedding.id, Embedding.image_id, Embedding.vector)
        .where(
            Embedding.team_id == team_id,
            Embedding.embedder == embedder,
            Embedding.version == version,
            Embedding.id > after_id,
        )
        .order_by(Embedding.id)
    )


def load_vectors(rows, embedder: str) -> tuple[list[str], np.ndarray, int]:
    """(image ids, vectors, highest embedding id) from rows of `embeddings_query`."""
    codec = plugins().embedders[embedder].codec
    ids, vectors, watermark = [], [], 0
    for row in rows:
        ids.append(str(row.image_id))
        vectors.append(codec.from_bytes(row.vector))
        watermark = max(watermark, row.id)
    return ids, codec.stack(vectors), watermark


def build_index(team_id: uuid.UUID, embedder: str) -> IndexBuild | None:
    """Build a new version from the database, store its files, then make it current at once.

    Returns None when the embedder is no longer enabled or a concurrent build took the version.
    """
    if embedder not in plugins().embedders:
        return None
    ids, vectors, watermark = load_vectors(
        db.session.execute(embeddings_query(team_id, embedder)), embedder
    )
    index = plugins().new_index(embedder, current_app.config)
    index.build(ids, vectors)
    version = (
        db.session.scalar(
            select(func.max(IndexBuild.version)).where(
                IndexBuild.team_id == team_id, IndexBuild.embedder == embedder
            )
        )
        or 0
    ) + 1
    prefix = f"teams/{team_id}/indexes/{embedder}/v{version}"
    keys: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="likeness-index-") as directory:
            for name in index.save(directory):
                with open(os.path.join(directory, name), "rb") as f:
                    storage().save(f"{prefix}/{name}", f, "application/octet-stream")
                keys.append(f"{prefix}/{name}")
        build = IndexBuild(
            team_id=team_id,
            embedder=embedder,
            embedder_version=plugins().embedders[embedder].version,
            index_kind=plugins().index_name(embedder),
            version=version,
            item_count=len(ids),
            storage_keys=keys,
            watermark=watermark,
        )
        with unit_of_work():  # the swap: searches read the highest version from here on
            db.session.add(build)
    except IntegrityError:
        _delete_keys(keys)
        log.info("a concurrent build of %s for team %s took version %s", embedder, team_id, version)
        return None
    except BaseException:
        _delete_keys(keys)
        raise
    prune_builds(team_id, embedder)
    return build


def prune_builds(team_id: uuid.UUID, embedder: str) -> int:
    """Delete superseded builds once their successor is older than the grace period.

    The grace period lets a web process that read the old pointer finish downloading it.
    """
    builds = db.session.scalars(
        select(IndexBuild)
        .where(IndexBuild.team_id == team_id, IndexBuild.embedder == embedder)
        .order_by(IndexBuild.version.desc())
    ).all()
    cutoff = utcnow() - timedelta(seconds=current_app.config["INDEX_GRACE_SECONDS"])
    doomed = [
        old for newer, old in zip(builds, builds[1:], strict=False) if newer.built_at <= cutoff
    ]
    for build in doomed:
        _delete_keys(build.storage_keys)
    if doomed:
        with unit_of_work():
            db.session.execute(delete(IndexBuild).where(IndexBuild.id.in_([b.id for b in doomed])))
    return len(doomed)


def _delete_keys(keys: list[str]) -> None:
    for key in keys:
        try:
            storage().delete(key)
        except Exception:
            log.exception("could not delete index file %s", key)
