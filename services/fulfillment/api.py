"""gRPC API of the fulfillment service: proto ↔ domain translation and validation.

RPCs not overridden here answer UNIMPLEMENTED (with ErrorInfo) until their issue lands.
"""

from __future__ import annotations

from chassis.server import Runtime
from dwf.fulfillment.v1 import fulfillment_pb2_grpc


class FulfillmentService(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
