"""Order workflow: orders, durable tasks (steps and timers), fulfillment orders, shipments,
invoices, exceptions, the timeline, and the WMS feed cursor.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DDL = [
    """
    CREATE TABLE order_workflow (
        order_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        status INTEGER NOT NULL,
        erp_order_number TEXT DEFAULT '' NOT NULL,
        reservation_id TEXT DEFAULT '' NOT NULL,
        lines JSONB NOT NULL,
        document BYTEA NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        completed_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (order_id)
    )
    """,
    """
    CREATE TABLE workflow_task (
        task_key TEXT NOT NULL,
        order_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject_id TEXT DEFAULT '' NOT NULL,
        state TEXT DEFAULT 'PENDING' NOT NULL,
        due_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        attempts INTEGER DEFAULT 0 NOT NULL,
        lease_id UUID,
        leased_until TIMESTAMP WITH TIME ZONE,
        last_error TEXT DEFAULT '' NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (task_key),
        CONSTRAINT workflow_task_state CHECK (state IN ('PENDING', 'PARKED', 'DONE'))
    )
    """,
    """
    CREATE INDEX workflow_task_due ON workflow_task (due_at) WHERE state = 'PENDING'
    """,
    """
    CREATE INDEX workflow_task_order ON workflow_task (order_id)
    """,
    """
    CREATE TABLE fulfillment_order (
        fulfillment_order_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        allocation_id TEXT NOT NULL,
        warehouse_id TEXT NOT NULL,
        state TEXT NOT NULL,
        lines JSONB NOT NULL,
        wms_release_id TEXT DEFAULT '' NOT NULL,
        release_attempts INTEGER DEFAULT 0 NOT NULL,
        released_at TIMESTAMP WITH TIME ZONE,
        ack_due_at TIMESTAMP WITH TIME ZONE,
        acknowledged_at TIMESTAMP WITH TIME ZONE,
        rejection_reason TEXT DEFAULT '' NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (fulfillment_order_id),
        CONSTRAINT fulfillment_order_allocation UNIQUE (allocation_id)
    )
    """,
    """
    CREATE INDEX fulfillment_order_order ON fulfillment_order (order_id)
    """,
    """
    CREATE TABLE shipment (
        shipment_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        fulfillment_order_id TEXT NOT NULL,
        wms_shipment_id TEXT NOT NULL,
        erp_shipment_reference TEXT DEFAULT '' NOT NULL,
        invoice_number TEXT DEFAULT '' NOT NULL,
        document BYTEA NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (shipment_id),
        CONSTRAINT shipment_wms_id UNIQUE (wms_shipment_id)
    )
    """,
    """
    CREATE INDEX shipment_order ON shipment (order_id)
    """,
    """
    CREATE TABLE invoice (
        invoice_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        shipment_id TEXT NOT NULL,
        document BYTEA NOT NULL,
        PRIMARY KEY (invoice_id),
        CONSTRAINT invoice_shipment UNIQUE (shipment_id)
    )
    """,
    """
    CREATE TABLE exception_record (
        exception_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        channel_id TEXT DEFAULT '' NOT NULL,
        task_key TEXT NOT NULL,
        state TEXT NOT NULL,
        category TEXT NOT NULL,
        last_seen_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        document BYTEA NOT NULL,
        PRIMARY KEY (exception_id)
    )
    """,
    """
    CREATE UNIQUE INDEX exception_open_per_task ON exception_record (task_key)
        WHERE state <> 'RESOLVED'
    """,
    """
    CREATE INDEX exception_listing ON exception_record (last_seen_at DESC, exception_id DESC)
    """,
    """
    CREATE TABLE timeline_entry (
        position BIGINT GENERATED ALWAYS AS IDENTITY,
        order_id TEXT NOT NULL,
        document BYTEA NOT NULL,
        PRIMARY KEY (position)
    )
    """,
    """
    CREATE INDEX timeline_order ON timeline_entry (order_id, position)
    """,
    """
    CREATE TABLE wms_feed (
        feed TEXT NOT NULL,
        cursor TEXT DEFAULT '' NOT NULL,
        PRIMARY KEY (feed)
    )
    """,
    """
    CREATE TABLE wms_event (
        event_id TEXT NOT NULL,
        received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (event_id)
    )
    """,
]

TABLES = (
    "wms_event",
    "wms_feed",
    "timeline_entry",
    "exception_record",
    "invoice",
    "shipment",
    "fulfillment_order",
    "workflow_task",
    "order_workflow",
)


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
