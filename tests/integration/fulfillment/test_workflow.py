"""The order workflow end to end: accepted → ERP booked → allocated → released → shipped →
posted → invoiced → COMPLETED, through the sandboxes, with faults."""

from __future__ import annotations

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.order.v1 import order_gateway_pb2 as pb
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually

S = common_pb2


async def test_happy_path_to_completed(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    sku_a, sku_b = await fulfillment.gateway.skus([50, 50])
    order = await fulfillment.accept(channel, [(sku_a, 3), (sku_b, 2)])
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    assert view.erp_order_number.startswith("SO-")
    assert len(fulfillment.erp_orders(order.order_id)) == 1
    assert [fo.state for fo in view.fulfillment_orders] == [fpb.FULFILLMENT_ORDER_STATE_SHIPPED]
    assert len(view.shipments) == 1 and len(view.invoices) == 1
    assert sorted((line.line_id, line.quantity) for line in view.shipments[0].lines) == [
        ("1", 3),
        ("2", 2),
    ]
    # Inventory's books: shipped stock left on-hand and the allocation.
    level = await fulfillment.gateway.inventory.level(sku_a, "EAST-1")
    assert (level.on_hand, level.allocated, level.reserved) == (47, 0, 0)

    # The gateway's order view followed, and channels saw a monotonic status feed.
    async def completed() -> pb.Order | None:
        found = (
            await fulfillment.gateway.stub.GetOrder(
                pb.GetOrderRequest(order_id=order.order_id), metadata=channel.auth
            )
        ).order
        return found if found.status == S.ORDER_STATUS_COMPLETED else None

    seen = await eventually(completed, what="COMPLETED in the gateway's order view")
    assert seen.erp_order_number == view.erp_order_number
    assert seen.lines[0].quantities.shipped == 3
    assert seen.lines[0].quantities.invoiced == 3


async def test_split_across_two_warehouses(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([2])  # EAST-1
    await fulfillment.gateway.inventory.receive(sku, "WEST-1", 3)
    order = await fulfillment.accept(channel, [(sku, 5)])
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    by_warehouse = {
        fo.warehouse_id: sum(line.quantity for line in fo.lines) for fo in view.fulfillment_orders
    }
    assert by_warehouse == {"EAST-1": 2, "WEST-1": 3}
    assert len(view.shipments) == 2 and len(view.invoices) == 2
    assert len(fulfillment.erp_orders(order.order_id)) == 1
