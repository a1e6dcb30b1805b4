"""Teams and user accounts."""

from __future__ import annotations

import click

from app.cli.common import Group, team_by_slug
from app.models import ROLES
from app.services import accounts


@click.group("teams", cls=Group)
def teams():
    """Manage teams."""


@teams.command("create")
@click.argument("name")
def create_team(name):
    """Create a team; prints its slug."""
    click.echo(accounts.create_team(name).slug)


@teams.command("list")
def list_teams():
    """List every team: slug, name, members; prints the count last."""
    teams_and_members = accounts.list_teams()
    for team, members in teams_and_members:
        click.echo(f"{team.slug}  {team.name}  {members} member{'' if members == 1 else 's'}")
    count = len(teams_and_members)
    click.echo(f"{count} team{'' if count == 1 else 's'}")


@click.group("users", cls=Group)
def users():
    """Manage user accounts."""


@users.command("create")
@click.argument("email")
@click.option("--team", "team_slug", required=True, help="Slug of the team to join.")
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(email, team_slug, role, password):
    """Create an account in a team; prints its email."""
    user = accounts.create_account(email, password, team_by_slug(team_slug), role)
    click.echo(user.email)
