"""The gateway's order view: owner events merged into line quantities and a derived status.

Pure functions over the stored ``dwf.order.v1.Order`` proto (no I/O, no clock: time comes from
the events). The inbox applies every event exactly once, but events of different aggregates
(reservation, order_allocation, fulfillment's order) reach the gateway in any order, e.g. a
ShipmentCreated before its FulfillmentOrderReleased or a BackorderFilled before its
BackorderCreated. Everything here is therefore built from facts that commute:

* **Cumulative counters** (``released``, ``shipped``, ``canceled``, ``returned``,
  ``invoiced``) are sums of the events' quantities and never decrease. ``released`` and
  ``canceled`` are capped at ``ordered`` (a re-sourced release would otherwise count twice);
  capping a growing sum is still order independent.
* **Gauges** (``reserved``, ``allocated``, ``backordered``) are "currently in that state" and
  move both ways. A running value floored at 0 would depend on arrival order (a fill that
  arrives before its backorder would be lost), so the view keeps each line's *signed* sums
  of the inventory deltas (its ledger) and shows them clamped to the line's unshipped open
  quantity ``ordered - canceled - shipped``: allocated first, then backordered, then reserved.
  The clamp is also how a cancellation reduces them ("reserved first, then backordered, then
  allocated"); when inventory's own ReservationReleased / StockDeallocated for the canceled
  quantity arrives later it only brings the ledger down to what is already shown, so nothing
  is counted twice, whichever comes first.
* **Status** is derived from those quantities (:func:`derive_lifecycle`) and only ever moves
  forward (:func:`advance`), so a late or early event never makes it go backwards.

Extra state, all inside the Order proto because that is all the store persists:

* *ERP booked*: ``erp_order_number`` (and the ERP_BOOKED floor when ErpOrderBooked arrives).
* *COMPLETED reported by fulfillment*: the stored ``lifecycle_status`` itself. COMPLETED is
  terminal, so it sticks there; the only way out is COMPLETED -> RETURNED.
* *Overlay* (ON_HOLD / EXCEPTION): ``status`` while it differs from ``lifecycle_status``, with
  ``status_reason``.
* *Per-line ledger and credited quantity*: the Order proto has no field for them, so they live
  in ``order.attributes["dwf.ledger.<line_id>"]`` as ``"r=<reserved>;a=<allocated>;b=<backordered>;
  c=<credited>"``. A key is written only while the ledger differs from the shown quantities
  (or something was credited); without a key the ledger equals the shown quantities, so most
  orders carry none. Keys starting with ``dwf.`` are reserved for the gateway: the API must not
  accept them from channels and strips them on output (:func:`without_internal_attributes`).

Decisions where the contracts are silent:

* RETURNED needs, besides "everything shipped is returned and credited", that nothing is left
  to ship (every line shipped or canceled): otherwise the return of a first partial shipment
  would end an order whose other lines are still open.
* ReleaseRejected changes nothing here: ``released`` is cumulative ("ever sent to a
  warehouse"); what follows a rejection is visible through its own events (StockDeallocated
  with RESERVE and a new allocation and release, a retry, or an exception), and the lifecycle
  never returns to ALLOCATED anyway.
* ReservationCreated counts for ORDER-owned reservations (orders reserved at acceptance
  without a hold), like ReservationCommitted does for converted holds; HOLD-owned reservation
  events belong to the hold view and are ignored here. A StockAllocated takes its quantity
  from the line's reservation (reserved -= q); allocation from free stock beyond it is absorbed
  by the clamp.
* ``backorder_eta``: BackorderCreated keeps the earliest ETA of the line, BackorderEtaChanged
  sets (or clears) it, and it is cleared whenever nothing of the line is backordered.
* ``updated_at`` becomes the latest ``occurred_at`` of the applied events (never earlier than
  before), so a late event does not move it back.
* Overlays are "absolute state" of fulfillment's order aggregate, which the gateway applies in
  sequence order (gap detection, docs/events.md); they are taken as they come. A terminal
  lifecycle clears the overlay and later overlay events are ignored.
* Lines unknown to the order are ignored, as are events about another order.
  :func:`order_id_of` tells the inbox handler which order an event is about (reservation
  events are keyed by reservation, so it reads their ORDER owner).
* Acceptance should set only ``ordered`` per line (status ACCEPTED, status_sequence 1) and
  let ReservationCreated/Committed bring ``reserved``: a ``reserved`` set at acceptance *and*
  counted again from the event would only be hidden by the clamp, not undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import events_pb2 as fulfillment_events
from dwf.fulfillment.v1 import fulfillment_pb2
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.inventory.v1 import inventory_pb2
from dwf.order.v1 import order_gateway_pb2

Status: TypeAlias = common_pb2.OrderStatus.ValueType

ACCEPTED = common_pb2.ORDER_STATUS_ACCEPTED
ERP_BOOKED = common_pb2.ORDER_STATUS_ERP_BOOKED
ALLOCATED = common_pb2.ORDER_STATUS_ALLOCATED
BACKORDERED = common_pb2.ORDER_STATUS_BACKORDERED
RELEASED = common_pb2.ORDER_STATUS_RELEASED
PARTIALLY_SHIPPED = common_pb2.ORDER_STATUS_PARTIALLY_SHIPPED
SHIPPED = common_pb2.ORDER_STATUS_SHIPPED
INVOICED = common_pb2.ORDER_STATUS_INVOICED
COMPLETED = common_pb2.ORDER_STATUS_COMPLETED
CANCELED = common_pb2.ORDER_STATUS_CANCELED
RETURNED = common_pb2.ORDER_STATUS_RETURNED
ON_HOLD = common_pb2.ORDER_STATUS_ON_HOLD
EXCEPTION = common_pb2.ORDER_STATUS_EXCEPTION

TERMINAL: frozenset[Status] = frozenset({COMPLETED, CANCELED, RETURNED})
OVERLAYS: frozenset[Status] = frozenset({ON_HOLD, EXCEPTION})

# Lifecycle order. Enum numbers must not be compared (common.proto), hence an explicit rank.
# ALLOCATED and BACKORDERED share a rank: a fill or a new backorder moves between them.
_RANK: dict[Status, int] = {
    ACCEPTED: 0,
    ERP_BOOKED: 1,
    ALLOCATED: 2,
    BACKORDERED: 2,
    RELEASED: 3,
    PARTIALLY_SHIPPED: 4,
    SHIPPED: 5,
    INVOICED: 6,
    COMPLETED: 7,
    CANCELED: 7,
    RETURNED: 7,
}

# order.attributes keys reserved for the gateway; see the module docstring.
INTERNAL_ATTRIBUTE_PREFIX = "dwf."
LEDGER_ATTRIBUTE_PREFIX = "dwf.ledger."

_ORDER_OWNER = inventory_pb2.RESERVATION_OWNER_TYPE_ORDER
_KEEP_RESERVED = inventory_pb2.DEALLOCATION_DISPOSITION_RESERVE


@dataclass(frozen=True)
class StatusChange:
    """A change of the customer-visible status (or overlay reason), to publish to channels."""

    previous_status: Status
    status: Status
    lifecycle_status: Status
    reason: str


def is_terminal(status: Status) -> bool:
    """COMPLETED, CANCELED and RETURNED end an order; nothing changes its status afterwards."""
    return status in TERMINAL


def lifecycle_rank(status: Status) -> int:
    """Position of a lifecycle status on the happy path; ValueError for overlays/UNSPECIFIED."""
    try:
        return _RANK[status]
    except KeyError:
        raise ValueError(f"not a lifecycle status: {status}") from None


def cancellable(line: common_pb2.OrderLine) -> int:
    """Quantity of the line that a cancellation may still remove (not shipped, not canceled)."""
    q = line.quantities
    return max(0, q.ordered - q.shipped - q.canceled)


def returnable(line: common_pb2.OrderLine) -> int:
    """Quantity of the line that may still be returned (shipped and not yet returned)."""
    q = line.quantities
    return max(0, q.shipped - q.returned)


def advance(current: Status, candidate: Status) -> Status:
    """The lifecycle after ``candidate`` was derived or reported: never a lower rank.

    Same-rank moves (ALLOCATED <-> BACKORDERED) are allowed; a terminal status stays, except
    that a COMPLETED order can still become RETURNED.
    """
    if candidate not in _RANK:
        return current
    if current not in _RANK:
        return candidate
    if is_terminal(current):
        return RETURNED if current == COMPLETED and candidate == RETURNED else current
    return candidate if _RANK[candidate] >= _RANK[current] else current


@dataclass
class _Ledger:
    """Signed sums of a line's inventory deltas, and its credited quantity (cumulative)."""

    reserved: int = 0
    allocated: int = 0
    backordered: int = 0
    credited: int = 0

    def encode(self) -> str:
        return f"r={self.reserved};a={self.allocated};b={self.backordered};c={self.credited}"

    @classmethod
    def decode(cls, text: str) -> _Ledger | None:
        try:
            fields = dict(part.split("=", 1) for part in text.split(";"))
            return cls(
                reserved=int(fields["r"]),
                allocated=int(fields["a"]),
                backordered=int(fields["b"]),
                credited=int(fields["c"]),
            )
        except (KeyError, ValueError):
            return None

    @classmethod
    def shown(cls, q: common_pb2.LineQuantities) -> _Ledger:
        """The ledger of a line without a stored one: exactly what it shows, nothing credited."""
        return cls(reserved=q.reserved, allocated=q.allocated, backordered=q.backordered)


def _ledger_key(line_id: str) -> str:
    return LEDGER_ATTRIBUTE_PREFIX + line_id


def _load_ledger(order: order_gateway_pb2.Order, line: common_pb2.OrderLine) -> _Ledger:
    stored = order.attributes.get(_ledger_key(line.line_id))
    ledger = _Ledger.decode(stored) if stored is not None else None
    return ledger if ledger is not None else _Ledger.shown(line.quantities)


def credited(order: order_gateway_pb2.Order, line: common_pb2.OrderLine) -> int:
    """Quantity of the line credited by ERP credit memos so far."""
    return _load_ledger(order, line).credited


def without_internal_attributes(order: order_gateway_pb2.Order) -> order_gateway_pb2.Order:
    """A copy of ``order`` without the gateway's ``dwf.`` attributes, for API output."""
    copy = order_gateway_pb2.Order()
    copy.CopyFrom(order)
    for key in [k for k in copy.attributes if k.startswith(INTERNAL_ATTRIBUTE_PREFIX)]:
        del copy.attributes[key]
    return copy


def derive_lifecycle(order: order_gateway_pb2.Order) -> Status:
    """The lifecycle status the order's line quantities and flags stand for right now.

    This is the raw derivation; :func:`apply_event` combines it with the stored status through
    :func:`advance`, so it never goes backwards.
    """
    if not order.lines:
        return ACCEPTED
    quantities = [line.quantities for line in order.lines]
    opens = [max(0, q.ordered - q.canceled) for q in quantities]
    any_shipped = any(q.shipped > 0 for q in quantities)
    if not any_shipped and all(o == 0 for o in opens):
        return CANCELED
    all_shipped = all(q.shipped >= o for q, o in zip(quantities, opens, strict=True))
    if (
        any_shipped
        and all_shipped
        and all(
            line.quantities.returned >= line.quantities.shipped
            and credited(order, line) >= line.quantities.shipped
            for line in order.lines
        )
    ):
        return RETURNED
    if order.lifecycle_status == COMPLETED:
        return COMPLETED
    if all_shipped:
        return INVOICED if all(q.invoiced >= q.shipped for q in quantities) else SHIPPED
    if any_shipped:
        return PARTIALLY_SHIPPED
    if any(q.released > 0 for q in quantities):
        return RELEASED
    if any(q.backordered > 0 for q in quantities):
        return BACKORDERED
    if all(q.allocated >= o for q, o in zip(quantities, opens, strict=True)):
        return ALLOCATED
    if order.erp_order_number:
        return ERP_BOOKED
    return ACCEPTED


# The fulfillment events the view takes (see :func:`order_id_of`): the gateway subscribes to
# these only, so the others (ReleaseAcknowledged, ShipmentPosted, ...) cost it no delivery.
FULFILLMENT_EVENTS_TAKEN: tuple[type[Message], ...] = (
    fulfillment_events.ErpOrderBooked,
    fulfillment_events.OrderStatusChanged,
    fulfillment_events.OrderCanceled,
    fulfillment_events.ReturnReceived,
    fulfillment_events.FulfillmentOrderReleased,
    fulfillment_events.ShipmentCreated,
    fulfillment_events.InvoiceCreated,
    fulfillment_events.CreditMemoCreated,
    fulfillment_events.ExceptionRaised,
    fulfillment_events.ExceptionResolved,
)


def order_id_of(payload: Message) -> str | None:
    """The order an owner event is about, or None if the order view does not take it.

    The inbox handler uses it to route reservation events (aggregate = reservation) to their
    order. HOLD-owned reservation events return None (they belong to the hold view).
    """
    match payload:
        case (
            inventory_events.ReservationCreated()
            | inventory_events.ReservationReleased()
            | inventory_events.ReservationExpired()
        ):
            owner = payload.reservation.owner
            return owner.owner_id if owner.type == _ORDER_OWNER else None
        case inventory_events.ReservationCommitted():
            return payload.order_id or payload.reservation.owner.owner_id
        case (
            inventory_events.StockAllocated()
            | inventory_events.StockDeallocated()
            | inventory_events.BackorderCreated()
            | inventory_events.BackorderFilled()
            | inventory_events.BackorderEtaChanged()
            | fulfillment_events.ErpOrderBooked()
            | fulfillment_events.OrderStatusChanged()
            | fulfillment_events.OrderCanceled()
            | fulfillment_events.ReturnReceived()
        ):
            return payload.order_id
        case fulfillment_events.FulfillmentOrderReleased():
            return payload.fulfillment_order.order_id
        case fulfillment_events.ShipmentCreated():
            return payload.shipment.order_id
        case fulfillment_events.InvoiceCreated():
            return payload.invoice.order_id
        case fulfillment_events.CreditMemoCreated():
            return payload.credit_memo.order_id
        case fulfillment_events.ExceptionRaised() | fulfillment_events.ExceptionResolved():
            return payload.exception.order_id or None
    return None


class _Merge:
    """One event's effects on an order: quantities and ledgers now, status in :meth:`settle`."""

    def __init__(self, order: order_gateway_pb2.Order) -> None:
        self.order = order
        self.lines = {line.line_id: line for line in order.lines}
        self.ledgers = {line.line_id: _load_ledger(order, line) for line in order.lines}
        # A lifecycle status the event reports as a fact (ERP_BOOKED, COMPLETED).
        self.reported: Status | None = None
        # (overlay or None, reason) when the event sets or clears the overlay.
        self.overlay: tuple[Status | None, str] | None = None

    # --- quantities -------------------------------------------------------------------

    def _quantities(self, line_id: str) -> common_pb2.LineQuantities | None:
        line = self.lines.get(line_id)
        return line.quantities if line is not None else None

    def add(self, line_id: str, field: str, quantity: int, cap_at_ordered: bool = False) -> None:
        """Grow a cumulative counter (never shrinks; optionally capped at ``ordered``)."""
        q = self._quantities(line_id)
        if q is None or quantity <= 0:
            return
        value = getattr(q, field) + quantity
        if cap_at_ordered:
            value = min(value, q.ordered)
        setattr(q, field, max(getattr(q, field), value))

    def shift(
        self, line_id: str, *, reserved: int = 0, allocated: int = 0, backordered: int = 0
    ) -> None:
        """Add signed deltas to a line's ledger (shown quantities follow in :meth:`normalise`)."""
        ledger = self.ledgers.get(line_id)
        if ledger is None:
            return
        ledger.reserved += reserved
        ledger.allocated += allocated
        ledger.backordered += backordered

    def credit(self, line_id: str, quantity: int) -> None:
        ledger = self.ledgers.get(line_id)
        if ledger is not None and quantity > 0:
            ledger.credited += quantity

    def normalise(self) -> None:
        """Show each ledger clamped to the line's unshipped open quantity; store the ledgers."""
        for line in self.order.lines:
            q = line.quantities
            ledger = self.ledgers[line.line_id]
            left = max(0, q.ordered - q.canceled - q.shipped)
            q.allocated = min(max(ledger.allocated, 0), left)
            left -= q.allocated
            q.backordered = min(max(ledger.backordered, 0), left)
            left -= q.backordered
            q.reserved = min(max(ledger.reserved, 0), left)
            if q.backordered == 0:
                line.ClearField("backorder_eta")
            key = _ledger_key(line.line_id)
            if ledger == _Ledger.shown(q):
                self.order.attributes.pop(key, None)
            else:
                self.order.attributes[key] = ledger.encode()

    # --- events -----------------------------------------------------------------------

    def merge(self, payload: Message) -> bool:
        """Apply ``payload``; False if the order view does not take this payload type."""
        match payload:
            case inventory_events.ReservationCreated() | inventory_events.ReservationCommitted():
                for r_line in payload.reservation.lines:
                    self.shift(r_line.line_id, reserved=r_line.reserved_quantity)
            case inventory_events.ReservationReleased():
                for r_line in payload.released:
                    self.shift(r_line.line_id, reserved=-r_line.reserved_quantity)
            case inventory_events.ReservationExpired():
                for r_line in payload.expired:
                    self.shift(r_line.line_id, reserved=-r_line.reserved_quantity)
            case inventory_events.StockAllocated():
                for allocation in payload.allocations:
                    for a_line in allocation.lines:
                        self.shift(
                            a_line.line_id, allocated=a_line.quantity, reserved=-a_line.quantity
                        )
                        line = self.lines.get(a_line.line_id)
                        if a_line.substituted_for_sku and line is not None:
                            # The customer sees what will arrive: the substitute, and for what.
                            line.sku = a_line.sku
                            line.substituted_for_sku = a_line.substituted_for_sku
            case inventory_events.StockDeallocated():
                keep = payload.disposition == _KEEP_RESERVED
                for allocation in payload.deallocated:
                    for a_line in allocation.lines:
                        back = a_line.quantity if keep else 0
                        self.shift(a_line.line_id, allocated=-a_line.quantity, reserved=back)
            case inventory_events.BackorderCreated():
                for backorder in payload.backorders:
                    self.shift(backorder.line_id, backordered=backorder.quantity)
                    line = self.lines.get(backorder.line_id)
                    if (
                        line is not None
                        and backorder.HasField("expected_at")
                        and (
                            not line.HasField("backorder_eta")
                            or _before(backorder.expected_at, line.backorder_eta)
                        )
                    ):
                        line.backorder_eta.CopyFrom(backorder.expected_at)
            case inventory_events.BackorderFilled():
                self.shift(payload.line_id, backordered=-payload.filled_quantity)
                if payload.allocation.lines:
                    for a_line in payload.allocation.lines:
                        self.shift(a_line.line_id, allocated=a_line.quantity)
                else:
                    self.shift(payload.line_id, allocated=payload.filled_quantity)
            case inventory_events.BackorderEtaChanged():
                line = self.lines.get(payload.line_id)
                if line is not None:
                    if payload.HasField("expected_at"):
                        line.backorder_eta.CopyFrom(payload.expected_at)
                    else:
                        line.ClearField("backorder_eta")
            case fulfillment_events.ErpOrderBooked():
                if payload.erp_order_number:
                    self.order.erp_order_number = payload.erp_order_number
                self.reported = ERP_BOOKED
            case fulfillment_events.FulfillmentOrderReleased():
                for f_line in payload.fulfillment_order.lines:
                    self.add(f_line.line_id, "released", f_line.quantity, cap_at_ordered=True)
            case fulfillment_events.ShipmentCreated():
                self._ship(payload.shipment)
            case fulfillment_events.InvoiceCreated():
                for i_line in payload.invoice.lines:
                    self.add(i_line.line_id, "invoiced", i_line.quantity)
            case fulfillment_events.OrderCanceled():
                for selection in payload.canceled:
                    self.add(selection.line_id, "canceled", selection.quantity, cap_at_ordered=True)
            case fulfillment_events.ReturnReceived():
                for rr_line in payload.lines:
                    self.add(rr_line.line_id, "returned", rr_line.received_quantity)
            case fulfillment_events.CreditMemoCreated():
                for c_line in payload.credit_memo.lines:
                    self.credit(c_line.line_id, c_line.quantity)
            case fulfillment_events.OrderStatusChanged():
                self._status_changed(payload)
            case fulfillment_events.ExceptionRaised():
                exception_id = payload.exception.exception_id
                if exception_id and exception_id not in self.order.open_exception_ids:
                    self.order.open_exception_ids.append(exception_id)
            case fulfillment_events.ExceptionResolved():
                exception_id = payload.exception.exception_id
                if exception_id in self.order.open_exception_ids:
                    self.order.open_exception_ids.remove(exception_id)
            case _:
                return False
        return True

    def _ship(self, shipment: fulfillment_pb2.Shipment) -> None:
        lines = list(shipment.lines) or [c_line for c in shipment.cartons for c_line in c.lines]
        for s_line in lines:
            if s_line.quantity > 0:
                self.add(s_line.line_id, "shipped", s_line.quantity)
                self.shift(s_line.line_id, allocated=-s_line.quantity)
        known = {(t.shipment_id, t.tracking_number) for t in self.order.tracking}
        for carton in shipment.cartons:
            if not carton.tracking_number:
                continue
            if (shipment.shipment_id, carton.tracking_number) in known:
                continue
            known.add((shipment.shipment_id, carton.tracking_number))
            tracking = self.order.tracking.add(
                shipment_id=shipment.shipment_id,
                carrier_code=shipment.carrier_code,
                service_code=shipment.service_code,
                tracking_number=carton.tracking_number,
            )
            if shipment.HasField("shipped_at"):
                tracking.shipped_at.CopyFrom(shipment.shipped_at)

    def _status_changed(self, payload: fulfillment_events.OrderStatusChanged) -> None:
        if COMPLETED in (payload.status, payload.lifecycle_status):
            self.reported = COMPLETED
        if payload.status in OVERLAYS:
            self.overlay = (payload.status, payload.reason)
        elif payload.status in _RANK:
            # Leaving ON_HOLD/EXCEPTION, or a plain lifecycle change: no overlay any more.
            self.overlay = (None, "")
        # Unknown enum values (handled as UNSPECIFIED) leave the overlay alone.

    # --- status -----------------------------------------------------------------------

    def settle(self) -> StatusChange | None:
        """Derive lifecycle and visible status; count a change in ``status_sequence``."""
        order = self.order
        before = (order.status, order.lifecycle_status, order.status_reason)
        lifecycle = _stored_lifecycle(order)
        if self.reported is not None:
            lifecycle = advance(lifecycle, self.reported)
        order.lifecycle_status = lifecycle  # derive_lifecycle reads a reported COMPLETED here
        lifecycle = advance(lifecycle, derive_lifecycle(order))

        overlay: Status | None = order.status if order.status in OVERLAYS else None
        reason = order.status_reason if overlay is not None else ""
        if self.overlay is not None:
            overlay, reason = self.overlay
        if is_terminal(lifecycle):
            overlay, reason = None, ""
        status = overlay if overlay is not None else lifecycle

        order.lifecycle_status = lifecycle
        order.status = status
        order.status_reason = reason
        if (status, lifecycle, reason) == before:
            return None
        order.status_sequence += 1
        return StatusChange(
            previous_status=before[0], status=status, lifecycle_status=lifecycle, reason=reason
        )


def _stored_lifecycle(order: order_gateway_pb2.Order) -> Status:
    """The order's current lifecycle; an order that never had one starts at ACCEPTED."""
    for candidate in (order.lifecycle_status, order.status):
        if candidate in _RANK:
            return candidate
    return ACCEPTED


def _before(a: Timestamp, b: Timestamp) -> bool:
    return (a.seconds, a.nanos) < (b.seconds, b.nanos)


def _touch(order: order_gateway_pb2.Order, occurred_at: datetime) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(occurred_at)
    if not order.HasField("updated_at") or _before(order.updated_at, stamp):
        order.updated_at.CopyFrom(stamp)


def apply_event(
    order: order_gateway_pb2.Order, payload: Message, occurred_at: datetime
) -> StatusChange | None:
    """Merge one owner event into ``order`` IN PLACE.

    Updates quantities, erp_order_number, tracking, open_exception_ids, overlay, status,
    lifecycle_status, status_reason, status_sequence and updated_at (the latest
    ``occurred_at``). Returns the change when the customer-visible status, the lifecycle
    underneath an overlay or the overlay's reason changed, after incrementing
    ``order.status_sequence`` by 1; None otherwise. Payloads the view does not take, and
    events about another order, change nothing and return None.
    """
    target = order_id_of(payload)
    if target is None or (order.order_id and target and target != order.order_id):
        return None
    merge = _Merge(order)
    if not merge.merge(payload):
        return None
    merge.normalise()
    _touch(order, occurred_at)
    return merge.settle()
