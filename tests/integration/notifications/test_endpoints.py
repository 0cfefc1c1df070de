"""UpsertChannelEndpoint: validated with field paths, idempotent, the secret write-only."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from dwf.common.v1 import common_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from tests.integration.notifications.conftest import SECRET, Notifications, new_id

pytestmark = pytest.mark.integration


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)  # type: ignore[arg-type]
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return {v.field: v.description for v in bad.field_violations}
    return {}


def webhook(endpoint_id: str, **overrides: object) -> pb.ChannelEndpoint:
    values: dict[str, object] = {
        "endpoint_id": endpoint_id,
        "channel_id": "shop-eu",
        "kind": pb.ENDPOINT_KIND_WEBHOOK,
        "url": "https://shop.example/hooks/dwf",
        "secret": SECRET,
        "vocabulary": "shopify",
        "enabled": True,
    }
    values.update(overrides)
    return pb.ChannelEndpoint(**values)  # type: ignore[arg-type]


async def test_upsert_creates_then_replaces_and_never_returns_the_secret(
    notifications: Notifications,
) -> None:
    stub = notifications.stub
    endpoint_id = f"shop-eu.{new_id()[:8]}"
    request = pb.UpsertChannelEndpointRequest(
        request_id=new_id(),
        endpoint=webhook(
            endpoint_id,
            event_types=["dwf.order.v1.OrderStatusChanged"],
            statuses=[common_pb2.ORDER_STATUS_SHIPPED],
        ),
    )
    created = await stub.UpsertChannelEndpoint(request)
    assert created.created
    assert created.endpoint.secret == "" and created.endpoint.has_secret
    assert list(created.endpoint.statuses) == [common_pb2.ORDER_STATUS_SHIPPED]
    assert created.endpoint.HasField("created_at")
    assert await stub.UpsertChannelEndpoint(request) == created  # a retry: the same answer
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        changed = pb.UpsertChannelEndpointRequest()
        changed.CopyFrom(request)
        changed.endpoint.url = "https://elsewhere.example/"
        await stub.UpsertChannelEndpoint(changed)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS

    # Replace: an empty secret keeps the stored one; disabling is the operator's.
    replaced = await stub.UpsertChannelEndpoint(
        pb.UpsertChannelEndpointRequest(
            request_id=new_id(),
            endpoint=webhook(endpoint_id, secret="", vocabulary="amazon", enabled=False),
        )
    )
    assert not replaced.created
    assert replaced.endpoint.has_secret and replaced.endpoint.vocabulary == "amazon"
    assert not replaced.endpoint.enabled
    assert replaced.endpoint.disabled_reason == pb.DISABLE_REASON_OPERATOR
    assert replaced.endpoint.HasField("disabled_at")
    enabled = await stub.UpsertChannelEndpoint(
        pb.UpsertChannelEndpointRequest(request_id=new_id(), endpoint=webhook(endpoint_id))
    )
    assert enabled.endpoint.enabled
    assert enabled.endpoint.disabled_reason == pb.DISABLE_REASON_UNSPECIFIED
    assert not enabled.endpoint.HasField("disabled_at")


async def test_upsert_reports_every_problem_with_its_field(notifications: Notifications) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await notifications.stub.UpsertChannelEndpoint(
            pb.UpsertChannelEndpointRequest(
                request_id="not-a-uuid",
                endpoint=pb.ChannelEndpoint(
                    endpoint_id="Bad Id!",
                    url="ftp://x",
                    secret="short",
                    event_types=["dwf.order.v1.OrderAccepted"],
                    statuses=[common_pb2.ORDER_STATUS_UNSPECIFIED],
                    vocabulary="klingon",
                ),
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(refused.value)) == {
        "request_id",
        "endpoint.endpoint_id",
        "endpoint.channel_id",
        "endpoint.kind",
        "endpoint.url",
        "endpoint.secret",
        "endpoint.event_types[0]",
        "endpoint.statuses[0]",
        "endpoint.vocabulary",
    }
    with pytest.raises(grpc.aio.AioRpcError) as no_secret:
        await notifications.stub.UpsertChannelEndpoint(
            pb.UpsertChannelEndpointRequest(
                request_id=new_id(), endpoint=webhook(f"new-{new_id()[:8]}", secret="")
            )
        )
    assert violations(no_secret.value) == {"endpoint.secret": "required for a new WEBHOOK endpoint"}
