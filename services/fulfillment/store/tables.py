"""Tables of the fulfillment schema (created by migrations/versions/0002_workflow.py)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID

metadata = MetaData()
NOW = text("now()")

order_workflow = Table(
    "order_workflow",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("channel_id", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("erp_order_number", Text, nullable=False, server_default=""),
    Column("reservation_id", Text, nullable=False, server_default=""),
    Column("lines", JSONB, nullable=False),  # domain.LineState per line id
    Column("document", BYTEA, nullable=False),  # the accepted dwf.order.v1.Order
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("completed_at", DateTime(timezone=True)),
)

# A durable step or timer of an order's workflow. One row per task_key (e.g.
# "BOOK_ERP:<order>", "RELEASE:<fulfillment order>"): scheduling the same step twice is a
# no-op, and any replica may claim a due task under a lease (SKIP LOCKED).
workflow_task = Table(
    "workflow_task",
    metadata,
    Column("task_key", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("subject_id", Text, nullable=False, server_default=""),
    Column("state", Text, nullable=False, server_default="PENDING"),
    Column("due_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lease_id", UUID(as_uuid=False)),
    Column("leased_until", DateTime(timezone=True)),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

fulfillment_order = Table(
    "fulfillment_order",
    metadata,
    Column("fulfillment_order_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("allocation_id", Text, nullable=False, unique=True),
    Column("warehouse_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("lines", JSONB, nullable=False),  # [{"line_id", "sku", "quantity", "shipped"}]
    Column("wms_release_id", Text, nullable=False, server_default=""),
    Column("release_attempts", Integer, nullable=False, server_default=text("0")),
    Column("released_at", DateTime(timezone=True)),
    Column("ack_due_at", DateTime(timezone=True)),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("rejection_reason", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

shipment = Table(
    "shipment",
    metadata,
    Column("shipment_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("fulfillment_order_id", Text, nullable=False),
    Column("wms_shipment_id", Text, nullable=False),  # unique per fulfillment order
    Column("erp_shipment_reference", Text, nullable=False, server_default=""),
    Column("invoice_number", Text, nullable=False, server_default=""),
    Column("document", BYTEA, nullable=False),  # dwf.fulfillment.v1.Shipment
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

invoice = Table(
    "invoice",
    metadata,
    Column("invoice_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("shipment_id", Text, nullable=False, unique=True),
    Column("document", BYTEA, nullable=False),  # dwf.fulfillment.v1.Invoice
)

exception_record = Table(
    "exception_record",
    metadata,
    Column("exception_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("channel_id", Text, nullable=False, server_default=""),
    Column("task_key", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("document", BYTEA, nullable=False),  # dwf.fulfillment.v1.ExceptionRecord
)

timeline_entry = Table(
    "timeline_entry",
    metadata,
    Column("position", BigInteger, Identity(always=True), primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("document", BYTEA, nullable=False),  # dwf.fulfillment.v1.TimelineEntry
)

wms_feed = Table(
    "wms_feed",
    metadata,
    Column("feed", Text, primary_key=True),
    Column("cursor", Text, nullable=False, server_default=""),
)

wms_event = Table(
    "wms_event",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

cancellation = Table(
    "cancellation",
    metadata,
    Column("cancellation_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    # REQUESTED → DONE, or WAITING_FOR_WMS while a released part awaits the WMS's answer.
    Column("state", Text, nullable=False, server_default="REQUESTED"),
    Column("document", BYTEA, nullable=False),  # dwf.order.v1.OrderCancelRequested
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

return_authorization = Table(
    "return_authorization",
    metadata,
    Column("rma_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("rma_number", Text, nullable=False, unique=True),
    Column("document", BYTEA, nullable=False),  # dwf.fulfillment.v1.ReturnAuthorization
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# A WMS return receipt, kept for the restock and credit memo steps it starts.
wms_receipt = Table(
    "wms_receipt",
    metadata,
    Column("subject", Text, primary_key=True),  # "<rma id>/<receipt id>"
    Column("document", BYTEA, nullable=False),  # dwf.fulfillment.v1.ReturnReceived
)
