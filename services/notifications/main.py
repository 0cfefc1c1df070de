"""Wiring and entrypoint of the notifications service."""

from __future__ import annotations

import grpc

from chassis.server import Runtime, ServiceSpec, run
from dwf.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from services.notifications.api import NotificationService
from services.notifications.handlers import consumers


def register(server: grpc.aio.Server, runtime: Runtime) -> None:
    notifications_pb2_grpc.add_NotificationServiceServicer_to_server(
        # RPCs of later issues answer UNIMPLEMENTED until they land.
        NotificationService(runtime),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="notifications",
    grpc_services=[notifications_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name],
    register=register,
    consumers=consumers,
)


def main() -> None:
    run(SPEC)
