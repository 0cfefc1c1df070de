"""Tables of the inventory schema (created by migrations/versions/0002_stock.py)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, UUID

metadata = MetaData()

warehouse = Table(
    "warehouse",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("region_code", Text, nullable=False),
    Column("postal_code", Text, nullable=False, server_default=""),
    Column("priority", Integer, nullable=False, server_default=text("100")),
    # Channels allowed to sell from this warehouse; empty = every channel.
    Column("channels", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
)

item = Table(
    "item",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # SKUs that may replace this one, best first (used where a line allows substitution).
    Column("substitutes", ARRAY(Text), nullable=False, server_default=text("'{}'")),
)

stock_position = Table(
    "stock_position",
    metadata,
    Column("sku", Text, ForeignKey("item.sku"), nullable=False),
    Column("warehouse", Text, ForeignKey("warehouse.code"), nullable=False),
    Column("on_hand", BigInteger, nullable=False, server_default=text("0")),
    Column("reserved", BigInteger, nullable=False, server_default=text("0")),
    Column("allocated", BigInteger, nullable=False, server_default=text("0")),
    Column("safety_stock", BigInteger, nullable=False, server_default=text("0")),
    # Sequence of the last ledger entry of this position (entries are gapless per position).
    Column("ledger_sequence", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("sku", "warehouse"),
    CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    CheckConstraint("allocated >= 0", name="allocated_not_negative"),
    CheckConstraint("safety_stock >= 0", name="safety_stock_not_negative"),
)

incoming_supply = Table(
    "incoming_supply",
    metadata,
    Column("supply_id", Text, nullable=False),
    Column("sku", Text, ForeignKey("item.sku"), nullable=False),
    Column("warehouse", Text, ForeignKey("warehouse.code"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("expected_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("supply_id", "sku", "warehouse"),
    CheckConstraint("quantity > 0", name="supply_quantity_positive"),
)

ledger_entry = Table(
    "ledger_entry",
    metadata,
    Column("entry_id", UUID(as_uuid=False), primary_key=True),
    Column("sku", Text, nullable=False),
    Column("warehouse", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("quantity_delta", BigInteger, nullable=False),
    Column("on_hand_after", BigInteger, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("reference", Text, nullable=False, server_default=""),
    Column("order_id", Text, nullable=False, server_default=""),
    Column("line_id", Text, nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ledger_position_sequence", "sku", "warehouse", "sequence", unique=True),
    Index(
        "ledger_movement_once",
        "kind",
        "reference",
        "sku",
        "warehouse",
        "line_id",
        unique=True,
        postgresql_where=text("reference <> ''"),
    ),
    Index("ledger_newest", "recorded_at", "entry_id"),
    CheckConstraint("quantity_delta <> 0", name="ledger_delta_not_zero"),
)

reservation = Table(
    "reservation",
    metadata,
    Column("reservation_id", UUID(as_uuid=False), primary_key=True),
    Column("owner_type", Text, nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("channel_id", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # At most one ACTIVE reservation per owner.
    Index(
        "reservation_active_owner",
        "owner_type",
        "owner_id",
        unique=True,
        postgresql_where=text("state = 'ACTIVE'"),
    ),
    # The expiry sweeper's queue.
    Index(
        "reservation_expiry",
        "expires_at",
        postgresql_where=text("state = 'ACTIVE' AND expires_at IS NOT NULL"),
    ),
)

reservation_line = Table(
    "reservation_line",
    metadata,
    Column(
        "reservation_id",
        UUID(as_uuid=False),
        ForeignKey("reservation.reservation_id"),
        nullable=False,
    ),
    Column("line_id", Text, nullable=False),
    Column("position", Integer, nullable=False),  # the line's index in the request
    Column("sku", Text, nullable=False),
    Column("requested", BigInteger, nullable=False),
    PrimaryKeyConstraint("reservation_id", "line_id"),
)

reservation_hold = Table(
    "reservation_hold",
    metadata,
    Column("reservation_id", UUID(as_uuid=False), nullable=False),
    Column("line_id", Text, nullable=False),
    Column("warehouse", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    PrimaryKeyConstraint("reservation_id", "line_id", "warehouse"),
    CheckConstraint("quantity > 0", name="hold_quantity_positive"),
)

# Positions whose availability changed since the last AvailabilityChanged window: marked by
# triggers on stock_position (migration 0006), so no writing path can forget it.
availability_dirty = Table(
    "availability_dirty",
    metadata,
    Column("sku", Text, nullable=False),
    Column("warehouse", Text, nullable=False),
    Column("marked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("sku", "warehouse"),
)

# One report per WMS snapshot: reconciling the same snapshot again returns this report.
reconciliation = Table(
    "reconciliation",
    metadata,
    Column("reconciliation_id", UUID(as_uuid=False), primary_key=True),
    Column("warehouse", Text, nullable=False),
    Column("snapshot_id", Text, nullable=False),
    Column("report", BYTEA, nullable=False),
    Column("reconciled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("reconciliation_snapshot_once", "warehouse", "snapshot_id", unique=True),
)

# The channel's configured sourcing policy (master data); Allocate may override per call.
channel_policy = Table(
    "channel_policy",
    metadata,
    Column("channel_id", Text, primary_key=True),
    Column("ranking", Text, nullable=False, server_default="PRIORITY_LIST"),
    Column("warehouse_priority", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("split_rule", Text, nullable=False, server_default="ALLOW_SPLIT"),
    Column("allow_backorder", Boolean, nullable=False, server_default=text("true")),
)

allocation = Table(
    "allocation",
    metadata,
    Column("allocation_id", UUID(as_uuid=False), primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("channel_id", Text, nullable=False),
    Column("warehouse", Text, nullable=False),
    Column("allocated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("allocation_order", "order_id"),
)

allocation_line = Table(
    "allocation_line",
    metadata,
    Column("allocation_id", UUID(as_uuid=False), nullable=False),
    Column("line_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),  # still allocated (not shipped/removed)
    Column("shipped", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("allocation_id", "line_id"),
    CheckConstraint("quantity >= 0 AND shipped >= 0", name="allocation_line_quantities"),
)

backorder = Table(
    "backorder",
    metadata,
    Column("backorder_id", UUID(as_uuid=False), primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("channel_id", Text, nullable=False),
    Column("line_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),  # still waiting
    Column("priority", Integer, nullable=False),
    Column("warehouses", ARRAY(Text), nullable=False),  # may be filled from these
    Column("expected_at", DateTime(timezone=True)),
    Column("eta_warehouse", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("backorder_open", "sku", postgresql_where=text("quantity > 0")),
    CheckConstraint("quantity >= 0", name="backorder_quantity_not_negative"),
)
