"""gallery filter indexes: a team's images by status (the gallery's counts) and a team's label
names (its label filter), each read from the index alone

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.create_index("ix_image_team_status", ["team_id", "status"], unique=False)
    with op.batch_alter_table("label", schema=None) as batch_op:
        batch_op.create_index("ix_label_team_name", ["team_id", "name"], unique=False)


def downgrade():
    with op.batch_alter_table("label", schema=None) as batch_op:
        batch_op.drop_index("ix_label_team_name")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index("ix_image_team_status")
