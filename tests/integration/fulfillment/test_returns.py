"""Return: RMA authorised → received at the warehouse → restocked through inventory → ERP
credit memo → RETURNED."""

from __future__ import annotations

import uuid

from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2 as pb
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually

S = common_pb2


async def test_return_with_credit_memo(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([20])
    order = await fulfillment.accept(channel, [(sku, 3)])
    await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)

    async def shipped_in_gateway() -> bool:
        found = await fulfillment.gateway.stub.GetOrder(
            pb.GetOrderRequest(order_id=order.order_id), metadata=channel.auth
        )
        return found.order.lines[0].quantities.shipped == 3

    await eventually(shipped_in_gateway, what="the shipment in the gateway's order view")
    await fulfillment.gateway.stub.RequestReturn(
        pb.RequestReturnRequest(
            request_id=str(uuid.uuid4()),
            order_id=order.order_id,
            lines=[S.ReturnLine(line_id="1", quantity=3, reason_code="DAMAGED")],
        ),
        metadata=channel.auth,
    )
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_RETURNED)
    assert [e.summary for e in view.timeline if "credit memo" in e.summary]
    level = await fulfillment.gateway.inventory.level(sku, "EAST-1")
    assert level.on_hand == 20  # 3 shipped, 3 restocked

    async def returned_in_gateway() -> bool:
        found = await fulfillment.gateway.stub.GetOrder(
            pb.GetOrderRequest(order_id=order.order_id), metadata=channel.auth
        )
        return found.order.status == S.ORDER_STATUS_RETURNED

    await eventually(returned_in_gateway, what="RETURNED in the gateway's order view")
