"""Reconciliation reports, one per WMS snapshot.

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
        CREATE TABLE reconciliation (
            reconciliation_id UUID NOT NULL,
            warehouse TEXT NOT NULL,
            snapshot_id TEXT NOT NULL,
            report BYTEA NOT NULL,
            reconciled_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
            PRIMARY KEY (reconciliation_id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX reconciliation_snapshot_once "
        "ON reconciliation (warehouse, snapshot_id)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS reconciliation")
