"""an image keeps one embedding per embedder version

Revision ID: 0005c
Revises: 0005b
Create Date: 2026-12-06

When an embedder's version changes, images are embedded again while searches go on answering
from the old version's index, which needs each image's old vector until the new index is
published: (image, embedder) is unique per version now.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0005c"
down_revision = "0005b"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("embedding", schema=None) as batch_op:
        batch_op.drop_constraint("uq_embedding_image_id_embedder", type_="unique")
        batch_op.create_unique_constraint(
            "uq_embedding_image_id_embedder_version", ["image_id", "embedder", "version"]
        )


def downgrade():
    # Only the newest row of each (image, embedder) survives the older constraint.
    op.execute(
        "DELETE FROM embedding WHERE id NOT IN "
        "(SELECT MAX(id) FROM embedding GROUP BY image_id, embedder)"
    )
    with op.batch_alter_table("embedding", schema=None) as batch_op:
        batch_op.drop_constraint("uq_embedding_image_id_embedder_version", type_="unique")
        batch_op.create_unique_constraint(
            "uq_embedding_image_id_embedder", ["image_id", "embedder"]
        )
