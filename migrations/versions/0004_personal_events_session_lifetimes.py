"""personal audit events, login session last use

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Sign-ins, failed sign-ins, logouts and password changes used to be copied into the audit log of
every team the person belonged to. They become the person's own events: one row, no team,
`user_id` naming the account. The per-team copies of one event are merged into one.
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PERSONAL_ACTIONS = ("auth.login", "auth.login_failed", "auth.logout", "auth.password_change")
# The copies of one event were written in one transaction, a moment apart.
SAME_EVENT_WITHIN = timedelta(seconds=5)


def upgrade():
    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE login_session SET last_seen_at = created_at")
    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.alter_column(
            "last_seen_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )

    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_audit_event_user_id_user"),
            "user",
            ["user_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index("ix_audit_event_user_id_desc", ["user_id", "id"], unique=False)

    _move_personal_events_out_of_team_logs(op.get_bind())


def _move_personal_events_out_of_team_logs(conn) -> None:
    meta = sa.MetaData()
    events = sa.Table(
        "audit_event",
        meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("team_id", sa.Uuid()),
        sa.Column("user_id", sa.Uuid()),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("actor_type", sa.String(10)),
        sa.Column("actor_user_id", sa.Uuid()),
        sa.Column("actor", sa.String(300)),
        sa.Column("action", sa.String(50)),
        sa.Column("target_type", sa.String(30)),
        sa.Column("target_id", sa.String(64)),
        sa.Column("target", sa.String(300)),
        sa.Column("ip", sa.String(45)),
    )
    users = sa.Table("user", meta, sa.Column("id", sa.Uuid()), sa.Column("email", sa.String(254)))
    user_ids = dict(conn.execute(sa.select(users.c.email, users.c.id)).all())

    rows = conn.execute(
        sa.select(events)
        .where(events.c.action.in_(PERSONAL_ACTIONS), events.c.team_id.is_not(None))
        .order_by(events.c.id)
    ).all()
    # An event is open while its copies may still follow: same action, actor, target and
    # address, a team not yet seen, written within moments of the first copy.
    open_events: dict[tuple, tuple] = {}
    keep: list[dict] = []
    drop: list[int] = []
    for row in rows:
        key = (row.action, row.actor, row.actor_user_id, row.target, row.target_id, row.ip)
        first = open_events.get(key)
        if (
            first is not None
            and row.team_id not in first[1]
            and row.at - first[0] <= (SAME_EVENT_WITHIN)
        ):
            first[1].add(row.team_id)
            drop.append(row.id)
            continue
        open_events[key] = (row.at, {row.team_id})
        owner = row.actor_user_id or user_ids.get(row.target) or user_ids.get(row.actor)
        change = {"event_id": row.id, "owner": owner}
        if row.action == "auth.login_failed":
            # Whoever typed a wrong password proved nothing: not the account's owner.
            change.update(actor_type="anonymous", actor_user_id=None)
        else:
            change.update(actor_type=row.actor_type, actor_user_id=row.actor_user_id)
        keep.append(change)

    if keep:
        conn.execute(
            events.update()
            .where(events.c.id == sa.bindparam("event_id"))
            .values(
                team_id=None,
                user_id=sa.bindparam("owner"),
                actor_type=sa.bindparam("actor_type"),
                actor_user_id=sa.bindparam("actor_user_id"),
            ),
            keep,
        )
    for start in range(0, len(drop), 500):
        conn.execute(events.delete().where(events.c.id.in_(drop[start : start + 500])))


def downgrade():
    # Personal events stay out of the team logs: copying them back into every team would
    # repeat the very leak this revision closes.
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_user_id_desc")
        batch_op.drop_constraint(batch_op.f("fk_audit_event_user_id_user"), type_="foreignkey")
        batch_op.drop_column("user_id")

    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.drop_column("last_seen_at")
