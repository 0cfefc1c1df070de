"""Wiring and entrypoint of the notifications service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from chassis.server import Runtime, ServiceSpec, Worker, run
from dwf.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from services.notifications.api import NotificationService
from services.notifications.delivery import Deliverer
from services.notifications.handlers import consumers, handlers, workers
from services.notifications.settings import NotifySettings


@dataclass(frozen=True)
class Parts:
    settings: NotifySettings
    service: NotificationService
    deliverer: Deliverer


def build_spec(settings: NotifySettings | None = None) -> ServiceSpec:
    """The service, with its delivery settings (``DWF_NOTIFY_*`` unless given)."""

    def parts(runtime: Runtime) -> Parts:
        """One servicer and one delivery worker per runtime."""
        if not hasattr(runtime, "notifications"):
            notify = settings if settings is not None else NotifySettings()
            runtime.notifications = Parts(  # type: ignore[attr-defined]
                notify,
                NotificationService(runtime, notify, handlers(runtime)),
                Deliverer(runtime, notify),
            )
        made: Parts = runtime.notifications  # type: ignore[attr-defined]
        return made

    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        notifications_pb2_grpc.add_NotificationServiceServicer_to_server(
            parts(runtime).service, server
        )

    def background(runtime: Runtime) -> Sequence[Worker]:
        made = parts(runtime)
        return workers(runtime, made.settings, made.deliverer)

    return ServiceSpec(
        name="notifications",
        grpc_services=[
            notifications_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name
        ],
        register=register,
        consumers=consumers,
        workers=background,
    )


SPEC = build_spec()


def main() -> None:
    run(SPEC)
