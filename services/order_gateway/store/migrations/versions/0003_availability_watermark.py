"""Availability watermark: the newest AvailabilityChanged applied per warehouse, so an answer's
as_of says how far the read model has followed inventory (not when a row last changed).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE availability_watermark (
            warehouse TEXT NOT NULL,
            source_sequence BIGINT NOT NULL,
            as_of TIMESTAMP WITH TIME ZONE NOT NULL,
            PRIMARY KEY (warehouse)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS availability_watermark")
