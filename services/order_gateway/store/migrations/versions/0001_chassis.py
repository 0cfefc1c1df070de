"""Chassis tables: outbox, aggregate sequences, inbox, dead letters, idempotency keys.

Revision ID: 0001
Revises:
"""

from chassis.schema import create_chassis_tables, drop_chassis_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_chassis_tables()


def downgrade() -> None:
    drop_chassis_tables()
