"""Tables every service owns in its schema: outbox, aggregate sequences, inbox, dead letters,
idempotency keys. Each service's first Alembic revision creates them with
:func:`create_chassis_tables`, so the reliability mechanisms are never re-written per service.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

outbox = Table(
    "outbox",
    metadata,
    # Publication order; per aggregate it matches sequence order (see chassis.outbox).
    Column("position", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", UUID(as_uuid=False), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Index("outbox_unpublished", "position", postgresql_where=text("published_at IS NULL")),
)

aggregate_sequence = Table(
    "aggregate_sequence",
    metadata,
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    PrimaryKeyConstraint("aggregate_type", "aggregate_id"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)

dead_letter = Table(
    "dead_letter",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("stream_sequence", BigInteger, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("dead_lettered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("dead_letter_once", "consumer", "event_id", "stream_sequence", unique=True),
)

idempotency_key = Table(
    "idempotency_key",
    metadata,
    Column("method", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("response", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("method", "request_id"),
)


# Wakes the relay when outbox rows commit (NOTIFY is delivered at commit), without a
# client round trip per event. The channel is per schema: dwf_outbox_<schema>.
_NOTIFY_FUNCTION = """
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dwf_outbox_' || current_schema(), '');
    RETURN NULL;
END $$
"""
_NOTIFY_TRIGGER = (
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
    "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
)


# Frozen DDL of version 1 of the chassis tables (generated once from the metadata above):
# a migration must create the same tables forever, whatever the metadata becomes. A change
# to these tables is a new versioned function here, called by a new revision per service.
CHASSIS_TABLES_V1_DDL = [
    """
    CREATE TABLE aggregate_sequence (
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        last_sequence BIGINT NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id)
    )
    """,
    """
    CREATE TABLE dead_letter (
        id BIGINT GENERATED ALWAYS AS IDENTITY,
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        subject TEXT NOT NULL,
        stream_sequence BIGINT NOT NULL,
        deliveries INTEGER NOT NULL,
        error TEXT NOT NULL,
        body BYTEA NOT NULL,
        headers JSONB NOT NULL,
        dead_lettered_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (id)
    )
    """,
    """
    CREATE UNIQUE INDEX dead_letter_once ON dead_letter (consumer, event_id, stream_sequence)
    """,
    """
    CREATE TABLE idempotency_key (
        method TEXT NOT NULL,
        request_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        response BYTEA,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (method, request_id)
    )
    """,
    """
    CREATE TABLE inbox (
        consumer TEXT NOT NULL,
        event_id UUID NOT NULL,
        event_type TEXT NOT NULL,
        received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (consumer, event_id)
    )
    """,
    """
    CREATE TABLE outbox (
        position BIGINT GENERATED ALWAYS AS IDENTITY,
        event_id UUID NOT NULL,
        subject TEXT NOT NULL,
        event_type TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        body BYTEA NOT NULL,
        headers JSONB NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        published_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (position),
        UNIQUE (event_id)
    )
    """,
    """
    CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL
    """,
]


def create_chassis_tables() -> None:
    """Call from a service's first migration."""
    for statement in CHASSIS_TABLES_V1_DDL:
        op.execute(statement)
    op.execute(_NOTIFY_FUNCTION)
    op.execute(_NOTIFY_TRIGGER)


def drop_chassis_tables() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    for table in reversed(metadata.sorted_tables):
        op.execute(f"DROP TABLE IF EXISTS {table.name}")
