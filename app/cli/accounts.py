"""Teams and user accounts."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.cli.common import fail, team_by_slug
from app.errors import ServiceError
from app.extensions import db
from app.models import ROLES
from app.services import accounts


@click.group("teams", cls=AppGroup)
def teams():
    """Manage teams."""


@teams.command("create")
@click.argument("name")
def create_team(name):
    """Create a team; prints its slug."""
    try:
        team = accounts.create_team(name)
        db.session.commit()
    except ServiceError as exc:
        fail(exc)
    click.echo(team.slug)


@teams.command("list")
def list_teams():
    """List every team: slug, name, members; prints the count last."""
    teams_and_members = accounts.list_teams()
    for team, members in teams_and_members:
        click.echo(f"{team.slug}  {team.name}  {members} member{'' if members == 1 else 's'}")
    count = len(teams_and_members)
    click.echo(f"{count} team{'' if count == 1 else 's'}")


@click.group("users", cls=AppGroup)
def users():
    """Manage user accounts."""


@users.command("create")
@click.argument("email")
@click.option("--team", "team_slug", required=True, help="Slug of the team to join.")
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user(email, team_slug, role, password):
    """Create an account in a team; prints its email."""
    team = team_by_slug(team_slug)
    try:
        user = accounts.create_user(email, password)
        accounts.add_member(user, team, role)
        db.session.commit()
    except ServiceError as exc:
        fail(exc)
    click.echo(user.email)
