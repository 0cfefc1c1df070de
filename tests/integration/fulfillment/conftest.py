"""The whole order path on real Postgres + NATS: gateway and inventory services, a
fulfillment service, and the ERP, WMS and carrier sandboxes (in-process, on real ports)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from starlette.applications import Starlette

from chassis.server import ServiceApp
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.fulfillment.v1 import fulfillment_pb2_grpc
from dwf.order.v1 import order_gateway_pb2 as pb
from services.fulfillment.connectors.settings import ConnectorSettings
from services.fulfillment.main import build_spec
from services.fulfillment.settings import WorkflowSettings
from stack.sandboxes import Sandbox, carrier, erp, wms
from tests.conftest import Databases, NatsServer
from tests.integration.harness import eventually, settings_for
from tests.integration.inventory.conftest import inventory  # noqa: F401 (fixture)
from tests.integration.order_gateway.conftest import (  # noqa: F401 (fixture)
    Channel,
    Gateway,
    gateway,
    order_request,
)

TOKENS = {"erp": "erp-test-token", "wms": "wms-test-token", "carrier": "carrier-test-token"}


@dataclass
class Fulfillment:
    app: ServiceApp
    stub: fulfillment_pb2_grpc.FulfillmentServiceStub
    gateway: Gateway
    erp: Starlette
    wms: Starlette

    async def accept(self, channel: Channel, lines: list[tuple[str, int]]) -> pb.Order:
        request = order_request(channel, lines)
        request.customer.customer_id = "C-100"
        answer = await self.gateway.stub.AcceptOrder(request, metadata=channel.auth)
        return answer.order

    async def view(self, order_id: str) -> fpb.OrderFulfillment:
        answer = await self.stub.GetOrderFulfillment(
            fpb.GetOrderFulfillmentRequest(order_id=order_id)
        )
        return answer.fulfillment

    async def until_status(
        self, order_id: str, status: int, timeout: float = 30
    ) -> fpb.OrderFulfillment:
        async def reached() -> fpb.OrderFulfillment | None:
            try:
                found = await self.view(order_id)
            except grpc.aio.AioRpcError:
                return None
            return found if found.status == status else None

        result: fpb.OrderFulfillment = await eventually(
            reached, timeout, f"order {order_id} in status {status}"
        )
        return result

    def erp_orders(self, order_id: str) -> list[Any]:
        store = self.erp.state.erp
        return [o for o in store.orders.values() if o.external_reference == order_id]


@pytest.fixture
async def fulfillment(
    gateway: Gateway,  # noqa: F811 (the gateway fixture, imported above)
    databases: Databases,
    nats_server: NatsServer,
) -> AsyncIterator[Fulfillment]:
    erp_app = erp.create_app(TOKENS["erp"])
    wms_app = wms.create_app(TOKENS["wms"], ack_delay_ms=5, step_delay_ms=5)
    carrier_app = carrier.create_app(TOKENS["carrier"])
    async with (
        Sandbox(erp_app) as erp_box,
        Sandbox(wms_app) as wms_box,
        Sandbox(carrier_app) as carrier_box,
    ):
        workflow = WorkflowSettings(
            inventory_target=f"127.0.0.1:{gateway.inventory.app.bound_port}",
            task_poll_seconds=0.1,
            wms_poll_seconds=0.05,
            step_backoff_base_seconds=0.05,
            step_backoff_max_seconds=0.5,
            ack_sla_seconds=10,
        )
        connectors = ConnectorSettings(
            erp_url=erp_box.url,
            erp_token=TOKENS["erp"],
            wms_url=wms_box.url,
            wms_token=TOKENS["wms"],
            carrier_url=carrier_box.url,
            carrier_token=TOKENS["carrier"],
            read_timeout_seconds=1.0,
            retry_backoff_initial_seconds=0.01,
            retry_backoff_max_seconds=0.05,
            erp_requests_per_second=1000,
            wms_requests_per_second=1000,
        )
        app = ServiceApp(
            build_spec(workflow, connectors), settings_for("fulfillment", databases, nats_server)
        )
        await app.start()
        await app.wait_until_ready(20)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
            yield Fulfillment(
                app,
                fulfillment_pb2_grpc.FulfillmentServiceStub(channel),
                gateway,
                erp_app,
                wms_app,
            )
        await app.stop()
