"""Wiring and entrypoint of the fulfillment service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from chassis.clients import open_channel
from chassis.server import Runtime, ServiceSpec, Worker, run
from dwf.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from dwf.inventory.v1 import inventory_pb2_grpc
from services.fulfillment.api import FulfillmentService
from services.fulfillment.connectors import Connectors
from services.fulfillment.connectors.settings import ConnectorSettings
from services.fulfillment.engine import TaskEngine
from services.fulfillment.handlers import consumers, workers
from services.fulfillment.settings import WorkflowSettings
from services.fulfillment.workflow import Workflow


@dataclass
class Parts:
    settings: WorkflowSettings
    connectors: Connectors
    engine: TaskEngine
    workflow: Workflow
    service: FulfillmentService


def build_spec(
    settings: WorkflowSettings | None = None, connector_settings: ConnectorSettings | None = None
) -> ServiceSpec:
    """The service with its workflow and connector settings (``DWF_FULFILLMENT_*`` unless
    given)."""

    def parts(runtime: Runtime) -> Parts:
        if not hasattr(runtime, "fulfillment"):
            config = settings or WorkflowSettings()
            connectors = Connectors.from_settings(connector_settings or ConnectorSettings())
            stubs: list[inventory_pb2_grpc.InventoryServiceStub] = []

            def inventory() -> inventory_pb2_grpc.InventoryServiceStub:
                if not stubs:
                    channel = open_channel(config.inventory_target, runtime.settings)
                    runtime.on_close(lambda: channel.close(None))
                    stubs.append(inventory_pb2_grpc.InventoryServiceStub(channel))
                return stubs[0]

            engine = TaskEngine(
                runtime,
                lease_seconds=config.task_lease_seconds,
                poll_seconds=config.task_poll_seconds,
                concurrency=config.task_concurrency,
                backoff_base_seconds=config.step_backoff_base_seconds,
                backoff_max_seconds=config.step_backoff_max_seconds,
            )
            workflow = Workflow(
                runtime,
                engine,
                connectors,
                inventory,
                ack_sla_seconds=config.ack_sla_seconds,
                max_release_attempts=config.max_release_attempts,
                max_resourcing=config.max_resourcing,
            )
            runtime.on_close(connectors.aclose)
            runtime.fulfillment = Parts(  # type: ignore[attr-defined]
                config,
                connectors,
                engine,
                workflow,
                FulfillmentService(runtime, engine, workflow),
            )
        made: Parts = runtime.fulfillment  # type: ignore[attr-defined]
        return made

    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(
            parts(runtime).service, server
        )

    def background(runtime: Runtime) -> Sequence[Worker]:
        return workers(runtime, parts(runtime))

    return ServiceSpec(
        name="fulfillment",
        grpc_services=[fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name],
        register=register,
        consumers=lambda runtime: consumers(parts(runtime)),
        workers=background,
    )


SPEC = build_spec()


def main() -> None:
    run(SPEC)
