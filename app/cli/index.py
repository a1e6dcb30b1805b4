"""Nearest-neighbour indexes."""

from __future__ import annotations

import click

from app.cli.common import Group, team_by_slug
from app.services import indexing


@click.group("index", cls=Group)
def index_group():
    """Manage nearest-neighbour indexes."""


@index_group.command("rebuild")
@click.option("--team", "team_slug", required=True)
@click.option("--embedder", help="One embedder; all enabled ones if omitted.")
def rebuild_index(team_slug, embedder):
    """Rebuild a team's indexes now, in this process; prints the versions."""
    from app.runtime import plugins

    team = team_by_slug(team_slug)
    names = [embedder] if embedder else list(plugins().embedders)
    for name in names:
        if name not in plugins().embedders:
            raise click.ClickException(
                f"unknown embedder {name!r}; enabled: {', '.join(plugins().embedders)}"
            )
    built = []
    for name in names:
        build = indexing.build_index(team.id, name)
        if build is None:
            raise click.ClickException(f"a concurrent build of {name} won; run again")
        click.echo(f"{name}: version {build.version}, {build.item_count} images")
        built.append(f"{name}=v{build.version}")
    click.echo(" ".join(built))
