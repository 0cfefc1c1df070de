"""Operators at the exception workbench and the operator RPCs: a credit hold overridden
with the order booked by hand, a return created by an operator, an order canceled by one."""

from __future__ import annotations

import dataclasses
import uuid

import grpc
import pytest

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually

S = common_pb2


def new_id() -> str:
    return str(uuid.uuid4())


async def credit_hold(fulfillment: Fulfillment, order_id: str) -> fpb.ExceptionRecord:
    async def found() -> fpb.ExceptionRecord | None:
        listed = await fulfillment.stub.ListExceptions(fpb.ListExceptionsRequest(order_id=order_id))
        held = [e for e in listed.exceptions if e.error_code == "CREDIT_HOLD"]
        return held[0] if held else None

    record: fpb.ExceptionRecord = await eventually(found, what="the credit hold exception")
    return record


async def test_override_with_an_order_booked_by_hand(fulfillment: Fulfillment) -> None:
    erp = fulfillment.erp.state.erp
    erp.master = dataclasses.replace(erp.master, credit_hold_customers=("C-100",))
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([10])
    order = await fulfillment.accept(channel, [(sku, 2)])
    record = await credit_hold(fulfillment, order.order_id)
    assert record.category == fpb.EXCEPTION_CATEGORY_BUSINESS_RULE
    assert fpb.EXCEPTION_ACTION_OVERRIDE in record.safe_actions
    # The credit controller releases the hold in the ERP by hand.
    (held,) = fulfillment.erp_orders(order.order_id)
    held.status = "OPEN"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fulfillment.stub.ResolveException(
            fpb.ResolveExceptionRequest(
                request_id=new_id(),
                exception_id=record.exception_id,
                action=fpb.EXCEPTION_ACTION_OVERRIDE,
                note="released by credit control",
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    answer = await fulfillment.stub.ResolveException(
        fpb.ResolveExceptionRequest(
            request_id=new_id(),
            exception_id=record.exception_id,
            action=fpb.EXCEPTION_ACTION_OVERRIDE,
            note="released by credit control",
            external_reference=held.number,
        )
    )
    assert answer.exception.state == fpb.EXCEPTION_STATE_RESOLVED
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    assert view.erp_order_number == held.number
    assert len(fulfillment.erp_orders(order.order_id)) == 1


async def test_operator_return_and_cancel(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([10])
    shipped = await fulfillment.accept(channel, [(sku, 2)])
    await fulfillment.until_status(shipped.order_id, S.ORDER_STATUS_COMPLETED)
    rma = (
        await fulfillment.stub.CreateReturn(
            fpb.CreateReturnRequest(
                request_id=new_id(),
                order_id=shipped.order_id,
                lines=[S.ReturnLine(line_id="1", quantity=2, reason_code="WRONG_ITEM")],
            )
        )
    ).return_authorization
    assert rma.state == fpb.RETURN_STATE_AUTHORIZED and rma.rma_number.startswith("RMA-")
    await fulfillment.until_status(shipped.order_id, S.ORDER_STATUS_RETURNED)
    nothing = await fulfillment.stub.CancelOrder(
        fpb.CancelOrderRequest(
            request_id=new_id(), order_id=shipped.order_id, reason_code="CUSTOMER_REQUEST"
        )
    )
    assert nothing.outcome == fpb.CANCELLATION_OUTCOME_REJECTED

    fulfillment.wms.state.faults.update({"auto_ship": False})
    released = await fulfillment.accept(channel, [(sku, 1)])
    await fulfillment.until_status(released.order_id, S.ORDER_STATUS_RELEASED)
    answer = await fulfillment.stub.CancelOrder(
        fpb.CancelOrderRequest(request_id=new_id(), order_id=released.order_id, reason_code="FRAUD")
    )
    assert answer.outcome == fpb.CANCELLATION_OUTCOME_PENDING
    await fulfillment.until_status(released.order_id, S.ORDER_STATUS_CANCELED)
