"""The reconcile sweep, by hand."""

from __future__ import annotations

import click
import redis
from flask import current_app
from flask.cli import with_appcontext

from app.cli.common import Command
from app.errors import Unavailable


@click.command("reconcile", cls=Command)
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

    from app.services.jobs_admin import QUEUE_UNREACHABLE
    from app.services.reconcile import reconcile

    seconds = current_app.config["RECONCILE_AFTER_SECONDS"] if older_than is None else older_than
    try:
        queued = reconcile(timedelta(seconds=seconds))
    except redis.RedisError:
        # Here, not in the service: the worker's periodic sweep lets RQ record the real error.
        raise Unavailable(QUEUE_UNREACHABLE) from None
    click.echo(f"{queued} jobs queued again")
