"""AcceptOrder: idempotent on request_id and on the channel order, stock reserved or
backordered by channel policy, one order and one OrderAccepted per purchase."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import func, select

from chassis.schema import outbox
from dwf.common.v1 import common_pb2
from services.order_gateway.store.tables import customer_order
from tests.integration.harness import new_id
from tests.integration.order_gateway.conftest import Gateway, order_request


def details(error: grpc.aio.AioRpcError) -> list[object]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            found: list[object] = []
            for detail in status_pb2.Status.FromString(value).details:
                for cls in (
                    error_details_pb2.ErrorInfo,
                    error_details_pb2.BadRequest,
                    error_details_pb2.PreconditionFailure,
                    error_details_pb2.RetryInfo,
                ):
                    message = cls()
                    if detail.Unpack(message):
                        found.append(message)
            return found
    return []


def reason(error: grpc.aio.AioRpcError) -> str:
    return next(d.reason for d in details(error) if isinstance(d, error_details_pb2.ErrorInfo))


async def orders_of(gateway: Gateway, channel_id: str) -> int:
    async with gateway.app.runtime.sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(customer_order)
                .where(customer_order.c.channel_id == channel_id)
            )
            or 0
        )


async def accepted_events(gateway: Gateway, order_id: str) -> int:
    async with gateway.app.runtime.sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(outbox)
                .where(
                    outbox.c.aggregate_id == order_id,
                    outbox.c.event_type == "dwf.order.v1.OrderAccepted",
                )
            )
            or 0
        )


async def test_twenty_parallel_retries_make_one_order(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([50])
    request = order_request(channel, [(sku, 3)])
    answers = await asyncio.gather(
        *(gateway.stub.AcceptOrder(request, metadata=channel.auth) for _ in range(20))
    )
    assert len({a.SerializeToString(deterministic=True) for a in answers}) == 1
    order = answers[0].order
    assert order.status == common_pb2.ORDER_STATUS_ACCEPTED
    assert order.status_sequence == 1
    assert order.lines[0].quantities.reserved == 3
    assert await orders_of(gateway, channel.channel_id) == 1
    assert await accepted_events(gateway, order.order_id) == 1
    level = await gateway.inventory.level(sku, "EAST-1")
    assert level.reserved == 3


async def test_same_channel_order_under_new_request_id(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([50])
    first = order_request(channel, [(sku, 2)])
    original = await gateway.stub.AcceptOrder(first, metadata=channel.auth)

    again = order_request(channel, [(sku, 2)], channel_order_id=first.channel.channel_order_id)
    again.customer.CopyFrom(first.customer)
    answer = await gateway.stub.AcceptOrder(again, metadata=channel.auth)
    assert answer.existing_order
    assert answer.order.order_id == original.order.order_id

    changed = order_request(channel, [(sku, 5)], channel_order_id=first.channel.channel_order_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.AcceptOrder(changed, metadata=channel.auth)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(refused.value) == "CHANNEL_ORDER_CONFLICT"
    assert await orders_of(gateway, channel.channel_id) == 1
    assert (await gateway.inventory.level(sku, "EAST-1")).reserved == 2


async def test_request_id_reuse_with_other_payload_is_refused(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([10])
    request = order_request(channel, [(sku, 1)])
    await gateway.stub.AcceptOrder(request, metadata=channel.auth)
    other = order_request(channel, [(sku, 2)])
    other.request_id = request.request_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.AcceptOrder(other, metadata=channel.auth)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(refused.value) == "REQUEST_ID_REUSED"


async def test_shortfall_is_backordered_by_default(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([4])
    answer = await gateway.stub.AcceptOrder(
        order_request(channel, [(sku, 10)]), metadata=channel.auth
    )
    line = answer.order.lines[0]
    assert (line.quantities.ordered, line.quantities.reserved, line.quantities.backordered) == (
        10,
        4,
        6,
    )


async def test_shortfall_refused_when_the_channel_says_so(gateway: Gateway) -> None:
    channel = await gateway.channel(backorder_policy="REFUSE")
    plenty, scarce = await gateway.skus([50, 1])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.AcceptOrder(
            order_request(channel, [(plenty, 2), (scarce, 3)]), metadata=channel.auth
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = next(
        d for d in details(refused.value) if isinstance(d, error_details_pb2.PreconditionFailure)
    )
    assert [(v.type, v.subject) for v in failure.violations] == [("INSUFFICIENT_STOCK", "lines[1]")]
    assert await orders_of(gateway, channel.channel_id) == 0
    assert (await gateway.inventory.level(plenty, "EAST-1")).reserved == 0


async def test_cases_convert_to_eaches(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([100])
    answer = await gateway.stub.AcceptOrder(
        order_request(channel, [(sku, 2)], unit="CS12"), metadata=channel.auth
    )
    line = answer.order.lines[0]
    assert line.base_quantity == 24 and line.quantities.reserved == 24
    assert line.quantity.unit_of_measure == "CS12"


async def test_unknown_alias_then_alias_added(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([10])
    request = order_request(channel, [(sku, 1)])
    request.lines[0].sku = ""
    request.lines[0].channel_sku = "SHOP-WIDGET"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.AcceptOrder(request, metadata=channel.auth)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = next(d for d in details(refused.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in bad.field_violations] == ["lines[0].channel_sku"]
    assert await orders_of(gateway, channel.channel_id) == 0

    await gateway.load(
        {"channels": [{"channel_id": channel.channel_id, "sku_aliases": {"SHOP-WIDGET": sku}}]}
    )
    request.request_id = new_id()
    answer = await gateway.stub.AcceptOrder(request, metadata=channel.auth)
    assert answer.order.lines[0].sku == sku
    assert answer.order.lines[0].channel_sku == "SHOP-WIDGET"


async def test_unknown_unit_names_the_field(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([10])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.AcceptOrder(
            order_request(channel, [(sku, 1)], unit="PALLET"), metadata=channel.auth
        )
    bad = next(d for d in details(refused.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in bad.field_violations] == ["lines[0].quantity.unit_of_measure"]
    assert reason(refused.value) == "UNKNOWN_UNIT"


async def test_customer_from_alias_or_channel_default(gateway: Gateway) -> None:
    channel = await gateway.channel(
        customer_aliases={"buyer-7": "C-777"}, default_customer_id="C-MARKETPLACE"
    )
    (sku,) = await gateway.skus([10])
    known = order_request(channel, [(sku, 1)])
    known.customer.channel_customer_id = "buyer-7"
    anonymous = order_request(channel, [(sku, 1)])
    answers = [
        await gateway.stub.AcceptOrder(request, metadata=channel.auth)
        for request in (known, anonymous)
    ]
    assert [a.order.customer.customer_id for a in answers] == ["C-777", "C-MARKETPLACE"]
