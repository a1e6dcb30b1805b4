"""What every command shares: the command line's audit actor, team lookup, and the one place
where a domain refusal becomes an error message (and exit status 1)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.errors import ServiceError
from app.models import Team
from app.services import accounts
from app.services.audit import COMMAND_LINE

CLI = COMMAND_LINE


class _RefusalsAsMessages:
    """Whatever a service refuses ends the command with its message, as click's errors do."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ServiceError as exc:
            raise click.ClickException(exc.message) from None


class Group(_RefusalsAsMessages, AppGroup):
    """A group of commands (each in an application context) that maps refusals."""


class Command(_RefusalsAsMessages, click.Command):
    """A command on its own that maps refusals."""


def team_by_slug(slug: str) -> Team:
    team = accounts.get_team_by_slug(slug)
    if team is None:
        raise click.ClickException(f"no team with slug {slug!r}")
    return team
