"""A channel's default ERP customer: marketplace orders come without an account of their own
and are booked under the marketplace's customer in the ERP.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE channel ADD COLUMN default_customer_id TEXT DEFAULT '' NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE channel DROP COLUMN default_customer_id")
