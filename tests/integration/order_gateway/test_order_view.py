"""The availability read model and the order view: both converge from the owners' events;
WatchOrder streams status changes in order; cancellations and returns are accepted or
refused synchronously and handed to fulfillment as events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import select

from chassis.schema import outbox
from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import events_pb2 as fulfillment_events
from dwf.fulfillment.v1 import fulfillment_pb2
from dwf.inventory.v1 import inventory_pb2 as inv
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway.store import orders as store
from services.order_gateway.store.tables import availability, availability_watermark
from tests.integration.harness import eventually, new_id, now_ts
from tests.integration.order_gateway.conftest import Gateway, item, order_request
from tests.integration.order_gateway.test_acceptance import reason

S = common_pb2


async def test_read_model_converges_after_inventory_events(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([5])
    request = pb.CheckAvailabilityRequest(channel_id=channel.channel_id, items=[item("1", sku, 8)])
    first = await gateway.stub.CheckAvailability(request, metadata=channel.auth)
    assert first.items[0].state == pb.AVAILABILITY_STATE_OUT_OF_STOCK
    await gateway.inventory.receive(sku, "WEST-1", 10)

    async def in_stock() -> pb.ItemAvailability | None:
        answer = await gateway.stub.CheckAvailability(request, metadata=channel.auth)
        found = answer.items[0]
        return found if found.available_quantity == 15 else None

    found = await eventually(in_stock, what="the read model to see the receipt")
    assert found.state == pb.AVAILABILITY_STATE_IN_STOCK


async def test_availability_rows_and_the_watermark_only_move_forward(gateway: Gateway) -> None:
    """AvailabilityChanged applied out of order: an older event (lower envelope sequence)
    changes neither a row nor the warehouse's watermark; a newer one does, and one that
    names no SKU still moves the watermark."""
    warehouse, sku = f"WH-{uuid.uuid4().hex[:8]}", f"SKU-{uuid.uuid4().hex[:8]}"
    sessions = gateway.app.runtime.sessions

    def level(available: int) -> inv.StockLevel:
        return inv.StockLevel(
            sku=sku,
            warehouse_id=warehouse,
            on_hand=available + 1,
            reserved=1,
            available=available,
            incoming=3,
        )

    async def apply(sequence: int, *levels: inv.StockLevel) -> tuple[int, int, int]:
        async with sessions.begin() as session:
            await store.apply_levels(session, warehouse, levels, sequence, datetime.now(UTC))
        async with sessions() as session:
            row = (
                await session.execute(
                    select(availability.c.available, availability.c.source_sequence).where(
                        availability.c.sku == sku, availability.c.warehouse == warehouse
                    )
                )
            ).one()
            mark = await session.scalar(
                select(availability_watermark.c.source_sequence).where(
                    availability_watermark.c.warehouse == warehouse
                )
            )
        return row.available, row.source_sequence, int(mark or 0)

    assert await apply(5, level(10)) == (10, 5, 5)
    assert await apply(3, level(99)) == (10, 5, 5)  # older: nothing moves
    assert await apply(7, level(4)) == (4, 7, 7)
    assert await apply(9) == (4, 7, 9)  # no SKU named: only the watermark


async def test_channel_warehouses_limit_availability(gateway: Gateway) -> None:
    channel = await gateway.channel(warehouses=["WEST-1"])
    (sku,) = await gateway.skus([7])  # all of it in EAST-1
    answer = await gateway.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(channel_id=channel.channel_id, items=[item("1", sku, 1)]),
        metadata=channel.auth,
    )
    assert answer.items[0].available_quantity == 0


async def test_unknown_sku_and_backorder_date(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([2])
    eta = now_ts()
    eta.seconds += 7 * 86400
    await gateway.inventory.stub.SetIncomingSupply(
        inv.SetIncomingSupplyRequest(
            request_id=new_id(),
            supplies=[
                inv.IncomingSupply(
                    supply_id="PO-1/1",
                    sku=sku,
                    warehouse_id="EAST-1",
                    kind=inv.SUPPLY_KIND_PURCHASE_ORDER,
                    quantity=10,
                    expected_at=eta,
                )
            ],
        )
    )
    request = pb.CheckAvailabilityRequest(
        channel_id=channel.channel_id, items=[item("1", sku, 6), item("2", "NO-SUCH-SKU", 1)]
    )

    async def backorderable() -> pb.CheckAvailabilityResponse | None:
        answer = await gateway.stub.CheckAvailability(request, metadata=channel.auth)
        return answer if answer.items[0].state == pb.AVAILABILITY_STATE_BACKORDERABLE else None

    answer = await eventually(backorderable, what="incoming supply in the read model")
    assert answer.items[0].available_at.seconds == eta.seconds
    assert answer.items[1].state == pb.AVAILABILITY_STATE_UNKNOWN_SKU


async def accept(gateway: Gateway, lines: list[tuple[str, int]]) -> tuple[pb.Order, object]:
    channel = await gateway.channel()
    answer = await gateway.stub.AcceptOrder(order_request(channel, lines), metadata=channel.auth)
    return answer.order, channel


async def test_watch_streams_every_change_in_order(gateway: Gateway) -> None:
    (sku,) = await gateway.skus([10])
    order, channel = await accept(gateway, [(sku, 4)])
    auth = channel.auth  # type: ignore[attr-defined]
    stream = gateway.stub.WatchOrder(pb.WatchOrderRequest(order_id=order.order_id), metadata=auth)
    seen: list[tuple[int, int]] = []

    async def read() -> None:
        async for change in stream:
            seen.append((change.status_sequence, change.status))

    reader = asyncio.create_task(read())
    oid = order.order_id
    await gateway.publish(
        "fulfillment",
        oid,
        fulfillment_events.ErpOrderBooked(
            order_id=oid, erp_order_number="SO-77", booked_at=now_ts()
        ),
    )
    allocated = await gateway.inventory.stub.Allocate(
        inv.AllocateRequest(
            request_id=new_id(),
            order_id=oid,
            channel_id=channel.channel_id,  # type: ignore[attr-defined]
            lines=[inv.LineItem(line_id="1", sku=sku, quantity=4)],
        )
    )
    allocation = allocated.allocations[0]
    await gateway.publish(
        "fulfillment",
        oid,
        fulfillment_events.FulfillmentOrderReleased(
            fulfillment_order=fulfillment_pb2.FulfillmentOrder(
                fulfillment_order_id="FO-1",
                order_id=oid,
                allocation_id=allocation.allocation_id,
                warehouse_id=allocation.warehouse_id,
                lines=[fulfillment_pb2.FulfillmentLine(line_id="1", sku=sku, quantity=4)],
            )
        ),
    )
    await gateway.publish(
        "fulfillment",
        oid,
        fulfillment_events.ShipmentCreated(
            shipment=fulfillment_pb2.Shipment(
                shipment_id="SH-1",
                order_id=oid,
                fulfillment_order_id="FO-1",
                warehouse_id=allocation.warehouse_id,
                lines=[fulfillment_pb2.ShipmentLine(line_id="1", sku=sku, quantity=4)],
                carrier_code="UPS",
                cartons=[
                    fulfillment_pb2.Carton(
                        carton_id="C-1",
                        tracking_number="1Z999",
                        lines=[fulfillment_pb2.ShipmentLine(line_id="1", sku=sku, quantity=4)],
                    )
                ],
                shipped_at=now_ts(),
            )
        ),
    )

    async def shipped() -> bool:
        return any(status == S.ORDER_STATUS_SHIPPED for _, status in seen)

    await eventually(shipped, what="SHIPPED on the watch stream")
    reader.cancel()
    sequences = [sequence for sequence, _ in seen]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    statuses = [status for _, status in seen]
    assert statuses[0] == S.ORDER_STATUS_ACCEPTED
    assert statuses[-1] == S.ORDER_STATUS_SHIPPED
    assert S.ORDER_STATUS_RELEASED in statuses
    view = (await gateway.stub.GetOrder(pb.GetOrderRequest(order_id=oid), metadata=auth)).order
    assert view.erp_order_number == "SO-77"
    assert view.lines[0].quantities.shipped == 4
    assert [t.tracking_number for t in view.tracking] == ["1Z999"]
    # Each change went to the channels exactly once, in sequence.
    async with gateway.app.runtime.sessions() as session:
        published = (
            await session.scalars(
                select(outbox.c.event_id).where(
                    outbox.c.aggregate_id == oid,
                    outbox.c.event_type == "dwf.order.v1.OrderStatusChanged",
                )
            )
        ).all()
    assert len(published) == view.status_sequence


async def test_backorder_is_not_counted_twice(gateway: Gateway) -> None:
    (sku,) = await gateway.skus([3])
    order, channel = await accept(gateway, [(sku, 5)])
    assert order.lines[0].quantities.backordered == 2
    await gateway.inventory.stub.Allocate(
        inv.AllocateRequest(
            request_id=new_id(),
            order_id=order.order_id,
            channel_id=channel.channel_id,  # type: ignore[attr-defined]
            lines=[inv.LineItem(line_id="1", sku=sku, quantity=5)],
        )
    )

    async def backordered() -> pb.Order | None:
        found = (
            await gateway.stub.GetOrder(
                pb.GetOrderRequest(order_id=order.order_id),
                metadata=channel.auth,  # type: ignore[attr-defined]
            )
        ).order
        return found if found.status == S.ORDER_STATUS_BACKORDERED else None

    found = await eventually(backordered, what="BACKORDERED")
    quantities = found.lines[0].quantities
    assert (quantities.allocated, quantities.backordered, quantities.reserved) == (3, 2, 0)


async def test_cancel_and_return_requests(gateway: Gateway) -> None:
    (sku,) = await gateway.skus([10])
    order, channel = await accept(gateway, [(sku, 2)])
    auth = channel.auth  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await gateway.stub.RequestReturn(
            pb.RequestReturnRequest(
                request_id=new_id(),
                order_id=order.order_id,
                lines=[S.ReturnLine(line_id="1", quantity=1, reason_code="DAMAGED")],
            ),
            metadata=auth,
        )
    assert too_much.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    answer = await gateway.stub.CancelOrder(
        pb.CancelOrderRequest(
            request_id=new_id(), order_id=order.order_id, reason_code="CUSTOMER_REQUEST"
        ),
        metadata=auth,
    )
    assert uuid.UUID(answer.cancellation_id)
    async with gateway.app.runtime.sessions() as session:
        types = (
            await session.scalars(
                select(outbox.c.event_type).where(outbox.c.aggregate_id == order.order_id)
            )
        ).all()
    assert "dwf.order.v1.OrderCancelRequested" in types
    # Fulfillment cancels everything: nothing is left to cancel afterwards.
    await gateway.publish(
        "fulfillment",
        order.order_id,
        fulfillment_events.OrderCanceled(
            order_id=order.order_id,
            cancellation_id=answer.cancellation_id,
            canceled=[S.LineSelection(line_id="1", quantity=2)],
            fully_canceled=True,
            reason_code="CUSTOMER_REQUEST",
            canceled_at=now_ts(),
        ),
    )

    async def canceled() -> bool:
        found = (
            await gateway.stub.GetOrder(pb.GetOrderRequest(order_id=order.order_id), metadata=auth)
        ).order
        return found.status == S.ORDER_STATUS_CANCELED

    await eventually(canceled, what="CANCELED")
    with pytest.raises(grpc.aio.AioRpcError) as nothing:
        await gateway.stub.CancelOrder(
            pb.CancelOrderRequest(
                request_id=new_id(), order_id=order.order_id, reason_code="CUSTOMER_REQUEST"
            ),
            metadata=auth,
        )
    assert nothing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(nothing.value) == "NOTHING_TO_CANCEL"


async def test_list_orders_pages(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([50])
    ids = []
    for _ in range(5):
        answer = await gateway.stub.AcceptOrder(
            order_request(channel, [(sku, 1)]), metadata=channel.auth
        )
        ids.append(answer.order.order_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await gateway.stub.ListOrders(
            pb.ListOrdersRequest(page_size=2, page_token=token, statuses=[S.ORDER_STATUS_ACCEPTED]),
            metadata=channel.auth,
        )
        seen.extend(o.order_id for o in page.orders)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
