"""RQ job functions: module-level, given ids, loading their own rows, idempotent.

Each runs in an application context of its own (app/worker.py), with a fresh session.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import current_app
from rq import get_current_job

from app import queue
from app.services import duplicates, imports, indexing, processing
from app.services import reconcile as reconcile_service


def _final_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def process_image(image_id: str) -> str:
    """Compute renditions and embeddings of one image and mark it ready."""
    return processing.process_image(uuid.UUID(image_id), final_attempt=_final_attempt())


def import_item(batch_id: str, position: int) -> str | None:
    """Fetch and ingest one item of an import batch, unless it is finished already."""
    return imports.run_item_at(uuid.UUID(batch_id), position, final_attempt=_final_attempt())


def import_items(batch_id: str, start: int, stop: int) -> int:
    """A slice of a batch: jobs of this kind were queued before imports became one URL per job
    and may still be waiting in Redis after an upgrade."""
    return imports.run_items(uuid.UUID(batch_id), start, stop, final_attempt=_final_attempt())


def duplicate_report(team_id: str, tier: str, threshold: str) -> int:
    """Make one duplicate report of a team and keep it for the pages and the API to read;
    returns how many groups it has."""
    return len(duplicates.report(uuid.UUID(team_id), tier, threshold))


def sweep_storage() -> int:
    """The daily sweep of the storage for what killed writers left; returns how much it
    removed."""
    return reconcile_service.sweep_storage()


def build_index(team_id: str, embedder: str) -> int | None:
    """Build and publish a new index version for one (team, embedder); returns the version."""
    build = indexing.build_index(uuid.UUID(team_id), embedder)
    return build.version if build else None


def check_index(team_id: str, embedder: str) -> int | None:
    """Rebuild one (team, embedder) index if it lacks embeddings and none came for a while."""
    build = indexing.check_index(uuid.UUID(team_id), embedder)
    return build.version if build else None


def reconcile() -> int:
    """The periodic sweep: queue images stuck too long again, then schedule the next sweep."""
    try:
        return reconcile_service.reconcile(
            timedelta(seconds=current_app.config["RECONCILE_AFTER_SECONDS"])
        )
    finally:
        queue.schedule_reconcile()
