"""gRPC API of the notifications service: proto ↔ domain translation and validation.

RPCs not overridden here answer UNIMPLEMENTED (with ErrorInfo) until their issue lands.
"""

from __future__ import annotations

from chassis.server import Runtime
from dwf.notifications.v1 import notifications_pb2_grpc


class NotificationService(notifications_pb2_grpc.NotificationServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
