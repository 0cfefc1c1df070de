"""gRPC API of the order_gateway service: proto ↔ domain translation and validation.

RPCs not overridden here answer UNIMPLEMENTED (with ErrorInfo) until their issue lands.
"""

from __future__ import annotations

from chassis.server import Runtime
from dwf.order.v1 import order_gateway_pb2_grpc


class OrderGatewayService(order_gateway_pb2_grpc.OrderGatewayServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
