"""A notifications service on the session's real Postgres + NATS, delivering over real HTTP to
an in-process channel sandbox. Events are published the way the gateway's and inventory's
relays publish them (serialized envelope, Nats-Msg-Id = event id), by an admin connection.

The service, the sandbox and the publisher are shared by the module's tests; each test uses
its own channel, hooks and orders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import select

from chassis import bus
from chassis.config import ServiceSettings
from chassis.events import HEADER_EVENT_TYPE, HEADER_MSG_ID, STREAMS, subject_for
from chassis.server import ServiceApp
from dwf.common.v1 import common_pb2
from dwf.events.v1 import envelope_pb2
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.inventory.v1 import inventory_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from dwf.notifications.v1 import notifications_pb2_grpc
from dwf.order.v1 import events_pb2 as order_events
from services.notifications.main import build_spec
from services.notifications.settings import NotifySettings
from services.notifications.store.tables import delivery
from stack.sandbox_channel import SandboxChannel, SmtpSink
from tests.conftest import Databases, NatsServer
from tests.integration.harness import envelope_for, eventually, new_id, now_ts, settings_for

SECRET = "test-secret-0123456789abcdef-0123456789"
ORDER_STATUS = "dwf.order.v1.OrderStatusChanged"
AVAILABILITY = "dwf.inventory.v1.AvailabilityChanged"

# Short everything: a retry cycle is tens of milliseconds, a timeout one second.
NOTIFY = NotifySettings(
    concurrency=16,
    timeout_seconds=1.0,
    max_attempts=4,
    backoff_initial_seconds=0.05,
    backoff_max_seconds=0.2,
    retry_after_max_seconds=5.0,
    poll_interval_seconds=0.1,
    availability_interval_seconds=0.3,
    allow_http=True,
)


def status_event(
    order_id: str,
    channel_id: str,
    status: int,
    sequence: int,
    *,
    shipped: int = 0,
    tracking: Sequence[str] = (),
) -> order_events.OrderStatusChanged:
    return order_events.OrderStatusChanged(
        order_id=order_id,
        channel=common_pb2.ChannelReference(
            channel_id=channel_id, channel_order_id=f"#{order_id[:8]}"
        ),
        status=status,  # type: ignore[arg-type]
        lifecycle_status=status,  # type: ignore[arg-type]
        status_sequence=sequence,
        changed_at=now_ts(),
        lines=[
            common_pb2.OrderLine(
                line_id="1",
                sku="SKU-1",
                channel_sku="shop-sku-1",
                quantities=common_pb2.LineQuantities(ordered=2, shipped=shipped),
            )
        ],
        tracking=[
            common_pb2.ShipmentTracking(
                shipment_id=f"S-{n}", carrier_code="UPS", tracking_number=n, shipped_at=now_ts()
            )
            for n in tracking
        ],
        customer=common_pb2.Customer(name="Jane Doe", email="jane@example.com"),
    )


@dataclass
class Notifications:
    app: ServiceApp
    stub: notifications_pb2_grpc.NotificationServiceStub
    sandbox: SandboxChannel
    nats: NatsClient
    smtp: SmtpSink
    notify: NotifySettings

    async def endpoint(
        self,
        hook: str,
        *,
        channel_id: str | None = None,
        vocabulary: str = "canonical",
        event_types: Sequence[str] = (),
        statuses: Sequence[int] = (),
        secret: str = SECRET,
        enabled: bool = True,
    ) -> pb.ChannelEndpoint:
        self.sandbox.configure(hook, secret=secret)
        answer = await self.stub.UpsertChannelEndpoint(
            pb.UpsertChannelEndpointRequest(
                request_id=new_id(),
                endpoint=pb.ChannelEndpoint(
                    endpoint_id=hook,
                    channel_id=channel_id or hook,
                    kind=pb.ENDPOINT_KIND_WEBHOOK,
                    url=self.sandbox.url(hook),
                    secret=secret,
                    event_types=list(event_types),
                    statuses=list(statuses),  # type: ignore[arg-type]
                    vocabulary=vocabulary,
                    enabled=enabled,
                ),
            )
        )
        return answer.endpoint

    async def publish(
        self, subject: str, envelope: envelope_pb2.EventEnvelope, msg_id: str | None = None
    ) -> None:
        js = self.nats.jetstream()
        await js.publish(
            subject,
            envelope.SerializeToString(),
            headers={HEADER_MSG_ID: msg_id or envelope.id, HEADER_EVENT_TYPE: envelope.type},
        )

    async def status(
        self,
        order_id: str,
        channel_id: str,
        status: int,
        sequence: int,
        *,
        event_id: str | None = None,
        msg_id: str | None = None,
        **kwargs: Any,
    ) -> envelope_pb2.EventEnvelope:
        envelope = envelope_for(
            "order_gateway",
            "order",
            order_id,
            sequence,
            status_event(order_id, channel_id, status, sequence, **kwargs),
            event_id,
        )
        await self.publish(subject_for("order_gateway", ORDER_STATUS), envelope, msg_id)
        return envelope

    async def availability(
        self, warehouse: str, sequence: int, levels: dict[str, int]
    ) -> envelope_pb2.EventEnvelope:
        payload = inventory_events.AvailabilityChanged(
            warehouse_id=warehouse,
            entries=[
                inventory_pb2.StockLevel(sku=sku, warehouse_id=warehouse, available=qty)
                for sku, qty in levels.items()
            ],
        )
        envelope = envelope_for("inventory", "warehouse", warehouse, sequence, payload)
        await self.publish(subject_for("inventory", AVAILABILITY), envelope)
        return envelope

    async def deliveries(self, **filters: Any) -> list[pb.Delivery]:
        answer = await self.stub.ListDeliveries(pb.ListDeliveriesRequest(page_size=500, **filters))
        return list(answer.deliveries)

    async def settled(self, endpoint_id: str, count: int, timeout: float = 20) -> list[pb.Delivery]:
        """Wait until ``count`` deliveries of the endpoint exist and none is open."""

        async def done() -> list[pb.Delivery] | None:
            found = await self.deliveries(endpoint_id=endpoint_id)
            open_states = (pb.DELIVERY_STATE_PENDING, pb.DELIVERY_STATE_RETRYING)
            if len(found) >= count and all(d.state not in open_states for d in found):
                return found
            return None

        result: list[pb.Delivery] = await eventually(
            done, timeout=timeout, what=f"{count} settled deliveries"
        )
        return result

    async def delivery_rows(self, endpoint_id: str) -> list[Any]:
        async with self.app.runtime.sessions() as session:
            return list(
                (
                    await session.execute(
                        select(delivery).where(delivery.c.endpoint_id == endpoint_id)
                    )
                ).all()
            )


def service_settings(databases: Databases, nats_server: NatsServer) -> ServiceSettings:
    return settings_for(
        "notifications",
        databases,
        nats_server,
        consumer_max_deliver=2,
        consumer_backoff_seconds=[0.05],
        consumer_ack_wait_seconds=5.0,
    )


async def start_app(settings: ServiceSettings, notify: NotifySettings) -> ServiceApp:
    app = ServiceApp(build_spec(notify), settings)
    await app.start()
    await app.wait_until_ready(20)
    return app


async def start_second(n: Notifications) -> ServiceApp:
    """Another replica of the service on the same database and streams."""
    return await start_app(n.app.settings, n.notify)


@pytest.fixture(scope="module")
async def notifications(
    databases: Databases, nats_server: NatsServer
) -> AsyncIterator[Notifications]:
    client = await nats.connect(
        nats_server.url, user=nats_server.admin_user, password=nats_server.admin_password
    )
    js = client.jetstream()
    # The producers' streams (the gateway and inventory declare them when they run).
    await bus.declare_stream(js, STREAMS["order_gateway"])
    await bus.declare_stream(js, STREAMS["inventory"])
    sandbox = SandboxChannel()
    await sandbox.start()
    smtp = SmtpSink()
    await smtp.start()
    notify = NOTIFY.model_copy(update={"smtp_port": smtp.port})
    app = await start_app(service_settings(databases, nats_server), notify)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
            stub = notifications_pb2_grpc.NotificationServiceStub(channel)
            yield Notifications(app, stub, sandbox, client, smtp, notify)
    finally:
        await app.stop()
        await sandbox.stop()
        await smtp.stop()
        await client.close()
