"""`flask` commands. Each prints its result on the last line of its output, for scripts."""

from __future__ import annotations

import click
from flask import Flask, current_app

from app.extensions import db
from app.models import ROLES, Team
from app.services import ServiceError, accounts, audit, indexing, keys, members
from app.services.audit import Actor
from app.tenancy import team_scope

CLI = Actor.system("command line")


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
                team,
                name,
                keys.parse_scopes(scopes),
                expires_in_days=expires_in_days,
                actor=CLI,
            )
            db.session.commit()
        except ServiceError as exc:
            _fail(exc)
        click.echo(f"Created key {key.name!r} ({', '.join(key.scopes)}) for team {team.slug}.")
        click.echo("Store it now: it is not shown again.")
        click.echo(full)

    @keys_group.command("list")
    @click.option("--team", "team_slug", required=True)
    def list_keys(team_slug):
        """List a team's keys (never their secrets); prints the count last."""
        team = _team(team_slug)
        with team_scope(team.id):
            team_keys = keys.list_keys()
        for key in team_keys:
            state = "revoked" if key.revoked_at else "active"
            click.echo(f"{key.id}  lk_{key.prefix}  {key.name}  {','.join(key.scopes)}  {state}")
        click.echo(f"{len(team_keys)} keys")

    @keys_group.command("revoke")
    @click.option("--team", "team_slug", required=True)
    @click.argument("key_id")
    def revoke_key(team_slug, key_id):
        """Revoke a key now; prints its prefix."""
        team = _team(team_slug)
        with team_scope(team.id):
            try:
                key = keys.get_key(key_id)
            except ServiceError as exc:
                _fail(exc)
            keys.revoke_key(key, actor=CLI)
            db.session.commit()
        click.echo(f"lk_{key.prefix}")

    @app.cli.group("members")
    def members_group():
        """Manage who belongs to a team."""

    @members_group.command("list")
    @click.option("--team", "team_slug", required=True)
    def list_members(team_slug):
        """List members and roles; prints the count last."""
        team = _team(team_slug)
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
        team = _team(team_slug)
        try:
            if invite:
                created, token = members.create_invite(team, email, role, None, actor=CLI)
                db.session.commit()
                click.echo(f"Invite for {created.email} ({role}), valid 7 days:")
                click.echo(f"/invites/{token}")
                return
            membership = members.operator_add_member(team, email, role, password, actor=CLI)
            db.session.commit()
        except ServiceError as exc:
            _fail(exc)
        click.echo(membership.user.email)

    @members_group.command("set-role")
    @click.argument("email")
    @click.option("--team", "team_slug", required=True)
    @click.option("--role", type=click.Choice(ROLES), required=True)
    def set_role(email, team_slug, role):
        """Change a member's role; prints `email role`."""
        team = _team(team_slug)
        user = accounts.get_user_by_email(email)
        try:
            membership = members.set_role(team.id, user.id if user else "-", role, actor=CLI)
            db.session.commit()
        except ServiceError as exc:
            _fail(exc)
        click.echo(f"{membership.user.email} {membership.role}")

    @members_group.command("remove")
    @click.argument("email")
    @click.option("--team", "team_slug", required=True)
    def remove_member(email, team_slug):
        """Remove someone from a team and revoke their keys there; prints the email."""
        team = _team(team_slug)
        user = accounts.get_user_by_email(email)
        try:
            membership = members.remove_member(team.id, user.id if user else "-", actor=CLI)
            db.session.commit()
        except ServiceError as exc:
            _fail(exc)
        click.echo(membership.user.email)

    @app.cli.group("audit")
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
            click.echo(
                f"{at}  {event.action}  {event.ip or '-'}  {event.actor}  {details}".rstrip()
            )
        click.echo(f"{len(events)} events")

    @app.cli.command()
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

    @app.cli.command("import")
    @click.argument("source", type=click.Path(exists=True, dir_okay=True, readable=True))
    @click.option("--team", "team_slug", required=True)
    @click.option("--tags", default="", help="Comma-separated tags for every imported image.")
    def import_command(source, team_slug, tags):
        """Import a folder of images, or a CSV of URLs (column `url`); prints a summary."""
        import os

        from app.services import images as image_service
        from app.services import imports
        from app.services.ingest import ingest

        team = _team(team_slug)
        try:
            tag_names = image_service.parse_tags(tags)
        except ServiceError as exc:
            _fail(exc)
        if os.path.isdir(source):
            paths = sorted(
                os.path.join(root, name)
                for root, _dirs, names in os.walk(source)
                for name in names
                if not name.startswith(".")
            )
            created = existing = 0
            failures = []
            with team_scope(team.id), click.progressbar(paths, label="Importing") as bar:
                for path in bar:
                    try:
                        with open(path, "rb") as fh:
                            result = ingest(team.id, fh, os.path.basename(path))
                        if result.existing:
                            existing += 1
                            continue
                        if tag_names:
                            image_service.set_tags(result.image, tag_names)
                        audit.record_image(CLI, "image.upload", result.image)
                        db.session.commit()
                        created += 1
                    except (ServiceError, OSError) as exc:
                        db.session.rollback()
                        failures.append(f"{path}: {getattr(exc, 'message', exc)}")
            for failure in failures:
                click.echo(failure, err=True)
            click.echo(f"{created} imported, {existing} already present, {len(failures)} failed")
            return
        with open(source, "rb") as fh:
            data = fh.read(imports.MAX_CSV_BYTES + 1)
        try:
            batch = imports.create_batch(
                team.id, imports.parse_csv(data), tag_names, actor=CLI, enqueue=False
            )
        except ServiceError as exc:
            _fail(exc)
        with team_scope(team.id), click.progressbar(length=batch.total, label="Fetching") as bar:
            for position in range(batch.total):
                imports.run_item_at(batch.id, position)
                bar.update(1)
            summary = imports.progress(batch)
            for item in batch.items:
                if item.status == "failed":
                    click.echo(f"{item.url}: {item.error}", err=True)
        click.echo(f"import {batch.id}: {summary['done']} done, {summary['failed']} failed")

    @app.cli.command("reconcile")
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

        seconds = (
            current_app.config["RECONCILE_AFTER_SECONDS"] if older_than is None else older_than
        )
        click.echo(f"{reconcile(timedelta(seconds=seconds))} jobs queued again")

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
