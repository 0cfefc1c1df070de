"""Wiring and entrypoint of the fulfillment service."""

from __future__ import annotations

import grpc

from chassis.server import Runtime, ServiceSpec, run
from dwf.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from services.fulfillment.api import FulfillmentService
from services.fulfillment.handlers import consumers


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(
        # RPCs of later issues answer UNIMPLEMENTED until they land.
        FulfillmentService(runtime),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="fulfillment",
    grpc_services=[fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name],
    register=register,
    consumers=consumers,
)


def main() -> None:
    run(SPEC)
