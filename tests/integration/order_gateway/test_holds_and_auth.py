"""Holds (inventory reservations with a TTL), channel authentication, cross-channel
isolation, admin scope and per-channel rate limits."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from dwf.order.v1 import master_data_pb2
from dwf.order.v1 import order_gateway_pb2 as pb
from tests.integration.harness import eventually, new_id
from tests.integration.order_gateway.conftest import Gateway, item, order_request
from tests.integration.order_gateway.test_acceptance import details, reason

SECRET = "a-channel-token-secret-of-32-chars-or-more"


def ttl(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


async def test_hold_then_accept_converts_it(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([10])
    created = await gateway.stub.CreateHold(
        pb.CreateHoldRequest(
            request_id=new_id(),
            channel_id=channel.channel_id,
            items=[item("1", sku, 4)],
            ttl=ttl(600),
        ),
        metadata=channel.auth,
    )
    hold = created.hold
    assert hold.state == pb.HOLD_STATE_ACTIVE and hold.lines[0].held_quantity == 4
    assert (await gateway.inventory.level(sku, "EAST-1")).reserved == 4

    accepted = await gateway.stub.AcceptOrder(
        order_request(channel, [(sku, 4)], hold_id=hold.hold_id), metadata=channel.auth
    )
    assert accepted.order.hold_id == hold.hold_id
    assert accepted.order.lines[0].quantities.reserved == 4
    # The hold's stock became the order's: nothing reserved twice.
    assert (await gateway.inventory.level(sku, "EAST-1")).reserved == 4

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.ReleaseHold(
            pb.ReleaseHoldRequest(request_id=new_id(), hold_id=hold.hold_id), metadata=channel.auth
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(refused.value) == "HOLD_CONVERTED"


async def test_all_or_nothing_hold_with_a_short_line_holds_nothing(gateway: Gateway) -> None:
    channel = await gateway.channel()
    plenty, scarce = await gateway.skus([10, 1])
    answer = await gateway.stub.CreateHold(
        pb.CreateHoldRequest(
            request_id=new_id(),
            channel_id=channel.channel_id,
            items=[item("a", plenty, 2), item("b", scarce, 3)],
        ),
        metadata=channel.auth,
    )
    assert not answer.HasField("hold")
    assert [(s.line_id, s.available_quantity) for s in answer.shortfalls] == [("b", 1)]
    assert (await gateway.inventory.level(plenty, "EAST-1")).reserved == 0


async def test_extend_and_release(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([10])
    hold = (
        await gateway.stub.CreateHold(
            pb.CreateHoldRequest(
                request_id=new_id(),
                channel_id=channel.channel_id,
                items=[item("1", sku, 2)],
                ttl=ttl(60),
            ),
            metadata=channel.auth,
        )
    ).hold
    extended = await gateway.stub.ExtendHold(
        pb.ExtendHoldRequest(request_id=new_id(), hold_id=hold.hold_id, ttl=ttl(1800)),
        metadata=channel.auth,
    )
    assert extended.hold.expires_at.seconds >= hold.expires_at.seconds + 1700
    released = await gateway.stub.ReleaseHold(
        pb.ReleaseHoldRequest(request_id=new_id(), hold_id=hold.hold_id, reason="CART_ABANDONED"),
        metadata=channel.auth,
    )
    assert released.hold.state == pb.HOLD_STATE_RELEASED
    assert (await gateway.inventory.level(sku, "EAST-1")).reserved == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.ExtendHold(
            pb.ExtendHoldRequest(request_id=new_id(), hold_id=hold.hold_id, ttl=ttl(60)),
            metadata=channel.auth,
        )
    assert reason(refused.value) == "HOLD_NOT_ACTIVE"


async def test_expired_hold_is_seen_as_expired(gateway: Gateway) -> None:
    channel = await gateway.channel()
    (sku,) = await gateway.skus([10])
    hold = (
        await gateway.stub.CreateHold(
            pb.CreateHoldRequest(
                request_id=new_id(),
                channel_id=channel.channel_id,
                items=[item("1", sku, 2)],
                ttl=ttl(1),
            ),
            metadata=channel.auth,
        )
    ).hold

    async def released_by_sweeper() -> bool:
        return (await gateway.inventory.level(sku, "EAST-1")).reserved == 0

    await eventually(released_by_sweeper, what="the hold's expiry")
    answer = await gateway.stub.ReleaseHold(
        pb.ReleaseHoldRequest(request_id=new_id(), hold_id=hold.hold_id), metadata=channel.auth
    )
    assert answer.hold.state == pb.HOLD_STATE_EXPIRED
    # Accepting with a lapsed hold reserves afresh.
    accepted = await gateway.stub.AcceptOrder(
        order_request(channel, [(sku, 2)], hold_id=hold.hold_id), metadata=channel.auth
    )
    assert accepted.order.lines[0].quantities.reserved == 2


async def test_no_credentials_is_unauthenticated(gateway: Gateway) -> None:
    channel = await gateway.channel()
    for metadata in ([], [("authorization", "Bearer not-a-key")]):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.stub.CheckAvailability(
                pb.CheckAvailabilityRequest(
                    channel_id=channel.channel_id, items=[item("1", "X", 1)]
                ),
                metadata=metadata,
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_channels_are_isolated(gateway: Gateway) -> None:
    mine, theirs = await gateway.channel(), await gateway.channel()
    (sku,) = await gateway.skus([10])
    order = (
        await gateway.stub.AcceptOrder(order_request(theirs, [(sku, 1)]), metadata=theirs.auth)
    ).order
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await gateway.stub.GetOrder(pb.GetOrderRequest(order_id=order.order_id), metadata=mine.auth)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await gateway.stub.AcceptOrder(order_request(theirs, [(sku, 1)]), metadata=mine.auth)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await gateway.stub.ListOrders(pb.ListOrdersRequest(), metadata=mine.auth)
    assert order.order_id not in {o.order_id for o in listed.orders}
    seen = await gateway.stub.GetOrder(
        pb.GetOrderRequest(order_id=order.order_id), metadata=theirs.auth
    )
    assert seen.order.order_id == order.order_id


async def test_master_data_needs_the_admin_scope(gateway: Gateway) -> None:
    channel = await gateway.channel()
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await gateway.admin.GetMasterData(
            master_data_pb2.GetMasterDataRequest(), metadata=channel.auth
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await gateway.admin.ApplyMasterData(
            master_data_pb2.ApplyMasterDataRequest(
                request_id=new_id(),
                document='{"channels": [{"channel_id": "x", "backorder_policy": "MAYBE"}]}',
            ),
            metadata=gateway.admin_auth,
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = next(d for d in details(invalid.value) if isinstance(d, error_details_pb2.BadRequest))
    assert bad.field_violations[0].field == "document.channels[0].backorder_policy"


async def test_signed_token(gateway: Gateway) -> None:
    channel = await gateway.channel()
    await gateway.load({"channels": [{"channel_id": channel.channel_id, "token_secret": SECRET}]})
    (sku,) = await gateway.skus([5])
    token = jwt.encode({"sub": channel.channel_id, "exp": int(time.time()) + 60}, SECRET, "HS256")
    answer = await gateway.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(channel_id=channel.channel_id, items=[item("1", sku, 1)]),
        metadata=[("authorization", f"Bearer {token}")],
    )
    assert answer.items[0].sku == sku
    forged = jwt.encode(
        {"sub": channel.channel_id, "exp": int(time.time()) + 60},
        "a-guessed-secret-of-the-same-length!",
        "HS256",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.CheckAvailability(
            pb.CheckAvailabilityRequest(channel_id=channel.channel_id, items=[item("1", sku, 1)]),
            metadata=[("authorization", f"Bearer {forged}")],
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_rate_limit(gateway: Gateway) -> None:
    channel = await gateway.channel(rate_limit_per_second=0.5, rate_limit_burst=3)
    (sku,) = await gateway.skus([5])
    request = pb.CheckAvailabilityRequest(channel_id=channel.channel_id, items=[item("1", sku, 1)])
    for _ in range(3):
        await gateway.stub.CheckAvailability(request, metadata=channel.auth)
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await gateway.stub.CheckAvailability(request, metadata=channel.auth)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = next(d for d in details(limited.value) if isinstance(d, error_details_pb2.RetryInfo))
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
