"""Who belongs to a team."""

from __future__ import annotations

import click

from app.cli.common import CLI, Group, team_by_slug
from app.models import ROLES
from app.services import accounts, members


@click.group("members", cls=Group)
def members_group():
    """Manage who belongs to a team."""


@members_group.command("list")
@click.option("--team", "team_slug", required=True)
def list_members(team_slug):
    """List members and roles; prints the count last."""
    team = team_by_slug(team_slug)
    found = members.list_members(team.id)
    for membership in found:
        click.echo(f"{membership.user.email}  {membership.role}")
    click.echo(f"{len(found)} members")


@members_group.command("add")
@click.argument("email")
@click.option("--team", "team_slug", required=True)
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@click.option("--password", help="Creates the account if it does not exist.")
@click.option("--invite", is_flag=True, help="Print an invite link instead.")
def add_member(email, team_slug, role, password, invite):
    """Add someone to a team (or invite them); prints the email or the invite path.

    Operators are trusted to add an existing account or set a new one's password directly;
    team admins (Settings, API) can only invite.
    """
    team = team_by_slug(team_slug)
    if invite:
        created, token = members.create_invite(team, email, role, None, actor=CLI)
        click.echo(f"Invite for {created.email} ({role}), valid 7 days:")
        click.echo(f"/invites/{token}")
        return
    membership = members.operator_add_member(team, email, role, password, actor=CLI)
    click.echo(membership.user.email)


@members_group.command("set-role")
@click.argument("email")
@click.option("--team", "team_slug", required=True)
@click.option("--role", type=click.Choice(ROLES), required=True)
def set_role(email, team_slug, role):
    """Change a member's role; prints `email role`."""
    team = team_by_slug(team_slug)
    user = accounts.get_user_by_email(email)
    membership = members.set_role(team.id, user.id if user else "-", role, actor=CLI)
    click.echo(f"{membership.user.email} {membership.role}")


@members_group.command("remove")
@click.argument("email")
@click.option("--team", "team_slug", required=True)
def remove_member(email, team_slug):
    """Remove someone from a team and revoke their keys there; prints the email."""
    team = team_by_slug(team_slug)
    user = accounts.get_user_by_email(email)
    membership = members.remove_member(team.id, user.id if user else "-", actor=CLI)
    click.echo(membership.user.email)
