"""Cancellation: before release the stock goes back at once (and a parked step is closed);
after release the WMS is asked, and its acceptance cancels the order and the ERP order."""

from __future__ import annotations

import dataclasses
import uuid

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.order.v1 import order_gateway_pb2 as pb
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually

S = common_pb2


async def cancel(fulfillment: Fulfillment, channel: object, order_id: str) -> None:
    await fulfillment.gateway.stub.CancelOrder(
        pb.CancelOrderRequest(
            request_id=str(uuid.uuid4()), order_id=order_id, reason_code="CUSTOMER_REQUEST"
        ),
        metadata=channel.auth,  # type: ignore[attr-defined]
    )


async def test_cancel_before_release(fulfillment: Fulfillment) -> None:
    erp = fulfillment.erp.state.erp
    erp.master = dataclasses.replace(erp.master, credit_hold_customers=("C-100",))
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([10])
    order = await fulfillment.accept(channel, [(sku, 4)])

    async def parked() -> bool:
        listed = await fulfillment.stub.ListExceptions(
            fpb.ListExceptionsRequest(order_id=order.order_id)
        )
        return any(e.error_code == "CREDIT_HOLD" for e in listed.exceptions)

    await eventually(parked, what="the credit hold exception")
    assert (await fulfillment.gateway.inventory.level(sku, "EAST-1")).reserved == 4
    await cancel(fulfillment, channel, order.order_id)
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_CANCELED)
    assert all(e.state == fpb.EXCEPTION_STATE_RESOLVED for e in view.exceptions)
    level = await fulfillment.gateway.inventory.level(sku, "EAST-1")
    assert (level.reserved, level.allocated, level.available) == (0, 0, 10)

    async def gateway_canceled() -> bool:
        found = await fulfillment.gateway.stub.GetOrder(
            pb.GetOrderRequest(order_id=order.order_id), metadata=channel.auth
        )
        return found.order.status == S.ORDER_STATUS_CANCELED

    await eventually(gateway_canceled, what="CANCELED in the gateway's order view")


async def test_cancel_after_release(fulfillment: Fulfillment) -> None:
    fulfillment.wms.state.faults.update({"auto_ship": False})
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([10])
    order = await fulfillment.accept(channel, [(sku, 3)])
    await fulfillment.until_status(order.order_id, S.ORDER_STATUS_RELEASED)
    await cancel(fulfillment, channel, order.order_id)
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_CANCELED)
    assert [fo.state for fo in view.fulfillment_orders] == [fpb.FULFILLMENT_ORDER_STATE_CANCELED]

    async def stock_back() -> bool:
        level = await fulfillment.gateway.inventory.level(sku, "EAST-1")
        return (level.allocated, level.available) == (0, 10)

    await eventually(stock_back, what="the allocation given back")

    async def erp_canceled() -> bool:
        return [o.status for o in fulfillment.erp_orders(order.order_id)] == ["CANCELED"]

    await eventually(erp_canceled, what="the ERP order canceled")
