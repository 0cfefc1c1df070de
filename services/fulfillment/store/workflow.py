"""SQL of the fulfillment service. Every function runs in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chassis.protos import ts
from chassis.statements import insert_row, select_where, update_where, where_params
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.order.v1 import order_gateway_pb2
from services.fulfillment import domain
from services.fulfillment.store.tables import (
    exception_record,
    fulfillment_order,
    invoice,
    order_workflow,
    shipment,
    timeline_entry,
)

Reader = AsyncConnection | AsyncSession
FO_STATES = {
    name.removeprefix("FULFILLMENT_ORDER_STATE_"): value
    for name, value in fpb.FulfillmentOrderState.items()
}


# --- orders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRow:
    order: order_gateway_pb2.Order
    channel_id: str
    status: int
    erp_order_number: str
    reservation_id: str
    lines: domain.Lines


async def insert_order(
    session: AsyncSession, order: order_gateway_pb2.Order, reservation_id: str
) -> bool:
    lines = {
        line.line_id: domain.LineState(sku=line.sku, ordered=line.base_quantity)
        for line in order.lines
    }
    inserted = await session.scalar(
        insert(order_workflow)
        .values(
            order_id=order.order_id,
            channel_id=order.channel.channel_id,
            status=int(order.status),
            reservation_id=reservation_id,
            lines=domain.lines_to_json(lines),
            document=order.SerializeToString(),
        )
        .on_conflict_do_nothing()
        .returning(order_workflow.c.order_id)
    )
    return inserted is not None


async def load_order(reader: Reader, order_id: str, *, for_update: bool = False) -> OrderRow | None:
    query = select_where(order_workflow, ("order_id",), for_update=for_update)
    row = (await reader.execute(query, where_params(order_id=order_id))).one_or_none()
    if row is None:
        return None
    return OrderRow(
        order_gateway_pb2.Order.FromString(row.document),
        row.channel_id,
        row.status,
        row.erp_order_number,
        row.reservation_id,
        domain.lines_from_json(row.lines),
    )


async def save_order(
    session: AsyncSession,
    order_id: str,
    *,
    lines: domain.Lines | None = None,
    status: int | None = None,
    erp_order_number: str | None = None,
    completed: bool = False,
) -> None:
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if lines is not None:
        values["lines"] = domain.lines_to_json(lines)
    if status is not None:
        values["status"] = status
    if erp_order_number is not None:
        values["erp_order_number"] = erp_order_number
    if completed:
        values["completed_at"] = datetime.now(UTC)
    await session.execute(
        update_where(order_workflow, ("order_id",), frozenset(values)),
        {**values, **where_params(order_id=order_id)},
    )


# --- fulfillment orders ------------------------------------------------------------------------


def fulfillment_order_proto(row: Any) -> fpb.FulfillmentOrder:
    return fpb.FulfillmentOrder(
        fulfillment_order_id=row.fulfillment_order_id,
        order_id=row.order_id,
        allocation_id=row.allocation_id,
        warehouse_id=row.warehouse_id,
        state=FO_STATES[row.state],
        lines=[
            fpb.FulfillmentLine(
                line_id=line["line_id"],
                sku=line["sku"],
                quantity=int(line["quantity"]),
                shipped_quantity=int(line.get("shipped", 0)),
                canceled_quantity=int(line.get("canceled", 0)),
                substituted_for_sku=line.get("substituted_for_sku", ""),
            )
            for line in row.lines
        ],
        wms_release_id=row.wms_release_id,
        release_attempts=row.release_attempts,
        released_at=ts(row.released_at),
        ack_due_at=ts(row.ack_due_at),
        acknowledged_at=ts(row.acknowledged_at),
        updated_at=ts(row.updated_at),
    )


async def insert_fulfillment_order(
    session: AsyncSession,
    fulfillment_order_id: str,
    order_id: str,
    allocation_id: str,
    warehouse_id: str,
    lines: Sequence[tuple[str, str, int, str]],
) -> bool:
    """``lines``: (line id, sku, quantity, the SKU it substitutes or "")."""
    inserted = await session.scalar(
        insert(fulfillment_order)
        .values(
            fulfillment_order_id=fulfillment_order_id,
            order_id=order_id,
            allocation_id=allocation_id,
            warehouse_id=warehouse_id,
            state="PENDING_RELEASE",
            lines=[
                {"line_id": lid, "sku": sku, "quantity": q, "shipped": 0}
                | ({"substituted_for_sku": original} if original else {})
                for lid, sku, q, original in lines
            ],
        )
        .on_conflict_do_nothing()
        .returning(fulfillment_order.c.fulfillment_order_id)
    )
    return inserted is not None


async def load_fulfillment_order(
    reader: Reader, fulfillment_order_id: str, *, for_update: bool = False
) -> Any | None:
    query = select_where(fulfillment_order, ("fulfillment_order_id",), for_update=for_update)
    params = where_params(fulfillment_order_id=fulfillment_order_id)
    return (await reader.execute(query, params)).one_or_none()


async def update_fulfillment_order(
    session: AsyncSession, fulfillment_order_id: str, **values: Any
) -> None:
    values = {"updated_at": datetime.now(UTC), **values}
    await session.execute(
        update_where(fulfillment_order, ("fulfillment_order_id",), frozenset(values)),
        {**values, **where_params(fulfillment_order_id=fulfillment_order_id)},
    )


async def fulfillment_orders_of(reader: Reader, order_id: str) -> list[Any]:
    return list(
        (
            await reader.execute(
                select(fulfillment_order)
                .where(fulfillment_order.c.order_id == order_id)
                .order_by(fulfillment_order.c.created_at, fulfillment_order.c.fulfillment_order_id)
            )
        ).all()
    )


# --- shipments and invoices --------------------------------------------------------------------


async def insert_shipment(session: AsyncSession, record: fpb.Shipment) -> bool:
    """One shipment per (fulfillment order, WMS shipment id), however often the WMS
    reports it."""
    values = {
        "shipment_id": record.shipment_id,
        "order_id": record.order_id,
        "fulfillment_order_id": record.fulfillment_order_id,
        "wms_shipment_id": record.wms_shipment_id,
        "document": record.SerializeToString(),
    }
    inserted = await session.scalar(
        insert_row(shipment, frozenset(values), on_conflict="nothing", returning="shipment_id"),
        values,
    )
    return inserted is not None


async def load_shipment(reader: Reader, shipment_id: str) -> fpb.Shipment | None:
    document = await reader.scalar(
        select_where(shipment, ("shipment_id",), columns=("document",)),
        where_params(shipment_id=shipment_id),
    )
    return None if document is None else fpb.Shipment.FromString(document)


async def save_shipment(session: AsyncSession, record: fpb.Shipment, **values: Any) -> None:
    values = {"document": record.SerializeToString(), **values}
    await session.execute(
        update_where(shipment, ("shipment_id",), frozenset(values)),
        {**values, **where_params(shipment_id=record.shipment_id)},
    )


async def shipment_counts(reader: Reader, order_id: str) -> tuple[int, int]:
    """(shipments, invoiced shipments) of an order."""
    row = (
        await reader.execute(
            select(
                func.count(),
                func.count().filter(shipment.c.invoice_number != ""),
            ).where(shipment.c.order_id == order_id)
        )
    ).one()
    return int(row[0]), int(row[1])


async def insert_invoice(session: AsyncSession, record: fpb.Invoice) -> bool:
    values = {
        "invoice_id": record.invoice_id,
        "order_id": record.order_id,
        "shipment_id": record.shipment_id,
        "document": record.SerializeToString(),
    }
    inserted = await session.scalar(
        insert_row(invoice, frozenset(values), on_conflict="nothing", returning="invoice_id"),
        values,
    )
    return inserted is not None


async def documents_of(reader: Reader, table: Any, order_id: str, message: Any) -> list[Any]:
    rows = (
        await reader.execute(select(table.c.document).where(table.c.order_id == order_id))
    ).all()
    return [message.FromString(r.document) for r in rows]


# --- timeline and exceptions ---------------------------------------------------------------------


async def add_timeline(
    session: AsyncSession,
    order_id: str,
    stage: int,
    summary: str,
    *,
    event_type: str = "",
    event_id: str = "",
    producer: str = "fulfillment",
    occurred_at: datetime | None = None,
) -> None:
    entry = fpb.TimelineEntry(
        occurred_at=ts(occurred_at or datetime.now(UTC)),
        stage=stage,  # type: ignore[arg-type]
        event_type=event_type,
        event_id=event_id,
        producer=producer,
        summary=summary[:500],
    )
    await session.execute(
        insert_row(timeline_entry, TIMELINE_COLUMNS),
        {"order_id": order_id, "document": entry.SerializeToString()},
    )


TIMELINE_COLUMNS = frozenset(("order_id", "document"))


async def timeline_of(reader: Reader, order_id: str) -> list[fpb.TimelineEntry]:
    rows = (
        await reader.execute(
            select(timeline_entry.c.document)
            .where(timeline_entry.c.order_id == order_id)
            .order_by(timeline_entry.c.position)
        )
    ).all()
    return [fpb.TimelineEntry.FromString(r.document) for r in rows]


async def load_exception(
    reader: Reader, exception_id: str, *, for_update: bool = False
) -> tuple[fpb.ExceptionRecord, str] | None:
    query = select(exception_record.c.document, exception_record.c.task_key).where(
        exception_record.c.exception_id == exception_id
    )
    if for_update:
        query = query.with_for_update()
    row = (await reader.execute(query)).one_or_none()
    if row is None:
        return None
    return fpb.ExceptionRecord.FromString(row.document), row.task_key


async def list_exceptions(
    reader: Reader,
    *,
    order_id: str = "",
    channel_id: str = "",
    states: Sequence[str] = (),
    categories: Sequence[str] = (),
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[Any]:
    conditions = []
    if order_id:
        conditions.append(exception_record.c.order_id == order_id)
    if channel_id:
        conditions.append(exception_record.c.channel_id == channel_id)
    if states:
        conditions.append(exception_record.c.state.in_(states))
    if categories:
        conditions.append(exception_record.c.category.in_(categories))
    if after is not None:
        conditions.append(
            tuple_(exception_record.c.last_seen_at, exception_record.c.exception_id)
            < tuple_(*after)
        )
    return list(
        (
            await reader.execute(
                select(exception_record)
                .where(and_(*conditions))
                .order_by(
                    exception_record.c.last_seen_at.desc(), exception_record.c.exception_id.desc()
                )
                .limit(limit)
            )
        ).all()
    )
