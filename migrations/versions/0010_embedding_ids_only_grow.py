"""embedding ids only grow on SQLite too: AUTOINCREMENT, so a deleted newest row's id is never
handed out again (index watermarks and delta caches trust that every id above one seen is new)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _recreate_embedding(autoincrement: bool) -> None:
    # PostgreSQL's sequences never go back; only SQLite's table must be copied to change this.
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "embedding", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade():
    _recreate_embedding(True)


def downgrade():
    _recreate_embedding(False)
