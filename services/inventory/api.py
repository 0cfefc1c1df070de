"""gRPC API of the inventory service: proto ↔ domain translation and validation.

RPCs not overridden here answer UNIMPLEMENTED (with ErrorInfo) until their issue lands.
"""

from __future__ import annotations

from chassis.server import Runtime
from dwf.inventory.v1 import inventory_pb2_grpc


class InventoryService(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
