"""The gateway's order consumers apply a batch in the order of the row each event locks."""

from __future__ import annotations

from google.protobuf.message import Message

from dwf.events.v1 import envelope_pb2
from dwf.fulfillment.v1 import events_pb2 as fulfillment_events
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.inventory.v1 import inventory_pb2 as inv
from services.order_gateway.handlers import locked_row

ORDER = inv.RESERVATION_OWNER_TYPE_ORDER
HOLD = inv.RESERVATION_OWNER_TYPE_HOLD


def envelope(payload: Message) -> envelope_pb2.EventEnvelope:
    wrapped = envelope_pb2.EventEnvelope(type=payload.DESCRIPTOR.full_name)
    wrapped.payload.Pack(payload)
    return wrapped


def reservation(owner_type: int, owner_id: str) -> inv.Reservation:
    return inv.Reservation(
        reservation_id="R-1", owner=inv.ReservationOwner(type=owner_type, owner_id=owner_id)
    )


def test_each_event_names_the_one_row_its_handler_locks() -> None:
    cases = {
        # An order's own reservation released: the order's row.
        "order:O-1": inventory_events.ReservationReleased(reservation=reservation(ORDER, "O-1")),
        # A checkout hold expiring: the hold's row only.
        "hold:R-1": inventory_events.ReservationExpired(reservation=reservation(HOLD, "C-9")),
    }
    for expected, payload in cases.items():
        assert locked_row(envelope(payload)) == expected
    # A commitment converts the hold; acceptance already wrote the order.
    committed = inventory_events.ReservationCommitted(
        reservation=reservation(ORDER, "O-1"), order_id="O-1"
    )
    assert locked_row(envelope(committed)) == "hold:R-1"
    booked = fulfillment_events.ErpOrderBooked(order_id="O-2")
    assert locked_row(envelope(booked)) == "order:O-2"


def test_an_event_type_the_gateway_does_not_know_sorts_first_and_locks_nothing() -> None:
    unknown = envelope_pb2.EventEnvelope(type="dwf.inventory.v1.SomethingNew")
    assert locked_row(unknown) == ""
