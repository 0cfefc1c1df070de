"""Wiring and entrypoint of the inventory service."""

from __future__ import annotations

import grpc

from chassis.server import Runtime, ServiceSpec, run
from dwf.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from services.inventory.api import InventoryService
from services.inventory.handlers import consumers


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        # RPCs of later issues answer UNIMPLEMENTED until they land.
        InventoryService(runtime),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="inventory",
    grpc_services=[inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name],
    register=register,
    consumers=consumers,
)


def main() -> None:
    run(SPEC)
