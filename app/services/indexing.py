"""Building the nearest-neighbour index of one (team, embedder) from its embeddings, and
deciding when to.

An index holds the embeddings up to its build's watermark; searches scan the ones above it
(the "delta") exactly. A rebuild is asked for when the delta reaches
max(INDEX_REBUILD_MIN_DELTA, INDEX_REBUILD_FRACTION of the index), or once no embedding has come
for INDEX_QUIET_SECONDS. Builds of one (team, embedder) run one at a time (a Redis lock); a
build that finds another running leaves the work to it, since the running one asks again for
whatever came while it built.

When an embedder's version changes, stored images are embedded again in the background; the
index of the new version is published only once it holds every ready image, and until then
searches answer from the old version's index with the old vectors.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import redis
from flask import current_app
from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app import queue
from app.extensions import db, redis_connection
from app.models import Embedding, Image, IndexBuild, Team, utcnow
from app.runtime import delete_objects, plugins, storage
from app.services.transaction import unit_of_work

log = logging.getLogger(__name__)


def current_build(
    team_id: uuid.UUID, embedder: str, embedder_version: str | None = None
) -> IndexBuild | None:
    """The newest build of this pair (of one embedder version, if given) made by the index
    plugin now configured for it: another plugin's files cannot be loaded by this one (after a
    change of EMBEDDER_INDEXES or VECTOR_INDEX), so such a build counts as none, and the sweep
    has the pair built again."""
    query = select(IndexBuild).where(
        IndexBuild.team_id == team_id,
        IndexBuild.embedder == embedder,
        IndexBuild.index_kind == plugins().index_name(embedder),
    )
    if embedder_version is not None:
        query = query.where(IndexBuild.embedder_version == embedder_version)
    return db.session.scalar(query.order_by(IndexBuild.version.desc()).limit(1))


def serving_build(team_id: uuid.UUID, embedder: str) -> IndexBuild | None:
    """The build searches read: the newest of the embedder's current version or, while the
    index of a new version is being made, the newest of an older one."""
    version = plugins().embedders[embedder].version
    return current_build(team_id, embedder, version) or current_build(team_id, embedder)


def embeddings_query(
    team_id: uuid.UUID, embedder: str, after_id: int = 0, version: str | None = None
):
    """Embeddings of one pair with ids above `after_id`, oldest first: of `version`, by default
    the embedder's current one."""
    if version is None:
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


# --- when to build ---------------------------------------------------------------------------


def rebuild_threshold(indexed: int) -> int:
    """The delta that asks for a rebuild at once, for an index of `indexed` items."""
    config = current_app.config
    return max(
        1,
        config["INDEX_REBUILD_MIN_DELTA"],
        math.ceil(config["INDEX_REBUILD_FRACTION"] * indexed),
    )


def delta_size(team_id: uuid.UUID, embedder: str, at_most: int | None = None) -> int:
    """Embeddings of the current version the newest build of that version lacks; counting
    stops at `at_most` (a cheap test against a threshold)."""
    version = plugins().embedders[embedder].version
    build = current_build(team_id, embedder, version)
    rows = embeddings_query(team_id, embedder, build.watermark if build else 0).with_only_columns(
        Embedding.id
    )
    if at_most is not None:
        rows = rows.limit(at_most)
    return db.session.scalar(select(func.count()).select_from(rows.subquery()))


def index_changed(team_id: uuid.UUID, embedder: str) -> None:
    """After new embeddings of one pair: ask for a rebuild when the delta is large enough,
    else for a check once no more have come for INDEX_QUIET_SECONDS."""
    try:
        serving = serving_build(team_id, embedder)
        threshold = rebuild_threshold(serving.item_count if serving else 0)
        delta = delta_size(team_id, embedder, at_most=threshold)
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("could not measure the %s delta of team %s; rebuilding", embedder, team_id)
        queue.request_index_build(team_id, embedder)
        return
    if delta >= threshold:
        queue.request_index_build(team_id, embedder)
    elif delta:
        queue.request_index_check(team_id, embedder)


def indexes_behind() -> list[tuple[uuid.UUID, str]]:
    """(team, embedder) pairs whose newest build lacks embeddings of the current version.

    Normally each such pair has a build or a quiet-period check coming; the sweep asks again
    for all of them, because those requests live in Redis and die with a worker killed
    mid-build or a Redis restarted without persistence.
    """
    behind = []
    for team_id in db.session.scalars(select(Team.id).order_by(Team.slug)):
        for name in plugins().embedders:
            if delta_size(team_id, name, at_most=1):
                behind.append((team_id, name))
    return behind


def check_index(team_id: uuid.UUID, embedder: str) -> IndexBuild | None:
    """The quiet-period check: rebuild if the delta is not empty and its newest embedding is
    INDEX_QUIET_SECONDS old. If newer ones came, their own check is already scheduled."""
    if embedder not in plugins().embedders:
        return None
    version = plugins().embedders[embedder].version
    build = current_build(team_id, embedder, version)
    newest = db.session.scalar(
        select(Embedding.created_at)
        .where(
            Embedding.team_id == team_id,
            Embedding.embedder == embedder,
            Embedding.version == version,
            Embedding.id > (build.watermark if build else 0),
        )
        .order_by(Embedding.id.desc())
        .limit(1)
    )
    quiet = timedelta(seconds=current_app.config["INDEX_QUIET_SECONDS"])
    if newest is None or utcnow() - newest < quiet:
        return None
    return build_index(team_id, embedder)


# --- building ----------------------------------------------------------------------------------


class _BuildLock:
    """One build at a time per (team, embedder), across processes: a Redis lock held as a lease.

    The lease lasts three worker heartbeats, as a worker's other duties do before they pass to
    another, and a thread of the holder renews it while the build runs: a build of any length
    keeps it, and a holder killed mid-build (SIGKILL, a lost host) frees it within one lease
    rather than blocking the pair's builds for a whole job timeout.
    """

    def __init__(self, team_id: uuid.UUID, embedder: str):
        config = current_app.config
        self.lease = max(1, 3 * config["WORKER_HEARTBEAT_SECONDS"])
        # How long `flask index rebuild` waits for a running build: that build's longest run.
        self.wait_seconds = config["JOB_TIMEOUT_SECONDS"] + self.lease
        self._lock = redis_connection.client.lock(
            f"likeness:{config['QUEUE_NAME']}:index-build:{team_id}:{embedder}",
            timeout=self.lease,
            thread_local=False,  # the renewing thread needs the token the building one took
        )
        self._held = False
        self._released = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait: bool) -> bool:
        try:
            self._held = bool(
                self._lock.acquire(
                    blocking=wait, blocking_timeout=self.wait_seconds if wait else None
                )
            )
        except redis.RedisError as exc:
            # No Redis, no worker builds either; the version's unique constraint still keeps
            # two publishers apart.
            log.warning("building without the build lock, Redis is unreachable: %s", exc)
            self._held = False
            return True
        if self._held:
            self._renewer = threading.Thread(
                target=self._renew, name="index-build-lease", daemon=True
            )
            self._renewer.start()
        return self._held

    def _renew(self) -> None:
        while not self._released.wait(self.lease / 3):
            try:
                self._lock.reacquire()
            except redis.RedisError as exc:
                # Lost (Redis went away, or the lease ran out and another took it): the build
                # goes on, and the version's unique constraint still keeps two publishers apart.
                log.warning("could not renew the index build lease: %s", exc)
                return

    def release(self) -> None:
        self._released.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self._held:
            return
        try:
            self._lock.release()
        except redis.RedisError as exc:  # expired meanwhile, or Redis went away: harmless
            log.warning("could not release the index build lock: %s", exc)


def build_index(team_id: uuid.UUID, embedder: str, wait: bool = False) -> IndexBuild | None:
    """Build a new version from the database, store its files, then make it current at once.

    Returns None when the embedder is no longer enabled, another build of the pair is running
    (with `wait`, it waits for that one instead), a concurrent build took the version, or the
    embedder's version changed and images still wait to be embedded again.
    """
    if embedder not in plugins().embedders:
        return None
    lock = _BuildLock(team_id, embedder)
    if not lock.acquire(wait):
        log.info("a %s build of team %s is running; it will take what came", embedder, team_id)
        return None
    try:
        build = _build(team_id, embedder)
    finally:
        lock.release()
    if build is None:
        return None
    _forget_other_versions(team_id, embedder, build.embedder_version)
    prune_builds(team_id, embedder)
    index_changed(team_id, embedder)  # whatever came while this one was built
    return build


def images_waiting(team_id: uuid.UUID, embedder: str) -> int:
    """Ready images of the team without an embedding of the embedder's current version."""
    version = plugins().embedders[embedder].version
    embedded = exists().where(
        and_(
            Embedding.image_id == Image.id,
            Embedding.embedder == embedder,
            Embedding.version == version,
        )
    )
    return db.session.scalar(
        select(func.count(Image.id)).where(
            Image.team_id == team_id, Image.status == "ready", ~embedded
        )
    )


def _build(team_id: uuid.UUID, embedder: str) -> IndexBuild | None:
    started = time.monotonic()
    plugin = plugins().embedders[embedder]
    serving = current_build(team_id, embedder)
    if serving is not None and serving.embedder_version != plugin.version:
        waiting = images_waiting(team_id, embedder)
        if waiting:
            # Publishing now would swap a complete index for a partial one.
            log.info(
                "%s of team %s: %d images still to embed with version %s; the old index serves",
                embedder,
                team_id,
                waiting,
                plugin.version,
            )
            return None
    ids, vectors, watermark = load_vectors(
        db.session.execute(embeddings_query(team_id, embedder)), embedder
    )
    index = plugins().new_index(embedder, current_app.config)
    index.build(ids, vectors)
    del vectors  # the index holds what it needs; a 100k x 1280 matrix is 512 MB
    version = (
        db.session.scalar(
            select(func.max(IndexBuild.version)).where(
                IndexBuild.team_id == team_id, IndexBuild.embedder == embedder
            )
        )
        or 0
    ) + 1
    # A folder of this attempt's own: should two builds race for one version (the lock lost),
    # the loser's clean-up deletes its files only, and neither's files mix with the other's.
    prefix = f"teams/{team_id}/indexes/{embedder}/v{version}-{uuid.uuid4().hex[:12]}"
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
            embedder_version=plugin.version,
            index_kind=plugins().index_name(embedder),
            version=version,
            item_count=len(ids),
            storage_keys=keys,
            watermark=watermark,
            build_seconds=round(time.monotonic() - started, 3),
        )
        with unit_of_work():  # the swap: searches read this version from here on
            db.session.add(build)
    except IntegrityError:
        delete_objects(keys, of="an index build")
        log.info("a concurrent build of %s for team %s took version %s", embedder, team_id, version)
        return None
    except BaseException:
        delete_objects(keys, of="an index build")
        raise
    return build


def _forget_other_versions(team_id: uuid.UUID, embedder: str, version: str) -> None:
    """Once an index of `version` is published, vectors of other versions serve nothing."""
    with unit_of_work():
        deleted = db.session.execute(
            delete(Embedding).where(
                Embedding.team_id == team_id,
                Embedding.embedder == embedder,
                Embedding.version != version,
            )
        ).rowcount
    if deleted:
        log.info(
            "dropped %d %s vectors of team %s not of version %s",
            deleted,
            embedder,
            team_id,
            version,
        )


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
        delete_objects(build.storage_keys, of="an index build")
    if doomed:
        with unit_of_work():
            db.session.execute(delete(IndexBuild).where(IndexBuild.id.in_([b.id for b in doomed])))
    return len(doomed)


# --- status ------------------------------------------------------------------------------------


@dataclass
class IndexStatus:
    team: str  # slug
    embedder: str
    embedder_version: str  # the enabled embedder's
    index_version: int | None  # the build searches read
    index_embedder_version: str | None  # the embedder version that build holds
    item_count: int
    delta: int  # embeddings of the current version the newest such build lacks
    waiting: int  # ready images still to embed with the current version
    built_at: datetime | None
    build_seconds: float | None


def index_status(team_id: uuid.UUID | None = None) -> list[IndexStatus]:
    """Per team (all, or one) and enabled embedder: what searches read and what it lacks."""
    teams = db.session.scalars(
        select(Team).where(Team.id == team_id) if team_id else select(Team).order_by(Team.slug)
    ).all()
    rows = []
    for team in teams:
        for name, embedder in plugins().embedders.items():
            build = serving_build(team.id, name)
            rows.append(
                IndexStatus(
                    team=team.slug,
                    embedder=name,
                    embedder_version=embedder.version,
                    index_version=build.version if build else None,
                    index_embedder_version=build.embedder_version if build else None,
                    item_count=build.item_count if build else 0,
                    delta=delta_size(team.id, name),
                    waiting=images_waiting(team.id, name),
                    built_at=build.built_at if build else None,
                    build_seconds=build.build_seconds if build else None,
                )
            )
    return rows
