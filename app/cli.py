"""`flask` commands. Each prints its result on the last line of its output, for scripts."""

from __future__ import annotations

import click
from flask import Flask, current_app

from app.extensions import db
from app.models import ROLES, Team
from app.services import ServiceError, accounts, indexing, keys


def _team(slug: str) -> Team:
    team = accounts.get_team_by_slug(slug)
    if team is None:
        raise click.ClickException(f"no team with slug {slug!r}")
    return team


def _fail(exc: ServiceError):
    db.session.rollback()
    raise click.ClickException(exc.message)


def register_cli(app: Flask) -> None:
    @app.cli.group()
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
            _fail(exc)
        click.echo(team.slug)

    @app.cli.group()
    def users():
        """Manage user accounts."""

    @users.command("create")
    @click.argument("email")
    @click.option("--team", "team_slug", required=True, help="Slug of the team to join.")
    @click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def create_user(email, team_slug, role, password):
        """Create an account in a team; prints its email."""
        team = _team(team_slug)
        try:
            user = accounts.create_user(email, password)
            accounts.add_member(user, team, role)
            db.session.commit()
        except ServiceError as exc:
            _fail(exc)
        click.echo(user.email)

    @app.cli.group("keys")
    def keys_group():
        """Manage API keys."""

    @keys_group.command("create")
    @click.option("--team", "team_slug", required=True)
    @click.option("--name", required=True)
    @click.option("--scopes", default="read", show_default=True, help="Comma separated.")
    @click.option("--expires-in-days", type=click.IntRange(1, 3650))
    def create_key(team_slug, name, scopes, expires_in_days):
        """Create an API key; prints the full key, shown this once."""
        team = _team(team_slug)
        try:
            key, full = keys.create_key(
                team, name, keys.parse_scopes(scopes), expires_in_days=expires_in_days
            )
            db.session.commit()
        except ServiceError as exc:
            _fail(exc)
        click.echo(f"Created key {key.name!r} ({', '.join(key.scopes)}) for team {team.slug}.")
        click.echo("Store it now: it is not shown again.")
        click.echo(full)

    @app.cli.command()
    @click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
    def worker(burst):
        """Run an RQ worker on the configured Redis, inside this application."""
        from rq import Worker

        from app.queue import get_queue, get_redis

        # Forked job processes must not share the parent's database connections.
        db.engine.dispose()
        w = Worker([get_queue()], connection=get_redis())
        w.work(
            burst=burst,
            with_scheduler=True,
            logging_level=current_app.config.get("LOG_LEVEL", "INFO"),
        )
        click.echo("worker stopped")

    @app.cli.group("index")
    def index_group():
        """Manage nearest-neighbour indexes."""

    @index_group.command("rebuild")
    @click.option("--team", "team_slug", required=True)
    @click.option("--embedder", help="One embedder; all enabled ones if omitted.")
    def rebuild_index(team_slug, embedder):
        """Rebuild a team's indexes now, in this process; prints the versions."""
        from app.runtime import plugins

        team = _team(team_slug)
        names = [embedder] if embedder else list(plugins().embedders)
        for name in names:
            if name not in plugins().embedders:
                raise click.ClickException(
                    f"unknown embedder {name!r}; enabled: {', '.join(plugins().embedders)}"
                )
        built = []
        for name in names:
            build = indexing.build_index(team.id, name)
            if build is None:
                raise click.ClickException(f"a concurrent build of {name} won; run again")
            click.echo(f"{name}: version {build.version}, {build.item_count} images")
            built.append(f"{name}=v{build.version}")
        click.echo(" ".join(built))
