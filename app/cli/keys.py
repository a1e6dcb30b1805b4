"""API keys."""

from __future__ import annotations

import click

from app.cli.common import CLI, Group, team_by_slug
from app.services import keys
from app.tenancy import team_scope


@click.group("keys", cls=Group)
def keys_group():
    """Manage API keys."""


@keys_group.command("create")
@click.option("--team", "team_slug", required=True)
@click.option("--name", required=True)
@click.option("--scopes", default="read", show_default=True, help="Comma separated.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650))
def create_key(team_slug, name, scopes, expires_in_days):
    """Create an API key; prints the full key, shown this once."""
    team = team_by_slug(team_slug)
    key, full = keys.create_key(
        team,
        name,
        keys.parse_scopes(scopes),
        expires_in_days=expires_in_days,
        actor=CLI,
    )
    click.echo(f"Created key {key.name!r} ({', '.join(key.scopes)}) for team {team.slug}.")
    click.echo("Store it now: it is not shown again.")
    click.echo(full)


@keys_group.command("list")
@click.option("--team", "team_slug", required=True)
def list_keys(team_slug):
    """List a team's keys (never their secrets); prints the count last."""
    team = team_by_slug(team_slug)
    with team_scope(team.id):
        team_keys = keys.list_keys()
    for key in team_keys:
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.id}  lk_{key.prefix}  {key.name}  {','.join(key.scopes)}  {state}")
    click.echo(f"{len(team_keys)} keys")


@keys_group.command("revoke")
@click.option("--team", "team_slug", required=True)
@click.argument("key_id")
def revoke_key(team_slug, key_id):
    """Revoke a key now; prints its prefix."""
    team = team_by_slug(team_slug)
    with team_scope(team.id):
        key = keys.get_key(key_id)
        keys.revoke_key(key, actor=CLI)
        click.echo(f"lk_{key.prefix}")
