"""Fuzz of AcceptOrder (hypothesis, 1,000 generated requests): every answer is a success or a
refusal with details (INVALID_ARGUMENT with BadRequest, FAILED_PRECONDITION with
PreconditionFailure) — never INTERNAL or UNKNOWN — and a refused request writes nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from chassis.schema import idempotency_key
from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway.store.tables import customer_order
from tests.integration.order_gateway.conftest import Channel, Gateway
from tests.integration.order_gateway.test_acceptance import details


@dataclass
class World:
    channel: Channel
    refusing: Channel
    skus: list[str]


WORLDS: dict[int, World] = {}
CHANNEL = "$channel"  # placeholders the test body replaces with the world's ids
SKUS = ["$sku0", "$sku1", "$sku2"]

text = st.text(max_size=12)
money = st.builds(
    common_pb2.Money,
    currency_code=st.sampled_from(["USD", "USD", "EUR", "usd", ""]),
    units=st.integers(-5, 10**6),
    nanos=st.integers(-(10**9), 10**9),
)
address = st.builds(
    common_pb2.PostalAddress,
    name=st.sampled_from(["Jane Doe", ""]),
    company=st.sampled_from(["", "ACME"]),
    lines=st.lists(st.sampled_from(["1 Main St", "", "x" * 120]), max_size=5),
    region_code=st.sampled_from(["US", "DE", "us", "", "USA"]),
)


@st.composite
def order_lines(draw: st.DrawFn) -> list[common_pb2.OrderLine]:
    count = draw(st.integers(0, 4))
    lines = []
    for i in range(count):
        lines.append(
            common_pb2.OrderLine(
                line_id=draw(st.sampled_from([str(i + 1), str(i + 1), "1", "", "L" * 70])),
                sku=draw(st.sampled_from([*SKUS, *SKUS, "", "NOPE"])),
                channel_sku=draw(st.sampled_from(["", "", "alias-unknown"])),
                quantity=common_pb2.Quantity(
                    value=draw(st.integers(-2, 40)),
                    unit_of_measure=draw(st.sampled_from(["", "EA", "CS12", "BOX"])),
                ),
                unit_price=draw(st.one_of(st.none(), money)),
                discount=draw(st.one_of(st.none(), money)),
            )
        )
    return lines


@st.composite
def requests(draw: st.DrawFn) -> tuple[bool, pb.AcceptOrderRequest]:
    refusing = draw(st.booleans())
    request = pb.AcceptOrderRequest(
        request_id=draw(st.sampled_from([str(uuid.uuid4())] * 6 + ["", "not-a-uuid"])),
        channel=common_pb2.ChannelReference(
            channel_id=draw(st.sampled_from([CHANNEL] * 8 + ["", "other"])),
            channel_order_id=draw(st.sampled_from([f"F-{uuid.uuid4().hex}"] * 8 + ["", "x" * 200])),
        ),
        customer=common_pb2.Customer(name=draw(text), channel_customer_id=draw(text)),
        ship_to=draw(st.one_of(st.none(), address)),
        lines=draw(order_lines()),
        shipping_charge=draw(st.one_of(st.none(), money)),
        attributes=draw(st.dictionaries(st.text(max_size=70), st.text(max_size=20), max_size=2)),
        hold_id=draw(st.sampled_from(["", "", "", "no-such-hold"])),
    )
    return refusing, request


async def written(gateway: Gateway, request: pb.AcceptOrderRequest) -> int:
    async with gateway.app.runtime.sessions() as session:
        orders = await session.scalar(
            select(func.count())
            .select_from(customer_order)
            .where(customer_order.c.channel_order_id == request.channel.channel_order_id)
        )
        keys = await session.scalar(
            select(func.count())
            .select_from(idempotency_key)
            .where(idempotency_key.c.request_id == request.request_id)
        )
    return int(orders or 0) + int(keys or 0)


async def world_of(gateway: Gateway) -> World:
    """Channels and SKUs the generated requests refer to, made once per gateway."""
    key = id(gateway)
    if key not in WORLDS:
        WORLDS.clear()
        WORLDS[key] = World(
            await gateway.channel(),
            await gateway.channel(backorder_policy="REFUSE"),
            await gateway.skus([10_000, 5, 0]),
        )
    return WORLDS[key]


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=requests())
async def test_accept_order_fuzz(
    gateway: Gateway, case: tuple[bool, pb.AcceptOrderRequest]
) -> None:
    refusing, request = case
    world = await world_of(gateway)
    channel = world.refusing if refusing else world.channel
    if request.channel.channel_id == CHANNEL:
        request.channel.channel_id = channel.channel_id
    for line in request.lines:
        if line.sku in SKUS:
            line.sku = world.skus[SKUS.index(line.sku)]
    try:
        answer = await gateway.stub.AcceptOrder(request, metadata=channel.auth)
    except grpc.aio.AioRpcError as error:
        code = error.code()
        found = details(error)
        assert any(isinstance(d, error_details_pb2.ErrorInfo) for d in found), error
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert any(isinstance(d, error_details_pb2.BadRequest) for d in found), error
        elif code == grpc.StatusCode.FAILED_PRECONDITION:
            assert any(isinstance(d, error_details_pb2.PreconditionFailure) for d in found), error
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, error  # "other" channel
        assert await written(gateway, request) == 0
        return
    assert answer.order.status == common_pb2.ORDER_STATUS_ACCEPTED
    assert await written(gateway, request) == 2
