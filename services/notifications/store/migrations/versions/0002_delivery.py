"""Channel endpoints, deliveries with their per-(endpoint, order) queues, channel dead
letters, alerts, and the availability feed's coalescing tables.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen DDL (written once next to store/tables.py); later changes are new revisions.
DDL = [
    """
    CREATE TABLE endpoint (
        endpoint_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT DEFAULT '' NOT NULL,
        event_types TEXT[] DEFAULT '{}' NOT NULL,
        statuses TEXT[] DEFAULT '{}' NOT NULL,
        vocabulary TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        disabled_reason TEXT DEFAULT '' NOT NULL,
        disabled_at TIMESTAMP WITH TIME ZONE,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (endpoint_id)
    )
    """,
    """
    CREATE INDEX endpoint_channel ON endpoint (channel_id)
    """,
    """
    CREATE TABLE delivery_queue (
        endpoint_id TEXT NOT NULL,
        ordering_key TEXT NOT NULL,
        delivered_sequence BIGINT DEFAULT 0 NOT NULL,
        assigned_sequence BIGINT DEFAULT 0 NOT NULL,
        due_at TIMESTAMP WITH TIME ZONE,
        lease_token UUID,
        lease_until TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (endpoint_id, ordering_key)
    )
    """,
    """
    CREATE INDEX delivery_queue_due ON delivery_queue (due_at) WHERE due_at IS NOT NULL
    """,
    """
    CREATE TABLE delivery (
        delivery_id UUID NOT NULL,
        endpoint_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        subject TEXT DEFAULT '' NOT NULL,
        order_id TEXT DEFAULT '' NOT NULL,
        ordering_key TEXT NOT NULL,
        sequence BIGINT DEFAULT 0 NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER DEFAULT 0 NOT NULL,
        last_http_status INTEGER DEFAULT 0 NOT NULL,
        last_error TEXT DEFAULT '' NOT NULL,
        content_type TEXT NOT NULL,
        body BYTEA NOT NULL,
        summary TEXT DEFAULT '' NOT NULL,
        envelope BYTEA NOT NULL,
        correlation_id TEXT DEFAULT '' NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        last_attempt_at TIMESTAMP WITH TIME ZONE,
        next_attempt_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        delivered_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (delivery_id),
        CONSTRAINT delivery_once UNIQUE (endpoint_id, event_id),
        CONSTRAINT delivery_state CHECK (
            state IN ('PENDING', 'RETRYING', 'SUCCEEDED', 'DEAD_LETTERED', 'SUPERSEDED')
        )
    )
    """,
    """
    CREATE UNIQUE INDEX delivery_sequence_once ON delivery (endpoint_id, ordering_key, sequence)
    WHERE sequence > 0
    """,
    """
    CREATE INDEX delivery_open ON delivery (endpoint_id, ordering_key, sequence)
    WHERE state IN ('PENDING', 'RETRYING')
    """,
    """
    CREATE INDEX delivery_newest ON delivery (created_at, delivery_id)
    """,
    """
    CREATE INDEX delivery_by_order ON delivery (order_id) WHERE order_id <> ''
    """,
    """
    CREATE TABLE channel_dead_letter (
        dead_letter_id UUID NOT NULL,
        delivery_id UUID NOT NULL REFERENCES delivery (delivery_id),
        channel_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        subject TEXT DEFAULT '' NOT NULL,
        order_id TEXT DEFAULT '' NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER DEFAULT 0 NOT NULL,
        last_http_status INTEGER DEFAULT 0 NOT NULL,
        last_error TEXT DEFAULT '' NOT NULL,
        dead_lettered_at TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp() NOT NULL,
        replayed_at TIMESTAMP WITH TIME ZONE,
        replay_count INTEGER DEFAULT 0 NOT NULL,
        PRIMARY KEY (dead_letter_id),
        CONSTRAINT channel_dead_letter_state CHECK (state IN ('PENDING', 'REPLAYED'))
    )
    """,
    """
    CREATE UNIQUE INDEX channel_dead_letter_pending ON channel_dead_letter (delivery_id)
    WHERE state = 'PENDING'
    """,
    """
    CREATE INDEX channel_dead_letter_newest
    ON channel_dead_letter (dead_lettered_at, dead_letter_id)
    """,
    """
    CREATE TABLE consumption_replay (
        dead_letter_id BIGINT NOT NULL,
        replayed_at TIMESTAMP WITH TIME ZONE NOT NULL,
        replay_count INTEGER NOT NULL,
        PRIMARY KEY (dead_letter_id)
    )
    """,
    """
    CREATE TABLE alert (
        alert_id UUID NOT NULL,
        kind TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        http_status INTEGER DEFAULT 0 NOT NULL,
        message TEXT NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (alert_id)
    )
    """,
    """
    CREATE TABLE availability_seen (
        warehouse_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        last_sequence BIGINT NOT NULL,
        PRIMARY KEY (warehouse_id, sku)
    )
    """,
    """
    CREATE TABLE availability_pending (
        endpoint_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        warehouse_id TEXT NOT NULL,
        available BIGINT NOT NULL,
        on_hand BIGINT DEFAULT 0 NOT NULL,
        incoming BIGINT DEFAULT 0 NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (endpoint_id, sku, warehouse_id)
    )
    """,
    # Wakes the delivery workers when deliveries are queued (NOTIFY is sent at commit).
    """
    CREATE FUNCTION delivery_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('dwf_deliveries_' || current_schema(), '');
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER delivery_notify AFTER INSERT ON delivery
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_notify()
    """,
]

TABLES = [
    "availability_pending",
    "availability_seen",
    "alert",
    "consumption_replay",
    "channel_dead_letter",
    "delivery",
    "delivery_queue",
    "endpoint",
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS delivery_notify ON delivery")
    op.execute("DROP FUNCTION IF EXISTS delivery_notify()")
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
