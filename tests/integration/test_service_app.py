"""The service bootstrap on real servers: health gating, graceful drain, one trace end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chassis import bus
from chassis.clients import open_channel
from chassis.config import ServiceSettings
from chassis.events import STREAMS
from chassis.server import Runtime, ServiceApp, ServiceSpec
from dwf.events.v1 import envelope_pb2
from dwf.order.v1 import events_pb2
from stack.natsd import EmbeddedNats
from stack.ports import free_port
from tests.conftest import Databases, NatsServer
from tests.integration.harness import eventually, settings_for

pytestmark = pytest.mark.integration

PROBE = "dwf.test.v1.Probe"


class ProbeService:
    """A raw-bytes gRPC service for exercising the chassis without a real RPC."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.release_slow = asyncio.Event()
        self.slow_started = asyncio.Event()

    async def emit(self, request: bytes, context: object) -> bytes:
        aggregate_id = request.decode()
        async with self.runtime.sessions.begin() as session:
            envelope = await self.runtime.events.record(
                session,
                aggregate_type="order",
                aggregate_id=aggregate_id,
                payload=events_pb2.OrderStatusChanged(order_id=aggregate_id),
            )
        return envelope.id.encode()

    async def slow(self, request: bytes, context: object) -> bytes:
        self.slow_started.set()
        await self.release_slow.wait()
        return b"done"

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: object) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn)  # type: ignore[arg-type]

        return grpc.method_handlers_generic_handler(
            PROBE, {"Emit": unary(self.emit), "Slow": unary(self.slow)}
        )


def probe_spec(
    probes: list[ProbeService], consumers: Sequence[bus.ConsumerSpec] = ()
) -> ServiceSpec:
    def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        probe = ProbeService(runtime)
        probes.append(probe)
        server.add_generic_rpc_handlers((probe.handler(),))

    return ServiceSpec(
        name="order_gateway",
        grpc_services=[PROBE],
        register=register,
        consumers=lambda runtime: consumers,
    )


async def health_of(port: int, service: str = "") -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def test_health_turns_serving_only_after_nats_connects(
    databases: Databases, nats_server: NatsServer, scratch_dir: Path
) -> None:
    nats_port = free_port()  # nothing listens here yet
    settings = settings_for(
        "order_gateway",
        databases,
        nats_server,
        nats_url=f"nats://127.0.0.1:{nats_port}",
        nats_user=None,
        nats_password=None,
    )
    app = ServiceApp(probe_spec([]), settings)
    await app.start()
    late_nats = EmbeddedNats(
        scratch_dir / f"late-nats-{uuid.uuid4().hex[:6]}", port=nats_port, with_users=False
    )
    try:
        # Postgres is up, NATS is not: the server answers, but NOT_SERVING, for every name.
        assert await health_of(app.bound_port) == "NOT_SERVING"
        assert await health_of(app.bound_port, PROBE) == "NOT_SERVING"
        assert await health_of(app.bound_port, "liveness") == "SERVING"
        await asyncio.to_thread(late_nats.start)

        async def serving() -> bool:
            return await health_of(app.bound_port, PROBE) == "SERVING"

        await eventually(serving, timeout=20, what="SERVING once NATS is up")
        assert await health_of(app.bound_port) == "SERVING"
    finally:
        await app.stop()
        late_nats.stop()


@pytest.fixture
async def probe_app(
    databases: Databases, nats_server: NatsServer
) -> AsyncIterator[tuple[ServiceApp, ProbeService]]:
    probes: list[ProbeService] = []
    app = ServiceApp(
        probe_spec(probes),
        settings_for("order_gateway", databases, nats_server, drain_seconds=1.0),
    )
    await app.start()
    await app.wait_until_ready(20)
    yield app, probes[0]
    await app.stop()


async def test_sigterm_drain_reports_not_serving_and_finishes_in_flight_calls(
    probe_app: tuple[ServiceApp, ProbeService],
) -> None:
    app, probe = probe_app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
        slow = channel.unary_unary(f"/{PROBE}/Slow")
        in_flight = asyncio.ensure_future(slow(b"", timeout=10))
        await probe.slow_started.wait()
        stopping = asyncio.create_task(app.stop())

        async def draining() -> bool:
            return await health_of(app.bound_port) == "NOT_SERVING"

        await eventually(draining, what="NOT_SERVING while draining")
        assert not in_flight.done()
        probe.release_slow.set()
        assert await in_flight == b"done"
        await stopping
    with pytest.raises(grpc.aio.AioRpcError):
        await health_of(app.bound_port)


async def test_one_trace_spans_grpc_outbox_nats_and_consumer(
    databases: Databases, nats_server: NatsServer, spans: InMemorySpanExporter
) -> None:
    consumed: dict[str, tuple[int, str]] = {}
    arrived = asyncio.Event()

    async def handler(session: object, envelope: envelope_pb2.EventEnvelope) -> None:
        span_context = trace.get_current_span().get_span_context()
        consumed[envelope.aggregate_id] = (span_context.trace_id, envelope.correlation_id)
        arrived.set()

    # The consumer runs inside another service (its own schema, inbox and NATS user).
    consumer_settings = settings_for("notifications", databases, nats_server)
    consumer_spec = bus.ConsumerSpec(
        durable=f"trace_{uuid.uuid4().hex[:8]}",
        stream=STREAMS["order_gateway"].name,
        subjects=["dwf.order_gateway.order_status_changed.v1"],
        handler=handler,
    )
    consumer_app = ServiceApp(
        ServiceSpec(
            name="notifications",
            grpc_services=[],
            register=lambda s, r: None,
            consumers=lambda runtime: [consumer_spec],
        ),
        consumer_settings,
    )
    probes: list[ProbeService] = []
    producer_app = ServiceApp(
        probe_spec(probes), settings_for("order_gateway", databases, nats_server)
    )
    await consumer_app.start()
    await producer_app.start()
    try:
        await producer_app.wait_until_ready(20)
        await consumer_app.wait_until_ready(20)
        aggregate = f"order-{uuid.uuid4()}"
        correlation_id = str(uuid.uuid4())
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("storefront checkout") as root:
            async with open_channel(f"127.0.0.1:{producer_app.bound_port}") as channel:
                emit = channel.unary_unary(f"/{PROBE}/Emit")
                call = emit(
                    aggregate.encode(), timeout=10, metadata=(("x-correlation-id", correlation_id),)
                )
                await call
                trailers = await call.trailing_metadata()
        assert dict(trailers or ()).get("x-correlation-id") == correlation_id
        await asyncio.wait_for(_until(arrived, lambda: aggregate in consumed), 20)
        trace_id, event_correlation = consumed[aggregate]
        assert trace_id == root.get_span_context().trace_id
        assert event_correlation == correlation_id

        async def finished_span_names() -> set[str]:
            names = {
                s.name
                for s in spans.get_finished_spans()
                if s.context is not None and s.context.trace_id == root.get_span_context().trace_id
            }
            consume = "consume dwf.order_gateway.order_status_changed.v1"
            return names if consume in names else set()

        names = await eventually(finished_span_names, what="the consumer span to finish")
        assert f"/{PROBE}/Emit" in names  # gRPC client and server spans
        assert "publish dwf.order_gateway.order_status_changed.v1" in names
        assert "consume dwf.order_gateway.order_status_changed.v1" in names
    finally:
        await producer_app.stop()
        await consumer_app.stop()


async def _until(event: asyncio.Event, condition: object) -> None:
    while not condition():  # type: ignore[operator]
        event.clear()
        await event.wait()


async def test_unimplemented_rpc_answers_unimplemented_with_error_info(
    databases: Databases, nats_server: NatsServer
) -> None:
    from grpc_status import rpc_status

    from dwf.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc

    def register(server: grpc.aio.Server, runtime: object) -> None:
        # The generated base servicer: every RPC is "not implemented".
        fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server(
            fulfillment_pb2_grpc.FulfillmentServiceServicer(), server
        )

    spec = ServiceSpec(name="fulfillment", grpc_services=[], register=register)
    settings: ServiceSettings = settings_for("fulfillment", databases, nats_server)
    app = ServiceApp(spec, settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
            stub = fulfillment_pb2_grpc.FulfillmentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GetOrderFulfillment(
                    fulfillment_pb2.GetOrderFulfillmentRequest(), timeout=5
                )
        assert failure.value.code() is grpc.StatusCode.UNIMPLEMENTED
        status = rpc_status.from_call(failure.value)  # type: ignore[arg-type]
        assert status is not None and status.details[0].type_url.endswith("ErrorInfo")
    finally:
        await app.stop()
