"""What must hold after any fault: one shared check, run at the end of each fault scenario.

- every stored object has a row (an image, an index build, a direct upload), and no temporary
  file of a write that broke off is left behind;
- every row has its objects (original, thumbnail, preview once made, index files);
- every `ready` image is in its team's search results;
- nothing of one team is visible to another.

It reads the database directly for what exists, and asks the API what each team can see.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from sqlalchemy import select

from app.extensions import db
from app.models import DirectUpload, Image, IndexBuild
from app.services import reconcile
from app.tenancy import unscoped

TEMPORARY_PREFIXES = (".tmp-", ".probe-")


def stored_keys(app) -> set[str]:
    """Every object key in the app's storage: files under STORAGE_ROOT, or the S3 bucket."""
    config = app.config
    if config.get("STORAGE_BACKEND", "local") == "s3":
        from tests.s3server import admin_client

        client = admin_client(config["S3_ENDPOINT_URL"])
        keys = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=config["S3_BUCKET"]):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys
    root = config["STORAGE_ROOT"]
    keys = set()
    for directory, _, files in os.walk(root):
        for name in files:
            keys.add(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return keys


def _rows(app):
    with app.app_context(), unscoped():
        db.session.expire_all()
        images = db.session.execute(
            select(
                Image.id,
                Image.team_id,
                Image.status,
                Image.storage_key,
                Image.thumbnail_key,
                Image.preview_key,
            )
        ).all()
        builds = db.session.scalars(select(IndexBuild.storage_keys)).all()
        uploads = db.session.scalars(select(DirectUpload.storage_key)).all()
    return images, builds, uploads


def check_invariants(app, teams: Iterable, client=None) -> None:
    """Assert every invariant; `teams` are the tests' TeamFixtures (each with a full key)."""
    teams = list(teams)
    client = client or app.test_client()
    images, builds, uploads = _rows(app)
    keys = stored_keys(app)

    half_written = sorted(k for k in keys if k.rsplit("/", 1)[-1].startswith(TEMPORARY_PREFIXES))
    assert half_written == [], f"half-written objects left: {half_written}"

    # Every stored object has a row.
    image_ids = {str(row.id): str(row.team_id) for row in images}
    index_keys = {key for build in builds for key in build}
    orphans = []
    for key in keys:
        parts = key.split("/")
        if len(parts) >= 4 and parts[0] == "teams" and parts[2] == "images":
            if image_ids.get(parts[3]) != parts[1]:
                orphans.append(key)
        elif len(parts) >= 3 and parts[0] == "teams" and parts[2] == "indexes":
            if key not in index_keys:
                orphans.append(key)
        elif key not in uploads:
            orphans.append(key)
    assert orphans == [], f"stored objects without a row: {sorted(orphans)}"

    # Every row has its objects.
    wanted = [k for row in images for k in (row.storage_key, row.thumbnail_key, row.preview_key)]
    wanted += list(index_keys)
    missing = sorted(k for k in wanted if k is not None and k not in keys)
    assert missing == [], f"rows whose objects are missing: {missing}"

    # Every ready image is in its team's search results, and only its own team's.
    by_team: dict[str, list] = {}
    for row in images:
        by_team.setdefault(str(row.team_id), []).append(row)
    for team in teams:
        mine = by_team.get(str(team.id), [])
        ready = {str(row.id) for row in mine if row.status == "ready"}
        for image_id in sorted(ready)[:3]:  # a few probes: each lists every ready image
            response = client.get(
                f"/api/v1/images/{image_id}/similar?k=100", headers=team.headers()
            )
            assert response.status_code == 200, response.json
            found = {match["image"]["id"] for match in response.json["items"]}
            assert found == ready - {image_id}, (
                f"team {team.team.slug}: search from {image_id} found {sorted(found)}, "
                f"ready are {sorted(ready)}"
            )

        listed = set()
        cursor = None
        while True:
            query = "/api/v1/images?limit=200" + (f"&cursor={cursor}" if cursor else "")
            page = client.get(query, headers=team.headers())
            assert page.status_code == 200, page.json
            listed.update(item["id"] for item in page.json["items"])
            if not (cursor := page.json["next_cursor"]):
                break
        assert listed == {str(row.id) for row in mine}, f"team {team.team.slug} lists {listed}"

        others = [row for row in images if str(row.team_id) != str(team.id)]
        for row in others[:20]:
            for path in (f"/api/v1/images/{row.id}", f"/api/v1/images/{row.id}/similar"):
                response = client.get(path, headers=team.headers())
                assert response.status_code == 404, (path, response.status_code)


def remove_killed_builds_files(app) -> list[str]:
    """Run the daily sweep's orphan pass at once, after a worker was killed mid-build, and
    return what it removed, which must be index files that no build names and nothing else.

    Each build saves into a folder of its own attempt, so one killed between its files and its
    row leaves files no build names (the next build uses another folder); the daily storage
    sweep removes them. Scenarios that kill a worker run it here rather than wait a day.
    """
    _, builds, _ = _rows(app)
    published = {key for build in builds for key in build}
    unpublished = sorted(
        key
        for key in stored_keys(app)
        if key.split("/")[2:3] == ["indexes"] and key not in published
    )
    with app.app_context():
        removed = reconcile.remove_orphaned_objects(older_than=0)
    assert removed == len(unpublished), f"orphans other than a killed build's: {removed}"
    return unpublished
