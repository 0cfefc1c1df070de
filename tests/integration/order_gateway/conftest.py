"""An order gateway in front of a real inventory service, on the session's Postgres + NATS.

Each test makes its own channel (with its own API key) and its own SKUs, so tests share the
servers without seeing each other's data.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NatsClient

from chassis import bus
from chassis.events import HEADER_EVENT_TYPE, HEADER_MSG_ID, STREAMS, subject_for
from chassis.server import ServiceApp
from dwf.common.v1 import common_pb2
from dwf.order.v1 import master_data_pb2, master_data_pb2_grpc, order_gateway_pb2_grpc
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway.main import build_spec
from services.order_gateway.settings import GatewaySettings
from services.order_gateway.store.master_data import load_master_data
from tests.conftest import Databases, NatsServer
from tests.integration.harness import envelope_for, new_id, settings_for
from tests.integration.inventory.conftest import Inventory, inventory  # noqa: F401 (fixture)

ADMIN_KEY = "admin-key-for-tests"


@dataclass
class Channel:
    channel_id: str
    api_key: str

    @property
    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.api_key}")]


@dataclass
class Gateway:
    app: ServiceApp
    stub: order_gateway_pb2_grpc.OrderGatewayServiceStub
    admin: master_data_pb2_grpc.MasterDataServiceStub
    inventory: Inventory
    nats: NatsClient
    sequences: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def admin_auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {ADMIN_KEY}")]

    async def load(self, document: Mapping[str, Any]) -> None:
        await self.admin.ApplyMasterData(
            master_data_pb2.ApplyMasterDataRequest(
                request_id=new_id(), document=json.dumps(document)
            ),
            metadata=self.admin_auth,
        )

    async def channel(self, **settings: Any) -> Channel:
        channel = Channel(f"ch-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex}")
        await self.load(
            {
                "channels": [{"channel_id": channel.channel_id, **settings}],
                "credentials": [
                    {
                        "credential_id": f"cred-{channel.channel_id}",
                        "channel_id": channel.channel_id,
                        "api_key": channel.api_key,
                    }
                ],
            }
        )
        return channel

    async def skus(self, stock: Sequence[int], warehouse: str = "EAST-1") -> list[str]:
        """New SKUs known to both services (each also sold by the case of 12), with the
        given on-hand quantity each."""
        skus = await self.inventory.new_skus(len(stock))
        await self.load({"items": [{"sku": sku, "units": {"CS12": 12}} for sku in skus]})
        for sku, quantity in zip(skus, stock, strict=True):
            if quantity:
                await self.inventory.receive(sku, warehouse, quantity)
        return skus

    async def publish(self, producer: str, aggregate_id: str, payload: Any) -> None:
        """Play a producer (e.g. fulfillment, not built yet): publish one of its events with
        the next per-aggregate sequence."""
        key = (producer, aggregate_id)
        self.sequences[key] = self.sequences.get(key, 0) + 1
        envelope = envelope_for(producer, "order", aggregate_id, self.sequences[key], payload)
        await self.nats.jetstream().publish(
            subject_for(producer, envelope.type),
            envelope.SerializeToString(),
            headers={HEADER_MSG_ID: envelope.id, HEADER_EVENT_TYPE: envelope.type},
        )


def order_request(
    channel: Channel,
    lines: Sequence[tuple[str, int]],
    *,
    channel_order_id: str | None = None,
    hold_id: str = "",
    unit: str = "",
) -> pb.AcceptOrderRequest:
    return pb.AcceptOrderRequest(
        request_id=new_id(),
        channel=common_pb2.ChannelReference(
            channel_id=channel.channel_id,
            channel_order_id=channel_order_id or f"SO-{uuid.uuid4().hex[:10]}",
        ),
        customer=common_pb2.Customer(name="Jane Doe", email="jane@example.com"),
        ship_to=common_pb2.PostalAddress(
            name="Jane Doe",
            lines=["1 Main St"],
            locality="Springfield",
            administrative_area="IL",
            postal_code="62701",
            region_code="US",
        ),
        lines=[
            common_pb2.OrderLine(
                line_id=str(i + 1),
                sku=sku,
                quantity=common_pb2.Quantity(value=quantity, unit_of_measure=unit),
                unit_price=common_pb2.Money(currency_code="USD", units=10),
            )
            for i, (sku, quantity) in enumerate(lines)
        ],
        hold_id=hold_id,
        payment_reference="pay-123",
    )


def item(line_id: str, sku: str, quantity: int, unit: str = "") -> pb.RequestedItem:
    return pb.RequestedItem(
        line_id=line_id, sku=sku, quantity=common_pb2.Quantity(value=quantity, unit_of_measure=unit)
    )


@pytest.fixture
async def gateway(
    databases: Databases,
    nats_server: NatsServer,
    inventory: Inventory,  # noqa: F811 (the inventory fixture, imported above)
    nats_admin: Any,
) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        inventory_target=f"127.0.0.1:{inventory.app.bound_port}", watch_poll_seconds=0.5
    )
    app = ServiceApp(build_spec(settings), settings_for("order_gateway", databases, nats_server))
    js = nats_admin.jetstream()
    # The fulfillment service is not running in these tests: its stream must exist for the
    # gateway's consumer (the tests publish fulfillment's events themselves).
    await bus.declare_stream(js, STREAMS["fulfillment"])
    await app.start()
    await app.wait_until_ready(20)
    async with app.runtime.sessions.begin() as session:
        await load_master_data(
            session,
            {
                "credentials": [
                    {"credential_id": "admin", "api_key": ADMIN_KEY, "scopes": ["admin"]}
                ]
            },
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
        yield Gateway(
            app,
            order_gateway_pb2_grpc.OrderGatewayServiceStub(channel),
            master_data_pb2_grpc.MasterDataServiceStub(channel),
            inventory,
            nats_admin,
        )
    await app.stop()
