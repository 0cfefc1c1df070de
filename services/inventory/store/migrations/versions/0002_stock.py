"""Stock: warehouses, items, positions, incoming supply, ledger, reservations.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen DDL (generated once from store/tables.py); later changes are new revisions.
DDL = [
    """
    CREATE TABLE availability_dirty (
        sku TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        marked_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (sku, warehouse)
    )
    """,
    """
    CREATE TABLE item (
        sku TEXT NOT NULL,
        description TEXT DEFAULT '' NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (sku)
    )
    """,
    """
    CREATE TABLE ledger_entry (
        entry_id UUID NOT NULL,
        sku TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        kind TEXT NOT NULL,
        quantity_delta BIGINT NOT NULL,
        on_hand_after BIGINT NOT NULL,
        sequence BIGINT NOT NULL,
        reference TEXT DEFAULT '' NOT NULL,
        order_id TEXT DEFAULT '' NOT NULL,
        line_id TEXT DEFAULT '' NOT NULL,
        reason TEXT DEFAULT '' NOT NULL,
        occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
        recorded_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (entry_id),
        CONSTRAINT ledger_delta_not_zero CHECK (quantity_delta <> 0)
    )
    """,
    """
    CREATE UNIQUE INDEX ledger_movement_once
    ON ledger_entry (kind, reference, sku, warehouse, line_id)
    WHERE reference <> ''
    """,
    """
    CREATE INDEX ledger_newest ON ledger_entry (recorded_at, entry_id)
    """,
    """
    CREATE UNIQUE INDEX ledger_position_sequence ON ledger_entry (sku, warehouse, sequence)
    """,
    """
    CREATE TABLE reservation (
        reservation_id UUID NOT NULL,
        owner_type TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at TIMESTAMP WITH TIME ZONE,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (reservation_id)
    )
    """,
    """
    CREATE UNIQUE INDEX reservation_active_owner ON reservation (owner_type, owner_id)
    WHERE state = 'ACTIVE'
    """,
    """
    CREATE INDEX reservation_expiry ON reservation (expires_at)
    WHERE state = 'ACTIVE' AND expires_at IS NOT NULL
    """,
    """
    CREATE TABLE reservation_hold (
        reservation_id UUID NOT NULL,
        line_id TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        PRIMARY KEY (reservation_id, line_id, warehouse),
        CONSTRAINT hold_quantity_positive CHECK (quantity > 0)
    )
    """,
    """
    CREATE TABLE warehouse (
        code TEXT NOT NULL,
        name TEXT DEFAULT '' NOT NULL,
        region_code TEXT NOT NULL,
        postal_code TEXT DEFAULT '' NOT NULL,
        priority INTEGER DEFAULT 100 NOT NULL,
        channels TEXT[] DEFAULT '{}' NOT NULL,
        active BOOLEAN DEFAULT true NOT NULL,
        PRIMARY KEY (code)
    )
    """,
    """
    CREATE TABLE incoming_supply (
        supply_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        kind TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        expected_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (supply_id, sku, warehouse),
        CONSTRAINT supply_quantity_positive CHECK (quantity > 0),
        FOREIGN KEY(sku) REFERENCES item (sku),
        FOREIGN KEY(warehouse) REFERENCES warehouse (code)
    )
    """,
    """
    CREATE TABLE reservation_line (
        reservation_id UUID NOT NULL,
        line_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        sku TEXT NOT NULL,
        requested BIGINT NOT NULL,
        PRIMARY KEY (reservation_id, line_id),
        FOREIGN KEY(reservation_id) REFERENCES reservation (reservation_id)
    )
    """,
    """
    CREATE TABLE stock_position (
        sku TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        on_hand BIGINT DEFAULT 0 NOT NULL,
        reserved BIGINT DEFAULT 0 NOT NULL,
        allocated BIGINT DEFAULT 0 NOT NULL,
        safety_stock BIGINT DEFAULT 0 NOT NULL,
        ledger_sequence BIGINT DEFAULT 0 NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (sku, warehouse),
        CONSTRAINT on_hand_not_negative CHECK (on_hand >= 0),
        CONSTRAINT reserved_not_negative CHECK (reserved >= 0),
        CONSTRAINT allocated_not_negative CHECK (allocated >= 0),
        CONSTRAINT safety_stock_not_negative CHECK (safety_stock >= 0),
        FOREIGN KEY(sku) REFERENCES item (sku),
        FOREIGN KEY(warehouse) REFERENCES warehouse (code)
    )
    """,
]


TABLES = (
    "availability_dirty",
    "reservation_hold",
    "reservation_line",
    "reservation",
    "ledger_entry",
    "incoming_supply",
    "stock_position",
    "item",
    "warehouse",
)


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
