"""Duplicate review from the command line."""

from __future__ import annotations

import click

from app.cli.common import Group, team_by_slug
from app.services import duplicates


@click.group("duplicates", cls=Group)
def duplicates_group():
    """Review a team's duplicate images."""


@duplicates_group.command("report")
@click.option("--team", "team_slug", required=True)
@click.option("--tier", type=click.Choice(duplicates.TIERS), default=duplicates.DEFAULT_TIER)
@click.option("--threshold", help="bits (near) or angular distance (similar)")
def report_duplicates(team_slug, tier, threshold):
    """Every duplicate group of a team: its id, then each image (the suggested keeper first)."""
    team = team_by_slug(team_slug)
    groups = duplicates.all_groups(team.id, tier, threshold)
    for group in groups:
        click.echo(group.id)
        for image in group.images:
            click.echo(
                f"  {image.id}  {image.width}x{image.height}  {image.size_bytes:>10,} B  "
                f"{image.filename}"
            )
    click.echo(f"{len(groups)} groups")
