"""IngestChannelOrder: each channel format mapped once into the canonical order and accepted
like AcceptOrder; refused payloads answer INVALID_ARGUMENT naming paths in the channel's
payload, are kept for operators and announced with ChannelOrderRejected."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import func, select

from chassis.schema import outbox
from dwf.common.v1 import common_pb2
from dwf.order.v1 import master_data_pb2
from dwf.order.v1 import order_gateway_pb2 as pb
from tests.integration.harness import new_id
from tests.integration.order_gateway.conftest import Channel, Gateway
from tests.integration.order_gateway.test_acceptance import details

SAMPLES = Path(__file__).parents[2] / "unit" / "order_gateway" / "samples"
S = common_pb2


async def channel_for(
    gateway: Gateway, channel_skus: list[str], units: dict[str, str] | None = None
) -> tuple[Channel, dict[str, str]]:
    """A channel whose aliases map the sample's SKUs to new SKUs with plenty of stock."""
    skus = await gateway.skus([1000] * len(channel_skus))
    await gateway.load(
        {"items": [{"sku": sku, "units": {"CS12": 12, "BX100": 100}} for sku in skus]}
    )
    aliases = dict(zip(channel_skus, skus, strict=True))
    channel = await gateway.channel(sku_aliases=aliases, units=units or {})
    return channel, aliases


def ingest(channel: Channel, fmt: int, payload: bytes) -> pb.IngestChannelOrderRequest:
    return pb.IngestChannelOrderRequest(
        request_id=new_id(),
        channel_id=channel.channel_id,
        format=fmt,
        payload=payload,  # type: ignore[arg-type]
    )


def refusal(error: grpc.aio.AioRpcError) -> pb.IngestChannelOrderResponse:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                answer = pb.IngestChannelOrderResponse()
                if detail.Unpack(answer):
                    return answer
    raise AssertionError("no IngestChannelOrderResponse detail")


async def test_shopify_order(gateway: Gateway) -> None:
    channel, aliases = await channel_for(gateway, ["TSHIRT-BLK-M", "MUG-12OZ-WHT", "STICKER-PACK"])
    request = ingest(
        channel, S.CHANNEL_FORMAT_SHOPIFY_JSON, (SAMPLES / "shopify_order.json").read_bytes()
    )
    answer = await gateway.stub.IngestChannelOrder(request, metadata=channel.auth)
    order = answer.order
    assert order.channel.format == S.CHANNEL_FORMAT_SHOPIFY_JSON
    assert order.channel.channel_order_id == "5724038512867"
    assert order.attributes["shopify.name"] == "#1001"
    assert [(line.sku, line.quantities.reserved) for line in order.lines] == [
        (aliases["TSHIRT-BLK-M"], 2),
        (aliases["MUG-12OZ-WHT"], 1),
        (aliases["STICKER-PACK"], 3),
    ]
    assert answer.acknowledgement_document == ""
    # The same payload sent again under a new request_id is the same order.
    again = await gateway.stub.IngestChannelOrder(
        ingest(channel, S.CHANNEL_FORMAT_SHOPIFY_JSON, request.payload), metadata=channel.auth
    )
    assert again.existing_order and again.order.order_id == order.order_id


async def test_amazon_order(gateway: Gateway) -> None:
    channel, aliases = await channel_for(gateway, ["AZ-TSHIRT-BLK-M", "AZ-MUG-12OZ"])
    answer = await gateway.stub.IngestChannelOrder(
        ingest(channel, S.CHANNEL_FORMAT_AMAZON_JSON, (SAMPLES / "amazon_order.json").read_bytes()),
        metadata=channel.auth,
    )
    assert [(line.sku, line.base_quantity) for line in answer.order.lines] == [
        (aliases["AZ-TSHIRT-BLK-M"], 3),
        (aliases["AZ-MUG-12OZ"], 1),
    ]


async def test_b2b_portal_order_with_units(gateway: Gateway) -> None:
    channel, aliases = await channel_for(
        gateway, ["AH-1002", "AH-2210", "AH-3100"], units={"CS": "CS12", "BX": "BX100"}
    )
    answer = await gateway.stub.IngestChannelOrder(
        ingest(
            channel,
            S.CHANNEL_FORMAT_B2B_PORTAL_JSON,
            (SAMPLES / "b2b_portal_order.json").read_bytes(),
        ),
        metadata=channel.auth,
    )
    order = answer.order
    assert order.purchase_order_number
    assert [(line.sku, line.base_quantity) for line in order.lines] == [
        (aliases["AH-1002"], 120),
        (aliases["AH-2210"], 24),
        (aliases["AH-3100"], 500),
    ]


async def test_x12_850_answered_with_855(gateway: Gateway) -> None:
    channel, _ = await channel_for(
        gateway, ["ACME-771002", "AH-2210", "AH-3100"], units={"CA": "CS12", "BX": "BX100"}
    )
    answer = await gateway.stub.IngestChannelOrder(
        ingest(channel, S.CHANNEL_FORMAT_X12_850, (SAMPLES / "x12_850.txt").read_bytes()),
        metadata=channel.auth,
    )
    order = answer.order
    assert order.channel.channel_order_id == "4500012345"
    assert order.purchase_order_number == "4500012345"
    assert [line.base_quantity for line in order.lines] == [120, 24, 500]
    ack = answer.acknowledgement_document
    assert ack.startswith("ISA*") and "ST*855*" in ack and "BAK*00*" in ack and "4500012345" in ack
    assert ack.count("ACK*IA*") == 3


async def test_unknown_alias_is_refused_with_the_payload_path(gateway: Gateway) -> None:
    channel, _ = await channel_for(gateway, ["ACME-771002", "AH-2210"], units={"CA": "CS12"})
    request = ingest(channel, S.CHANNEL_FORMAT_X12_850, (SAMPLES / "x12_850.txt").read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.IngestChannelOrder(request, metadata=channel.auth)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = next(d for d in details(refused.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in bad.field_violations] == ["PO1[3].PO109"]
    answer = refusal(refused.value)
    assert "BAK*00*RJ*4500012345" in answer.acknowledgement_document
    assert answer.issues[0].field_path == "PO1[3].PO109"

    kept = await gateway.admin.ListIngestExceptions(
        master_data_pb2.ListIngestExceptionsRequest(channel_id=channel.channel_id),
        metadata=gateway.admin_auth,
    )
    assert [(e.request_id, e.payload) for e in kept.exceptions] == [
        (request.request_id, request.payload)
    ]
    async with gateway.app.runtime.sessions() as session:
        rejected = await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.event_type == "dwf.order.v1.ChannelOrderRejected",
                outbox.c.aggregate_id == f"{channel.channel_id}:4500012345",
            )
        )
    assert rejected == 1


async def test_unparseable_payload(gateway: Gateway) -> None:
    channel, _ = await channel_for(gateway, ["X"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.IngestChannelOrder(
            ingest(channel, S.CHANNEL_FORMAT_SHOPIFY_JSON, b'{"order": {"id": 1,'),
            metadata=channel.auth,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(refused.value).issues[0].code == "UNPARSEABLE_PAYLOAD"
    listed = await gateway.stub.ListOrders(pb.ListOrdersRequest(), metadata=channel.auth)
    assert not listed.orders
