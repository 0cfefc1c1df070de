"""Cancellation requests of orders (from the gateway's OrderCancelRequested).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE cancellation (
            cancellation_id TEXT NOT NULL,
            order_id TEXT NOT NULL,
            state TEXT DEFAULT 'REQUESTED' NOT NULL,
            document BYTEA NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
            PRIMARY KEY (cancellation_id)
        )
        """
    )
    op.execute("CREATE INDEX cancellation_order ON cancellation (order_id, created_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS cancellation")
