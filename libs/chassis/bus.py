"""NATS JetStream: connection, idempotent stream/consumer declaration, and the consumer loop
with inbox dedupe, bounded redelivery with backoff, and a dead-letter stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from opentelemetry import trace
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chassis.context import causation_id_var, correlation_id_var
from chassis.events import (
    DLQ,
    HEADER_DLQ_DELIVERIES,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_SUBJECT,
    HEADER_MSG_ID,
    StreamSpec,
    dlq_subject,
)
from chassis.schema import dead_letter, inbox
from chassis.telemetry import extract_context
from dwf.events.v1 import envelope_pb2

log = logging.getLogger("dwf.bus")
tracer = trace.get_tracer("dwf.bus")

DUPLICATE_WINDOW_SECONDS = 120.0
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600.0

Handler = Callable[[AsyncSession, envelope_pb2.EventEnvelope], Awaitable[None]]


async def connect(
    url: str,
    *,
    name: str,
    user: str | None = None,
    password: str | None = None,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
) -> NatsClient:
    async def _error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)
        if on_error is not None:
            await on_error(exc)

    async def _disconnected() -> None:
        log.warning("nats disconnected")
        if on_disconnect is not None:
            await on_disconnect()

    async def _reconnected() -> None:
        log.info("nats reconnected")
        if on_reconnect is not None:
            await on_reconnect()

    return await nats.connect(
        servers=[server.strip() for server in url.split(",")],
        name=name,
        user=user,
        password=password,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_error,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
    )


async def declare_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        max_age=STREAM_MAX_AGE_SECONDS,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer and the handler that applies each event."""

    durable: str
    stream: str
    subjects: Sequence[str]
    handler: Handler


class Consumer:
    """Runs one durable consumer: inbox dedupe in the handler's transaction, explicit acks,
    redelivery with backoff, dead letter after ``max_deliver`` failed attempts."""

    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        service: str,
        js: JetStreamContext,
        sessions: async_sessionmaker[AsyncSession],
        max_deliver: int = 5,
        ack_wait_seconds: float = 30.0,
        backoff_seconds: Sequence[float] = (0.5, 2.0, 10.0, 30.0),
        fetch_batch: int = 32,
    ) -> None:
        self.spec = spec
        self.service = service
        self.js = js
        self.sessions = sessions
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait_seconds
        self.backoff = list(backoff_seconds) or [1.0]
        self.fetch_batch = fetch_batch

    async def declare(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            name=self.spec.durable,
            durable_name=self.spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # One delivery beyond our budget: a process that died during the last attempt
            # still gets the message back, and dead-letters it without running the handler.
            max_deliver=self.max_deliver + 1,
            filter_subjects=list(self.spec.subjects),
        )
        await self.js.add_consumer(self.spec.stream, config)
        return await self.js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)

    async def run(self, stop: asyncio.Event) -> None:
        await self.consume(await self.declare(), stop)

    async def consume(
        self, subscription: JetStreamContext.PullSubscription, stop: asyncio.Event
    ) -> None:
        try:
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(self.fetch_batch, timeout=1.0)
                except TimeoutError:
                    continue
                except Exception:
                    if stop.is_set():
                        break
                    log.exception("fetch failed on %s", self.spec.durable)
                    await asyncio.sleep(0.5)  # back off from a broken connection, not a sync
                    continue
                for message in messages:
                    await self.process(message)
        finally:
            await subscription.unsubscribe()

    async def process(self, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered
        try:
            envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
        except Exception as exc:  # an undecodable body never gets better: dead-letter now
            await self._dead_letter(msg, None, f"undecodable envelope: {exc}", attempt)
            return
        parent = extract_context(msg.headers)
        with tracer.start_as_current_span(
            f"consume {msg.subject}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.consumer.group.name": self.spec.durable,
                "dwf.event.id": envelope.id,
                "dwf.event.type": envelope.type,
            },
        ):
            correlation_id_var.set(envelope.correlation_id or None)
            causation_id_var.set(envelope.id)
            if attempt > self.max_deliver:
                await self._dead_letter(msg, envelope, "delivery budget exhausted", attempt)
                return
            try:
                await self._apply(envelope)
            except Exception as exc:
                if attempt >= self.max_deliver:
                    log.error("giving up on %s after %d attempts: %s", envelope.id, attempt, exc)
                    await self._dead_letter(msg, envelope, repr(exc), attempt)
                else:
                    delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                    log.warning(
                        "attempt %d of %s failed (%r); retry in %.1fs",
                        attempt,
                        envelope.id,
                        exc,
                        delay,
                    )
                    await msg.nak(delay=delay)
                return
            await msg.ack()

    async def _apply(self, envelope: envelope_pb2.EventEnvelope) -> None:
        async with self.sessions.begin() as session:
            first_time = await session.scalar(
                insert(inbox)
                .values(consumer=self.spec.durable, event_id=envelope.id, event_type=envelope.type)
                .on_conflict_do_nothing()
                .returning(inbox.c.event_id)
            )
            if first_time is None:
                log.debug("duplicate %s dropped by inbox of %s", envelope.id, self.spec.durable)
                return
            await self.spec.handler(session, envelope)

    async def _dead_letter(
        self,
        msg: Msg,
        envelope: envelope_pb2.EventEnvelope | None,
        error: str,
        attempt: int,
    ) -> None:
        event_id = envelope.id if envelope is not None else f"seq-{msg.metadata.sequence.stream}"
        headers = dict(msg.headers or {})
        headers.update(
            {
                HEADER_MSG_ID: f"{self.spec.durable}:{event_id}",
                HEADER_DLQ_ERROR: error[:1000],
                HEADER_DLQ_SUBJECT: msg.subject,
                HEADER_DLQ_DELIVERIES: str(attempt),
            }
        )
        await self.js.publish(
            dlq_subject(self.service, self.spec.durable),
            msg.data,
            headers=headers,
            stream=DLQ.name,
        )
        async with self.sessions.begin() as session:
            await session.execute(
                insert(dead_letter)
                .values(
                    consumer=self.spec.durable,
                    event_id=event_id,
                    event_type=envelope.type if envelope is not None else "",
                    subject=msg.subject,
                    stream_sequence=msg.metadata.sequence.stream,
                    deliveries=attempt,
                    error=error,
                    body=msg.data,
                    headers=dict(msg.headers or {}),
                )
                .on_conflict_do_nothing()
            )
        await msg.term()
