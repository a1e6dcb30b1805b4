"""Importing a folder of images or a CSV of URLs."""

from __future__ import annotations

import os

import click
from flask.cli import with_appcontext

from app.cli.common import CLI, Command, team_by_slug
from app.errors import ServiceError
from app.services import collections, imports
from app.services import images as image_service
from app.services.ingest import Incoming, ingest
from app.tenancy import team_scope


@click.command("import", cls=Command)
@with_appcontext
@click.argument("source", type=click.Path(exists=True, dir_okay=True, readable=True))
@click.option("--team", "team_slug", required=True)
@click.option("--tags", default="", help="Comma-separated tags for every imported image.")
@click.option(
    "--collection",
    "collection_ref",
    default=None,
    help="The team's collection (its name or id) to put every imported image in.",
)
def import_command(source, team_slug, tags, collection_ref):
    """Import a folder of images, or a CSV of URLs (column `url`); prints a summary."""
    team = team_by_slug(team_slug)
    tag_names = image_service.parse_tags(tags)
    collection_id = None
    if collection_ref is not None:
        with team_scope(team.id):
            collection_id = collections.find(team.id, collection_ref).id
    if os.path.isdir(source):
        _import_folder(team, source, tag_names, collection_id)
    else:
        _import_csv(team, source, tag_names, collection_id)


def _files_to_import(folder: str) -> list[str]:
    """The folder's regular files, in its sub-folders too, but none hidden nor in a hidden
    folder (`.thumbnails/`, `.git/`: a viewer's or a tool's, not the person's pictures). A
    link to a file is followed (a folder of links is a way to pick pictures); a link to a
    folder is not (it could lead round in circles), nor is a pipe or a device read."""
    paths = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        paths += [
            os.path.join(root, name)
            for name in names
            if not name.startswith(".") and os.path.isfile(os.path.join(root, name))
        ]
    return sorted(paths)


def _import_folder(team, folder: str, tag_names: list[str], collection_id) -> None:
    paths = _files_to_import(folder)
    created = existing = 0
    failures = []
    with team_scope(team.id), click.progressbar(paths, label="Importing") as bar:
        for path in bar:
            # One file, one transaction: a bad file is reported and the others go on.
            try:
                with open(path, "rb") as fh:
                    [result] = ingest(
                        team.id,
                        [Incoming(fh, os.path.basename(path))],
                        actor=CLI,
                        tags=tag_names,
                        collection_id=collection_id,
                    )
            except (ServiceError, OSError) as exc:
                failures.append(f"{path}: {getattr(exc, 'message', exc)}")
                continue
            if result.existing:
                existing += 1
            else:
                created += 1
    for failure in failures:
        click.echo(failure, err=True)
    click.echo(f"{created} imported, {existing} already present, {len(failures)} failed")


def _import_csv(team, listing: str, tag_names: list[str], collection_id) -> None:
    with open(listing, "rb") as fh:
        data = fh.read(imports.MAX_CSV_BYTES + 1)
    batch = imports.create_batch(
        team.id,
        imports.parse_csv(data),
        tag_names,
        actor=CLI,
        collection_id=collection_id,
        enqueue=False,
    )
    with team_scope(team.id), click.progressbar(length=batch.total, label="Fetching") as bar:
        for position in range(batch.total):
            imports.run_item_at(batch.id, position)
            bar.update(1)
        summary = imports.progress(batch)
        for item in batch.items:
            if item.status == "failed":
                click.echo(f"{item.url}: {item.error}", err=True)
    click.echo(f"import {batch.id}: {summary['done']} done, {summary['failed']} failed")
