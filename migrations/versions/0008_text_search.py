"""text search: each image's search document, written by triggers and indexed by the
database's full-text search (SQLite FTS5, PostgreSQL tsvector + GIN); existing images backfilled

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

"""

import sqlalchemy as sa
from alembic import op

from app import search_schema

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "image_search",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("image_id", sa.Uuid(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_image_search_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_image_search_team_id_team"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_search")),
        sa.UniqueConstraint("image_id", name=op.f("uq_image_search_image_id")),
    )
    with op.batch_alter_table("image_search", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_search_team_id"), ["team_id"], unique=False)
    connection = op.get_bind()
    search_schema.install(connection)
    search_schema.backfill(connection)


def downgrade():
    search_schema.uninstall(op.get_bind())
    with op.batch_alter_table("image_search", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_search_team_id"))
    op.drop_table("image_search")
