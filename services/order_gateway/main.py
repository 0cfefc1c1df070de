"""Wiring and entrypoint of the order_gateway service."""

from __future__ import annotations

import grpc

from chassis.server import Runtime, ServiceSpec, run
from dwf.order.v1 import order_gateway_pb2, order_gateway_pb2_grpc
from services.order_gateway.api import OrderGatewayService
from services.order_gateway.handlers import consumers


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    order_gateway_pb2_grpc.add_OrderGatewayServiceServicer_to_server(
        # RPCs of later issues answer UNIMPLEMENTED until they land.
        OrderGatewayService(runtime),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="order_gateway",
    grpc_services=[order_gateway_pb2.DESCRIPTOR.services_by_name["OrderGatewayService"].full_name],
    register=register,
    consumers=consumers,
)


def main() -> None:
    run(SPEC)
