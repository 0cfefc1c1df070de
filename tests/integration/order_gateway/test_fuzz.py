"""Fuzz of AcceptOrder (hypothesis, 1,000 generated requests): every answer is a success or a
refusal with details (INVALID_ARGUMENT with BadRequest, FAILED_PRECONDITION with
PreconditionFailure) — never INTERNAL or UNKNOWN — and a refused request writes nothing."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, event, given, settings
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

VALID_ADDRESS = common_pb2.PostalAddress(
    name="Jane Doe", lines=["1 Main St"], locality="Springfield", region_code="US"
)


def valid_money(units: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="USD", units=units)


@st.composite
def valid_requests(draw: st.DrawFn) -> pb.AcceptOrderRequest:
    """A request the gateway must accept (or refuse for stock under a REFUSE policy)."""
    count = draw(st.integers(1, 4))
    return pb.AcceptOrderRequest(
        request_id=str(uuid.uuid4()),
        channel=common_pb2.ChannelReference(
            channel_id=CHANNEL, channel_order_id=f"F-{uuid.uuid4().hex}"
        ),
        customer=common_pb2.Customer(name=draw(st.text(max_size=12))),
        ship_to=VALID_ADDRESS,
        lines=[
            common_pb2.OrderLine(
                line_id=str(i + 1),
                sku=draw(st.sampled_from(SKUS)),
                quantity=common_pb2.Quantity(
                    value=draw(st.integers(1, 8)),
                    unit_of_measure=draw(st.sampled_from(["", "EA", "CS12"])),
                ),
                unit_price=valid_money(draw(st.integers(0, 500))),
            )
            for i in range(count)
        ],
        shipping_charge=valid_money(draw(st.integers(0, 20))),
    )


def _set(path: str, value: object) -> Callable[[pb.AcceptOrderRequest], None]:
    def mutate(request: pb.AcceptOrderRequest) -> None:
        *parents, name = path.split(".")
        target: Any = request
        for part in parents:
            target = target.lines[0] if part == "lines[0]" else getattr(target, part)
        if isinstance(value, list):
            del getattr(target, name)[:]
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)

    return mutate


def _duplicate_line(request: pb.AcceptOrderRequest) -> None:
    request.lines.append(request.lines[0])


def _no_lines(request: pb.AcceptOrderRequest) -> None:
    del request.lines[:]


def _no_ship_to(request: pb.AcceptOrderRequest) -> None:
    request.ClearField("ship_to")


def _euro_line(request: pb.AcceptOrderRequest) -> None:
    request.lines[0].unit_price.currency_code = "EUR"


def _reserved_attribute(request: pb.AcceptOrderRequest) -> None:
    request.attributes["dwf.internal"] = "x"


def _long_attribute(request: pb.AcceptOrderRequest) -> None:
    request.attributes["k" * 65] = "x"


MUTATIONS: list[Callable[[pb.AcceptOrderRequest], None]] = [
    _set("request_id", ""),
    _set("request_id", "not-a-uuid"),
    _set("channel.channel_id", ""),
    _set("channel.channel_id", "other"),
    _set("channel.channel_order_id", ""),
    _set("channel.channel_order_id", "x" * 129),
    _no_ship_to,
    _set("ship_to.region_code", "us"),
    _set("ship_to.lines", []),
    _set("ship_to.lines", ["x" * 101]),
    _set("ship_to.name", ""),
    _no_lines,
    _duplicate_line,
    _set("lines[0].line_id", ""),
    _set("lines[0].line_id", "L" * 65),
    _set("lines[0].quantity.value", 0),
    _set("lines[0].quantity.value", -3),
    _set("lines[0].quantity.unit_of_measure", "BOX"),
    _set("lines[0].sku", "NOPE"),
    _set("lines[0].sku", ""),
    _set("lines[0].channel_sku", "alias-unknown"),
    _set("lines[0].unit_price.units", -1),
    _set("lines[0].unit_price.nanos", 2_000_000_000),
    _set("lines[0].unit_price.currency_code", "usd"),
    _euro_line,
    _reserved_attribute,
    _long_attribute,
    _set("hold_id", "no-such-hold"),
    _set("hold_id", "h" * 65),
]


@st.composite
def requests(draw: st.DrawFn) -> tuple[bool, pb.AcceptOrderRequest]:
    """Mostly valid requests, half of them broken in one to three ways."""
    refusing = draw(st.booleans())
    request = draw(valid_requests())
    for mutate in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        # A line mutation after the lines were removed has nothing to break.
        with contextlib.suppress(IndexError):
            mutate(request)
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
        event(f"refused: {code.name}")
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
    event("accepted")
    assert answer.order.status == common_pb2.ORDER_STATUS_ACCEPTED
    assert await written(gateway, request) == 2
