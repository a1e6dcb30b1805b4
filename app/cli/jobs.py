"""The job queue: depth, running and failed jobs, retry."""

from __future__ import annotations

import click

from app.cli.common import CLI, Group
from app.services import jobs_admin


@click.group("jobs", cls=Group)
def jobs_group():
    """Inspect the job queue and retry failed jobs."""


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@jobs_group.command("status")
def jobs_status():
    """Per queue: jobs waiting, running, scheduled and failed; then the running jobs."""
    depths = jobs_admin.depths()
    click.echo(f"{'queue':<24}{'queued':>8}{'running':>9}{'scheduled':>11}{'failed':>8}")
    for d in depths:
        click.echo(f"{d.name:<24}{d.queued:>8}{d.running:>9}{d.scheduled:>11}{d.failed:>8}")
    for job in jobs_admin.running_jobs():
        click.echo(f"running {job.id}  {job.team or '-'}  since {_when(job.started_at)}")
    click.echo(
        " ".join(
            f"{d.name}: queued={d.queued} running={d.running} failed={d.failed}" for d in depths
        )
    )


@jobs_group.command("failed")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show each whole traceback.")
def jobs_failed(show_traceback):
    """Failed jobs, newest first: id, team, when, what, and the error."""
    failed = jobs_admin.failed_jobs()
    for job in failed:
        click.echo(f"{job.id}  {job.team or '-'}  {_when(job.ended_at)}  {job.description}")
        click.echo(f"    {job.error or 'no error recorded'}")
        if show_traceback and job.traceback:
            click.echo(job.traceback.rstrip())
    click.echo(f"{len(failed)} failed jobs")


@jobs_group.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "retry_every", is_flag=True, help="Retry every failed job.")
def jobs_retry(job_id, retry_every):
    """Queue a failed job (or, with --all, every failed job) again."""
    if bool(job_id) == retry_every:
        raise click.UsageError("give one job id, or --all")
    if retry_every:
        count = jobs_admin.retry_all(actor=CLI)
        click.echo(f"retried {count} jobs")
        return
    job = jobs_admin.retry_job(job_id, actor=CLI)
    click.echo(f"retried {job.id}")
