"""The order workflow: each step's external call and its effects.

OrderAccepted → BOOK_ERP → ALLOCATE (inventory) → one fulfillment order per allocation →
RELEASE (WMS) → ACK_CHECK (timer) → the WMS feed (ack, shipments) → STOCK_SHIPMENT (inventory
ledger) → POST_SHIPMENT (ERP) → INVOICE (ERP) → COMPLETED. Backordered quantity waits for
inventory's BackorderFilled, which adds a fulfillment order for the new allocation. A release
the WMS rejects is re-sourced (RESOURCE: deallocate, allocate again without that warehouse).

Every external call is idempotent on our own reference (order id, fulfillment order id,
shipment id, request ids derived from them), so a step re-run after a crash or a lost lease
finds what the first run did instead of doing it twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.outbox import PendingEvent
from chassis.protos import ts
from chassis.server import Runtime
from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import events_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.inventory.v1 import inventory_pb2 as inv
from dwf.inventory.v1 import inventory_pb2_grpc
from dwf.order.v1 import events_pb2 as order_events
from services.fulfillment import domain
from services.fulfillment.connectors import Connectors
from services.fulfillment.connectors import erp as erp_api
from services.fulfillment.connectors import wms as wms_api
from services.fulfillment.connectors.http import ConnectorError
from services.fulfillment.engine import StepFailure, Task, TaskEngine, schedule
from services.fulfillment.store import workflow as store
from services.fulfillment.store.tables import (
    cancellation,
    return_authorization,
    shipment,
    wms_event,
    wms_feed,
    wms_receipt,
    workflow_task,
)

log = logging.getLogger("dwf.fulfillment.workflow")
S = common_pb2
NAMESPACE = uuid.UUID("2f0b5a4e-6f55-4a3c-9a43-1f3f7a0f6c21")
FEED = "wms"
RELEASED_STATES = ("RELEASED", "ACKNOWLEDGED", "PARTIALLY_SHIPPED")
T = TypeVar("T")


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def money_text(money: common_pb2.Money) -> str:
    return str(Decimal(money.units) + Decimal(money.nanos) / Decimal(10**9))


def address(message: common_pb2.PostalAddress) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def sourced_summary(response: inv.AllocateResponse) -> str:
    """Where an allocation put the quantity, for the timeline."""
    parts = (
        [
            f"{line.quantity} of line {line.line_id} to {a.warehouse_id}"
            for a in response.allocations
            for line in a.lines
        ]
        + [f"{b.quantity} of line {b.line_id} backordered" for b in response.backorders]
        + [f"{u.quantity} of line {u.line_id} with no warehouse" for u in response.unfilled]
    )
    return "; ".join(parts) or "nothing could be allocated"


class Workflow:
    def __init__(
        self,
        runtime: Runtime,
        engine: TaskEngine,
        connectors: Connectors,
        inventory: Callable[[], inventory_pb2_grpc.InventoryServiceStub],
        *,
        ack_sla_seconds: float = 300.0,
        max_release_attempts: int = 3,
        max_resourcing: int = 3,
        erp_system: str = "erp-sandbox",
    ) -> None:
        self.runtime = runtime
        self.engine = engine
        self.connectors = connectors
        self.inventory = inventory
        self.ack_sla = ack_sla_seconds
        self.max_release_attempts = max_release_attempts
        self.max_resourcing = max_resourcing
        self.erp_system = erp_system
        engine.register(
            {
                "BOOK_ERP": self.book_erp,
                "ALLOCATE": self.allocate,
                "RELEASE": self.release,
                "ACK_CHECK": self.ack_check,
                "RESOURCE": self.resource,
                "SHORT_PICK": self.short_pick,
                "STOCK_SHIPMENT": self.stock_shipment,
                "POST_SHIPMENT": self.post_shipment,
                "INVOICE": self.invoice,
                "CANCEL": self.cancel,
                "DEALLOCATE": self.deallocate,
                "ERP_CANCEL": self.erp_cancel,
                "RETURN": self.announce_return,
                "RESTOCK": self.restock,
                "CREDIT_MEMO": self.credit_memo,
            }
        )

    # --- helpers ---------------------------------------------------------------------------

    async def _external(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except ConnectorError as exc:
            raise StepFailure(
                domain.Category(exc.category),
                exc.system,
                exc.code,
                str(exc),
                json.dumps(exc.request_payload, default=str).encode()
                if exc.request_payload is not None
                else b"",
                exc.retry_after,
            ) from exc

    async def _inventory(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.inventory(), method)(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            category = (
                domain.Category.DATA_QUALITY
                if code == grpc.StatusCode.INVALID_ARGUMENT
                else domain.Category.BUSINESS_RULE
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS)
                else domain.Category.DEPENDENCY
            )
            raise StepFailure(
                category, "DWF", f"INVENTORY_{code.name}", exc.details() or "", b""
            ) from exc

    async def _order_and_shipment(self, task: Task) -> tuple[store.OrderRow, fpb.Shipment]:
        """The order and the shipment a posting step (subject: shipment id) works on."""
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
            shipped = await store.load_shipment(reader, task.subject_id)
        assert row is not None and shipped is not None
        return row, shipped

    @classmethod
    def _erp_lines(
        cls, row: store.OrderRow, shipped: fpb.Shipment
    ) -> tuple[erp_api.QuantityLine, ...]:
        return tuple(
            cls._erp_line(row, line.line_id, line.sku, line.quantity) for line in shipped.lines
        )

    @staticmethod
    def _erp_line(
        row: store.OrderRow, line_id: str, sku: str, quantity: int
    ) -> erp_api.QuantityLine:
        """A line for the ERP names the sales order line's item; a substitute that went out
        instead travels as shipped_sku."""
        state = row.lines.get(line_id)
        ordered = state.sku if state is not None else sku
        return erp_api.QuantityLine(line_id, ordered, quantity, shipped_sku=sku)

    async def _order(self, session: AsyncSession, order_id: str) -> store.OrderRow:
        row = await store.load_order(session, order_id, for_update=True)
        if row is None:
            raise StepFailure(domain.Category.BUSINESS_RULE, "DWF", "UNKNOWN_ORDER", order_id)
        return row

    async def _set_status(
        self, session: AsyncSession, row: store.OrderRow, status: int, reason: str = ""
    ) -> list[PendingEvent]:
        """A lifecycle status fulfillment owns, announced once per change."""
        if row.status == status:
            return []
        await store.save_order(
            session, row.order.order_id, status=status, completed=status == S.ORDER_STATUS_COMPLETED
        )
        return [
            PendingEvent(
                "order",
                row.order.order_id,
                events_pb2.OrderStatusChanged(
                    order_id=row.order.order_id,
                    previous_status=row.status,  # type: ignore[arg-type]
                    status=status,  # type: ignore[arg-type]
                    lifecycle_status=status,  # type: ignore[arg-type]
                    reason=reason,
                    changed_at=ts(datetime.now(UTC)),
                ),
            )
        ]

    # --- events in -------------------------------------------------------------------------

    async def on_order_accepted(
        self, session: AsyncSession, event: order_events.OrderAccepted, event_id: str
    ) -> None:
        if await store.insert_order(session, event.order, event.reservation_id):
            await store.add_timeline(
                session,
                event.order.order_id,
                fpb.WORKFLOW_STAGE_UNSPECIFIED,
                "order accepted by the gateway",
                event_type="dwf.order.v1.OrderAccepted",
                event_id=event_id,
                producer="order_gateway",
            )
            await schedule(session, event.order.order_id, "BOOK_ERP", event.order.order_id)

    async def on_backorder_filled(
        self, session: AsyncSession, event: inventory_events.BackorderFilled, event_id: str
    ) -> None:
        row = await store.load_order(session, event.order_id, for_update=True)
        if row is None:
            return
        allocation = event.allocation
        if all(state.open == 0 for state in row.lines.values()):
            # Filled after the order was canceled: the stock goes back.
            await schedule(session, event.order_id, "DEALLOCATE", allocation.allocation_id)
            return
        await self._add_fulfillment_orders(session, row, [allocation])
        await store.add_timeline(
            session,
            event.order_id,
            fpb.WORKFLOW_STAGE_ALLOCATION,
            f"backorder of line {event.line_id} filled at {allocation.warehouse_id}",
            event_type="dwf.inventory.v1.BackorderFilled",
            event_id=event_id,
            producer="inventory",
        )

    # --- steps -----------------------------------------------------------------------------

    async def book_erp(self, task: Task) -> None:
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
        assert row is not None
        order = row.order
        currency = next(
            (
                line.unit_price.currency_code
                for line in order.lines
                if line.unit_price.currency_code
            ),
            "USD",
        )
        request = erp_api.SalesOrderRequest(
            external_reference=order.order_id,
            customer_id=order.customer.customer_id or order.customer.channel_customer_id,
            currency=currency,
            ship_to=address(order.ship_to),
            lines=tuple(
                erp_api.SalesOrderLine(
                    line_id=line.line_id,
                    sku=line.sku,
                    quantity=line.base_quantity,
                    unit_price=Decimal(money_text(line.unit_price))
                    / max(line.base_quantity // max(line.quantity.value, 1), 1),
                )
                for line in order.lines
            ),
        )
        booked = await self._external(self.connectors.erp.book_sales_order(request))
        if booked.on_credit_hold:
            raise StepFailure(
                domain.Category.BUSINESS_RULE,
                "ERP",
                "CREDIT_HOLD",
                f"sales order {booked.sales_order_number} is on credit hold",
            )
        async with self.engine.completing(task) as session:
            await self.booked(
                session,
                task,
                booked.sales_order_number,
                f"booked in the ERP as {booked.sales_order_number} (attempt {task.attempts})",
            )

    async def booked(self, session: AsyncSession, task: Task, number: str, summary: str) -> None:
        """The order has its ERP sales order (booked by the step, or by hand by an operator):
        record it, announce it, and allocate next."""
        row = await self._order(session, task.order_id)
        await store.save_order(session, task.order_id, erp_order_number=number)
        events = [
            PendingEvent(
                "order",
                task.order_id,
                events_pb2.ErpOrderBooked(
                    order_id=task.order_id,
                    erp_order_number=number,
                    erp_system=self.erp_system,
                    booked_at=ts(datetime.now(UTC)),
                    attempts=task.attempts,
                ),
            ),
            *await self._set_status(session, row, S.ORDER_STATUS_ERP_BOOKED),
        ]
        await self.runtime.events.record_many(session, events)
        await store.add_timeline(session, task.order_id, fpb.WORKFLOW_STAGE_ERP_BOOKING, summary)
        await schedule(session, task.order_id, "ALLOCATE", task.order_id)

    async def allocate(self, task: Task) -> None:
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
        assert row is not None
        substitutable = {line.line_id for line in row.order.lines if line.substitution_allowed}
        lines = [
            inv.LineItem(
                line_id=line_id,
                sku=state.sku,
                quantity=state.open,
                substitution_allowed=line_id in substitutable,
            )
            for line_id, state in sorted(row.lines.items())
            if state.open > 0
        ]
        response: inv.AllocateResponse = await self._inventory(
            "Allocate",
            inv.AllocateRequest(
                request_id=derived_id(task.order_id, "allocate"),
                order_id=task.order_id,
                channel_id=row.channel_id,
                ship_to=row.order.ship_to,
                lines=lines,
            ),
        )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            await self._add_fulfillment_orders(session, row, list(response.allocations))
            for backorder in response.backorders:
                await store.add_timeline(
                    session,
                    task.order_id,
                    fpb.WORKFLOW_STAGE_ALLOCATION,
                    f"line {backorder.line_id}: {backorder.quantity} backordered",
                )

    async def _add_fulfillment_orders(
        self, session: AsyncSession, row: store.OrderRow, allocations: list[inv.WarehouseAllocation]
    ) -> None:
        lines = row.lines
        for allocation in allocations:
            fulfillment_order_id = derived_id(allocation.allocation_id, "fulfillment_order")
            created = await store.insert_fulfillment_order(
                session,
                fulfillment_order_id,
                row.order.order_id,
                allocation.allocation_id,
                allocation.warehouse_id,
                [
                    (line.line_id, line.sku, line.quantity, line.substituted_for_sku)
                    for line in allocation.lines
                ],
            )
            if not created:
                continue
            for line in allocation.lines:
                if line.substituted_for_sku:
                    await store.add_timeline(
                        session,
                        row.order.order_id,
                        fpb.WORKFLOW_STAGE_ALLOCATION,
                        f"line {line.line_id}: {line.quantity} x {line.sku} substituted for "
                        f"{line.substituted_for_sku} at {allocation.warehouse_id}",
                    )
            lines = domain.add(
                lines, "allocated", [(line.line_id, line.quantity) for line in allocation.lines]
            )
            await schedule(session, row.order.order_id, "RELEASE", fulfillment_order_id)
        await store.save_order(session, row.order.order_id, lines=lines)

    async def release(self, task: Task) -> None:
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
            fo = await store.load_fulfillment_order(reader, task.subject_id)
        assert row is not None and fo is not None
        released = await self._external(
            self.connectors.wms.release(
                wms_api.ReleaseRequest(
                    release_id=fo.fulfillment_order_id,
                    order_id=fo.order_id,
                    warehouse_id=fo.warehouse_id,
                    ship_to=address(row.order.ship_to),
                    carrier_code="UPS",
                    service_code="UPS_GROUND",
                    lines=tuple(
                        wms_api.WmsLine(line["line_id"], line["sku"], int(line["quantity"]))
                        for line in fo.lines
                    ),
                )
            )
        )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            fo = await store.load_fulfillment_order(session, task.subject_id, for_update=True)
            assert fo is not None
            now = datetime.now(UTC)
            first = fo.state == "PENDING_RELEASE"
            await store.update_fulfillment_order(
                session,
                fo.fulfillment_order_id,
                state="RELEASED" if first else fo.state,
                wms_release_id=released.wms_release_id,
                release_attempts=fo.release_attempts + 1,
                released_at=fo.released_at or now,
                ack_due_at=now + timedelta(seconds=self.ack_sla),
            )
            events: list[PendingEvent] = []
            if first:
                lines = domain.add(
                    row.lines,
                    "released",
                    [(line["line_id"], int(line["quantity"])) for line in fo.lines],
                )
                await store.save_order(session, task.order_id, lines=lines)
                fresh = await store.load_fulfillment_order(session, fo.fulfillment_order_id)
                events.append(
                    PendingEvent(
                        "order",
                        task.order_id,
                        events_pb2.FulfillmentOrderReleased(
                            fulfillment_order=store.fulfillment_order_proto(fresh)
                        ),
                    )
                )
                if row.status in (S.ORDER_STATUS_ERP_BOOKED, S.ORDER_STATUS_ACCEPTED):
                    events += await self._set_status(session, row, S.ORDER_STATUS_RELEASED)
                await store.add_timeline(
                    session,
                    task.order_id,
                    fpb.WORKFLOW_STAGE_RELEASE,
                    f"released to {fo.warehouse_id} as {released.wms_release_id}",
                )
            await self.runtime.events.record_many(session, events)
            await schedule(
                session,
                task.order_id,
                "ACK_CHECK",
                fo.fulfillment_order_id,
                now + timedelta(seconds=self.ack_sla),
                rearm=True,
            )

    async def ack_check(self, task: Task) -> None:
        """The acknowledgement SLA ran out: re-send (idempotent at the WMS) a few times, then
        hand it to an operator."""
        async with self.runtime.reads.connect() as reader:
            fo = await store.load_fulfillment_order(reader, task.subject_id)
        assert fo is not None
        if fo.state != "RELEASED":
            await self.engine.finish(task)
            return
        if fo.release_attempts >= self.max_release_attempts:
            raise StepFailure(
                domain.Category.BUSINESS_RULE,
                "WMS",
                "NO_ACKNOWLEDGEMENT",
                f"{fo.warehouse_id} did not acknowledge release {fo.fulfillment_order_id} "
                f"after {fo.release_attempts} sends",
            )
        async with self.engine.completing(task) as session:
            await store.add_timeline(
                session,
                task.order_id,
                fpb.WORKFLOW_STAGE_RELEASE,
                f"no acknowledgement from {fo.warehouse_id} within the SLA: release sent again",
            )
            await schedule(session, task.order_id, "RELEASE", fo.fulfillment_order_id, rearm=True)

    async def stock_shipment(self, task: Task) -> None:
        """The shipped quantity leaves inventory's books (SHIPMENT ledger entries)."""
        async with self.runtime.reads.connect() as reader:
            shipped = await store.load_shipment(reader, task.subject_id)
        assert shipped is not None
        for line in shipped.lines:
            await self._inventory(
                "RecordStockMovement",
                inv.RecordStockMovementRequest(
                    request_id=derived_id(shipped.shipment_id, line.line_id, "stock"),
                    sku=line.sku,
                    warehouse_id=shipped.warehouse_id,
                    kind=inv.MOVEMENT_KIND_SHIPMENT,
                    quantity_delta=-line.quantity,
                    # Our shipment id: WMS shipment ids repeat across WMSs and warehouses.
                    reference=shipped.shipment_id,
                    order_id=shipped.order_id,
                    line_id=line.line_id,
                    occurred_at=shipped.shipped_at,
                ),
            )
        # ERP posting follows the ledger, so a COMPLETED order (after its last invoice) never
        # has stock still allocated in inventory's books.
        async with self.engine.completing(task) as session:
            await schedule(session, task.order_id, "POST_SHIPMENT", shipped.shipment_id)

    async def post_shipment(self, task: Task) -> None:
        row, shipped = await self._order_and_shipment(task)
        posted = await self._external(
            self.connectors.erp.post_shipment(
                row.erp_order_number,
                erp_api.ShipmentPosting(
                    external_reference=shipped.shipment_id,
                    lines=self._erp_lines(row, shipped),
                    carrier_code=shipped.carrier_code,
                    tracking_numbers=tuple(c.tracking_number for c in shipped.cartons),
                ),
            )
        )
        async with self.engine.completing(task) as session:
            shipped.erp_shipment_reference = posted.shipment_reference
            shipped.state = fpb.SHIPMENT_STATE_POSTED
            await store.save_shipment(
                session, shipped, erp_shipment_reference=posted.shipment_reference
            )
            await self.runtime.events.record_many(
                session,
                [
                    PendingEvent(
                        "order",
                        task.order_id,
                        events_pb2.ShipmentPosted(
                            order_id=task.order_id,
                            shipment_id=shipped.shipment_id,
                            erp_shipment_reference=posted.shipment_reference,
                            posted_at=ts(datetime.now(UTC)),
                        ),
                    )
                ],
            )
            await store.add_timeline(
                session,
                task.order_id,
                fpb.WORKFLOW_STAGE_SHIPMENT_POSTING,
                f"shipment {shipped.wms_shipment_id} posted as {posted.shipment_reference}",
            )
            await schedule(session, task.order_id, "INVOICE", shipped.shipment_id)

    async def invoice(self, task: Task) -> None:
        row, shipped = await self._order_and_shipment(task)
        invoiced = await self._external(
            self.connectors.erp.create_invoice(
                row.erp_order_number,
                erp_api.InvoiceRequest(
                    external_reference=shipped.shipment_id,
                    lines=self._erp_lines(row, shipped),
                ),
            )
        )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            record = fpb.Invoice(
                invoice_id=derived_id(shipped.shipment_id, "invoice"),
                order_id=task.order_id,
                shipment_id=shipped.shipment_id,
                erp_invoice_number=invoiced.invoice_number,
                lines=[
                    fpb.InvoiceLine(line_id=line.line_id, sku=line.sku, quantity=line.quantity)
                    for line in shipped.lines
                ],
                total=common_pb2.Money(
                    currency_code=invoiced.currency,
                    units=int(invoiced.amount),
                    nanos=int((invoiced.amount - int(invoiced.amount)) * 10**9),
                ),
                issued_at=ts(datetime.now(UTC)),
            )
            events: list[PendingEvent] = []
            if await store.insert_invoice(session, record):
                shipped.state = fpb.SHIPMENT_STATE_INVOICED
                await store.save_shipment(session, shipped, invoice_number=invoiced.invoice_number)
                lines = domain.add(
                    row.lines, "invoiced", [(line.line_id, line.quantity) for line in shipped.lines]
                )
                await store.save_order(session, task.order_id, lines=lines)
                events.append(
                    PendingEvent("order", task.order_id, events_pb2.InvoiceCreated(invoice=record))
                )
                shipments, invoiced_count = await store.shipment_counts(session, task.order_id)
                if domain.complete(lines, shipments, invoiced_count):
                    events += await self._set_status(session, row, S.ORDER_STATUS_COMPLETED)
                await store.add_timeline(
                    session,
                    task.order_id,
                    fpb.WORKFLOW_STAGE_INVOICING,
                    f"shipment {shipped.wms_shipment_id} invoiced as {invoiced.invoice_number}",
                )
            await self.runtime.events.record_many(session, events)

    # --- cancellation ------------------------------------------------------------------------

    async def on_cancel_requested(
        self, session: AsyncSession, event: order_events.OrderCancelRequested, event_id: str
    ) -> None:
        inserted = await session.scalar(
            insert(cancellation)
            .values(
                cancellation_id=event.cancellation_id,
                order_id=event.order_id,
                document=event.SerializeToString(),
            )
            .on_conflict_do_nothing()
            .returning(cancellation.c.cancellation_id)
        )
        if inserted is not None:
            await store.add_timeline(
                session,
                event.order_id,
                fpb.WORKFLOW_STAGE_CANCELLATION,
                f"cancellation requested ({event.reason_code})",
                event_type="dwf.order.v1.OrderCancelRequested",
                event_id=event_id,
                producer="order_gateway",
            )
            await schedule(session, event.order_id, "CANCEL", event.cancellation_id)

    async def cancel(self, task: Task) -> None:
        """Cancel what has not been released at once (stock back, ERP order canceled when
        nothing is left); ask the WMS for what has been released; refuse what has shipped."""
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
            document = await reader.scalar(
                select(cancellation.c.document).where(
                    cancellation.c.cancellation_id == task.subject_id
                )
            )
            orders = await store.fulfillment_orders_of(reader, task.order_id)
            busy = await reader.scalar(
                select(workflow_task.c.task_key).where(
                    workflow_task.c.order_id == task.order_id,
                    workflow_task.c.kind.in_(("BOOK_ERP", "ALLOCATE", "RELEASE")),
                    workflow_task.c.state == "PENDING",
                    workflow_task.c.leased_until > datetime.now(UTC),
                )
            )
        if row is None or document is None:
            raise StepFailure(domain.Category.BUSINESS_RULE, "DWF", "UNKNOWN_ORDER", task.order_id)
        if busy is not None:  # a step is talking to a system right now: decide after it
            raise StepFailure(
                domain.Category.RETRYABLE, "DWF", "STEP_IN_FLIGHT", f"{busy} is running"
            )
        request = order_events.OrderCancelRequested.FromString(document)
        asked = {sel.line_id: sel.quantity for sel in request.lines}
        wanted = {
            line_id: min(asked.get(line_id) or state.open, state.open)
            for line_id, state in row.lines.items()
            if (not asked or line_id in asked) and state.open > 0
        }
        released = [o for o in orders if o.state in RELEASED_STATES]
        pending = [o for o in orders if o.state == "PENDING_RELEASE"]
        at_wms = {line["line_id"]: 0 for o in released for line in o.lines}
        for o in released:
            for line in o.lines:
                at_wms[line["line_id"]] += (
                    int(line["quantity"]) - int(line.get("shipped", 0)) - int(line.get("short", 0))
                )
        now_lines = {
            lid: max(q - min(q, max(at_wms.get(lid, 0), 0)), 0) for lid, q in wanted.items()
        }
        via_wms = {lid: q - now_lines[lid] for lid, q in wanted.items() if q - now_lines[lid] > 0}
        now_lines = {lid: q for lid, q in now_lines.items() if q > 0}
        # Stock first: unreleased allocations, then what is still reserved.
        for o in pending:
            selection = [
                common_pb2.LineSelection(line_id=line["line_id"], quantity=int(line["quantity"]))
                for line in o.lines
                if line["line_id"] in now_lines
            ]
            if selection:
                await self._inventory(
                    "Deallocate",
                    inv.DeallocateRequest(
                        request_id=derived_id(task.subject_id, o.allocation_id, "deallocate"),
                        order_id=task.order_id,
                        allocation_id=o.allocation_id,
                        lines=selection,
                        disposition=inv.DEALLOCATION_DISPOSITION_RELEASE,
                        reason="ORDER_CANCELED",
                    ),
                )
        if row.reservation_id and now_lines:
            await self._inventory(
                "ReleaseReservation",
                inv.ReleaseReservationRequest(
                    request_id=derived_id(task.subject_id, "release"),
                    reservation_id=row.reservation_id,
                    lines=[
                        common_pb2.LineSelection(line_id=lid, quantity=q)
                        for lid, q in sorted(now_lines.items())
                    ],
                    reason="ORDER_CANCELED",
                ),
            )
        for o in released:
            asked_lines = tuple(
                wms_api.CancelLine(line["line_id"], via_wms[line["line_id"]])
                for line in o.lines
                if via_wms.get(line["line_id"], 0) > 0
            )
            if asked_lines:
                await self._external(
                    self.connectors.wms.cancel_release(o.fulfillment_order_id, asked_lines)
                )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            lines = domain.add(row.lines, "canceled", sorted(now_lines.items()))
            await store.save_order(session, task.order_id, lines=lines)
            for o in pending:
                if all(line["line_id"] in now_lines for line in o.lines):
                    await store.update_fulfillment_order(
                        session, o.fulfillment_order_id, state="CANCELED"
                    )
                    await self._stop(session, f"RELEASE:{o.fulfillment_order_id}")
            events = await self._canceled(session, row, lines, task.subject_id, now_lines, request)
            await self.runtime.events.record_many(session, events)
            await session.execute(
                update(cancellation)
                .where(cancellation.c.cancellation_id == task.subject_id)
                .values(state="WAITING_FOR_WMS" if via_wms else "DONE")
            )
            summary = (
                f"canceled now: {sorted(now_lines.items())}; asked the WMS: "
                f"{sorted(via_wms.items())}"
                if now_lines or via_wms
                else "nothing left to cancel"
            )
            await store.add_timeline(
                session, task.order_id, fpb.WORKFLOW_STAGE_CANCELLATION, summary
            )

    async def _canceled(
        self,
        session: AsyncSession,
        row: store.OrderRow,
        lines: domain.Lines,
        cancellation_id: str,
        canceled: Mapping[str, int],
        request: order_events.OrderCancelRequested | None,
    ) -> list[PendingEvent]:
        """OrderCanceled for what was canceled; a fully canceled order stops its workflow,
        and its ERP order is canceled."""
        if not canceled:
            return []
        fully = domain.fully_canceled(lines)
        events = [
            PendingEvent(
                "order",
                row.order.order_id,
                events_pb2.OrderCanceled(
                    order_id=row.order.order_id,
                    cancellation_id=cancellation_id,
                    canceled=[
                        common_pb2.LineSelection(line_id=lid, quantity=q)
                        for lid, q in sorted(canceled.items())
                    ],
                    fully_canceled=fully,
                    reason_code=request.reason_code if request else "CUSTOMER_REQUEST",
                    canceled_at=ts(datetime.now(UTC)),
                ),
            )
        ]
        if all(state.open == 0 for state in lines.values()):
            for kind in ("BOOK_ERP", "ALLOCATE"):
                await self._stop(session, f"{kind}:{row.order.order_id}")
            if row.erp_order_number:
                await schedule(session, row.order.order_id, "ERP_CANCEL", row.order.order_id)
            if fully:
                events += await self._set_status(session, row, S.ORDER_STATUS_CANCELED)
        return events

    async def _stop(self, session: AsyncSession, key: str) -> None:
        """A step the cancellation made pointless: done, and its exception closed."""
        stopped = await session.scalar(
            update(workflow_task)
            .where(workflow_task.c.task_key == key, workflow_task.c.state != "DONE")
            .values(state="DONE", lease_id=None, leased_until=None, last_error="order canceled")
            .returning(workflow_task.c.order_id)
        )
        if stopped is not None:
            kind, _, subject = key.partition(":")
            await self.engine.resolve_open_exception(
                session, Task(key, stopped, kind, subject, 0, ""), domain.Action.CANCEL, "canceled"
            )

    async def deallocate(self, task: Task) -> None:
        """Give back an allocation nobody will ship (canceled at the WMS, or filled late)."""
        await self._inventory(
            "Deallocate",
            inv.DeallocateRequest(
                request_id=derived_id(task.subject_id, "deallocate"),
                order_id=task.order_id,
                allocation_id=task.subject_id,
                disposition=inv.DEALLOCATION_DISPOSITION_RELEASE,
                reason="ORDER_CANCELED",
            ),
        )
        await self.engine.finish(task)

    async def erp_cancel(self, task: Task) -> None:
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
        assert row is not None
        await self._external(
            self.connectors.erp.cancel_sales_order(row.erp_order_number, "ORDER_CANCELED")
        )
        async with self.engine.completing(task) as session:
            await store.add_timeline(
                session,
                task.order_id,
                fpb.WORKFLOW_STAGE_CANCELLATION,
                f"ERP sales order {row.erp_order_number} canceled",
            )

    async def _wms_canceled(
        self, session: AsyncSession, row: store.OrderRow, fo: Any, event: wms_api.WmsEvent
    ) -> None:
        waiting = (
            await session.execute(
                select(cancellation.c.cancellation_id, cancellation.c.document)
                .where(
                    cancellation.c.order_id == fo.order_id,
                    cancellation.c.state == "WAITING_FOR_WMS",
                )
                .order_by(cancellation.c.created_at.desc())
                .limit(1)
            )
        ).one_or_none()
        if isinstance(event, wms_api.CancelRefused):
            if waiting is not None:
                await session.execute(
                    update(cancellation)
                    .where(cancellation.c.cancellation_id == waiting.cancellation_id)
                    .values(state="REFUSED")
                )
            return
        assert isinstance(event, wms_api.CancelAccepted)
        canceled = {line.line_id: line.quantity for line in event.lines if line.quantity > 0}
        lines = domain.add(row.lines, "canceled", sorted(canceled.items()))
        await store.save_order(session, fo.order_id, lines=lines)
        fo_lines = [dict(line) for line in fo.lines]
        for line in fo_lines:
            line["canceled"] = int(line.get("canceled", 0)) + canceled.get(line["line_id"], 0)
        left = sum(
            int(line["quantity"]) - int(line.get("shipped", 0)) - int(line["canceled"])
            for line in fo_lines
        )
        await store.update_fulfillment_order(
            session,
            fo.fulfillment_order_id,
            lines=fo_lines,
            state="CANCELED" if left <= 0 else fo.state,
        )
        await self._close_timer(session, fo.fulfillment_order_id)
        await schedule(session, fo.order_id, "DEALLOCATE", fo.allocation_id)
        cancellation_id = waiting.cancellation_id if waiting is not None else ""
        request = (
            order_events.OrderCancelRequested.FromString(waiting.document)
            if waiting is not None
            else None
        )
        if waiting is not None:
            await session.execute(
                update(cancellation)
                .where(cancellation.c.cancellation_id == cancellation_id)
                .values(state="DONE")
            )
        events = await self._canceled(session, row, lines, cancellation_id, canceled, request)
        await self.runtime.events.record_many(session, events)

    # --- returns -----------------------------------------------------------------------------

    async def _rma(
        self, reader: store.Reader, rma_id: str, *, for_update: bool = False
    ) -> fpb.ReturnAuthorization | None:
        query = select(return_authorization.c.document).where(
            return_authorization.c.rma_id == rma_id
        )
        if for_update:
            query = query.with_for_update()
        document = await reader.scalar(query)
        return None if document is None else fpb.ReturnAuthorization.FromString(document)

    async def _save_rma(self, session: AsyncSession, rma: fpb.ReturnAuthorization) -> None:
        await session.execute(
            update(return_authorization)
            .where(return_authorization.c.rma_id == rma.rma_id)
            .values(document=rma.SerializeToString())
        )

    async def on_return_requested(
        self, session: AsyncSession, event: order_events.ReturnRequested, event_id: str
    ) -> None:
        """Authorise the RMA (shipped, not yet returned quantity only) and tell the WMS."""
        row = await store.load_order(session, event.order_id, for_update=True)
        if row is None:
            return
        shipments = await store.documents_of(session, shipment, event.order_id, fpb.Shipment)
        rma_id = derived_id(event.return_request_id, "rma")
        lines = []
        for line in event.lines:
            state = row.lines.get(line.line_id)
            if state is None:
                continue
            lines.append(
                fpb.ReturnAuthorizationLine(
                    line_id=line.line_id,
                    sku=state.sku,
                    authorized_quantity=min(line.quantity, state.shipped),
                    reason_code=line.reason_code,
                )
            )
        rma = fpb.ReturnAuthorization(
            rma_id=rma_id,
            rma_number=f"RMA-{rma_id[:8].upper()}",
            order_id=event.order_id,
            return_request_id=event.return_request_id,
            state=fpb.RETURN_STATE_AUTHORIZED,
            warehouse_id=shipments[0].warehouse_id if shipments else "",
            lines=lines,
            authorized_at=ts(datetime.now(UTC)),
        )
        inserted = await session.scalar(
            insert(return_authorization)
            .values(
                rma_id=rma_id,
                order_id=event.order_id,
                rma_number=rma.rma_number,
                document=rma.SerializeToString(),
            )
            .on_conflict_do_nothing()
            .returning(return_authorization.c.rma_id)
        )
        if inserted is None:
            return
        await self.runtime.events.record_many(
            session,
            [
                PendingEvent(
                    "order", event.order_id, events_pb2.ReturnAuthorized(return_authorization=rma)
                )
            ],
        )
        await store.add_timeline(
            session,
            event.order_id,
            fpb.WORKFLOW_STAGE_RETURN,
            f"return authorised as {rma.rma_number}",
            event_type="dwf.order.v1.ReturnRequested",
            event_id=event_id,
            producer="order_gateway",
        )
        await schedule(session, event.order_id, "RETURN", rma_id)

    async def announce_return(self, task: Task) -> None:
        async with self.runtime.reads.connect() as reader:
            rma = await self._rma(reader, task.subject_id)
        assert rma is not None
        await self._external(
            self.connectors.wms.create_return(
                wms_api.ReturnRequest(
                    rma_number=rma.rma_number,
                    order_id=rma.order_id,
                    warehouse_id=rma.warehouse_id,
                    lines=tuple(
                        wms_api.WmsLine(line.line_id, line.sku, line.authorized_quantity)
                        for line in rma.lines
                        if line.authorized_quantity > 0
                    ),
                )
            )
        )
        await self.engine.finish(task)

    async def _return_received(self, session: AsyncSession, event: wms_api.ReturnReceived) -> None:
        rma_id = await session.scalar(
            select(return_authorization.c.rma_id).where(
                return_authorization.c.rma_number == event.rma_number
            )
        )
        if rma_id is None:
            return
        rma = await self._rma(session, rma_id, for_update=True)
        assert rma is not None
        received = {line.line_id: line for line in event.lines}
        receipt_lines = []
        for line in rma.lines:
            got = received.get(line.line_id)
            if got is None:
                continue
            restocked = got.quantity if got.disposition == "RESTOCK" else 0
            line.received_quantity += got.quantity
            line.restocked_quantity += restocked
            line.scrapped_quantity += got.quantity - restocked
            receipt_lines.append(
                fpb.ReturnReceiptLine(
                    line_id=line.line_id,
                    sku=line.sku,
                    received_quantity=got.quantity,
                    restocked_quantity=restocked,
                    scrapped_quantity=got.quantity - restocked,
                )
            )
        rma.state = fpb.RETURN_STATE_RECEIVED
        rma.received_at.FromDatetime(event.occurred_at or datetime.now(UTC))
        await self._save_rma(session, rma)
        receipt = events_pb2.ReturnReceived(
            order_id=rma.order_id,
            rma_id=rma.rma_id,
            rma_number=rma.rma_number,
            receipt_id=event.receipt_id,
            warehouse_id=rma.warehouse_id,
            lines=receipt_lines,
            received_at=rma.received_at,
        )
        await self.runtime.events.record_many(
            session, [PendingEvent("order", rma.order_id, receipt)]
        )
        subject = f"{rma.rma_id}/{event.receipt_id}"
        await session.execute(
            insert(wms_receipt)
            .values(subject=subject, document=receipt.SerializeToString())
            .on_conflict_do_nothing()
        )
        await schedule(session, rma.order_id, "RESTOCK", subject)
        await schedule(session, rma.order_id, "CREDIT_MEMO", subject)
        await store.add_timeline(
            session,
            rma.order_id,
            fpb.WORKFLOW_STAGE_RETURN,
            f"return {rma.rma_number} received ({event.receipt_id})",
        )

    async def _receipt(self, subject: str) -> events_pb2.ReturnReceived:
        async with self.runtime.reads.connect() as reader:
            document = await reader.scalar(
                select(wms_receipt.c.document).where(wms_receipt.c.subject == subject)
            )
        assert document is not None
        return events_pb2.ReturnReceived.FromString(document)

    async def restock(self, task: Task) -> None:
        """Restocked quantity back on inventory's books (RETURN ledger entries)."""
        receipt = await self._receipt(task.subject_id)
        for line in receipt.lines:
            if line.restocked_quantity <= 0:
                continue
            await self._inventory(
                "RecordStockMovement",
                inv.RecordStockMovementRequest(
                    request_id=derived_id(task.subject_id, line.line_id, "restock"),
                    sku=line.sku,
                    warehouse_id=receipt.warehouse_id,
                    kind=inv.MOVEMENT_KIND_RETURN,
                    quantity_delta=line.restocked_quantity,
                    reference=f"{receipt.rma_number}/{receipt.receipt_id}",
                    order_id=receipt.order_id,
                    line_id=line.line_id,
                    occurred_at=receipt.received_at,
                ),
            )
        await self.engine.finish(task)

    async def credit_memo(self, task: Task) -> None:
        receipt = await self._receipt(task.subject_id)
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
        assert row is not None
        memo = await self._external(
            self.connectors.erp.create_credit_memo(
                erp_api.CreditMemoRequest(
                    external_reference=f"{receipt.rma_number}/{receipt.receipt_id}",
                    sales_order_number=row.erp_order_number,
                    lines=tuple(
                        self._erp_line(row, line.line_id, line.sku, line.received_quantity)
                        for line in receipt.lines
                    ),
                )
            )
        )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            rma = await self._rma(session, receipt.rma_id, for_update=True)
            assert rma is not None
            record = fpb.CreditMemo(
                credit_memo_id=derived_id(task.subject_id, "credit_memo"),
                erp_credit_memo_number=memo.credit_memo_number,
                order_id=task.order_id,
                rma_id=rma.rma_id,
                lines=[
                    fpb.InvoiceLine(
                        line_id=line.line_id, sku=line.sku, quantity=line.received_quantity
                    )
                    for line in receipt.lines
                ],
                total=common_pb2.Money(
                    currency_code=memo.currency,
                    units=int(memo.amount),
                    nanos=int((memo.amount - int(memo.amount)) * 10**9),
                ),
                created_at=ts(datetime.now(UTC)),
            )
            rma.state = fpb.RETURN_STATE_CREDITED
            rma.credit_memo_id = record.credit_memo_id
            await self._save_rma(session, rma)
            returned = domain.add(
                row.lines,
                "returned",
                [(line.line_id, line.received_quantity) for line in receipt.lines],
            )
            await store.save_order(session, task.order_id, lines=returned)
            events = [
                PendingEvent(
                    "order", task.order_id, events_pb2.CreditMemoCreated(credit_memo=record)
                )
            ]
            if domain.fully_returned(returned):
                events += await self._set_status(session, row, S.ORDER_STATUS_RETURNED)
            await self.runtime.events.record_many(session, events)
            await store.add_timeline(
                session,
                task.order_id,
                fpb.WORKFLOW_STAGE_RETURN,
                f"credit memo {memo.credit_memo_number} for {receipt.rma_number}",
            )

    # --- the WMS feed ------------------------------------------------------------------------

    async def poll_wms(self) -> int:
        """One page of the WMS feed, applied in one transaction with the cursor. The feed row
        is locked (SKIP LOCKED), so with several replicas one polls at a time."""
        async with self.runtime.sessions.begin() as session:
            await session.execute(
                insert(wms_feed).values(feed=FEED, cursor="").on_conflict_do_nothing()
            )
            cursor = await session.scalar(
                select(wms_feed.c.cursor)
                .where(wms_feed.c.feed == FEED)
                .with_for_update(skip_locked=True)
            )
            if cursor is None:
                return 0
            events, next_cursor = await self._external(
                self.connectors.wms.events_after(cursor or None, limit=200)
            )
            for event in events:
                fresh = await session.scalar(
                    insert(wms_event)
                    .values(event_id=event.event_id)
                    .on_conflict_do_nothing()
                    .returning(wms_event.c.event_id)
                )
                if fresh is not None:
                    await self.apply_wms_event(session, event)
            if next_cursor and next_cursor != cursor:
                await session.execute(
                    update(wms_feed).where(wms_feed.c.feed == FEED).values(cursor=next_cursor)
                )
        return len(events)

    async def apply_wms_event(self, session: AsyncSession, event: wms_api.WmsEvent) -> None:
        if isinstance(event, wms_api.ReturnReceived):
            await self._return_received(session, event)
            return
        if not event.release_id:
            return
        known = await store.load_fulfillment_order(session, event.release_id)
        if known is None:
            return  # not one of ours (another tenant's release, or a test's)
        # Lock order everywhere: the order's row, then its fulfillment order (as the steps do).
        row = await self._order(session, known.order_id)
        fo = await store.load_fulfillment_order(session, event.release_id, for_update=True)
        assert fo is not None
        if isinstance(event, wms_api.ReleaseAcknowledged):
            if fo.state == "RELEASED":
                await store.update_fulfillment_order(
                    session,
                    fo.fulfillment_order_id,
                    state="ACKNOWLEDGED",
                    acknowledged_at=event.occurred_at or datetime.now(UTC),
                )
            await self._close_timer(session, fo.fulfillment_order_id)
            await self.runtime.events.record_many(
                session,
                [
                    PendingEvent(
                        "order",
                        fo.order_id,
                        events_pb2.ReleaseAcknowledged(
                            order_id=fo.order_id,
                            fulfillment_order_id=fo.fulfillment_order_id,
                            warehouse_id=fo.warehouse_id,
                            wms_release_id=event.wms_release_id or fo.wms_release_id,
                            acknowledged_at=ts(event.occurred_at or datetime.now(UTC)),
                        ),
                    )
                ],
            )
        elif isinstance(event, wms_api.Shipped):
            await self._shipped(session, row, fo, event)
        elif isinstance(event, wms_api.CancelAccepted | wms_api.CancelRefused):
            await self._wms_canceled(session, row, fo, event)
        elif isinstance(event, wms_api.ReleaseRejected):
            await self._release_rejected(session, row, fo, event)
        elif isinstance(event, wms_api.ShortPicked):
            await self._short_picked(session, row, fo, event)
        await store.add_timeline(
            session,
            fo.order_id,
            fpb.WORKFLOW_STAGE_SHIPPING,
            f"WMS {event.type} for {fo.warehouse_id}",
            event_type=f"wms.{event.type}",
            event_id=event.event_id,
            producer="wms",
            occurred_at=event.occurred_at,
        )

    async def _release_rejected(
        self, session: AsyncSession, row: store.OrderRow, fo: Any, event: wms_api.ReleaseRejected
    ) -> None:
        """The WMS will not ship this fulfillment order: its lines go back to the order and
        are re-sourced elsewhere, up to ``max_resourcing`` rejections per order; past that an
        operator decides (the release waits as an exception)."""
        if fo.state not in ("PENDING_RELEASE", "RELEASED", "ACKNOWLEDGED"):
            return  # shipped, canceled or rejected already: nothing to take back
        # The WMS may answer before the RELEASE step has recorded its send (PENDING_RELEASE):
        # then "released" was never counted, and the step, finding REJECTED, leaves it so.
        counted_released = fo.state != "PENDING_RELEASE"
        await store.update_fulfillment_order(
            session, fo.fulfillment_order_id, state="REJECTED", rejection_reason=event.reason
        )
        await self._close_timer(session, fo.fulfillment_order_id)
        orders = await store.fulfillment_orders_of(session, fo.order_id)
        rejections = sum(1 for o in orders if o.state == "REJECTED")
        resource = rejections <= self.max_resourcing
        await self.runtime.events.record_many(
            session,
            [
                PendingEvent(
                    "order",
                    fo.order_id,
                    events_pb2.ReleaseRejected(
                        order_id=fo.order_id,
                        fulfillment_order_id=fo.fulfillment_order_id,
                        warehouse_id=fo.warehouse_id,
                        reason_code=event.reason,
                        reason=f"{fo.warehouse_id} rejected the release: {event.reason}",
                        handling=fpb.REJECTION_HANDLING_RESOURCE
                        if resource
                        else fpb.REJECTION_HANDLING_EXCEPTION,
                        rejected_at=ts(event.occurred_at or datetime.now(UTC)),
                    ),
                )
            ],
        )
        task = Task(
            f"RELEASE:{fo.fulfillment_order_id}",
            fo.order_id,
            "RELEASE",
            fo.fulfillment_order_id,
            1,
            "",
        )
        if resource:
            quantities = [(line["line_id"], int(line["quantity"])) for line in fo.lines]
            lines = domain.subtract(row.lines, "allocated", quantities)
            if counted_released:
                lines = domain.subtract(lines, "released", quantities)
            await store.save_order(session, fo.order_id, lines=lines)
            await schedule(session, fo.order_id, "RESOURCE", fo.fulfillment_order_id)
            return
        await session.execute(
            update(workflow_task)
            .where(workflow_task.c.task_key == task.task_key)
            .values(state="PARKED", last_error=f"rejected: {event.reason}")
        )
        await self.engine.record_exception(
            session,
            task,
            StepFailure(
                domain.Category.BUSINESS_RULE,
                "WMS",
                event.reason or "RELEASE_REJECTED",
                f"{fo.warehouse_id} rejected release {fo.fulfillment_order_id}, the order's "
                f"rejection number {rejections} (re-sourced automatically up to "
                f"{self.max_resourcing})",
            ),
            datetime.now(UTC),
            None,
        )

    async def resource(self, task: Task) -> None:
        """Re-source a rejected fulfillment order: its allocation goes back to the order's
        reservation, then inventory allocates the still-open quantity again without the
        warehouses that rejected this order. New allocations become fulfillment orders
        (released as usual); the rest is backordered or, with no warehouse left, reported."""
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
            fo = await store.load_fulfillment_order(reader, task.subject_id)
            orders = await store.fulfillment_orders_of(reader, task.order_id)
        assert row is not None and fo is not None
        excluded = sorted({o.warehouse_id for o in orders if o.state == "REJECTED"})
        # Substitute stock is given back rather than kept: the order's reservation holds the
        # ordered SKU, and the line is allocated again as ordered (substitutes allowed).
        substituted = any(line.get("substituted_for_sku") for line in fo.lines)
        await self._inventory(
            "Deallocate",
            inv.DeallocateRequest(
                request_id=derived_id(fo.fulfillment_order_id, "resource", "deallocate"),
                order_id=task.order_id,
                allocation_id=fo.allocation_id,
                disposition=inv.DEALLOCATION_DISPOSITION_RELEASE
                if substituted
                else inv.DEALLOCATION_DISPOSITION_RESERVE,
                reason="WMS_REJECTED",
            ),
        )
        substitutable = {line.line_id for line in row.order.lines if line.substitution_allowed}
        lines = [
            inv.LineItem(
                line_id=line["line_id"],
                sku=line.get("substituted_for_sku") or line["sku"],
                quantity=quantity,
                substitution_allowed=line["line_id"] in substitutable,
            )
            for line in fo.lines
            if (
                quantity := min(
                    int(line["quantity"]) - int(line.get("shipped", 0)),
                    row.lines[line["line_id"]].open if line["line_id"] in row.lines else 0,
                )
            )
            > 0
        ]
        response = await self._allocate_again(
            row, lines, excluded, derived_id(fo.fulfillment_order_id, "resource", "allocate")
        )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            if response is None:
                await store.add_timeline(
                    session,
                    task.order_id,
                    fpb.WORKFLOW_STAGE_ALLOCATION,
                    f"nothing left to re-source from {fo.warehouse_id}",
                )
                return
            await self._add_fulfillment_orders(session, row, list(response.allocations))
            await store.add_timeline(
                session,
                task.order_id,
                fpb.WORKFLOW_STAGE_ALLOCATION,
                f"re-sourced what {fo.warehouse_id} rejected (excluding {', '.join(excluded)}): "
                + sourced_summary(response),
            )
        await self._report_unfilled(task, response, excluded)

    async def _allocate_again(
        self,
        row: store.OrderRow,
        lines: list[inv.LineItem],
        excluded: list[str],
        request_id: str,
    ) -> inv.AllocateResponse | None:
        """Allocate quantity that came back (rejected, short-picked) without the warehouses
        that failed this order; None when nothing is left open to allocate."""
        if not lines:
            return None
        response: inv.AllocateResponse = await self._inventory(
            "Allocate",
            inv.AllocateRequest(
                request_id=request_id,
                order_id=row.order.order_id,
                channel_id=row.channel_id,
                ship_to=row.order.ship_to,
                lines=lines,
                excluded_warehouses=excluded,
            ),
        )
        return response

    async def _report_unfilled(
        self, task: Task, response: inv.AllocateResponse | None, excluded: list[str]
    ) -> None:
        """Quantity no warehouse can take becomes an exception for an operator. Recorded
        after the step's own commit, which resolves the step's earlier exceptions."""
        if response is None or not response.unfilled:
            return
        async with self.runtime.sessions.begin() as session:
            await self.engine.record_exception(
                session,
                task,
                StepFailure(
                    domain.Category.BUSINESS_RULE,
                    "DWF",
                    "NO_WAREHOUSE_LEFT",
                    "no other warehouse can take "
                    + ", ".join(f"{u.quantity} of line {u.line_id}" for u in response.unfilled)
                    + f" (excluded: {', '.join(excluded)}); cancel the lines, or add stock and "
                    "allocate by hand",
                ),
                datetime.now(UTC),
                None,
            )

    async def _short_picked(
        self, session: AsyncSession, row: store.OrderRow, fo: Any, event: wms_api.ShortPicked
    ) -> None:
        """The warehouse could not find some released units: they leave the order's allocated
        and released counts and the SHORT_PICK step writes them off and sources them again."""
        missing = {line.line_id: line.quantity for line in event.lines if line.quantity > 0}
        fo_lines = [dict(line) for line in fo.lines]
        taken: list[tuple[str, int]] = []
        for line in fo_lines:
            short = int(line.get("short", 0))
            room = int(line["quantity"]) - int(line.get("shipped", 0)) - short
            quantity = min(missing.get(line["line_id"], 0), max(room, 0))
            if quantity:
                line["short"] = short + quantity
                taken.append((line["line_id"], quantity))
        if not taken:
            return  # reported before, or more than was open
        done = all(
            int(line.get("shipped", 0)) + int(line.get("short", 0)) >= int(line["quantity"])
            for line in fo_lines
        )
        await store.update_fulfillment_order(
            session,
            fo.fulfillment_order_id,
            lines=fo_lines,
            state="SHIPPED" if done and fo.state in RELEASED_STATES else fo.state,
        )
        lines = domain.subtract(row.lines, "allocated", taken)
        await store.save_order(
            session, fo.order_id, lines=domain.subtract(lines, "released", taken)
        )
        await store.add_timeline(
            session,
            fo.order_id,
            fpb.WORKFLOW_STAGE_SHIPPING,
            f"{fo.warehouse_id} short-picked "
            + ", ".join(f"{q} of line {lid}" for lid, q in taken)
            + ": sourcing them again",
        )
        await schedule(
            session, fo.order_id, "SHORT_PICK", fo.fulfillment_order_id, again_when_done=True
        )

    async def short_pick(self, task: Task) -> None:
        """Units a warehouse could not find: written off there (ADJUSTMENT, reason SHORT_PICK;
        a count or Reconcile brings back any that turn up), taken off the allocation, and
        allocated again without that warehouse. Request ids derive from the fulfillment order
        and its cumulative short quantities, so a re-run repeats nothing and a later short
        pick of the same order is a new operation."""
        async with self.runtime.reads.connect() as reader:
            row = await store.load_order(reader, task.order_id)
            fo = await store.load_fulfillment_order(reader, task.subject_id)
            orders = await store.fulfillment_orders_of(reader, task.order_id)
        assert row is not None and fo is not None
        todo = {
            line["line_id"]: int(line.get("short", 0)) - int(line.get("resourced", 0))
            for line in fo.lines
            if int(line.get("short", 0)) > int(line.get("resourced", 0))
        }
        if not todo:
            await self.engine.finish(task)
            return
        by_id = {line["line_id"]: line for line in fo.lines}
        version = ",".join(f"{lid}={by_id[lid]['short']}" for lid in sorted(todo))
        for line_id, quantity in sorted(todo.items()):
            await self._inventory(
                "RecordStockMovement",
                inv.RecordStockMovementRequest(
                    request_id=derived_id(fo.fulfillment_order_id, "short", version, line_id),
                    sku=by_id[line_id]["sku"],
                    warehouse_id=fo.warehouse_id,
                    kind=inv.MOVEMENT_KIND_ADJUSTMENT,
                    quantity_delta=-quantity,
                    reference=derived_id(fo.fulfillment_order_id, "short", version, line_id),
                    order_id=task.order_id,
                    line_id=line_id,
                    reason="SHORT_PICK",
                ),
            )
        await self._inventory(
            "Deallocate",
            inv.DeallocateRequest(
                request_id=derived_id(fo.fulfillment_order_id, "short", version, "deallocate"),
                order_id=task.order_id,
                allocation_id=fo.allocation_id,
                lines=[
                    common_pb2.LineSelection(line_id=lid, quantity=q)
                    for lid, q in sorted(todo.items())
                ],
                disposition=inv.DEALLOCATION_DISPOSITION_RELEASE,
                reason="SHORT_PICK",
            ),
        )
        substitutable = {line.line_id for line in row.order.lines if line.substitution_allowed}
        excluded = sorted(
            {o.warehouse_id for o in orders if o.state == "REJECTED"} | {fo.warehouse_id}
        )
        wanted = [
            inv.LineItem(
                line_id=lid,
                sku=by_id[lid].get("substituted_for_sku") or by_id[lid]["sku"],
                quantity=quantity,
                substitution_allowed=lid in substitutable,
            )
            for lid, q in sorted(todo.items())
            if (quantity := min(q, row.lines[lid].open if lid in row.lines else 0)) > 0
        ]
        response = await self._allocate_again(
            row,
            wanted,
            excluded,
            derived_id(fo.fulfillment_order_id, "short", version, "allocate"),
        )
        async with self.engine.completing(task) as session:
            row = await self._order(session, task.order_id)
            current = await store.load_fulfillment_order(
                session, fo.fulfillment_order_id, for_update=True
            )
            assert current is not None
            marked = [dict(line) for line in current.lines]
            for line in marked:
                if line["line_id"] in todo:
                    line["resourced"] = int(line.get("resourced", 0)) + todo[line["line_id"]]
            await store.update_fulfillment_order(session, fo.fulfillment_order_id, lines=marked)
            if response is not None:
                await self._add_fulfillment_orders(session, row, list(response.allocations))
            await store.add_timeline(
                session,
                task.order_id,
                fpb.WORKFLOW_STAGE_ALLOCATION,
                f"short pick at {fo.warehouse_id} written off and sourced again: "
                + (sourced_summary(response) if response is not None else "nothing left open"),
            )
            if any(  # another short pick arrived meanwhile: this step runs again
                int(line.get("short", 0)) > int(line.get("resourced", 0)) for line in marked
            ):
                await session.execute(
                    update(workflow_task)
                    .where(workflow_task.c.task_key == task.task_key)
                    .values(state="PENDING", due_at=datetime.now(UTC), attempts=0)
                )
        await self._report_unfilled(task, response, excluded)

    async def _close_timer(self, session: AsyncSession, fulfillment_order_id: str) -> None:
        await session.execute(
            update(workflow_task)
            .where(
                workflow_task.c.task_key == f"ACK_CHECK:{fulfillment_order_id}",
                workflow_task.c.state == "PENDING",
            )
            .values(state="DONE", lease_id=None, leased_until=None)
        )

    async def _shipped(
        self, session: AsyncSession, row: store.OrderRow, fo: Any, event: wms_api.Shipped
    ) -> None:
        shipment_id = derived_id(fo.fulfillment_order_id, event.wms_shipment_id, "shipment")
        lines = [
            fpb.ShipmentLine(line_id=line.line_id, sku=line.sku or "", quantity=line.quantity)
            for line in event.lines
            if line.quantity > 0
        ]
        record = fpb.Shipment(
            shipment_id=shipment_id,
            order_id=fo.order_id,
            fulfillment_order_id=fo.fulfillment_order_id,
            warehouse_id=fo.warehouse_id,
            wms_shipment_id=event.wms_shipment_id,
            carrier_code=event.carrier_code or "",
            service_code=event.service_code or "",
            cartons=[
                fpb.Carton(
                    carton_id=carton.carton_id,
                    tracking_number=carton.tracking_number or "",
                    weight_grams=carton.weight_grams or 0,
                    lines=[
                        fpb.ShipmentLine(line_id=cl.line_id, sku=cl.sku or "", quantity=cl.quantity)
                        for cl in carton.lines
                    ],
                )
                for carton in event.cartons
            ],
            lines=lines,
            shipped_at=ts(event.shipped_at or datetime.now(UTC)),
            state=fpb.SHIPMENT_STATE_CREATED,
        )
        if not await store.insert_shipment(session, record):
            return  # the WMS reported this shipment before
        shipped_lines = domain.add(
            row.lines, "shipped", [(line.line_id, line.quantity) for line in lines]
        )
        await store.save_order(session, fo.order_id, lines=shipped_lines)
        fo_lines = [dict(line) for line in fo.lines]
        for line in fo_lines:
            line["shipped"] = int(line.get("shipped", 0)) + sum(
                s.quantity for s in lines if s.line_id == line["line_id"]
            )
        done = all(
            int(line["shipped"]) + int(line.get("short", 0)) >= int(line["quantity"])
            for line in fo_lines
        )
        await store.update_fulfillment_order(
            session,
            fo.fulfillment_order_id,
            lines=fo_lines,
            state="SHIPPED" if done else "PARTIALLY_SHIPPED",
        )
        await self._close_timer(session, fo.fulfillment_order_id)
        status = (
            S.ORDER_STATUS_SHIPPED
            if domain.fully_shipped(shipped_lines)
            else S.ORDER_STATUS_PARTIALLY_SHIPPED
        )
        events = [
            PendingEvent("order", fo.order_id, events_pb2.ShipmentCreated(shipment=record)),
            *await self._set_status(session, row, status),
        ]
        await self.runtime.events.record_many(session, events)
        await schedule(session, fo.order_id, "STOCK_SHIPMENT", shipment_id)
