"""index builds record how long they took

Revision ID: 0005b
Revises: 0004
Create Date: 2026-12-06

`flask index status` shows each build's duration; builds made before have none.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005b"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("index_build", schema=None) as batch_op:
        batch_op.add_column(sa.Column("build_seconds", sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table("index_build", schema=None) as batch_op:
        batch_op.drop_column("build_seconds")
