"""`flask` commands, one module per area. Each prints its result on the last line of its
output, for scripts."""

from __future__ import annotations

from flask import Flask

from app.cli.accounts import teams, users
from app.cli.archive import export_command, import_archive_command
from app.cli.audit import audit_group
from app.cli.duplicates import duplicates_group
from app.cli.imports import import_command
from app.cli.index import index_group
from app.cli.jobs import jobs_group
from app.cli.keys import keys_group
from app.cli.members import members_group
from app.cli.reconcile import reconcile_command
from app.cli.worker import worker

COMMANDS = [
    teams,
    users,
    keys_group,
    members_group,
    audit_group,
    worker,
    import_command,
    reconcile_command,
    index_group,
    jobs_group,
    duplicates_group,
    export_command,
    import_archive_command,
]


def register_cli(app: Flask) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
