"""The reconcile sweep, by hand."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command("reconcile")
@with_appcontext
@click.option(
    "--older-than",
    type=click.IntRange(0),
    default=None,
    help="Seconds an image may wait before it counts as stuck (RECONCILE_AFTER_SECONDS).",
)
def reconcile_command(older_than):
    """Queue stuck work (pending images, unfinished imports) again; prints the job count."""
    from datetime import timedelta

    from app.services.reconcile import reconcile

    seconds = current_app.config["RECONCILE_AFTER_SECONDS"] if older_than is None else older_than
    click.echo(f"{reconcile(timedelta(seconds=seconds))} jobs queued again")
