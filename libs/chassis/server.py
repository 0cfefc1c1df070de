"""Service bootstrap: one grpc.aio server with health, reflection, interceptors, TLS, the
outbox relay and the event consumers, wired the same way for every service.

Health starts NOT_SERVING; it turns SERVING only once Postgres answers and NATS is connected
(with the service's streams declared), goes back to NOT_SERVING when NATS drops, and on
SIGTERM the server drains: NOT_SERVING first, then in-flight calls get the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from chassis import bus, db
from chassis.config import ServiceSettings
from chassis.events import DLQ, STREAMS
from chassis.idempotency import ResponseT, run_once
from chassis.interceptors import ChassisInterceptor
from chassis.logs import configure_logging
from chassis.outbox import EventRecorder, OutboxRelay
from chassis.telemetry import configure_tracing, spans_exported

log = logging.getLogger("dwf.server")

# Health name that is SERVING for as long as the process runs: the liveness probe's, so an
# outage of Postgres or NATS makes pods unready but does not restart them.
LIVENESS = "liveness"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Runtime:
    """What a service's API and handlers use: settings, database, bus, event recorder."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = db.engine_for(settings)
        self.sessions: async_sessionmaker[AsyncSession] = db.session_factory(self.engine)
        self.reads: AsyncEngine = db.read_engine(self.engine)
        self.events = EventRecorder(settings.service, settings.schema_name)
        self.nats: NatsClient | None = None
        self._on_close: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run at shutdown, after in-flight calls finished, before connections close."""
        self._on_close.append(callback)

    async def close(self) -> None:
        for callback in reversed(self._on_close):
            try:
                await callback()
            except Exception:
                log.exception("shutdown hook failed")
        if self.nats is not None and not self.nats.is_closed:
            await self.nats.close()
        await self.engine.dispose()

    async def once(
        self,
        method: str,
        request: Any,
        response_type: type[ResponseT],
        work: Callable[[AsyncSession], Awaitable[ResponseT]],
    ) -> ResponseT:
        """Run a mutating RPC's work in one transaction, once per request_id (AIP-155)."""
        async with self.sessions.begin() as session:
            return await run_once(
                session,
                method=method,
                request_id=request.request_id,
                request=request,
                response_type=response_type,
                work=partial(work, session),
            )

    @property
    def js(self) -> JetStreamContext:
        if self.nats is None:
            raise RuntimeError("NATS is not connected yet")
        return self.nats.jetstream()


Register = Callable[[grpc.aio.Server, Runtime], None]
Consumers = Callable[[Runtime], Sequence[bus.ConsumerSpec]]
# A named background loop of a service (e.g. a sweeper); it returns when the event is set.
Worker = tuple[str, Callable[[asyncio.Event], Awaitable[None]]]
Workers = Callable[[Runtime], Sequence[Worker]]


def _no_consumers(_: Runtime) -> Sequence[bus.ConsumerSpec]:
    return ()


def _no_workers(_: Runtime) -> Sequence[Worker]:
    return ()


@dataclass(frozen=True)
class ServiceSpec:
    """The few things that differ between services."""

    name: str
    grpc_services: Sequence[str]  # full names, for health and reflection
    register: Register
    consumers: Consumers = field(default=_no_consumers)
    workers: Workers = field(default=_no_workers)


def _server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    ca = settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


class _GenericHandlersOnly:
    """The server as registration code sees it. Generated ``add_*Servicer_to_server``
    functions add a generic handler and the same methods again as "registered" ones; the
    generic handler serves every call alone. grpc.aio keeps one pending task per registered
    method and waits on all of them (``asyncio.wait``) for every call it accepts, so each
    call cost O(registered methods): 18 on the gateway, a measurable share of its
    CheckAvailability. The raw echo baseline serves through a generic handler, as we do."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Left out on purpose: the generic handler added with them serves these methods."""


class ServiceApp:
    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.runtime = Runtime(settings)
        self.health = HealthServicer()
        # With nowhere to export spans, OTel's interceptor would only cost time; the chassis
        # interceptor then just carries the caller's W3C context on to outgoing events.
        tracing = spans_exported()
        chassis = ChassisInterceptor(
            f"dwf.{spec.name}", settings.default_deadline_seconds, propagate_only=not tracing
        )
        self.server = grpc.aio.server(
            interceptors=[aio_server_interceptor(), chassis] if tracing else [chassis]
        )
        self.bound_port = 0
        self.health_server: grpc.aio.Server | None = None
        self.bound_health_port = 0
        self._stop = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._dependencies_ready = asyncio.Event()

    @property
    def health_names(self) -> list[str]:
        return ["", *self.spec.grpc_services]

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in self.health_names:
            await self.health.set(name, status)

    async def start(self) -> None:
        await self._set_health(NOT_SERVING)
        await self.health.set(LIVENESS, SERVING)
        # Typed as the server: registration only ever calls the two methods it keeps.
        registry = cast(grpc.aio.Server, _GenericHandlersOnly(self.server))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registry)
        self.spec.register(registry, self.runtime)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            ReflectionServicer(
                [*self.spec.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME]
            ),
            registry,
        )
        address = f"{self.settings.grpc_host}:{self.settings.port}"
        if self.settings.tls_enabled:
            self.bound_port = self.server.add_secure_port(
                address, _server_credentials(self.settings)
            )
        else:
            self.bound_port = self.server.add_insecure_port(address)
        await self.server.start()
        # Everything loaded so far (modules, descriptors, engines) lives as long as the
        # process: keep it out of the cyclic GC's sweeps, which otherwise walk it again and
        # again under load.
        gc.freeze()
        if self.settings.health_port:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.bound_health_port = self.health_server.add_insecure_port(
                f"{self.settings.grpc_host}:{self.settings.health_port}"
            )
            await self.health_server.start()
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port)
        log.info("%s listening on %s:%d", self.spec.name, self.settings.grpc_host, self.bound_port)
        self._tasks.append(asyncio.create_task(self._connect_and_run()))

    async def _connect_and_run(self) -> None:
        retrying = AsyncRetrying(
            wait=wait_random_exponential(
                multiplier=0.2, max=self.settings.dependency_retry_max_seconds
            ),
            retry=retry_if_exception_type(Exception),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._stop.is_set():
                    return
                await self._connect()
        self._dependencies_ready.set()
        await self._set_health(SERVING)
        log.info("%s SERVING", self.spec.name)
        relay = OutboxRelay(
            self.runtime.engine,
            self.runtime.js,
            self.settings.schema_name,
            batch_size=self.settings.outbox_batch_size,
            poll_interval=self.settings.outbox_poll_interval_seconds,
        )
        workers: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("outbox relay", lambda: relay.run(self._stop))
        ]
        for consumer_spec in self.spec.consumers(self.runtime):
            consumer = bus.Consumer(
                consumer_spec,
                service=self.spec.name,
                js=self.runtime.js,
                sessions=self.runtime.sessions,
                max_deliver=self.settings.consumer_max_deliver,
                ack_wait_seconds=self.settings.consumer_ack_wait_seconds,
                backoff_seconds=self.settings.consumer_backoff_seconds,
            )
            workers.append((f"consumer {consumer_spec.durable}", partial(consumer.run, self._stop)))
        for name, loop in self.spec.workers(self.runtime):
            workers.append((name, partial(loop, self._stop)))
        await asyncio.gather(*(self._supervise(name, run) for name, run in workers))

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Keep a background worker alive: a crash is logged and the worker restarted."""
        while not self._stop.is_set():
            try:
                await run()
            except Exception:
                log.exception("%s crashed; restarting", name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), self.settings.dependency_retry_max_seconds
                    )
            else:
                return

    async def _connect(self) -> None:
        await db.ping(self.runtime.engine)
        if self.runtime.nats is None or self.runtime.nats.is_closed:
            self.runtime.nats = await bus.connect(
                self.settings.nats_url,
                name=f"dwf-{self.spec.name}",
                user=self.settings.nats_user,
                password=self.settings.nats_password,
                on_disconnect=self._on_nats_down,
                on_reconnect=self._on_nats_up,
            )
        js = self.runtime.js
        await bus.declare_stream(js, STREAMS[self.spec.name])
        await bus.declare_stream(js, DLQ)

    async def _on_nats_down(self) -> None:
        if not self._stopping:
            await self._set_health(NOT_SERVING)

    async def _on_nats_up(self) -> None:
        if not self._stopping and self._dependencies_ready.is_set():
            await self._set_health(SERVING)

    async def stop(self) -> None:
        """Drain: NOT_SERVING, finish in-flight calls within the grace period, then close."""
        if self._stopping:
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_seconds:
            await asyncio.sleep(self.settings.drain_seconds)  # the drain window itself
        await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.health_server is not None:
            await self.health_server.stop(0)
        # Relay and consumers notice the stop event within a poll; cancel only stragglers.
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.runtime.close()
        log.info("%s stopped", self.spec.name)

    async def wait_until_ready(self, timeout: float) -> None:
        await asyncio.wait_for(self._dependencies_ready.wait(), timeout)


async def serve(spec: ServiceSpec, settings: ServiceSettings) -> None:
    """Process entrypoint: run until SIGTERM/SIGINT, then shut down gracefully."""
    configure_logging(spec.name, settings.log_level, settings.log_format)
    configure_tracing(spec.name)
    app = ServiceApp(spec, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    await stop.wait()
    log.info("%s draining", spec.name)
    await app.stop()


def run(spec: ServiceSpec) -> None:
    """``python -m services.<name>`` / ``dwf serve <name>``: settings from ``DWF_*``."""
    asyncio.run(serve(spec, ServiceSettings(service=spec.name)))
