"""Audit events that belong to no team."""

from __future__ import annotations

import click

from app.cli.common import Group
from app.services import accounts, audit


@click.group("audit", cls=Group)
def audit_group():
    """Read audit events that belong to no team."""


@audit_group.command("user")
@click.argument("email")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
def audit_user(email, limit):
    """A person's own events (sign-ins, failed sign-ins, logouts, password changes), newest
    first; prints the count last."""
    events = audit.events_about_email(accounts.normalise_email(email), limit)
    for event in events:
        at = event.at.strftime("%Y-%m-%d %H:%M:%S")
        details = " ".join(f"{k}={v}" for k, v in sorted((event.details or {}).items()))
        click.echo(f"{at}  {event.action}  {event.ip or '-'}  {event.actor}  {details}".rstrip())
    click.echo(f"{len(events)} events")
