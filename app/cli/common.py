"""What every command shares: the command line's audit actor, team lookup, refusals."""

from __future__ import annotations

import click

from app.errors import ServiceError
from app.extensions import db
from app.models import Team
from app.services import accounts
from app.services.audit import Actor

CLI = Actor.system("command line")


def team_by_slug(slug: str) -> Team:
    team = accounts.get_team_by_slug(slug)
    if team is None:
        raise click.ClickException(f"no team with slug {slug!r}")
    return team


def fail(exc: ServiceError):
    db.session.rollback()
    raise click.ClickException(exc.message)
