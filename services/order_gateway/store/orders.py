"""SQL of the order gateway: orders (the order view), status history, holds, the
availability read model, ingest exceptions, cancellation/return requests. Every function runs
in the caller's transaction (or on the autocommit read engine for reads)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, Text, and_, bindparam, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chassis.statements import insert_row, update_where, where_params
from dwf.inventory.v1 import inventory_pb2
from dwf.order.v1 import order_gateway_pb2
from services.order_gateway.domain import Position
from services.order_gateway.store.tables import (
    availability,
    availability_watermark,
    customer_order,
    hold,
    ingest_exception,
    order_request,
    order_status_change,
)

Reader = AsyncConnection | AsyncSession
ORDER_CHANGED = "order_gateway_order_changed"  # the order_changed_notify trigger's channel


# --- orders -------------------------------------------------------------------------------


async def claim_order(
    session: AsyncSession, order_id: str, channel_id: str, channel_order_id: str, content: str
) -> bool:
    """Insert the order's row first thing in the accepting transaction: a concurrent
    submission of the same channel order waits on it, then finds the order."""
    claimed = await session.scalar(
        insert(customer_order)
        .values(
            order_id=order_id,
            channel_id=channel_id,
            channel_order_id=channel_order_id,
            content_sha256=content,
            status=0,
            status_sequence=0,
            document=b"",
        )
        .on_conflict_do_nothing()
        .returning(customer_order.c.order_id)
    )
    return claimed is not None


@dataclass(frozen=True)
class StoredOrder:
    order: order_gateway_pb2.Order
    content_sha256: str
    pending_backorder: dict[str, int]
    view_state: dict[str, str]


def _stored(row: Any) -> StoredOrder:
    return StoredOrder(
        order_gateway_pb2.Order.FromString(row.document),
        row.content_sha256,
        {k: int(v) for k, v in dict(row.pending_backorder).items()},
        {k: str(v) for k, v in dict(row.view_state).items()},
    )


async def load_order(
    reader: Reader, order_id: str, *, for_update: bool = False
) -> StoredOrder | None:
    query = _LOAD_ORDER_FOR_UPDATE if for_update else _LOAD_ORDER
    row = (await reader.execute(query, {"order_id": order_id})).one_or_none()
    return None if row is None else _stored(row)


# The order view's statements run for every event about an order: built once (building one,
# with its cache key, costs more than running it).
_LOAD_ORDER = select(customer_order).where(
    customer_order.c.order_id == bindparam("order_id"), customer_order.c.status_sequence > 0
)
_LOAD_ORDER_FOR_UPDATE = _LOAD_ORDER.with_for_update()


async def load_order_by_channel_key(
    reader: Reader, channel_id: str, channel_order_id: str
) -> StoredOrder | None:
    row = (
        await reader.execute(
            select(customer_order).where(
                customer_order.c.channel_id == channel_id,
                customer_order.c.channel_order_id == channel_order_id,
                customer_order.c.status_sequence > 0,
            )
        )
    ).one_or_none()
    return None if row is None else _stored(row)


async def save_order(
    session: AsyncSession,
    order: order_gateway_pb2.Order,
    *,
    pending_backorder: Mapping[str, int] | None = None,
    view_state: Mapping[str, str] | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": int(order.status),
        "status_sequence": int(order.status_sequence),
        "customer_id": order.customer.customer_id,
        "updated_at": _dt(order, "updated_at") or datetime.now(UTC),
        "document": order.SerializeToString(deterministic=True),
    }
    if order.HasField("created_at"):
        values["created_at"] = _dt(order, "created_at")
    if pending_backorder is not None:
        values["pending_backorder"] = dict(pending_backorder)
    if view_state is not None:
        values["view_state"] = dict(view_state)
    await session.execute(
        update_where(customer_order, ("order_id",), frozenset(values)),
        {**values, **where_params(order_id=order.order_id)},
    )


async def add_status_change(
    session: AsyncSession,
    order: order_gateway_pb2.Order,
    previous_status: int,
    changed_at: datetime,
) -> None:
    """History row for WatchOrder. Its order_changed_notify trigger wakes the watchers on
    every replica at commit (not for an order's first status: nobody can be watching it
    yet, and NOTIFYs serialise commits)."""
    await session.execute(
        insert_row(order_status_change, STATUS_CHANGE_COLUMNS, on_conflict="nothing"),
        {
            "order_id": order.order_id,
            "status_sequence": int(order.status_sequence),
            "previous_status": previous_status,
            "status": int(order.status),
            "changed_at": changed_at,
            "document": order.SerializeToString(deterministic=True),
        },
    )


STATUS_CHANGE_COLUMNS = frozenset(
    ("order_id", "status_sequence", "previous_status", "status", "changed_at", "document")
)


@dataclass(frozen=True)
class StatusChangeRow:
    status_sequence: int
    previous_status: int
    status: int
    changed_at: datetime
    order: order_gateway_pb2.Order


async def status_changes_after(
    reader: Reader, order_id: str, after: int, limit: int = 100
) -> list[StatusChangeRow]:
    rows = (
        await reader.execute(
            select(order_status_change)
            .where(
                order_status_change.c.order_id == order_id,
                order_status_change.c.status_sequence > after,
            )
            .order_by(order_status_change.c.status_sequence)
            .limit(limit)
        )
    ).all()
    return [
        StatusChangeRow(
            r.status_sequence,
            r.previous_status,
            r.status,
            r.changed_at,
            order_gateway_pb2.Order.FromString(r.document),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class OrderFilter:
    channel_id: str = ""
    statuses: tuple[int, ...] = ()
    customer_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


async def list_orders(
    reader: Reader,
    filters: OrderFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[tuple[datetime, order_gateway_pb2.Order]]:
    """Newest first, keyset-paged on (created_at, order_id)."""
    conditions = [customer_order.c.status_sequence > 0]
    if filters.channel_id:
        conditions.append(customer_order.c.channel_id == filters.channel_id)
    if filters.statuses:
        conditions.append(customer_order.c.status.in_(filters.statuses))
    if filters.customer_id:
        conditions.append(customer_order.c.customer_id == filters.customer_id)
    if filters.created_after is not None:
        conditions.append(customer_order.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(customer_order.c.created_at < filters.created_before)
    if after is not None:
        conditions.append(
            tuple_(customer_order.c.created_at, customer_order.c.order_id) < tuple_(*after)
        )
    rows = (
        await reader.execute(
            select(customer_order.c.created_at, customer_order.c.document)
            .where(and_(*conditions))
            .order_by(customer_order.c.created_at.desc(), customer_order.c.order_id.desc())
            .limit(limit)
        )
    ).all()
    return [(r.created_at, order_gateway_pb2.Order.FromString(r.document)) for r in rows]


# --- holds --------------------------------------------------------------------------------


async def insert_hold(session: AsyncSession, held: order_gateway_pb2.Hold) -> None:
    await session.execute(
        insert(hold)
        .values(
            hold_id=held.hold_id,
            channel_id=held.channel_id,
            reservation_id=held.reservation_id,
            state=order_gateway_pb2.HoldState.Name(held.state),
            expires_at=_dt(held, "expires_at"),
            document=held.SerializeToString(deterministic=True),
        )
        .on_conflict_do_nothing()
    )


async def load_hold(
    reader: Reader, hold_id: str, *, for_update: bool = False
) -> order_gateway_pb2.Hold | None:
    query = select(hold.c.document).where(hold.c.hold_id == hold_id)
    if for_update:
        query = query.with_for_update()
    document = await reader.scalar(query)
    return None if document is None else order_gateway_pb2.Hold.FromString(document)


async def hold_for_reservation(
    session: AsyncSession, reservation_id: str
) -> order_gateway_pb2.Hold | None:
    document = await session.scalar(
        select(hold.c.document).where(hold.c.reservation_id == reservation_id).with_for_update()
    )
    return None if document is None else order_gateway_pb2.Hold.FromString(document)


async def save_hold(session: AsyncSession, held: order_gateway_pb2.Hold) -> None:
    await session.execute(
        update(hold)
        .where(hold.c.hold_id == held.hold_id)
        .values(
            state=order_gateway_pb2.HoldState.Name(held.state),
            expires_at=_dt(held, "expires_at"),
            updated_at=func.now(),
            document=held.SerializeToString(deterministic=True),
        )
    )


# --- availability read model --------------------------------------------------------------


# Built once: CheckAvailability's refreshes run it many times a second.
_POSITIONS = (
    select(
        availability.c.sku,
        availability.c.warehouse,
        availability.c.available,
        availability.c.incoming,
        func.greatest(availability.c.as_of, availability_watermark.c.as_of).label("as_of"),
    )
    .select_from(
        availability.outerjoin(
            availability_watermark,
            availability_watermark.c.warehouse == availability.c.warehouse,
        )
    )
    .where(availability.c.sku == func.any(bindparam("skus", type_=ARRAY(Text))))
)


async def read_positions(reader: Reader, skus: Iterable[str]) -> dict[str, list[Position]]:
    rows = (await reader.execute(_POSITIONS, {"skus": list(set(skus))})).all()
    positions: dict[str, list[Position]] = {}
    for r in rows:
        positions.setdefault(r.sku, []).append(
            Position(r.sku, r.warehouse, r.available, r.incoming, r.as_of)
        )
    return positions


def _level_values(
    level: inventory_pb2.StockLevel, sequence: int, as_of: datetime
) -> dict[str, Any]:
    return {
        "sku": level.sku,
        "warehouse": level.warehouse_id,
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "allocated": level.allocated,
        "safety_stock": level.safety_stock,
        "available": level.available,
        "incoming": level.incoming,
        "source_sequence": sequence,
        "as_of": as_of,
    }


# A warehouse's AvailabilityChanged in one statement, built once: the watermark and every
# level it names. A multi-row VALUES insert is compiled afresh for each row count, which
# cost more CPU than running it.
_APPLY_LEVELS = text(
    """
    WITH mark AS (
        INSERT INTO availability_watermark (warehouse, source_sequence, as_of)
        VALUES (:warehouse, CAST(:sequence AS bigint), CAST(:as_of AS timestamptz))
        ON CONFLICT (warehouse) DO UPDATE
        SET source_sequence = excluded.source_sequence, as_of = excluded.as_of
        WHERE availability_watermark.source_sequence < excluded.source_sequence
    )
    INSERT INTO availability (sku, warehouse, on_hand, reserved, allocated, safety_stock,
                              available, incoming, source_sequence, as_of)
    SELECT level.*, CAST(:sequence AS bigint), CAST(:as_of AS timestamptz)
    FROM unnest(CAST(:skus AS text[]), CAST(:warehouses AS text[]),
                CAST(:on_hand AS bigint[]), CAST(:reserved AS bigint[]),
                CAST(:allocated AS bigint[]), CAST(:safety_stock AS bigint[]),
                CAST(:available AS bigint[]), CAST(:incoming AS bigint[])) AS level
    ON CONFLICT (sku, warehouse) DO UPDATE
    SET on_hand = excluded.on_hand, reserved = excluded.reserved,
        allocated = excluded.allocated, safety_stock = excluded.safety_stock,
        available = excluded.available, incoming = excluded.incoming,
        source_sequence = excluded.source_sequence, as_of = excluded.as_of
    WHERE availability.source_sequence < excluded.source_sequence
    """
)


async def apply_levels(
    session: AsyncSession,
    warehouse: str,
    levels: Sequence[inventory_pb2.StockLevel],
    sequence: int,
    as_of: datetime,
) -> None:
    """Absolute numbers from a warehouse's AvailabilityChanged: a row only moves forward
    (an older or redelivered event never overwrites a newer one), and so does the
    warehouse's watermark."""
    await session.execute(
        _APPLY_LEVELS,
        {
            "warehouse": warehouse,
            "sequence": sequence,
            "as_of": as_of,
            "skus": [level.sku for level in levels],
            "warehouses": [level.warehouse_id for level in levels],
            "on_hand": [level.on_hand for level in levels],
            "reserved": [level.reserved for level in levels],
            "allocated": [level.allocated for level in levels],
            "safety_stock": [level.safety_stock for level in levels],
            "available": [level.available for level in levels],
            "incoming": [level.incoming for level in levels],
        },
    )


async def seed_positions(
    session: AsyncSession, levels: Sequence[inventory_pb2.StockLevel], as_of: datetime
) -> None:
    """Rows read from inventory for SKUs never seen: kept only where no event wrote first."""
    if levels:
        await session.execute(
            insert(availability)
            .values([_level_values(lv, 0, as_of) for lv in levels])
            .on_conflict_do_nothing()
        )


# --- ingest exceptions, order requests ----------------------------------------------------


async def record_ingest_exception(
    session: AsyncSession,
    *,
    request_id: str,
    channel_id: str,
    fmt: str,
    channel_order_id: str,
    payload: bytes,
    payload_sha256: str,
    issues: Sequence[Mapping[str, str]],
) -> bool:
    """Keep a refused payload for operators, once per request_id."""
    stored = await session.scalar(
        insert(ingest_exception)
        .values(
            exception_id=str(uuid.uuid4()),
            request_id=request_id,
            channel_id=channel_id,
            format=fmt,
            channel_order_id=channel_order_id,
            payload=payload,
            payload_sha256=payload_sha256,
            issues=json.loads(json.dumps(list(issues))),
        )
        .on_conflict_do_nothing()
        .returning(ingest_exception.c.exception_id)
    )
    return stored is not None


async def list_ingest_exceptions(
    reader: Reader, channel_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    conditions = []
    if channel_id:
        conditions.append(ingest_exception.c.channel_id == channel_id)
    if after is not None:
        conditions.append(
            or_(
                ingest_exception.c.received_at < after[0],
                and_(
                    ingest_exception.c.received_at == after[0],
                    ingest_exception.c.exception_id < after[1],
                ),
            )
        )
    return list(
        (
            await reader.execute(
                select(ingest_exception)
                .where(and_(*conditions))
                .order_by(
                    ingest_exception.c.received_at.desc(), ingest_exception.c.exception_id.desc()
                )
                .limit(limit)
            )
        ).all()
    )


async def record_order_request(
    session: AsyncSession, request_key: str, order_id: str, kind: str, document: bytes
) -> None:
    await session.execute(
        insert(order_request)
        .values(request_key=request_key, order_id=order_id, kind=kind, document=document)
        .on_conflict_do_nothing()
    )


# --- helpers ------------------------------------------------------------------------------


def _dt(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return value
