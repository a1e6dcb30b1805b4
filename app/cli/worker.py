"""The RQ worker."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command("worker")
@with_appcontext
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker(burst):
    """Run an RQ worker on the configured Redis, inside this application."""
    # Jobs run in the worker's own process: forking a work horse per job cost about 40 ms
    # each here (bench/bench_queue.py: 0.61x the in-process throughput, against ~1.0x).
    # Each job gets a fresh application context and session (app/worker.py). A killed
    # worker is restarted by the process manager; the reconcile sweep picks up its job.
    from app.worker import run_worker

    run_worker(current_app._get_current_object(), burst=burst)
    click.echo("worker stopped")
