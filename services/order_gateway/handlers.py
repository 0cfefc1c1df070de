"""Event handlers of the order gateway (durable JetStream consumers) and its background loop.

* ``order_gateway_availability``: inventory's AvailabilityChanged → the availability read
  model that CheckAvailability answers from (absolute numbers; a row only moves forward).
* ``order_gateway_inventory`` / ``order_gateway_fulfillment``: the owners' events about an
  order → the order view (services.order_gateway.view), then, when the customer-visible
  status changed, a history row, a NOTIFY for WatchOrder and the channel-facing
  dwf.order.v1.OrderStatusChanged — all in the consumer's transaction, so an event is merged
  exactly once and its status change is never lost. Reservation events also keep the
  hold view current.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from types import ModuleType
from typing import Any

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.bus import ConsumerSpec
from chassis.events import STREAMS, subject_for
from chassis.outbox import PendingEvent
from chassis.server import Runtime, Worker
from dwf.events.v1 import envelope_pb2
from dwf.fulfillment.v1 import events_pb2 as fulfillment_events
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.inventory.v1 import inventory_pb2 as inv
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway import view
from services.order_gateway.api import Gateway, status_changed
from services.order_gateway.store import orders as store

AVAILABILITY_DURABLE = "order_gateway_availability"
INVENTORY_DURABLE = "order_gateway_inventory"
FULFILLMENT_DURABLE = "order_gateway_fulfillment"

INVENTORY_ORDER_EVENTS = (
    inventory_events.ReservationCommitted,
    inventory_events.ReservationReleased,
    inventory_events.ReservationExpired,
    inventory_events.StockAllocated,
    inventory_events.StockDeallocated,
    inventory_events.BackorderCreated,
    inventory_events.BackorderFilled,
    inventory_events.BackorderEtaChanged,
)
RESERVATION_EVENTS = (
    inventory_events.ReservationCommitted,
    inventory_events.ReservationReleased,
    inventory_events.ReservationExpired,
)


def _types(*modules: ModuleType) -> dict[str, type[Message]]:
    found: dict[str, type[Message]] = {}
    for module in modules:
        for name, descriptor in module.DESCRIPTOR.message_types_by_name.items():
            found[descriptor.full_name] = getattr(module, name)
    return found


PAYLOAD_TYPES = _types(inventory_events, fulfillment_events)


def unpack(envelope: envelope_pb2.EventEnvelope) -> Message | None:
    cls = PAYLOAD_TYPES.get(envelope.type)
    if cls is None:
        return None  # a newer event type this version does not know: ignore it
    payload = cls()
    if not envelope.payload.Unpack(payload):
        raise ValueError(f"payload of {envelope.id} is not a {envelope.type}")
    return payload


def order_id_of(payload: Any) -> str:
    """Every order event names its order, directly or in its one record (exception, RMA…)."""
    fields = payload.DESCRIPTOR.fields_by_name
    if "order_id" in fields:
        return str(payload.order_id)
    for field in payload.DESCRIPTOR.fields:
        if field.message_type is not None and "order_id" in field.message_type.fields_by_name:
            return str(getattr(payload, field.name).order_id)
    return ""


async def apply_availability(session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
    event = inventory_events.AvailabilityChanged()
    if not envelope.payload.Unpack(event):
        raise ValueError(f"payload of {envelope.id} is not AvailabilityChanged")
    as_of = (event.window_end if event.HasField("window_end") else envelope.occurred_at).ToDatetime(
        tzinfo=UTC
    )
    await store.apply_levels(
        session, event.warehouse_id, list(event.entries), envelope.sequence, as_of
    )


HOLD_STATES = {
    inventory_events.ReservationExpired: pb.HOLD_STATE_EXPIRED,
    inventory_events.ReservationReleased: pb.HOLD_STATE_RELEASED,
    inventory_events.ReservationCommitted: pb.HOLD_STATE_CONVERTED,
}


async def apply_to_hold(session: AsyncSession, payload: Any) -> None:
    held = await store.hold_for_reservation(session, payload.reservation.reservation_id)
    if held is None or held.state != pb.HOLD_STATE_ACTIVE:
        return
    if isinstance(payload, inventory_events.ReservationReleased) and (
        payload.reservation.state == inv.RESERVATION_STATE_ACTIVE
    ):
        return  # a partial release: the hold still holds the rest
    held.state = HOLD_STATES[type(payload)]
    if isinstance(payload, inventory_events.ReservationCommitted):
        held.order_id = payload.order_id
    await store.save_hold(session, held)


async def apply_order_event(
    runtime: Runtime, session: AsyncSession, envelope: envelope_pb2.EventEnvelope
) -> None:
    payload = unpack(envelope)
    if payload is None:
        return
    if isinstance(payload, RESERVATION_EVENTS):
        owner = payload.reservation.owner
        if owner.type == inv.RESERVATION_OWNER_TYPE_HOLD or isinstance(
            payload, inventory_events.ReservationCommitted
        ):
            await apply_to_hold(session, payload)
        if isinstance(payload, inventory_events.ReservationCommitted):
            return  # acceptance recorded what the converted hold reserved
        if owner.type == inv.RESERVATION_OWNER_TYPE_ORDER:
            order_id = owner.owner_id
        else:
            return
        if await store.load_order(session, order_id) is None:
            return  # acceptance itself records what it reserved; nothing to merge
    else:
        order_id = order_id_of(payload)
        if not order_id:
            return  # not about an order (e.g. an exception raised without one)
    stored = await store.load_order(session, order_id, for_update=True)
    if stored is None:
        # Events about an order this gateway has not committed yet: retry later.
        raise LookupError(f"order {order_id} not (yet) in the order view")
    order = stored.order
    pending = dict(stored.pending_backorder)
    if isinstance(payload, inventory_events.BackorderCreated):
        confirm_backorders(order, pending, payload)
    previous = order.status
    occurred_at = envelope.occurred_at.ToDatetime(tzinfo=UTC)
    order.attributes.update(stored.view_state)
    change = view.apply_event(order, payload, occurred_at)
    state = {
        key: order.attributes.pop(key)
        for key in list(order.attributes)
        if key.startswith(view.INTERNAL_ATTRIBUTE_PREFIX)
    }
    if change is not None:
        await store.add_status_change(session, order, previous, occurred_at)
        await runtime.events.record_many(
            session,
            [
                PendingEvent(
                    "order",
                    order.order_id,
                    status_changed(order, change.previous_status, occurred_at, change.reason),
                )
            ],
        )
    await store.save_order(session, order, pending_backorder=pending, view_state=state)


def locked_row(envelope: envelope_pb2.EventEnvelope) -> str:
    """The row apply_order_event locks for an event: a hold (reservation events of holds,
    and every commitment) or an order. The order consumers apply a batch in this order, so
    the inventory and fulfillment consumers (and replicas) lock the order view's rows in
    one global order and never deadlock over two orders."""
    payload = unpack(envelope)
    if payload is None:
        return ""
    if isinstance(payload, RESERVATION_EVENTS):
        reservation = payload.reservation
        if reservation.owner.type == inv.RESERVATION_OWNER_TYPE_ORDER and not isinstance(
            payload, inventory_events.ReservationCommitted
        ):
            return f"order:{reservation.owner.owner_id}"
        return f"hold:{reservation.reservation_id}"
    return f"order:{order_id_of(payload)}"


def confirm_backorders(
    order: pb.Order, pending: dict[str, int], event: inventory_events.BackorderCreated
) -> None:
    """Acceptance already showed the uncovered quantity as backordered; inventory's
    BackorderCreated confirms it, so that part is not counted a second time."""
    lines = {line.line_id: line for line in order.lines}
    for backorder in event.backorders:
        line = lines.get(backorder.line_id)
        taken = min(pending.get(backorder.line_id, 0), backorder.quantity)
        if line is None or taken <= 0:
            continue
        line.quantities.backordered = max(line.quantities.backordered - taken, 0)
        pending[backorder.line_id] -= taken
        if pending[backorder.line_id] == 0:
            del pending[backorder.line_id]


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    async def order_events(session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        await apply_order_event(runtime, session, envelope)

    return (
        ConsumerSpec(
            durable=AVAILABILITY_DURABLE,
            stream=STREAMS["inventory"].name,
            subjects=[
                subject_for("inventory", inventory_events.AvailabilityChanged.DESCRIPTOR.full_name)
            ],
            handler=apply_availability,
        ),
        ConsumerSpec(
            durable=INVENTORY_DURABLE,
            stream=STREAMS["inventory"].name,
            subjects=[
                subject_for("inventory", t.DESCRIPTOR.full_name) for t in INVENTORY_ORDER_EVENTS
            ],
            handler=order_events,
            lock_key=locked_row,
        ),
        ConsumerSpec(
            durable=FULFILLMENT_DURABLE,
            stream=STREAMS["fulfillment"].name,
            subjects=[
                subject_for("fulfillment", t.DESCRIPTOR.full_name)
                for t in view.FULFILLMENT_EVENTS_TAKEN
            ],
            handler=order_events,
            lock_key=locked_row,
        ),
    )


def workers(gateway: Gateway) -> Sequence[Worker]:
    return (("order change feed", gateway.feed.run),)
