"""Substitution: a line the customer allows to be substituted ships the substitute master
data names when the ordered SKU is out of stock, instead of waiting as a backorder."""

from __future__ import annotations

import grpc

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.order.v1 import order_gateway_pb2 as pb
from services.inventory.store.master_data import load_master_data
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually
from tests.integration.order_gateway.conftest import order_request

S = common_pb2


async def out_of_stock_with_substitute(fulfillment: Fulfillment) -> tuple[str, str]:
    """An ordered SKU with no stock, and its substitute (master data) with 10 at EAST-1."""
    ordered, substitute = await fulfillment.gateway.skus([0, 10])
    async with fulfillment.gateway.inventory.app.runtime.sessions.begin() as session:
        await load_master_data(session, {"items": [{"sku": ordered, "substitutes": [substitute]}]})
    return ordered, substitute


async def test_an_out_of_stock_line_ships_its_substitute(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    ordered, substitute = await out_of_stock_with_substitute(fulfillment)
    inventory = fulfillment.gateway.inventory
    request = order_request(channel, [(ordered, 3)])
    request.customer.customer_id = "C-100"
    request.lines[0].substitution_allowed = True
    order = (await fulfillment.gateway.stub.AcceptOrder(request, metadata=channel.auth)).order

    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    (fo,) = view.fulfillment_orders
    assert [(ln.sku, ln.substituted_for_sku, ln.quantity) for ln in fo.lines] == [
        (substitute, ordered, 3)
    ]
    (shipment,) = view.shipments
    assert [(ln.line_id, ln.sku, ln.quantity) for ln in shipment.lines] == [("1", substitute, 3)]
    assert any("substituted for" in entry.summary for entry in view.timeline)
    # Inventory shipped the substitute; the ordered SKU has no backorder left behind.
    level = await inventory.level(substitute, "EAST-1")
    assert (level.on_hand, level.allocated, level.reserved) == (7, 0, 0)
    # The ERP's sales order line keeps its item; the posting says what went out instead.
    (erp_order,) = fulfillment.erp_orders(order.order_id)
    (posting,) = fulfillment.erp.state.erp.postings["shipment"].values()
    assert posting.sales_order_number == erp_order.number
    assert [(ln["sku"], ln["shipped_sku"]) for ln in posting.document["lines"]] == [
        (ordered, substitute)
    ]

    async def substituted_in_view() -> pb.Order | None:
        found = (
            await fulfillment.gateway.stub.GetOrder(
                pb.GetOrderRequest(order_id=order.order_id), metadata=channel.auth
            )
        ).order
        return found if found.lines[0].substituted_for_sku == ordered else None

    seen = await eventually(substituted_in_view, what="the substitute in the order view")
    assert seen.lines[0].sku == substitute
    assert seen.lines[0].quantities.shipped == 3


async def test_without_permission_the_line_waits_as_a_backorder(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    ordered, substitute = await out_of_stock_with_substitute(fulfillment)
    inventory = fulfillment.gateway.inventory
    order = await fulfillment.accept(channel, [(ordered, 2)])

    async def backordered() -> fpb.OrderFulfillment | None:
        try:
            view = await fulfillment.view(order.order_id)
        except grpc.aio.AioRpcError:  # not taken in by fulfillment yet
            return None
        return view if any("backordered" in e.summary for e in view.timeline) else None

    view = await eventually(backordered, what="the backorder on the timeline")
    assert list(view.fulfillment_orders) == []
    level = await inventory.level(substitute, "EAST-1")
    assert (level.on_hand, level.allocated) == (10, 0)
