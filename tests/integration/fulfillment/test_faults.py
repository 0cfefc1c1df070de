"""The workflow under the failures real ERPs and WMSs produce."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from sqlalchemy import func, select

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from services.fulfillment.store.tables import shipment
from stack.sandboxes.erp import MasterData
from tests.integration.fulfillment.conftest import Fulfillment
from tests.integration.harness import eventually

S = common_pb2


async def test_erp_throttling_errors_and_lost_answers(fulfillment: Fulfillment) -> None:
    """30% 429, 20% 5xx and 10% timeouts after the ERP already created the order: every
    order completes, with exactly one ERP sales order each."""
    fulfillment.erp.state.faults.update(
        {
            "rate_429": 0.3,
            "retry_after_seconds": 0,
            "rate_5xx": 0.2,
            "rate_timeout_after_commit": 0.1,
            "hang_seconds": 1.5,
            "seed": 7,
        }
    )
    channel = await fulfillment.gateway.channel()
    skus = await fulfillment.gateway.skus([100, 100])
    orders = [await fulfillment.accept(channel, [(skus[i % 2], 2)]) for i in range(6)]
    views = await asyncio.gather(
        *(fulfillment.until_status(o.order_id, S.ORDER_STATUS_COMPLETED, 90) for o in orders)
    )
    for order, view in zip(orders, views, strict=True):
        assert len(fulfillment.erp_orders(order.order_id)) == 1
        assert len(view.shipments) == 1 and len(view.invoices) == 1
        numbers = {o.number for o in fulfillment.erp_orders(order.order_id)}
        assert numbers == {view.erp_order_number}


async def test_duplicated_and_out_of_order_milestones(fulfillment: Fulfillment) -> None:
    """The WMS repeats and swaps events and ships in two parts: one shipment per WMS
    shipment id, the rest after the first part, and the order completes."""
    fulfillment.wms.state.faults.update(
        {"duplicate_rate": 0.6, "out_of_order_rate": 0.5, "partial_shipment_rate": 1.0, "seed": 3}
    )
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([100])
    orders = [await fulfillment.accept(channel, [(sku, 4)]) for _ in range(3)]
    for order in orders:
        view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED, 30)
        assert len(view.shipments) == 2
        assert sum(line.quantity for s in view.shipments for line in s.lines) == 4
        assert len({s.wms_shipment_id for s in view.shipments}) == 2
        assert len(view.invoices) == 2
    async with fulfillment.app.runtime.sessions() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(shipment)
            .where(shipment.c.order_id.in_([o.order_id for o in orders]))
        )
    assert rows == 6
    level = await fulfillment.gateway.inventory.level(sku, "EAST-1")
    assert (level.on_hand, level.allocated) == (88, 0)


async def test_backorder_filled_by_a_receipt(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([2])
    order = await fulfillment.accept(channel, [(sku, 5)])
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_PARTIALLY_SHIPPED)
    assert sum(line.quantity for s in view.shipments for line in s.lines) == 2
    await fulfillment.gateway.inventory.receive(sku, "EAST-1", 10)
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    assert sum(line.quantity for s in view.shipments for line in s.lines) == 5
    assert len(view.fulfillment_orders) == 2


async def test_data_quality_rejection_fixed_and_retried(fulfillment: Fulfillment) -> None:
    channel = await fulfillment.gateway.channel()
    (sku,) = await fulfillment.gateway.skus([10])
    erp = fulfillment.erp.state.erp
    erp.master = dataclasses.replace(erp.master, unknown_items=(sku,))
    order = await fulfillment.accept(channel, [(sku, 1)])

    async def open_exception() -> fpb.ExceptionRecord | None:
        listed = await fulfillment.stub.ListExceptions(
            fpb.ListExceptionsRequest(order_id=order.order_id)
        )
        found = [e for e in listed.exceptions if e.state == fpb.EXCEPTION_STATE_OPEN]
        return found[0] if found else None

    record = await eventually(open_exception, what="a DATA_QUALITY exception")
    assert record.category == fpb.EXCEPTION_CATEGORY_DATA_QUALITY
    assert record.stage == fpb.WORKFLOW_STAGE_ERP_BOOKING
    assert record.error_code == "UNKNOWN_ITEM"
    assert fpb.EXCEPTION_ACTION_FIX_DATA_AND_RETRY in record.safe_actions
    assert record.payload  # what we sent, for the operator

    erp.master = MasterData()  # the item is set up in the ERP
    await fulfillment.stub.RetryException(
        fpb.RetryExceptionRequest(
            request_id=str(uuid.uuid4()), exception_id=record.exception_id, note="item created"
        )
    )
    view = await fulfillment.until_status(order.order_id, S.ORDER_STATUS_COMPLETED)
    resolved = [e for e in view.exceptions if e.exception_id == record.exception_id]
    assert resolved[0].state == fpb.EXCEPTION_STATE_RESOLVED
    assert len(fulfillment.erp_orders(order.order_id)) == 1
