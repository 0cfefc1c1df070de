"""A release the WMS rejects is re-sourced: the allocation goes back to the order's
reservation and inventory allocates again without the rejecting warehouse."""

from __future__ import annotations

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually

S = common_pb2


async def test_rejected_release_ships_from_another_warehouse(fulfillment: Fulfillment) -> None:
    fulfillment.wms.state.faults.update({"reject_warehouses": ["EAST-1"]})
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([5])  # EAST-1, the first choice
    await fulfillment.gateway.inventory.receive(sku, "WEST-1", 5)
    order = await fulfillment.accept(channel, [(sku, 3)])

    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    states = {fo.warehouse_id: fo.state for fo in view.fulfillment_orders}
    assert states == {
        "EAST-1": fpb.FULFILLMENT_ORDER_STATE_REJECTED,
        "WEST-1": fpb.FULFILLMENT_ORDER_STATE_SHIPPED,
    }
    (shipment,) = view.shipments
    assert shipment.warehouse_id == "WEST-1"
    assert [(line.line_id, line.quantity) for line in shipment.lines] == [("1", 3)]
    assert len(fulfillment.erp_orders(order.order_id)) == 1
    assert any("re-sourced" in entry.summary for entry in view.timeline)
    # The rejected warehouse's stock is free again; the other one shipped it.
    east = await fulfillment.gateway.inventory.level(sku, "EAST-1")
    west = await fulfillment.gateway.inventory.level(sku, "WEST-1")
    assert (east.on_hand, east.reserved, east.allocated) == (5, 0, 0)
    assert (west.on_hand, west.reserved, west.allocated) == (2, 0, 0)
    listed = await fulfillment.stub.ListExceptions(
        fpb.ListExceptionsRequest(order_id=order.order_id)
    )
    assert [e for e in listed.exceptions if e.state == fpb.EXCEPTION_STATE_OPEN] == []


async def test_no_warehouse_left_raises_an_exception_and_frees_the_stock(
    fulfillment: Fulfillment,
) -> None:
    fulfillment.wms.state.faults.update({"reject_warehouses": ["EAST-1", "WEST-1"]})
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([4])
    await fulfillment.gateway.inventory.receive(sku, "WEST-1", 4)
    order = await fulfillment.accept(channel, [(sku, 2)])

    async def stranded() -> fpb.ExceptionRecord | None:
        listed = await fulfillment.stub.ListExceptions(
            fpb.ListExceptionsRequest(order_id=order.order_id)
        )
        found = [e for e in listed.exceptions if e.error_code == "NO_WAREHOUSE_LEFT"]
        return found[0] if found else None

    record = await eventually(stranded, what="the NO_WAREHOUSE_LEFT exception")
    assert record.category == fpb.EXCEPTION_CATEGORY_BUSINESS_RULE
    assert "EAST-1" in record.error_message and "WEST-1" in record.error_message
    view = await fulfillment.view(order.order_id)
    assert sorted((fo.warehouse_id, fo.state) for fo in view.fulfillment_orders) == [
        ("EAST-1", fpb.FULFILLMENT_ORDER_STATE_REJECTED),
        ("WEST-1", fpb.FULFILLMENT_ORDER_STATE_REJECTED),
    ]
    assert view.shipments == []
    for warehouse in ("EAST-1", "WEST-1"):  # nothing stays reserved or allocated for it
        level = await fulfillment.gateway.inventory.level(sku, warehouse)
        assert (level.on_hand, level.reserved, level.allocated) == (4, 0, 0)


async def test_short_pick_is_written_off_and_shipped_from_another_warehouse(
    fulfillment: Fulfillment,
) -> None:
    fulfillment.wms.state.faults.update({"short_pick_warehouses": ["EAST-1"], "seed": 11})
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([10])
    await fulfillment.gateway.inventory.receive(sku, "WEST-1", 10)
    order = await fulfillment.accept(channel, [(sku, 4)])

    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    shipped = {s.warehouse_id: sum(line.quantity for line in s.lines) for s in view.shipments}
    missing = shipped["WEST-1"]
    assert shipped == {"EAST-1": 4 - missing, "WEST-1": missing} and missing >= 1
    assert len(view.invoices) == 2 and len(fulfillment.erp_orders(order.order_id)) == 1
    assert any("short-picked" in entry.summary for entry in view.timeline)
    # EAST-1 shipped what it found and wrote off what it could not; nothing stays allocated.
    east = await fulfillment.gateway.inventory.level(sku, "EAST-1")
    west = await fulfillment.gateway.inventory.level(sku, "WEST-1")
    assert (east.on_hand, east.allocated, east.reserved) == (6, 0, 0)
    assert (west.on_hand, west.allocated, west.reserved) == (10 - missing, 0, 0)
