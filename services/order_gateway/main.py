"""Wiring and entrypoint of the order_gateway service."""

from __future__ import annotations

import grpc

from chassis.server import Runtime, ServiceSpec, run
from dwf.order.v1 import (
    master_data_pb2,
    master_data_pb2_grpc,
    order_gateway_pb2,
    order_gateway_pb2_grpc,
)
from services.order_gateway.api import Gateway, MasterDataService, OrderGatewayService
from services.order_gateway.handlers import consumers, workers
from services.order_gateway.settings import GatewaySettings


def build_spec(settings: GatewaySettings | None = None) -> ServiceSpec:
    """The service, with its own settings (``DWF_GATEWAY_*`` unless given)."""

    def gateway(runtime: Runtime) -> Gateway:
        """One Gateway per runtime, shared by the servicers, handlers and feed."""
        if not hasattr(runtime, "gateway"):
            runtime.gateway = Gateway(runtime, settings or GatewaySettings())  # type: ignore[attr-defined]
        made: Gateway = runtime.gateway  # type: ignore[attr-defined]
        return made

    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        order_gateway_pb2_grpc.add_OrderGatewayServiceServicer_to_server(
            OrderGatewayService(gateway(runtime)), server
        )
        master_data_pb2_grpc.add_MasterDataServiceServicer_to_server(
            MasterDataService(gateway(runtime)), server
        )

    return ServiceSpec(
        name="order_gateway",
        grpc_services=[
            order_gateway_pb2.DESCRIPTOR.services_by_name["OrderGatewayService"].full_name,
            master_data_pb2.DESCRIPTOR.services_by_name["MasterDataService"].full_name,
        ],
        register=register,
        consumers=consumers,
        workers=lambda runtime: workers(gateway(runtime)),
    )


SPEC = build_spec()


def main() -> None:
    run(SPEC)
