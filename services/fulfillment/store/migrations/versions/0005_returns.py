"""Return authorizations (RMAs) of orders (from the gateway's ReturnRequested).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE return_authorization (
            rma_id TEXT NOT NULL,
            order_id TEXT NOT NULL,
            rma_number TEXT NOT NULL,
            document BYTEA NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
            PRIMARY KEY (rma_id),
            CONSTRAINT return_authorization_number UNIQUE (rma_number)
        )
        """
    )
    op.execute("CREATE INDEX return_authorization_order ON return_authorization (order_id)")
    op.execute(
        """
        CREATE TABLE wms_receipt (
            subject TEXT NOT NULL,
            document BYTEA NOT NULL,
            PRIMARY KEY (subject)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS wms_receipt")
    op.execute("DROP TABLE IF EXISTS return_authorization")
