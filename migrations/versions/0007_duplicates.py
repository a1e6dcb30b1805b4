"""duplicates: a pixel digest per image, and the pairs a team said are not duplicates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pixel_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_image_team_pixels", ["team_id", "pixel_sha256"], unique=False)

    op.create_table(
        "duplicate_decision",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("image_a_id", sa.Uuid(), nullable=False),
        sa.Column("image_b_id", sa.Uuid(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_a_id"],
            ["image.id"],
            name=op.f("fk_duplicate_decision_image_a_id_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_b_id"],
            ["image.id"],
            name=op.f("fk_duplicate_decision_image_b_id_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["team.id"],
            name=op.f("fk_duplicate_decision_team_id_team"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duplicate_decision")),
        sa.UniqueConstraint(
            "image_a_id", "image_b_id", name=op.f("uq_duplicate_decision_image_a_id_image_b_id")
        ),
    )
    with op.batch_alter_table("duplicate_decision", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_duplicate_decision_image_b_id"), ["image_b_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_duplicate_decision_team_id"), ["team_id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("duplicate_decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_duplicate_decision_team_id"))
        batch_op.drop_index(batch_op.f("ix_duplicate_decision_image_b_id"))
    op.drop_table("duplicate_decision")

    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index("ix_image_team_pixels")
        batch_op.drop_column("pixel_sha256")
