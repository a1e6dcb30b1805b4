"""Backups of one team: `flask export` writes its archive, `flask import-archive` restores it
(app/services/archive.py describes the format)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.cli.common import CLI, Command, team_by_slug
from app.services import archive


@click.command("export", cls=Command)
@with_appcontext
@click.option("--team", "team_slug", required=True, help="The slug of the team to export.")
@click.option(
    "--to",
    "path",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The archive to write (a tar file; replaced only once whole).",
)
def export_command(team_slug, path):
    """Write one team's images, tags, collections and metadata to an archive."""
    summary = archive.export_team(team_by_slug(team_slug).id, path)
    click.echo(
        f"exported team {summary.team_slug}: {summary.images} images, "
        f"{summary.collections} collections, {summary.tags} tags to {path}"
    )


@click.command("import-archive", cls=Command)
@with_appcontext
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--team-name", default=None, help="Name the new team this (default: as exported).")
def import_archive_command(path, team_name):
    """Create a team from an archive made by `flask export`; its images are then processed
    by the workers, which rebuild its indexes."""
    summary = archive.import_archive(path, team_name=team_name, actor=CLI)
    ids = "" if summary.ids_kept else " (with new ids: the archive's are in use here)"
    click.echo(
        f"imported team {summary.team_slug}: {summary.images} images, "
        f"{summary.collections} collections, {summary.tags} tags{ids}; "
        "the workers now process its images"
    )
