"""Tables of the notifications schema (created by migrations/versions/0002_delivery.py)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

metadata = MetaData()

endpoint = Table(
    "endpoint",
    metadata,
    Column("endpoint_id", Text, primary_key=True),
    Column("channel_id", Text, nullable=False),
    Column("kind", Text, nullable=False),  # WEBHOOK, EMAIL, MARKETPLACE_API, EDI
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False, server_default=""),
    Column("event_types", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("statuses", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("vocabulary", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text, nullable=False, server_default=""),  # GONE, OPERATOR, ...
    Column("disabled_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per (endpoint, order) — or (endpoint, "availability") for the stock feed. Its row
# lock serialises claim and finish; the lease marks the one delivery in flight.
delivery_queue = Table(
    "delivery_queue",
    metadata,
    Column("endpoint_id", Text, nullable=False),
    Column("ordering_key", Text, nullable=False),
    Column("delivered_sequence", BigInteger, nullable=False, server_default=text("0")),
    Column("assigned_sequence", BigInteger, nullable=False, server_default=text("0")),
    Column("due_at", DateTime(timezone=True)),
    Column("lease_token", UUID(as_uuid=False)),
    Column("lease_until", DateTime(timezone=True)),
    PrimaryKeyConstraint("endpoint_id", "ordering_key"),
)

delivery = Table(
    "delivery",
    metadata,
    Column("delivery_id", UUID(as_uuid=False), primary_key=True),
    Column("endpoint_id", Text, nullable=False),
    Column("channel_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=""),
    Column("order_id", Text, nullable=False, server_default=""),
    Column("ordering_key", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False, server_default=text("0")),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_http_status", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("content_type", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("summary", Text, nullable=False, server_default=""),
    Column("envelope", LargeBinary, nullable=False),
    Column("correlation_id", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    UniqueConstraint("endpoint_id", "event_id", name="delivery_once"),
)

channel_dead_letter = Table(
    "channel_dead_letter",
    metadata,
    Column("dead_letter_id", UUID(as_uuid=False), primary_key=True),
    Column("delivery_id", UUID(as_uuid=False), ForeignKey("delivery.delivery_id"), nullable=False),
    Column("channel_id", Text, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=""),
    Column("order_id", Text, nullable=False, server_default=""),
    Column("state", Text, nullable=False),  # PENDING, REPLAYED
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_http_status", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=False, server_default=""),
    Column(
        "dead_lettered_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.clock_timestamp(),
    ),
    Column("replayed_at", DateTime(timezone=True)),
    Column("replay_count", Integer, nullable=False, server_default=text("0")),
)

# Replay state of the chassis' dead_letter rows (events this service failed to consume).
consumption_replay = Table(
    "consumption_replay",
    metadata,
    Column("dead_letter_id", BigInteger, primary_key=True),
    Column("replayed_at", DateTime(timezone=True), nullable=False),
    Column("replay_count", Integer, nullable=False),
)

alert = Table(
    "alert",
    metadata,
    Column("alert_id", UUID(as_uuid=False), primary_key=True),
    Column("kind", Text, nullable=False),  # ENDPOINT_DISABLED
    Column("channel_id", Text, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("http_status", Integer, nullable=False, server_default=text("0")),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

availability_seen = Table(
    "availability_seen",
    metadata,
    Column("warehouse_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    PrimaryKeyConstraint("warehouse_id", "sku"),
)

availability_pending = Table(
    "availability_pending",
    metadata,
    Column("endpoint_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("warehouse_id", Text, nullable=False),  # '' for a channel total
    Column("available", BigInteger, nullable=False),
    Column("on_hand", BigInteger, nullable=False, server_default=text("0")),
    Column("incoming", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("endpoint_id", "sku", "warehouse_id"),
)
