"""Tests of the gateway's order view: owner events merged into quantities and status.

Example tests cover each event type and the lifecycle branches; the property test replays a
simulated, consistent workflow (whose true quantities it tracks independently of the code
under test) in random arrival orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import events_pb2 as fulfillment_events
from dwf.fulfillment.v1 import fulfillment_pb2
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.inventory.v1 import inventory_pb2
from dwf.order.v1 import order_gateway_pb2
from services.order_gateway import view
from services.order_gateway.view import (
    ACCEPTED,
    ALLOCATED,
    BACKORDERED,
    CANCELED,
    COMPLETED,
    ERP_BOOKED,
    EXCEPTION,
    INVOICED,
    ON_HOLD,
    PARTIALLY_SHIPPED,
    RELEASED,
    RETURNED,
    SHIPPED,
    Status,
    StatusChange,
    apply_event,
    cancellable,
    derive_lifecycle,
    is_terminal,
    returnable,
)

ORDER_ID = "O-1"
CHANNEL_ID = "shop-eu"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ORDER_OWNER = inventory_pb2.RESERVATION_OWNER_TYPE_ORDER
HOLD_OWNER = inventory_pb2.RESERVATION_OWNER_TYPE_HOLD
RESERVE = inventory_pb2.DEALLOCATION_DISPOSITION_RESERVE
RELEASE = inventory_pb2.DEALLOCATION_DISPOSITION_RELEASE
CUMULATIVE = ("released", "shipped", "canceled", "returned", "invoiced")
QUANTITY_FIELDS = ("ordered", "reserved", "allocated", "backordered", *CUMULATIVE)


# --- builders ------------------------------------------------------------------------------------


def sku(line_id: str) -> str:
    return f"SKU-{line_id}"


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def make_order(ordered: Mapping[str, int]) -> order_gateway_pb2.Order:
    """A freshly accepted order: status ACCEPTED, status_sequence 1, only `ordered` set."""
    return order_gateway_pb2.Order(
        order_id=ORDER_ID,
        channel=common_pb2.ChannelReference(channel_id=CHANNEL_ID, channel_order_id="1001"),
        lines=[
            common_pb2.OrderLine(
                line_id=line_id,
                sku=sku(line_id),
                quantity=common_pb2.Quantity(value=quantity, unit_of_measure="EA"),
                base_quantity=quantity,
                quantities=common_pb2.LineQuantities(ordered=quantity),
            )
            for line_id, quantity in ordered.items()
        ],
        status=ACCEPTED,
        lifecycle_status=ACCEPTED,
        status_sequence=1,
        created_at=stamp(T0),
        updated_at=stamp(T0),
        attributes={"shopify.name": "#1001"},
    )


def reservation_lines(lines: Mapping[str, int]) -> list[inventory_pb2.ReservationLine]:
    return [
        inventory_pb2.ReservationLine(
            line_id=line_id,
            sku=sku(line_id),
            requested_quantity=quantity,
            reserved_quantity=quantity,
            warehouses=[inventory_pb2.WarehouseQuantity(warehouse_id="W1", quantity=quantity)],
        )
        for line_id, quantity in lines.items()
    ]


def reservation(
    lines: Mapping[str, int],
    owner: inventory_pb2.ReservationOwnerType.ValueType = ORDER_OWNER,
    owner_id: str = ORDER_ID,
) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        reservation_id="R-1",
        owner=inventory_pb2.ReservationOwner(type=owner, owner_id=owner_id),
        channel_id=CHANNEL_ID,
        state=inventory_pb2.RESERVATION_STATE_ACTIVE,
        lines=reservation_lines(lines),
    )


def reservation_committed(lines: Mapping[str, int]) -> inventory_events.ReservationCommitted:
    return inventory_events.ReservationCommitted(
        reservation=reservation(lines), hold_id="H-1", order_id=ORDER_ID
    )


def reservation_created(
    lines: Mapping[str, int],
    owner: inventory_pb2.ReservationOwnerType.ValueType = ORDER_OWNER,
) -> inventory_events.ReservationCreated:
    owner_id = ORDER_ID if owner == ORDER_OWNER else "H-1"
    return inventory_events.ReservationCreated(reservation=reservation(lines, owner, owner_id))


def reservation_released(
    lines: Mapping[str, int],
    owner: inventory_pb2.ReservationOwnerType.ValueType = ORDER_OWNER,
) -> inventory_events.ReservationReleased:
    owner_id = ORDER_ID if owner == ORDER_OWNER else "H-1"
    return inventory_events.ReservationReleased(
        reservation=reservation({}, owner, owner_id),
        released=reservation_lines(lines),
        reason="ORDER_CANCELED",
    )


def reservation_expired(lines: Mapping[str, int]) -> inventory_events.ReservationExpired:
    return inventory_events.ReservationExpired(
        reservation=reservation({}, ORDER_OWNER), expired=reservation_lines(lines)
    )


def allocation(
    lines: Mapping[str, int], allocation_id: str = "A-1", warehouse: str = "W1"
) -> inventory_pb2.WarehouseAllocation:
    return inventory_pb2.WarehouseAllocation(
        allocation_id=allocation_id,
        warehouse_id=warehouse,
        lines=[
            inventory_pb2.AllocatedLine(line_id=line_id, sku=sku(line_id), quantity=quantity)
            for line_id, quantity in lines.items()
            if quantity > 0
        ],
    )


def stock_allocated(*allocations: inventory_pb2.WarehouseAllocation) -> Message:
    return inventory_events.StockAllocated(
        order_id=ORDER_ID, channel_id=CHANNEL_ID, reservation_id="R-1", allocations=allocations
    )


def stock_deallocated(
    removed: inventory_pb2.WarehouseAllocation,
    disposition: inventory_pb2.DeallocationDisposition.ValueType,
) -> Message:
    return inventory_events.StockDeallocated(
        order_id=ORDER_ID,
        deallocated=[removed],
        disposition=disposition,
        reason="WMS_REJECTED" if disposition == RESERVE else "ORDER_CANCELED",
    )


def backorder_created(
    line_id: str, quantity: int, eta: datetime | None = None, backorder_id: str = "B-1"
) -> Message:
    return inventory_events.BackorderCreated(
        order_id=ORDER_ID,
        channel_id=CHANNEL_ID,
        backorders=[
            inventory_pb2.BackorderLine(
                backorder_id=backorder_id,
                line_id=line_id,
                sku=sku(line_id),
                quantity=quantity,
                expected_at=stamp(eta) if eta else None,
            )
        ],
    )


def backorder_filled(
    line_id: str,
    filled: int,
    remaining: int = 0,
    backorder_id: str = "B-1",
    allocation_id: str = "A-F",
) -> Message:
    return inventory_events.BackorderFilled(
        order_id=ORDER_ID,
        backorder_id=backorder_id,
        line_id=line_id,
        sku=sku(line_id),
        filled_quantity=filled,
        remaining_quantity=remaining,
        allocation=allocation({line_id: filled}, allocation_id),
        ledger_entry_id="LE-1",
    )


def backorder_eta_changed(line_id: str, eta: datetime | None, backorder_id: str = "B-1") -> Message:
    return inventory_events.BackorderEtaChanged(
        order_id=ORDER_ID,
        backorder_id=backorder_id,
        line_id=line_id,
        sku=sku(line_id),
        expected_at=stamp(eta) if eta else None,
    )


def erp_order_booked(number: str = "SO-1") -> Message:
    return fulfillment_events.ErpOrderBooked(
        order_id=ORDER_ID, erp_order_number=number, erp_system="netsuite", attempts=1
    )


def fulfillment_order_released(
    lines: Mapping[str, int], fulfillment_order_id: str = "F-1", allocation_id: str = "A-1"
) -> Message:
    return fulfillment_events.FulfillmentOrderReleased(
        fulfillment_order=fulfillment_pb2.FulfillmentOrder(
            fulfillment_order_id=fulfillment_order_id,
            order_id=ORDER_ID,
            allocation_id=allocation_id,
            warehouse_id="W1",
            state=fulfillment_pb2.FULFILLMENT_ORDER_STATE_RELEASED,
            lines=[
                fulfillment_pb2.FulfillmentLine(line_id=line_id, sku=sku(line_id), quantity=q)
                for line_id, q in lines.items()
            ],
        )
    )


def release_rejected(lines: Mapping[str, int], fulfillment_order_id: str = "F-1") -> Message:
    return fulfillment_events.ReleaseRejected(
        order_id=ORDER_ID,
        fulfillment_order_id=fulfillment_order_id,
        warehouse_id="W1",
        reason_code="INVENTORY_DISCREPANCY",
        lines=[common_pb2.LineSelection(line_id=k, quantity=q) for k, q in lines.items()],
        handling=fulfillment_pb2.REJECTION_HANDLING_RESOURCE,
    )


def shipment_lines(lines: Mapping[str, int]) -> list[fulfillment_pb2.ShipmentLine]:
    return [
        fulfillment_pb2.ShipmentLine(line_id=line_id, sku=sku(line_id), quantity=q)
        for line_id, q in lines.items()
        if q > 0
    ]


def shipment_created(
    lines: Mapping[str, int],
    shipment_id: str = "S-1",
    tracking_numbers: Sequence[str] = ("1Z0001",),
) -> Message:
    cartons = [
        fulfillment_pb2.Carton(
            carton_id=f"{shipment_id}-C{i}",
            tracking_number=number,
            lines=shipment_lines(lines) if i == 0 else [],
        )
        for i, number in enumerate(tracking_numbers)
    ]
    return fulfillment_events.ShipmentCreated(
        shipment=fulfillment_pb2.Shipment(
            shipment_id=shipment_id,
            order_id=ORDER_ID,
            fulfillment_order_id="F-1",
            warehouse_id="W1",
            wms_shipment_id=f"WMS-{shipment_id}",
            carrier_code="UPS",
            service_code="UPS_GROUND",
            cartons=cartons,
            lines=shipment_lines(lines),
            shipped_at=stamp(T0 + timedelta(days=1)),
            state=fulfillment_pb2.SHIPMENT_STATE_CREATED,
        )
    )


def invoice_created(lines: Mapping[str, int], shipment_id: str = "S-1") -> Message:
    return fulfillment_events.InvoiceCreated(
        invoice=fulfillment_pb2.Invoice(
            invoice_id=f"I-{shipment_id}",
            order_id=ORDER_ID,
            shipment_id=shipment_id,
            erp_invoice_number=f"INV-{shipment_id}",
            lines=[
                fulfillment_pb2.InvoiceLine(line_id=line_id, sku=sku(line_id), quantity=q)
                for line_id, q in lines.items()
            ],
        )
    )


def fulfillment_status(
    status: Status, lifecycle: Status | None = None, reason: str = "", exception_id: str = ""
) -> Message:
    return fulfillment_events.OrderStatusChanged(
        order_id=ORDER_ID,
        status=status,
        lifecycle_status=lifecycle if lifecycle is not None else status,
        reason=reason,
        exception_id=exception_id,
    )


def order_canceled(lines: Mapping[str, int], fully: bool = False) -> Message:
    return fulfillment_events.OrderCanceled(
        order_id=ORDER_ID,
        cancellation_id="C-1",
        canceled=[common_pb2.LineSelection(line_id=k, quantity=q) for k, q in lines.items()],
        fully_canceled=fully,
        reason_code="CUSTOMER_REQUEST",
    )


def return_received(lines: Mapping[str, int], receipt_id: str = "RCPT-1") -> Message:
    return fulfillment_events.ReturnReceived(
        order_id=ORDER_ID,
        rma_id="RMA-ID-1",
        rma_number="RMA-000001",
        receipt_id=receipt_id,
        warehouse_id="W1",
        lines=[
            fulfillment_pb2.ReturnReceiptLine(
                line_id=line_id, sku=sku(line_id), received_quantity=q, restocked_quantity=q
            )
            for line_id, q in lines.items()
        ],
    )


def credit_memo_created(lines: Mapping[str, int], credit_memo_id: str = "CM-1") -> Message:
    return fulfillment_events.CreditMemoCreated(
        credit_memo=fulfillment_pb2.CreditMemo(
            credit_memo_id=credit_memo_id,
            order_id=ORDER_ID,
            rma_id="RMA-ID-1",
            lines=[
                fulfillment_pb2.InvoiceLine(line_id=line_id, sku=sku(line_id), quantity=q)
                for line_id, q in lines.items()
            ],
        )
    )


def exception_record(exception_id: str) -> fulfillment_pb2.ExceptionRecord:
    return fulfillment_pb2.ExceptionRecord(
        exception_id=exception_id, order_id=ORDER_ID, state=fulfillment_pb2.EXCEPTION_STATE_OPEN
    )


def apply_all(
    order: order_gateway_pb2.Order, *payloads: Message, start: int = 1
) -> list[StatusChange | None]:
    """Apply payloads one minute apart; the changes in order (None where none)."""
    return [
        apply_event(order, payload, T0 + timedelta(minutes=start + i))
        for i, payload in enumerate(payloads)
    ]


def quantities(order: order_gateway_pb2.Order, line_id: str) -> dict[str, int]:
    for line in order.lines:
        if line.line_id == line_id:
            return {name: getattr(line.quantities, name) for name in QUANTITY_FIELDS}
    raise KeyError(line_id)


def qty(order: order_gateway_pb2.Order, line_id: str, name: str) -> int:
    return quantities(order, line_id)[name]


def line(order: order_gateway_pb2.Order, line_id: str) -> common_pb2.OrderLine:
    return next(candidate for candidate in order.lines if candidate.line_id == line_id)


def allocated_order(ordered: Mapping[str, int]) -> order_gateway_pb2.Order:
    """An order booked, reserved and fully allocated (status ALLOCATED)."""
    order = make_order(ordered)
    apply_all(order, erp_order_booked(), reservation_committed(ordered))
    apply_all(order, stock_allocated(allocation(ordered)), start=10)
    assert order.status == ALLOCATED
    return order


def shipped_order(ordered: Mapping[str, int]) -> order_gateway_pb2.Order:
    """An order released and shipped completely in one shipment (status SHIPPED)."""
    order = allocated_order(ordered)
    apply_all(order, fulfillment_order_released(ordered), shipment_created(ordered), start=20)
    assert order.status == SHIPPED
    return order


# --- happy path ----------------------------------------------------------------------------------


def test_happy_path_walks_every_status_with_consecutive_sequences() -> None:
    order = make_order({"1": 2, "2": 1})
    steps: list[tuple[Message, Status | None]] = [
        (erp_order_booked("SO-42"), ERP_BOOKED),
        (reservation_committed({"1": 2, "2": 1}), None),
        (stock_allocated(allocation({"1": 2, "2": 1})), ALLOCATED),
        (fulfillment_order_released({"1": 2, "2": 1}), RELEASED),
        (shipment_created({"1": 2}, "S-1"), PARTIALLY_SHIPPED),
        (shipment_created({"2": 1}, "S-2"), SHIPPED),
        (invoice_created({"1": 2}, "S-1"), None),
        (invoice_created({"2": 1}, "S-2"), INVOICED),
        (fulfillment_status(COMPLETED), COMPLETED),
    ]
    emitted: list[StatusChange] = []
    for i, (payload, expected) in enumerate(steps):
        change = apply_event(order, payload, T0 + timedelta(minutes=i))
        if expected is None:
            assert change is None
        else:
            assert change is not None
            assert change.status == expected == change.lifecycle_status
            assert change.reason == ""
            emitted.append(change)
    assert [c.status for c in emitted] == [
        ERP_BOOKED,
        ALLOCATED,
        RELEASED,
        PARTIALLY_SHIPPED,
        SHIPPED,
        INVOICED,
        COMPLETED,
    ]
    assert [c.previous_status for c in emitted] == [ACCEPTED] + [c.status for c in emitted[:-1]]
    assert order.status_sequence == 8  # 1 at ACCEPTED, then 2..8
    assert order.status == order.lifecycle_status == COMPLETED
    assert order.erp_order_number == "SO-42"
    assert quantities(order, "1") == {
        "ordered": 2,
        "reserved": 0,
        "allocated": 0,
        "backordered": 0,
        "released": 2,
        "shipped": 2,
        "canceled": 0,
        "returned": 0,
        "invoiced": 2,
    }
    assert [t.shipment_id for t in order.tracking] == ["S-1", "S-2"]
    assert order.updated_at == stamp(T0 + timedelta(minutes=len(steps) - 1))
    # In-order events leave no internal bookkeeping behind; channel attributes are untouched.
    assert dict(order.attributes) == {"shopify.name": "#1001"}


# --- inventory events ----------------------------------------------------------------------------


def test_reservation_committed_sets_reserved_without_a_status_change() -> None:
    order = make_order({"1": 5, "2": 3})
    assert apply_all(order, reservation_committed({"1": 5, "2": 2})) == [None]
    assert qty(order, "1", "reserved") == 5
    assert qty(order, "2", "reserved") == 2
    assert order.status_sequence == 1
    assert order.updated_at == stamp(T0 + timedelta(minutes=1))


def test_reservation_created_for_the_order_counts_and_hold_reservations_are_ignored() -> None:
    order = make_order({"1": 5})
    before = order_gateway_pb2.Order()
    before.CopyFrom(order)
    assert apply_all(order, reservation_created({"1": 5}, owner=HOLD_OWNER)) == [None]
    assert order == before  # hold view's business, not the order view's
    apply_all(order, reservation_created({"1": 4}))
    assert qty(order, "1", "reserved") == 4


def test_reservation_released_and_expired_reduce_reserved_never_below_zero() -> None:
    order = make_order({"1": 5, "2": 5})
    apply_all(order, reservation_committed({"1": 5, "2": 5}))
    apply_all(order, reservation_released({"1": 2}), reservation_expired({"2": 5}), start=2)
    assert qty(order, "1", "reserved") == 3
    assert qty(order, "2", "reserved") == 0
    apply_all(order, reservation_released({"1": 7}), start=5)
    assert qty(order, "1", "reserved") == 0
    assert order.status == ACCEPTED


def test_hold_release_is_ignored() -> None:
    order = make_order({"1": 5})
    apply_all(order, reservation_committed({"1": 5}))
    assert apply_all(order, reservation_released({"1": 5}, owner=HOLD_OWNER), start=2) == [None]
    assert qty(order, "1", "reserved") == 5


def test_stock_allocated_moves_reserved_to_allocated() -> None:
    order = make_order({"1": 4, "2": 2})
    apply_all(order, erp_order_booked(), reservation_committed({"1": 4, "2": 2}))
    [change] = apply_all(order, stock_allocated(allocation({"1": 4}), allocation({"2": 2}, "A-2")))
    assert change == StatusChange(ERP_BOOKED, ALLOCATED, ALLOCATED, "")
    assert qty(order, "1", "allocated") == 4
    assert qty(order, "1", "reserved") == 0
    assert qty(order, "2", "allocated") == 2


def test_partial_allocation_is_not_allocated_yet() -> None:
    order = make_order({"1": 4, "2": 2})
    apply_all(order, erp_order_booked(), reservation_committed({"1": 4, "2": 2}))
    assert apply_all(order, stock_allocated(allocation({"1": 4})), start=3) == [None]
    assert order.status == ERP_BOOKED
    assert qty(order, "2", "reserved") == 2


def test_allocation_beyond_the_reservation_does_not_go_negative() -> None:
    order = make_order({"1": 4})
    apply_all(order, reservation_committed({"1": 1}), stock_allocated(allocation({"1": 4})))
    assert quantities(order, "1")["reserved"] == 0
    assert quantities(order, "1")["allocated"] == 4
    assert order.status == ALLOCATED


def test_stock_deallocated_keep_reserved_returns_quantity_to_reserved() -> None:
    order = allocated_order({"1": 4})
    assert apply_all(order, stock_deallocated(allocation({"1": 3}), RESERVE), start=30) == [None]
    assert qty(order, "1", "allocated") == 1
    assert qty(order, "1", "reserved") == 3
    assert order.status == ALLOCATED  # never back to ERP_BOOKED
    apply_all(order, stock_allocated(allocation({"1": 3}, "A-2", "W2")), start=31)
    assert qty(order, "1", "allocated") == 4
    assert qty(order, "1", "reserved") == 0


def test_stock_deallocated_release_returns_quantity_to_stock() -> None:
    order = allocated_order({"1": 4})
    apply_all(order, stock_deallocated(allocation({"1": 4}), RELEASE), start=30)
    assert qty(order, "1", "allocated") == 0
    assert qty(order, "1", "reserved") == 0


def test_backorder_created_sets_backordered_and_earliest_eta() -> None:
    order = make_order({"1": 5, "2": 2})
    apply_all(order, erp_order_booked(), stock_allocated(allocation({"1": 2, "2": 2})))
    assert order.status == ERP_BOOKED
    late, early = T0 + timedelta(days=9), T0 + timedelta(days=4)
    [change] = apply_all(order, backorder_created("1", 2, late, "B-1"), start=3)
    assert change == StatusChange(ERP_BOOKED, BACKORDERED, BACKORDERED, "")
    apply_all(order, backorder_created("1", 1, early, "B-2"), start=4)
    assert qty(order, "1", "backordered") == 3
    assert line(order, "1").backorder_eta == stamp(early)
    apply_all(order, backorder_created("1", 0, late, "B-3"), start=5)
    assert line(order, "1").backorder_eta == stamp(early)


def test_backorder_eta_changed_sets_and_clears_eta() -> None:
    order = make_order({"1": 5})
    apply_all(order, backorder_created("1", 5, T0 + timedelta(days=3)))
    later = T0 + timedelta(days=10)
    assert apply_all(order, backorder_eta_changed("1", later), start=2) == [None]
    assert line(order, "1").backorder_eta == stamp(later)
    apply_all(order, backorder_eta_changed("1", None), start=3)
    assert not line(order, "1").HasField("backorder_eta")
    assert qty(order, "1", "backordered") == 5


def test_backorder_then_fill_moves_backordered_to_allocated() -> None:
    order = make_order({"1": 4, "2": 2})
    apply_all(
        order,
        erp_order_booked(),
        reservation_committed({"1": 1, "2": 2}),
        stock_allocated(allocation({"1": 1, "2": 2})),
        backorder_created("1", 3, T0 + timedelta(days=5)),
    )
    assert order.status == BACKORDERED
    assert qty(order, "1", "reserved") == 0
    [change] = apply_all(order, backorder_filled("1", 2, remaining=1), start=5)
    assert change is None  # still 1 backordered
    assert qty(order, "1", "allocated") == 3
    assert qty(order, "1", "backordered") == 1
    assert line(order, "1").HasField("backorder_eta")
    [change] = apply_all(order, backorder_filled("1", 1, remaining=0, allocation_id="A-G"), start=6)
    assert change == StatusChange(BACKORDERED, ALLOCATED, ALLOCATED, "")
    assert qty(order, "1", "allocated") == 4
    assert qty(order, "1", "backordered") == 0
    assert not line(order, "1").HasField("backorder_eta")


# --- fulfillment events --------------------------------------------------------------------------


def test_erp_order_booked_records_number() -> None:
    order = make_order({"1": 1})
    [change] = apply_all(order, erp_order_booked("SO-7"))
    assert change == StatusChange(ACCEPTED, ERP_BOOKED, ERP_BOOKED, "")
    assert order.erp_order_number == "SO-7"
    assert order.status_sequence == 2


def test_fulfillment_order_released_counts_released_capped_at_ordered() -> None:
    order = allocated_order({"1": 3, "2": 2})
    [change] = apply_all(order, fulfillment_order_released({"1": 3}), start=20)
    assert change == StatusChange(ALLOCATED, RELEASED, RELEASED, "")
    assert qty(order, "1", "released") == 3
    # A re-sourced release of the same quantity does not count twice.
    apply_all(order, fulfillment_order_released({"1": 3}, "F-2", "A-2"), start=21)
    assert qty(order, "1", "released") == 3


def test_release_rejected_changes_nothing() -> None:
    order = allocated_order({"1": 3})
    apply_all(order, fulfillment_order_released({"1": 3}), start=20)
    before = order_gateway_pb2.Order()
    before.CopyFrom(order)
    assert apply_all(order, release_rejected({"1": 3}), start=21) == [None]
    assert order == before


def test_shipment_created_counts_shipped_consumes_allocation_and_adds_tracking() -> None:
    order = allocated_order({"1": 3, "2": 2})
    apply_all(order, fulfillment_order_released({"1": 3, "2": 2}), start=20)
    apply_all(order, shipment_created({"1": 3}, "S-1", ("1Z1", "", "1Z2")), start=21)
    assert qty(order, "1", "shipped") == 3
    assert qty(order, "1", "allocated") == 0
    assert qty(order, "2", "allocated") == 2
    assert [(t.shipment_id, t.tracking_number) for t in order.tracking] == [
        ("S-1", "1Z1"),
        ("S-1", "1Z2"),
    ]
    first = order.tracking[0]
    assert (first.carrier_code, first.service_code) == ("UPS", "UPS_GROUND")
    assert first.shipped_at == stamp(T0 + timedelta(days=1))


def test_split_shipments_partially_shipped_then_shipped() -> None:
    order = allocated_order({"1": 4, "2": 2})
    apply_all(order, fulfillment_order_released({"1": 4, "2": 2}), start=20)
    changes = apply_all(
        order,
        shipment_created({"1": 1}, "S-1"),
        shipment_created({"1": 2, "2": 1}, "S-2"),
        shipment_created({"1": 1, "2": 1}, "S-3"),
        start=21,
    )
    assert [c.status if c else None for c in changes] == [PARTIALLY_SHIPPED, None, SHIPPED]
    assert qty(order, "1", "shipped") == 4
    assert qty(order, "2", "shipped") == 2
    assert len(order.tracking) == 3


def test_invoice_created_invoices_only_when_everything_shipped_is_invoiced() -> None:
    order = shipped_order({"1": 3, "2": 2})
    assert apply_all(order, invoice_created({"1": 3}), start=30) == [None]
    assert qty(order, "1", "invoiced") == 3
    [change] = apply_all(order, invoice_created({"2": 2}, "S-2"), start=31)
    assert change == StatusChange(SHIPPED, INVOICED, INVOICED, "")


def test_invoice_of_a_partial_shipment_keeps_partially_shipped() -> None:
    order = allocated_order({"1": 3})
    apply_all(
        order,
        fulfillment_order_released({"1": 3}),
        shipment_created({"1": 1}),
        invoice_created({"1": 1}),
        start=20,
    )
    assert order.status == PARTIALLY_SHIPPED


def test_completed_reported_by_fulfillment_is_terminal() -> None:
    order = shipped_order({"1": 1})
    apply_all(order, invoice_created({"1": 1}), fulfillment_status(COMPLETED), start=30)
    assert order.status == COMPLETED
    sequence = order.status_sequence
    # Nothing moves a terminal order, not even a hold.
    assert apply_all(order, fulfillment_status(ON_HOLD, COMPLETED, "late hold"), start=40) == [None]
    assert order.status == COMPLETED
    assert order.status_sequence == sequence


# --- cancellation --------------------------------------------------------------------------------


def test_cancel_before_release_cancels_the_order() -> None:
    order = make_order({"1": 3, "2": 2})
    apply_all(
        order,
        erp_order_booked(),
        reservation_committed({"1": 1, "2": 2}),
        stock_allocated(allocation({"1": 1, "2": 2})),
        backorder_created("1", 2, T0 + timedelta(days=5)),
    )
    [change] = apply_all(order, order_canceled({"1": 3, "2": 2}, fully=True), start=5)
    assert change == StatusChange(BACKORDERED, CANCELED, CANCELED, "")
    for line_id in ("1", "2"):
        q = quantities(order, line_id)
        assert (q["reserved"], q["allocated"], q["backordered"]) == (0, 0, 0)
        assert q["canceled"] == q["ordered"]
    assert not line(order, "1").HasField("backorder_eta")
    # Inventory's releases of the canceled stock arrive later and change nothing visible.
    assert apply_all(order, stock_deallocated(allocation({"1": 1, "2": 2}), RELEASE), start=6) == [
        None
    ]
    assert qty(order, "1", "allocated") == 0
    assert order.status == CANCELED


def test_cancel_of_an_accepted_order() -> None:
    order = make_order({"1": 3})
    apply_all(order, reservation_committed({"1": 3}))
    [change] = apply_all(order, order_canceled({"1": 3}, fully=True), start=2)
    assert change == StatusChange(ACCEPTED, CANCELED, CANCELED, "")
    assert qty(order, "1", "reserved") == 0


def test_partial_cancel_reduces_reserved_then_backordered_then_allocated() -> None:
    order = make_order({"1": 10})
    apply_all(
        order,
        reservation_committed({"1": 3}),
        stock_allocated(allocation({"1": 3})),
        backorder_created("1", 4),
        reservation_committed({"1": 3}),  # e.g. quantity re-reserved after a rejection
    )
    assert (qty(order, "1", "reserved"), qty(order, "1", "backordered")) == (3, 4)
    apply_all(order, order_canceled({"1": 2}), start=5)
    q = quantities(order, "1")
    assert (q["reserved"], q["backordered"], q["allocated"], q["canceled"]) == (1, 4, 3, 2)
    apply_all(order, order_canceled({"1": 3}), start=6)
    q = quantities(order, "1")
    assert (q["reserved"], q["backordered"], q["allocated"], q["canceled"]) == (0, 2, 3, 5)
    apply_all(order, order_canceled({"1": 4}), start=7)
    q = quantities(order, "1")
    assert (q["reserved"], q["backordered"], q["allocated"], q["canceled"]) == (0, 0, 1, 9)
    assert cancellable(line(order, "1")) == 1


@pytest.mark.parametrize("inventory_first", [False, True])
def test_partial_cancel_and_inventory_release_do_not_count_twice(inventory_first: bool) -> None:
    order = allocated_order({"1": 10, "2": 1})
    events = [order_canceled({"1": 4}), stock_deallocated(allocation({"1": 4}), RELEASE)]
    apply_all(order, *(reversed(events) if inventory_first else events), start=20)
    assert qty(order, "1", "allocated") == 6
    assert qty(order, "1", "canceled") == 4
    assert order.status == ALLOCATED
    assert dict(order.attributes) == {"shopify.name": "#1001"}


def test_cancel_of_the_unshipped_rest_makes_the_order_shipped() -> None:
    order = allocated_order({"1": 4, "2": 2})
    apply_all(
        order,
        fulfillment_order_released({"1": 4, "2": 2}),
        shipment_created({"1": 3, "2": 2}),
        start=20,
    )
    assert order.status == PARTIALLY_SHIPPED
    [change] = apply_all(order, order_canceled({"1": 1}), start=30)  # short pick
    assert change == StatusChange(PARTIALLY_SHIPPED, SHIPPED, SHIPPED, "")
    assert qty(order, "1", "allocated") == 0
    assert cancellable(line(order, "1")) == 0


def test_fully_canceled_line_next_to_a_shipped_line_is_not_canceled() -> None:
    order = allocated_order({"1": 2, "2": 2})
    apply_all(order, order_canceled({"2": 2}), start=20)
    assert order.status == ALLOCATED
    apply_all(order, fulfillment_order_released({"1": 2}), shipment_created({"1": 2}), start=21)
    assert order.status == SHIPPED


# --- returns -------------------------------------------------------------------------------------


def test_return_and_credit_memo_make_the_order_returned() -> None:
    order = shipped_order({"1": 2, "2": 1})
    apply_all(order, invoice_created({"1": 2, "2": 1}), fulfillment_status(COMPLETED), start=30)
    assert apply_all(order, return_received({"1": 2, "2": 1}), start=40) == [None]
    assert qty(order, "1", "returned") == 2
    assert returnable(line(order, "1")) == 0
    assert order.status == COMPLETED  # returned but not yet credited
    assert apply_all(order, credit_memo_created({"1": 2}), start=41) == [None]
    assert view.credited(order, line(order, "1")) == 2
    [change] = apply_all(order, credit_memo_created({"2": 1}, "CM-2"), start=42)
    assert change == StatusChange(COMPLETED, RETURNED, RETURNED, "")
    # The credited quantity is internal bookkeeping: kept in the order, hidden from the API.
    assert order.attributes["dwf.ledger.1"] == "r=0;a=0;b=0;c=2"
    assert dict(view.without_internal_attributes(order).attributes) == {"shopify.name": "#1001"}


def test_partial_return_does_not_end_the_order() -> None:
    order = shipped_order({"1": 3})
    apply_all(order, invoice_created({"1": 3}), start=30)
    apply_all(order, return_received({"1": 1}), credit_memo_created({"1": 1}), start=31)
    assert order.status == INVOICED
    assert returnable(line(order, "1")) == 2


def test_return_of_a_partial_shipment_does_not_end_an_open_order() -> None:
    order = allocated_order({"1": 2, "2": 2})
    apply_all(
        order,
        fulfillment_order_released({"1": 2, "2": 2}),
        shipment_created({"1": 2}),
        return_received({"1": 2}),
        credit_memo_created({"1": 2}),
        start=20,
    )
    assert order.status == PARTIALLY_SHIPPED
    apply_all(order, shipment_created({"2": 2}, "S-2"), start=30)
    assert order.status == SHIPPED


def test_returned_without_completed_report() -> None:
    order = shipped_order({"1": 1})
    changes = apply_all(order, return_received({"1": 1}), credit_memo_created({"1": 1}), start=30)
    assert changes[-1] == StatusChange(SHIPPED, RETURNED, RETURNED, "")
    # A late COMPLETED report cannot take RETURNED back.
    assert apply_all(order, fulfillment_status(COMPLETED), start=40) == [None]
    assert order.status == RETURNED


# --- overlays and exceptions ---------------------------------------------------------------------


def test_hold_overlay_set_lifecycle_moves_underneath_and_cleared() -> None:
    order = allocated_order({"1": 2})
    sequence = order.status_sequence
    [change] = apply_all(order, fulfillment_status(ON_HOLD, ALLOCATED, "fraud review"), start=20)
    assert change == StatusChange(ALLOCATED, ON_HOLD, ALLOCATED, "fraud review")
    assert (order.status, order.lifecycle_status, order.status_reason) == (
        ON_HOLD,
        ALLOCATED,
        "fraud review",
    )
    # The same overlay again is no change.
    assert apply_all(order, fulfillment_status(ON_HOLD, ALLOCATED, "fraud review"), start=21) == [
        None
    ]
    # Lifecycle progress under the hold is published with the overlay kept.
    [change] = apply_all(order, fulfillment_order_released({"1": 2}), start=22)
    assert change == StatusChange(ON_HOLD, ON_HOLD, RELEASED, "fraud review")
    [change] = apply_all(order, fulfillment_status(RELEASED), start=23)
    assert change == StatusChange(ON_HOLD, RELEASED, RELEASED, "")
    assert order.status_reason == ""
    assert order.status_sequence == sequence + 3


def test_exception_overlay_and_reason_change() -> None:
    order = allocated_order({"1": 2})
    apply_all(
        order,
        fulfillment_status(EXCEPTION, ALLOCATED, "WMS down", exception_id="E-1"),
        start=20,
    )
    assert order.status == EXCEPTION
    [change] = apply_all(
        order, fulfillment_status(EXCEPTION, ALLOCATED, "WMS still down", "E-1"), start=21
    )
    assert change == StatusChange(EXCEPTION, EXCEPTION, ALLOCATED, "WMS still down")
    [change] = apply_all(order, fulfillment_status(ON_HOLD, ALLOCATED, "operator hold"), start=22)
    assert change == StatusChange(EXCEPTION, ON_HOLD, ALLOCATED, "operator hold")


def test_terminal_lifecycle_clears_the_overlay() -> None:
    order = allocated_order({"1": 2})
    apply_all(order, fulfillment_status(ON_HOLD, ALLOCATED, "fraud review"), start=20)
    [change] = apply_all(order, order_canceled({"1": 2}, fully=True), start=21)
    assert change == StatusChange(ON_HOLD, CANCELED, CANCELED, "")
    assert order.status_reason == ""


def test_unknown_status_value_leaves_the_overlay_alone() -> None:
    order = allocated_order({"1": 2})
    apply_all(order, fulfillment_status(ON_HOLD, ALLOCATED, "fraud review"), start=20)
    unknown = fulfillment_events.OrderStatusChanged(order_id=ORDER_ID, status=99)  # type: ignore[arg-type]
    assert apply_all(order, unknown, start=21) == [None]
    assert order.status == ON_HOLD


def test_exceptions_raised_and_resolved_track_open_exception_ids() -> None:
    order = allocated_order({"1": 2})
    raised = [
        fulfillment_events.ExceptionRaised(exception=exception_record(i)) for i in ("E-1", "E-2")
    ]
    assert apply_all(order, *raised, raised[0], start=20) == [None, None, None]
    assert list(order.open_exception_ids) == ["E-1", "E-2"]
    resolved = fulfillment_events.ExceptionResolved(exception=exception_record("E-1"))
    apply_all(order, resolved, resolved, start=30)
    assert list(order.open_exception_ids) == ["E-2"]
    assert order.status == ALLOCATED
    assert order.updated_at == stamp(T0 + timedelta(minutes=31))


# --- out-of-order arrival ------------------------------------------------------------------------


def test_shipment_before_release_and_allocation_never_regresses() -> None:
    order = make_order({"1": 2})
    changes = apply_all(
        order,
        shipment_created({"1": 2}),
        erp_order_booked(),
        fulfillment_order_released({"1": 2}),
        stock_allocated(allocation({"1": 2})),
        reservation_committed({"1": 2}),
    )
    assert [c.status if c else None for c in changes] == [SHIPPED, None, None, None, None]
    q = quantities(order, "1")
    assert (q["reserved"], q["allocated"], q["released"], q["shipped"]) == (0, 0, 2, 2)
    assert order.erp_order_number == "SO-1"
    assert order.status_sequence == 2


def test_invoice_before_shipment() -> None:
    order = allocated_order({"1": 2})
    apply_all(order, fulfillment_order_released({"1": 2}), start=20)
    [change] = apply_all(order, invoice_created({"1": 2}), start=21)
    assert change is None
    assert order.status == RELEASED
    [change] = apply_all(order, shipment_created({"1": 2}), start=22)
    assert change == StatusChange(RELEASED, INVOICED, INVOICED, "")


def test_fill_before_backorder_created() -> None:
    order = make_order({"1": 4})
    apply_all(
        order,
        erp_order_booked(),
        reservation_committed({"1": 1}),
        stock_allocated(allocation({"1": 1})),
    )
    [change] = apply_all(order, backorder_filled("1", 3), start=4)
    assert change == StatusChange(ERP_BOOKED, ALLOCATED, ALLOCATED, "")
    assert qty(order, "1", "backordered") == 0
    [change] = apply_all(order, backorder_created("1", 3, T0 + timedelta(days=2)), start=5)
    assert change is None  # the fill already covered it
    assert qty(order, "1", "backordered") == 0
    assert qty(order, "1", "allocated") == 4
    assert not line(order, "1").HasField("backorder_eta")
    assert "dwf.ledger.1" not in order.attributes


def test_cancel_before_the_backorder_it_cancels() -> None:
    order = make_order({"1": 4})
    apply_all(order, stock_allocated(allocation({"1": 2})), order_canceled({"1": 2}))
    assert order.status == ALLOCATED
    assert apply_all(order, backorder_created("1", 2), start=5) == [None]
    assert qty(order, "1", "backordered") == 0


def test_return_and_credit_before_the_last_shipment() -> None:
    order = allocated_order({"1": 2})
    apply_all(
        order,
        fulfillment_order_released({"1": 2}),
        shipment_created({"1": 1}),
        return_received({"1": 2}),
        credit_memo_created({"1": 2}),
        start=20,
    )
    assert order.status == PARTIALLY_SHIPPED
    [change] = apply_all(order, shipment_created({"1": 1}, "S-2"), start=30)
    assert change == StatusChange(PARTIALLY_SHIPPED, RETURNED, RETURNED, "")


def test_updated_at_never_moves_back() -> None:
    order = make_order({"1": 1})
    apply_event(order, erp_order_booked(), T0 + timedelta(hours=2))
    apply_event(order, reservation_committed({"1": 1}), T0 + timedelta(hours=1))
    assert order.updated_at == stamp(T0 + timedelta(hours=2))
    assert qty(order, "1", "reserved") == 1


# --- irrelevant input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        fulfillment_events.ReleaseAcknowledged(order_id=ORDER_ID, fulfillment_order_id="F-1"),
        fulfillment_events.ShipmentPosted(order_id=ORDER_ID, shipment_id="S-1"),
        fulfillment_events.ReturnAuthorized(),
        inventory_events.AvailabilityChanged(warehouse_id="W1"),
        inventory_events.ReservationExtended(reservation_id="R-1"),
        common_pb2.Money(currency_code="USD", units=1),
        fulfillment_events.ErpOrderBooked(order_id="O-other", erp_order_number="SO-9"),
        fulfillment_events.ExceptionRaised(
            exception=fulfillment_pb2.ExceptionRecord(exception_id="E-9")
        ),
    ],
    ids=lambda payload: type(payload).__name__,
)
def test_irrelevant_payloads_change_nothing(payload: Message) -> None:
    order = make_order({"1": 1})
    before = order_gateway_pb2.Order()
    before.CopyFrom(order)
    assert apply_event(order, payload, T0 + timedelta(hours=1)) is None
    assert order == before


def test_unknown_lines_are_ignored() -> None:
    order = make_order({"1": 1})
    apply_all(order, stock_allocated(allocation({"X": 5})), shipment_created({"X": 5}))
    assert quantities(order, "1")["allocated"] == 0
    assert order.status == ACCEPTED


def test_order_id_of_routes_reservation_events_by_owner() -> None:
    assert view.order_id_of(reservation_committed({"1": 1})) == ORDER_ID
    assert view.order_id_of(reservation_released({"1": 1})) == ORDER_ID
    assert view.order_id_of(reservation_released({"1": 1}, owner=HOLD_OWNER)) is None
    assert view.order_id_of(shipment_created({"1": 1})) == ORDER_ID
    assert view.order_id_of(common_pb2.Money()) is None


# --- helpers -------------------------------------------------------------------------------------


def test_cancellable_and_returnable() -> None:
    entry = common_pb2.OrderLine(
        line_id="1",
        quantities=common_pb2.LineQuantities(ordered=10, shipped=4, canceled=3, returned=1),
    )
    assert cancellable(entry) == 3
    assert returnable(entry) == 3
    over = common_pb2.OrderLine(quantities=common_pb2.LineQuantities(ordered=2, shipped=3))
    assert cancellable(over) == 0


def test_is_terminal() -> None:
    assert {s for s in common_pb2.OrderStatus.values() if is_terminal(s)} == {
        COMPLETED,
        CANCELED,
        RETURNED,
    }


@pytest.mark.parametrize(
    ("current", "candidate", "expected"),
    [
        (ACCEPTED, ERP_BOOKED, ERP_BOOKED),
        (RELEASED, ALLOCATED, RELEASED),
        (ALLOCATED, BACKORDERED, BACKORDERED),
        (BACKORDERED, ALLOCATED, ALLOCATED),
        (INVOICED, SHIPPED, INVOICED),
        (INVOICED, CANCELED, CANCELED),
        (COMPLETED, RETURNED, RETURNED),
        (CANCELED, RETURNED, CANCELED),
        (RETURNED, COMPLETED, RETURNED),
        (SHIPPED, ON_HOLD, SHIPPED),
    ],
)
def test_advance_never_goes_back(current: Status, candidate: Status, expected: Status) -> None:
    assert view.advance(current, candidate) == expected


def test_derive_lifecycle_from_quantities() -> None:
    order = make_order({"1": 2, "2": 2})
    assert derive_lifecycle(order) == ACCEPTED
    order.erp_order_number = "SO-1"
    assert derive_lifecycle(order) == ERP_BOOKED
    for entry in order.lines:
        entry.quantities.allocated = 2
    assert derive_lifecycle(order) == ALLOCATED
    order.lines[1].quantities.backordered = 1
    assert derive_lifecycle(order) == BACKORDERED
    order.lines[0].quantities.released = 2
    assert derive_lifecycle(order) == RELEASED
    order.lines[0].quantities.shipped = 2
    assert derive_lifecycle(order) == PARTIALLY_SHIPPED
    order.lines[1].quantities.canceled = 2
    assert derive_lifecycle(order) == SHIPPED
    order.lines[0].quantities.invoiced = 2
    assert derive_lifecycle(order) == INVOICED
    canceled = make_order({"1": 2})
    canceled.lines[0].quantities.canceled = 2
    assert derive_lifecycle(canceled) == CANCELED


def test_lifecycle_rank_rejects_overlays() -> None:
    assert view.lifecycle_rank(ALLOCATED) == view.lifecycle_rank(BACKORDERED)
    with pytest.raises(ValueError):
        view.lifecycle_rank(ON_HOLD)


# --- property: any arrival order -----------------------------------------------------------------


@dataclass
class Truth:
    """What the owners' states really are after the simulated workflow."""

    ordered: dict[str, int]
    reserved: dict[str, int] = field(default_factory=dict)
    allocated: dict[str, int] = field(default_factory=dict)
    backordered: dict[str, int] = field(default_factory=dict)
    released: dict[str, int] = field(default_factory=dict)
    shipped: dict[str, int] = field(default_factory=dict)
    canceled: dict[str, int] = field(default_factory=dict)
    returned: dict[str, int] = field(default_factory=dict)
    invoiced: dict[str, int] = field(default_factory=dict)
    credited: dict[str, int] = field(default_factory=dict)
    booked: bool = False
    completed: bool = False

    def add(self, name: str, line_id: str, quantity: int) -> None:
        counter: dict[str, int] = getattr(self, name)
        counter[line_id] = counter.get(line_id, 0) + quantity

    def get(self, name: str, line_id: str) -> int:
        if name == "ordered":
            return self.ordered[line_id]
        value: int = getattr(self, name).get(line_id, 0)
        # `released` counts what was ever sent to a warehouse, at most the ordered quantity.
        return min(value, self.ordered[line_id]) if name == "released" else value

    def open(self, line_id: str) -> int:
        return self.ordered[line_id] - self.get("canceled", line_id)

    def expected_status(self) -> Status:
        """The status rules of the brief, applied to the true quantities."""
        ids = list(self.ordered)
        shipped = {i: self.get("shipped", i) for i in ids}
        any_shipped = any(shipped.values())
        if not any_shipped and all(self.open(i) == 0 for i in ids):
            return CANCELED
        all_shipped = all(shipped[i] >= self.open(i) for i in ids)
        if (
            any_shipped
            and all_shipped
            and all(
                self.get("returned", i) >= shipped[i] and self.get("credited", i) >= shipped[i]
                for i in ids
            )
        ):
            return RETURNED
        if self.completed:
            return COMPLETED
        if all_shipped:
            return INVOICED if all(self.get("invoiced", i) >= shipped[i] for i in ids) else SHIPPED
        if any_shipped:
            return PARTIALLY_SHIPPED
        if any(self.get("released", i) for i in ids):
            return RELEASED
        if any(self.get("backordered", i) for i in ids):
            return BACKORDERED
        if all(self.get("allocated", i) >= self.open(i) for i in ids):
            return ALLOCATED
        return ERP_BOOKED if self.booked else ACCEPTED


class Workflow:
    """Emits a consistent set of owner events in causal order and tracks the truth."""

    def __init__(self, ordered: dict[str, int]) -> None:
        self.truth = Truth(ordered)
        self.events: list[Message] = []
        self.allocations: dict[str, dict[str, int]] = {}  # allocation id -> line -> quantity
        self.backorders: dict[str, tuple[str, int]] = {}  # backorder id -> (line, quantity)
        self.serial = 0

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def commit(self, lines: dict[str, int]) -> None:
        lines = {k: q for k, q in lines.items() if q > 0}
        if lines:
            self.events.append(reservation_committed(lines))
            for line_id, q in lines.items():
                self.truth.add("reserved", line_id, q)

    def book(self) -> None:
        self.events.append(erp_order_booked())
        self.truth.booked = True

    def cancel_unallocated(self, lines: dict[str, int]) -> None:
        """Cancel before allocation: inventory releases the reservation of that quantity."""
        lines = {k: q for k, q in lines.items() if q > 0}
        if not lines:
            return
        self.events.append(order_canceled(lines))
        released = {}
        for line_id, q in lines.items():
            self.truth.add("canceled", line_id, q)
            freed = min(q, self.truth.get("reserved", line_id))
            if freed:
                released[line_id] = freed
                self.truth.add("reserved", line_id, -freed)
        if released:
            self.events.append(reservation_released(released))

    def allocate(self, lines: dict[str, int], warehouse: str) -> str:
        allocation_id = self.next_id("A")
        self.allocations[allocation_id] = dict(lines)
        self.events.append(stock_allocated(allocation(lines, allocation_id, warehouse)))
        for line_id, q in lines.items():
            self.truth.add("allocated", line_id, q)
        return allocation_id

    def source(self, allocated: dict[str, int], split: bool, eta_days: int) -> None:
        """The first allocation: reservation consumed (or released), the rest backordered."""
        for line_id in allocated:
            self.truth.reserved[line_id] = 0
        positive = [(k, q) for k, q in allocated.items() if q > 0]
        parts = [dict(positive[0::2]), dict(positive[1::2])] if split else [dict(positive)]
        for n, part in enumerate(parts):
            if part:
                self.allocate(part, f"W{n + 1}")
        for line_id, q in allocated.items():
            short = self.truth.open(line_id) - q
            if short > 0:
                backorder_id = self.next_id("B")
                self.backorders[backorder_id] = (line_id, short)
                eta = T0 + timedelta(days=eta_days)
                self.events.append(backorder_created(line_id, short, eta, backorder_id))
                self.events.append(
                    backorder_eta_changed(line_id, eta + timedelta(days=1), backorder_id)
                )
                self.truth.add("backordered", line_id, short)

    def resource(self, allocation_id: str) -> str:
        """Deallocate keeping the stock reserved, then allocate it in another warehouse."""
        lines = self.allocations.pop(allocation_id)
        self.events.append(stock_deallocated(allocation(lines, allocation_id), RESERVE))
        for line_id, q in lines.items():
            self.truth.add("allocated", line_id, -q)
        return self.allocate(lines, "W9")

    def fill(self, backorder_id: str, parts: int) -> None:
        line_id, quantity = self.backorders.pop(backorder_id)
        first = quantity // 2 if parts == 2 and quantity >= 2 else quantity
        remaining = quantity
        for filled in (first, quantity - first):
            if filled <= 0:
                continue
            remaining -= filled
            allocation_id = self.next_id("A")
            self.allocations[allocation_id] = {line_id: filled}
            self.events.append(
                backorder_filled(line_id, filled, remaining, backorder_id, allocation_id)
            )
            self.truth.add("backordered", line_id, -filled)
            self.truth.add("allocated", line_id, filled)

    def cancel_backorder(self, backorder_id: str) -> None:
        line_id, quantity = self.backorders.pop(backorder_id)
        self.events.append(order_canceled({line_id: quantity}))
        self.truth.add("canceled", line_id, quantity)
        self.truth.add("backordered", line_id, -quantity)

    def release(self, allocation_id: str) -> str:
        fulfillment_order_id = self.next_id("F")
        lines = self.allocations[allocation_id]
        self.events.append(fulfillment_order_released(lines, fulfillment_order_id, allocation_id))
        for line_id, q in lines.items():
            self.truth.add("released", line_id, q)
        return fulfillment_order_id

    def reject_and_resource(self, allocation_id: str, fulfillment_order_id: str) -> str:
        self.events.append(release_rejected(self.allocations[allocation_id], fulfillment_order_id))
        return self.resource(allocation_id)

    def ship(self, allocation_id: str, lines: dict[str, int]) -> str:
        shipment_id = self.next_id("S")
        self.events.append(shipment_created(lines, shipment_id, (f"1Z{shipment_id}",)))
        for line_id, q in lines.items():
            self.truth.add("shipped", line_id, q)
            self.truth.add("allocated", line_id, -q)
            self.allocations[allocation_id][line_id] -= q
        return shipment_id

    def short_pick(self, allocation_id: str, line_id: str, quantity: int) -> None:
        """The WMS could not pick it: fulfillment cancels it, inventory releases its stock."""
        self.events.append(order_canceled({line_id: quantity}))
        self.events.append(
            stock_deallocated(allocation({line_id: quantity}, allocation_id), RELEASE)
        )
        self.truth.add("canceled", line_id, quantity)
        self.truth.add("allocated", line_id, -quantity)
        self.allocations[allocation_id][line_id] -= quantity

    def invoice(self, shipment_id: str, lines: dict[str, int]) -> None:
        self.events.append(invoice_created(lines, shipment_id))
        for line_id, q in lines.items():
            self.truth.add("invoiced", line_id, q)

    def complete(self) -> None:
        self.events.append(fulfillment_status(COMPLETED))
        self.truth.completed = True

    def give_back(self, returned: dict[str, int], credited: dict[str, int]) -> None:
        returned = {k: q for k, q in returned.items() if q > 0}
        credited = {k: q for k, q in credited.items() if q > 0}
        if returned:
            self.events.append(return_received(returned, self.next_id("RCPT")))
            for line_id, q in returned.items():
                self.truth.add("returned", line_id, q)
        if credited:
            self.events.append(credit_memo_created(credited, self.next_id("CM")))
            for line_id, q in credited.items():
                self.truth.add("credited", line_id, q)


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    """A consistent set of events of one order, up to a random point of its workflow.

    Stages end at quiescent points (a re-sourcing is its deallocation *and* re-allocation),
    as an order's state is between two workflow steps.
    """
    count = draw(st.integers(1, 4))
    ordered = {f"L{i}": draw(st.integers(1, 6)) for i in range(count)}
    flow = Workflow(ordered)
    stage = draw(st.integers(0, 8))
    flow.commit({k: draw(st.integers(0, q)) for k, q in ordered.items()})
    if stage >= 1:
        flow.book()
    if stage >= 2 and draw(st.booleans()):
        flow.cancel_unallocated({k: draw(st.integers(0, q)) for k, q in ordered.items()})
    open_lines = {k: flow.truth.open(k) for k in ordered if flow.truth.open(k) > 0}
    if stage < 3 or not open_lines:
        return flow
    flow.source(
        {k: draw(st.integers(0, q)) for k, q in open_lines.items()},
        split=draw(st.booleans()),
        eta_days=draw(st.integers(1, 30)),
    )
    if bool(flow.allocations) and draw(st.booleans()):
        flow.resource(draw(st.sampled_from(sorted(flow.allocations))))
    if stage < 4:
        return flow
    for backorder_id in sorted(flow.backorders):
        if draw(st.booleans()):
            flow.fill(backorder_id, parts=draw(st.integers(1, 2)))
        else:
            flow.cancel_backorder(backorder_id)
    if stage < 5 or not flow.allocations:
        return flow
    released: list[tuple[str, str]] = []
    for allocation_id in sorted(flow.allocations):
        fulfillment_order_id = flow.release(allocation_id)
        if not released and draw(st.booleans()):
            allocation_id = flow.reject_and_resource(allocation_id, fulfillment_order_id)
            flow.release(allocation_id)
        released.append((allocation_id, fulfillment_order_id))
    if stage < 6:
        return flow
    # Shipments: each fulfillment order in one or two parts, maybe with a short pick.
    shipments: list[tuple[str, dict[str, int]]] = []
    planned: list[tuple[str, dict[str, int] | tuple[str, int]]] = []
    for allocation_id, _ in released:
        lines = {k: q for k, q in flow.allocations[allocation_id].items() if q > 0}
        if draw(st.booleans()) and lines:
            first = {k: q // 2 for k, q in lines.items() if q // 2 > 0}
            if first:
                planned.append((allocation_id, first))
                lines = {k: q - first.get(k, 0) for k, q in lines.items()}
        if draw(st.booleans()) and lines:
            short_line = sorted(lines)[0]
            short = draw(st.integers(1, lines[short_line]))
            lines[short_line] -= short
            planned.append((allocation_id, (short_line, short)))
        lines = {k: q for k, q in lines.items() if q > 0}
        if lines:
            planned.append((allocation_id, lines))
    everything = stage >= 7 or draw(st.booleans())
    done = len(planned) if everything else draw(st.integers(0, len(planned)))
    for allocation_id, step in planned[:done]:
        if isinstance(step, tuple):
            flow.short_pick(allocation_id, *step)
        else:
            shipments.append((flow.ship(allocation_id, step), step))
    everything = stage >= 7 or draw(st.booleans())
    invoiced = shipments if everything else shipments[: draw(st.integers(0, len(shipments)))]
    for shipment_id, lines in invoiced:
        flow.invoice(shipment_id, lines)
    if stage < 7:
        return flow
    if bool(shipments) and draw(st.booleans()):  # fulfillment completes only what shipped
        flow.complete()
    if stage >= 8:
        shipped = {k: flow.truth.get("shipped", k) for k in ordered}
        returned = (
            shipped
            if draw(st.booleans())
            else {k: draw(st.integers(0, q)) for k, q in shipped.items()}
        )
        everything = draw(st.booleans())
        flow.give_back(
            returned,
            returned if everything else {k: draw(st.integers(0, q)) for k, q in returned.items()},
        )
    return flow


def check_invariants(order: order_gateway_pb2.Order, previous: dict[str, dict[str, int]]) -> None:
    for entry in order.lines:
        now = {name: getattr(entry.quantities, name) for name in QUANTITY_FIELDS}
        assert all(value >= 0 for value in now.values()), now
        before = previous.get(entry.line_id)
        if before is not None:
            assert all(now[name] >= before[name] for name in CUMULATIVE), (before, now)
        previous[entry.line_id] = now


def replay(order: order_gateway_pb2.Order, events: Iterable[Message]) -> list[StatusChange]:
    changes: list[StatusChange] = []
    previous: dict[str, dict[str, int]] = {}
    for minute, payload in enumerate(events):
        change = apply_event(order, payload, T0 + timedelta(minutes=minute))
        check_invariants(order, previous)
        if change is not None:
            changes.append(change)
    return changes


@settings(max_examples=300, deadline=None)
@given(flow=workflows(), data=st.data())
def test_any_arrival_order_ends_in_the_same_state(flow: Workflow, data: st.DataObject) -> None:
    arrivals = [flow.events] + [data.draw(st.permutations(flow.events)) for _ in range(3)]
    expected = flow.truth.expected_status()
    for events in arrivals:
        order = make_order(flow.truth.ordered)
        changes = replay(order, events)
        # (a) the same final status whatever the arrival order, the one the truth stands for.
        assert order.status == order.lifecycle_status == expected
        # (b) the emitted statuses never go back.
        ranks = [view.lifecycle_rank(change.status) for change in changes]
        assert ranks == sorted(ranks)
        # (c) one status_sequence step per emitted change.
        assert order.status_sequence == 1 + len(changes)
        # (d) and the quantities are the owners' true ones (none negative, see replay).
        for line_id in flow.truth.ordered:
            shown = quantities(order, line_id)
            assert shown == {name: flow.truth.get(name, line_id) for name in QUANTITY_FIELDS}
            assert view.credited(order, line(order, line_id)) == flow.truth.get("credited", line_id)


def _about_the_order(message_type: type[Message]) -> Message:
    """An instance of ``message_type`` naming ORDER_ID wherever it has an order_id, at the top
    or one message deep (how fulfillment's events carry it)."""
    payload = message_type()
    for field_descriptor in payload.DESCRIPTOR.fields:
        if field_descriptor.name == "order_id":
            payload.order_id = ORDER_ID  # type: ignore[attr-defined]
        elif field_descriptor.message_type is not None and not field_descriptor.is_repeated:
            nested = getattr(payload, field_descriptor.name)
            if "order_id" in nested.DESCRIPTOR.fields_by_name:
                nested.order_id = ORDER_ID
    return payload


def test_the_gateway_subscribes_to_every_fulfillment_event_the_view_takes() -> None:
    """The gateway's fulfillment consumer filters on FULFILLMENT_EVENTS_TAKEN: every other
    fulfillment event type must be one the view ignores, even when it names the order."""
    taken = set(view.FULFILLMENT_EVENTS_TAKEN)
    left_out = []
    for name in fulfillment_events.DESCRIPTOR.message_types_by_name:
        message_type = getattr(fulfillment_events, name)
        payload = _about_the_order(message_type)
        order = make_order({"1": 2})
        before = order.SerializeToString(deterministic=True)
        change = apply_event(order, payload, T0 + timedelta(minutes=1))
        unchanged = order.SerializeToString(deterministic=True) == before
        if message_type in taken:
            assert view.order_id_of(payload) == ORDER_ID, name
            assert not unchanged or change is not None, name
        else:
            left_out.append(name)
            assert view.order_id_of(payload) is None, name
            assert unchanged and change is None, name
    assert left_out  # the filter leaves something out, or it would not be needed
