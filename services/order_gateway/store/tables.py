"""Tables of the order_gateway schema (created by migrations/versions/0002_gateway.py)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID

metadata = MetaData()

channel = Table(
    "channel",
    metadata,
    Column("channel_id", Text, primary_key=True),
    Column("name", Text, nullable=False, server_default=""),
    # BACKORDER: a shortfall is accepted as backorder; REFUSE: AcceptOrder fails instead.
    Column("backorder_policy", Text, nullable=False, server_default="BACKORDER"),
    Column("default_hold_ttl_seconds", Integer, nullable=False, server_default=text("900")),
    # Warehouses whose stock the channel may sell (CheckAvailability); empty = all.
    Column("warehouses", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("status_vocabulary", JSONB, nullable=False, server_default=text("'{}'")),
    Column("rate_limit_per_second", Float, nullable=False, server_default=text("100")),
    Column("rate_limit_burst", Integer, nullable=False, server_default=text("200")),
    # HS256 secret of the channel's signed tokens; NULL = API keys only.
    Column("token_secret", Text),
    # ERP customer of orders that name no customer of their own (e.g. marketplace orders).
    Column("default_customer_id", Text, nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

credential = Table(
    "credential",
    metadata,
    # Only the SHA-256 of an API key is stored: a leaked table reveals no usable key.
    Column("key_sha256", Text, primary_key=True),
    Column("credential_id", Text, nullable=False, unique=True),
    Column("channel_id", Text),
    Column("scopes", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("revoked", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

item = Table(
    "item",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("description", Text, nullable=False, server_default=""),
)

unit_conversion = Table(
    "unit_conversion",
    metadata,
    Column("sku", Text, nullable=False),
    Column("unit_of_measure", Text, nullable=False),
    Column("factor", BigInteger, nullable=False),
    PrimaryKeyConstraint("sku", "unit_of_measure"),
)

channel_unit = Table(
    "channel_unit",
    metadata,
    Column("channel_id", Text, nullable=False),
    Column("channel_unit", Text, nullable=False),
    Column("unit_of_measure", Text, nullable=False),
    PrimaryKeyConstraint("channel_id", "channel_unit"),
)

sku_alias = Table(
    "sku_alias",
    metadata,
    Column("channel_id", Text, nullable=False),
    Column("channel_sku", Text, nullable=False),
    Column("sku", Text, nullable=False),
    PrimaryKeyConstraint("channel_id", "channel_sku"),
)

customer_alias = Table(
    "customer_alias",
    metadata,
    Column("channel_id", Text, nullable=False),
    Column("channel_customer_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    PrimaryKeyConstraint("channel_id", "channel_customer_id"),
)

hold = Table(
    "hold",
    metadata,
    Column("hold_id", Text, primary_key=True),
    Column("channel_id", Text, nullable=False),
    Column("reservation_id", Text, nullable=False, server_default=""),
    Column("state", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("document", BYTEA, nullable=False),  # dwf.order.v1.Hold
)

customer_order = Table(
    "customer_order",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("channel_id", Text, nullable=False),
    Column("channel_order_id", Text, nullable=False),
    # Hash of the mapped order content: the same channel order id with other content is refused.
    Column("content_sha256", Text, nullable=False),
    Column("customer_id", Text, nullable=False, server_default=""),
    Column("status", Integer, nullable=False),
    Column("status_sequence", BigInteger, nullable=False),
    # Per line: quantity accepted as backorder at acceptance that inventory's BackorderCreated
    # has not yet confirmed (so the line's backordered is not counted twice).
    Column("pending_backorder", JSONB, nullable=False, server_default=text("'{}'")),
    # The order view's bookkeeping (services.order_gateway.view keeps it in "dwf.*" attributes
    # while it works); stored apart so that no channel ever sees it.
    Column("view_state", JSONB, nullable=False, server_default=text("'{}'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("document", BYTEA, nullable=False),  # dwf.order.v1.Order
)

order_status_change = Table(
    "order_status_change",
    metadata,
    Column("order_id", Text, nullable=False),
    Column("status_sequence", BigInteger, nullable=False),
    Column("previous_status", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("document", BYTEA, nullable=False),  # the Order as of the change
    PrimaryKeyConstraint("order_id", "status_sequence"),
)

availability = Table(
    "availability",
    metadata,
    Column("sku", Text, nullable=False),
    Column("warehouse", Text, nullable=False),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("allocated", BigInteger, nullable=False),
    Column("safety_stock", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("incoming", BigInteger, nullable=False),
    # Envelope sequence of the warehouse's AvailabilityChanged that wrote the row; 0 when it
    # came from a GetAvailability fallback (any event then wins).
    Column("source_sequence", BigInteger, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("sku", "warehouse"),
)

# Newest AvailabilityChanged applied per warehouse: every row of that warehouse is current
# as of then (an event names only the SKUs that changed).
availability_watermark = Table(
    "availability_watermark",
    metadata,
    Column("warehouse", Text, primary_key=True),
    Column("source_sequence", BigInteger, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
)

ingest_exception = Table(
    "ingest_exception",
    metadata,
    Column("exception_id", UUID(as_uuid=False), primary_key=True),
    Column("request_id", Text, nullable=False, unique=True),
    Column("channel_id", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column("channel_order_id", Text, nullable=False, server_default=""),
    Column("payload", BYTEA, nullable=False),
    Column("payload_sha256", Text, nullable=False),
    Column("issues", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

order_request = Table(
    "order_request",
    metadata,
    Column("request_key", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("document", BYTEA, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
