"""Nearest-neighbour indexes."""

from __future__ import annotations

import click

from app.cli.common import Group, team_by_slug
from app.runtime import plugins
from app.services import indexing


@click.group("index", cls=Group)
def index_group():
    """Manage nearest-neighbour indexes."""


def _embedder_names(embedder: str | None) -> list[str]:
    names = [embedder] if embedder else list(plugins().embedders)
    for name in names:
        if name not in plugins().embedders:
            raise click.ClickException(
                f"unknown embedder {name!r}; enabled: {', '.join(plugins().embedders)}"
            )
    return names


@index_group.command("rebuild")
@click.option("--team", "team_slug", required=True)
@click.option("--embedder", help="One embedder; all enabled ones if omitted.")
def rebuild_index(team_slug, embedder):
    """Rebuild a team's indexes now, in this process (after a build already running); prints
    the versions."""
    team = team_by_slug(team_slug)
    names = _embedder_names(embedder)
    built = []
    for name in names:
        build = indexing.build_index(team.id, name, wait=True)
        if build is None:
            waiting = indexing.images_waiting(team.id, name)
            if waiting:
                version = plugins().embedders[name].version
                raise click.ClickException(
                    f"{name}: {waiting} images still wait to be embedded with version "
                    f"{version}; the index of the old version serves until they are"
                )
            raise click.ClickException(f"a concurrent build of {name} won; run again")
        click.echo(f"{name}: version {build.version}, {build.item_count} images")
        built.append(f"{name}=v{build.version}")
    click.echo(" ".join(built))


COLUMNS = (
    ("team", "team"),
    ("embedder", "embedder"),
    ("index", "index"),
    ("embedder v.", "embedder_version"),
    ("items", "items"),
    ("delta", "delta"),
    ("to embed", "waiting"),
    ("built at (UTC)", "built_at"),
    ("took", "took"),
)


@index_group.command("status")
@click.option("--team", "team_slug", help="One team; every team if omitted.")
def index_status(team_slug):
    """Per team and embedder: the index searches read, its embedder version, its items, the
    embeddings it lacks (searched exactly until the next build), and its last build."""
    team_id = team_by_slug(team_slug).id if team_slug else None
    rows = []
    for status in indexing.index_status(team_id):
        held = status.index_embedder_version
        rows.append(
            {
                "team": status.team,
                "embedder": status.embedder,
                "index": f"v{status.index_version}" if status.index_version else "none",
                # "2 (index: 1)" while the index of a new embedder version is being made
                "embedder_version": status.embedder_version
                + (f" (index: {held})" if held and held != status.embedder_version else ""),
                "items": str(status.item_count),
                "delta": str(status.delta),
                "waiting": str(status.waiting),
                "built_at": status.built_at.strftime("%Y-%m-%d %H:%M:%S")
                if status.built_at
                else "-",
                "took": f"{status.build_seconds:.1f}s" if status.build_seconds is not None else "-",
            }
        )
    widths = [max([len(title)] + [len(r[key]) for r in rows]) for title, key in COLUMNS]
    click.echo("  ".join(title.ljust(w) for (title, _), w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        click.echo(
            "  ".join(row[key].ljust(w) for (_, key), w in zip(COLUMNS, widths, strict=True))
        )
