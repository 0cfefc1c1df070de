"""Wiring and entrypoint of the inventory service."""

from __future__ import annotations

import grpc

from chassis.server import Runtime, ServiceSpec, run
from dwf.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from services.inventory.api import InventoryService
from services.inventory.handlers import consumers, workers


def _service(runtime: Runtime) -> InventoryService:
    """One servicer per runtime, shared by the gRPC API and the background loops."""
    if not hasattr(runtime, "inventory_service"):
        runtime.inventory_service = InventoryService(runtime)  # type: ignore[attr-defined]
    service: InventoryService = runtime.inventory_service  # type: ignore[attr-defined]
    return service


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(_service(runtime), server)


SPEC = ServiceSpec(
    name="inventory",
    grpc_services=[inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name],
    register=register,
    consumers=consumers,
    workers=lambda runtime: workers(runtime, _service(runtime)),
)


def main() -> None:
    run(SPEC)
