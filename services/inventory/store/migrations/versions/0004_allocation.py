"""Allocation: channel sourcing policies, allocations per warehouse, backorders.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DDL = [
    """
    CREATE TABLE channel_policy (
        channel_id TEXT NOT NULL,
        ranking TEXT DEFAULT 'PRIORITY_LIST' NOT NULL,
        warehouse_priority TEXT[] DEFAULT '{}' NOT NULL,
        split_rule TEXT DEFAULT 'ALLOW_SPLIT' NOT NULL,
        allow_backorder BOOLEAN DEFAULT true NOT NULL,
        PRIMARY KEY (channel_id)
    )
    """,
    """
    CREATE TABLE allocation (
        allocation_id UUID NOT NULL,
        order_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        allocated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (allocation_id)
    )
    """,
    """
    CREATE INDEX allocation_order ON allocation (order_id)
    """,
    """
    CREATE TABLE allocation_line (
        allocation_id UUID NOT NULL,
        line_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        shipped BIGINT DEFAULT 0 NOT NULL,
        PRIMARY KEY (allocation_id, line_id),
        CONSTRAINT allocation_line_quantities CHECK (quantity >= 0 AND shipped >= 0)
    )
    """,
    """
    CREATE TABLE backorder (
        backorder_id UUID NOT NULL,
        order_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        line_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        priority INTEGER NOT NULL,
        warehouses TEXT[] NOT NULL,
        expected_at TIMESTAMP WITH TIME ZONE,
        eta_warehouse TEXT DEFAULT '' NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (backorder_id),
        CONSTRAINT backorder_quantity_not_negative CHECK (quantity >= 0)
    )
    """,
    """
    CREATE INDEX backorder_open ON backorder (sku) WHERE quantity > 0
    """,
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    for table in ("backorder", "allocation_line", "allocation", "channel_policy"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
