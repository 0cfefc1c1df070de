"""Gateway: master data, credentials, holds, orders (the order view), availability read model,
ingest exceptions, cancellation and return requests.

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
    CREATE TABLE channel (
        channel_id TEXT NOT NULL,
        name TEXT DEFAULT '' NOT NULL,
        backorder_policy TEXT DEFAULT 'BACKORDER' NOT NULL,
        default_hold_ttl_seconds INTEGER DEFAULT 900 NOT NULL,
        warehouses TEXT[] DEFAULT '{}' NOT NULL,
        status_vocabulary JSONB DEFAULT '{}' NOT NULL,
        rate_limit_per_second DOUBLE PRECISION DEFAULT 100 NOT NULL,
        rate_limit_burst INTEGER DEFAULT 200 NOT NULL,
        token_secret TEXT,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (channel_id),
        CONSTRAINT channel_backorder_policy CHECK (backorder_policy IN ('BACKORDER', 'REFUSE')),
        CONSTRAINT channel_hold_ttl CHECK (default_hold_ttl_seconds BETWEEN 1 AND 3600),
        CONSTRAINT channel_rate_limit CHECK (rate_limit_per_second > 0 AND rate_limit_burst > 0)
    )
    """,
    """
    CREATE TABLE credential (
        key_sha256 TEXT NOT NULL,
        credential_id TEXT NOT NULL,
        channel_id TEXT,
        scopes TEXT[] DEFAULT '{}' NOT NULL,
        revoked BOOLEAN DEFAULT false NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (key_sha256),
        CONSTRAINT credential_id_unique UNIQUE (credential_id)
    )
    """,
    """
    CREATE TABLE item (
        sku TEXT NOT NULL,
        description TEXT DEFAULT '' NOT NULL,
        PRIMARY KEY (sku)
    )
    """,
    """
    CREATE TABLE unit_conversion (
        sku TEXT NOT NULL,
        unit_of_measure TEXT NOT NULL,
        factor BIGINT NOT NULL,
        PRIMARY KEY (sku, unit_of_measure),
        CONSTRAINT unit_conversion_factor CHECK (factor > 0)
    )
    """,
    """
    CREATE TABLE channel_unit (
        channel_id TEXT NOT NULL,
        channel_unit TEXT NOT NULL,
        unit_of_measure TEXT NOT NULL,
        PRIMARY KEY (channel_id, channel_unit)
    )
    """,
    """
    CREATE TABLE sku_alias (
        channel_id TEXT NOT NULL,
        channel_sku TEXT NOT NULL,
        sku TEXT NOT NULL,
        PRIMARY KEY (channel_id, channel_sku)
    )
    """,
    """
    CREATE TABLE customer_alias (
        channel_id TEXT NOT NULL,
        channel_customer_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        PRIMARY KEY (channel_id, channel_customer_id)
    )
    """,
    """
    CREATE TABLE hold (
        hold_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        reservation_id TEXT DEFAULT '' NOT NULL,
        state TEXT NOT NULL,
        expires_at TIMESTAMP WITH TIME ZONE,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        document BYTEA NOT NULL,
        PRIMARY KEY (hold_id)
    )
    """,
    """
    CREATE INDEX hold_reservation ON hold (reservation_id)
    """,
    """
    CREATE TABLE customer_order (
        order_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        channel_order_id TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        customer_id TEXT DEFAULT '' NOT NULL,
        status INTEGER NOT NULL,
        status_sequence BIGINT NOT NULL,
        pending_backorder JSONB DEFAULT '{}' NOT NULL,
        view_state JSONB DEFAULT '{}' NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        document BYTEA NOT NULL,
        PRIMARY KEY (order_id),
        CONSTRAINT customer_order_channel_key UNIQUE (channel_id, channel_order_id)
    )
    """,
    """
    CREATE INDEX customer_order_created ON customer_order (created_at DESC, order_id DESC)
    """,
    """
    CREATE INDEX customer_order_channel_created
        ON customer_order (channel_id, created_at DESC, order_id DESC)
    """,
    """
    CREATE TABLE order_status_change (
        order_id TEXT NOT NULL,
        status_sequence BIGINT NOT NULL,
        previous_status INTEGER NOT NULL,
        status INTEGER NOT NULL,
        changed_at TIMESTAMP WITH TIME ZONE NOT NULL,
        document BYTEA NOT NULL,
        PRIMARY KEY (order_id, status_sequence)
    )
    """,
    """
    CREATE TABLE availability (
        sku TEXT NOT NULL,
        warehouse TEXT NOT NULL,
        on_hand BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        allocated BIGINT NOT NULL,
        safety_stock BIGINT NOT NULL,
        available BIGINT NOT NULL,
        incoming BIGINT NOT NULL,
        source_sequence BIGINT NOT NULL,
        as_of TIMESTAMP WITH TIME ZONE NOT NULL,
        PRIMARY KEY (sku, warehouse)
    )
    """,
    """
    CREATE TABLE ingest_exception (
        exception_id UUID NOT NULL,
        request_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        format TEXT NOT NULL,
        channel_order_id TEXT DEFAULT '' NOT NULL,
        payload BYTEA NOT NULL,
        payload_sha256 TEXT NOT NULL,
        issues JSONB NOT NULL,
        received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (exception_id),
        CONSTRAINT ingest_exception_request UNIQUE (request_id)
    )
    """,
    """
    CREATE TABLE order_request (
        request_key TEXT NOT NULL,
        order_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        document BYTEA NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (request_key),
        CONSTRAINT order_request_kind CHECK (kind IN ('CANCEL', 'RETURN'))
    )
    """,
    """
    CREATE INDEX order_request_order ON order_request (order_id)
    """,
]

TABLES = (
    "order_request",
    "ingest_exception",
    "availability",
    "order_status_change",
    "customer_order",
    "hold",
    "customer_alias",
    "sku_alias",
    "channel_unit",
    "unit_conversion",
    "item",
    "credential",
    "channel",
)


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
