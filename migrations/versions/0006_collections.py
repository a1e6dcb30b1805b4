"""collections: a team's named sets of images; where uploads and imports put their images

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005c"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "collection",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_key", sa.String(length=400), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_collection_team_id_team"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection")),
        sa.UniqueConstraint("team_id", "id", name=op.f("uq_collection_team_id_id")),
        sa.UniqueConstraint("team_id", "name_key", name=op.f("uq_collection_team_id_name_key")),
    )
    with op.batch_alter_table("collection", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_collection_team_id"), ["team_id"], unique=False)

    # On SQLite these copy the tables; migrations/env.py turns foreign keys off meanwhile, so
    # the rows referring to images and import batches stay.
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("collection_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            "fk_image_collection_id_collection",
            "collection",
            ["team_id", "collection_id"],
            ["team_id", "id"],
        )
        batch_op.create_index(
            "ix_image_collection_created", ["collection_id", "created_at", "id"], unique=False
        )

    for table in ("direct_upload", "import_batch"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("collection_id", sa.Uuid(), nullable=True))
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_collection_id_collection"),
                "collection",
                ["collection_id"],
                ["id"],
                ondelete="SET NULL",
            )


def downgrade():
    for table in ("import_batch", "direct_upload"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(
                batch_op.f(f"fk_{table}_collection_id_collection"), type_="foreignkey"
            )
            batch_op.drop_column("collection_id")

    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index("ix_image_collection_created")
        batch_op.drop_constraint("fk_image_collection_id_collection", type_="foreignkey")
        batch_op.drop_column("collection_id")

    with op.batch_alter_table("collection", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_collection_team_id"))
    op.drop_table("collection")
