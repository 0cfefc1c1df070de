"""NATS JetStream: connection, idempotent stream/consumer declaration, and the consumer loop
with inbox dedupe, bounded redelivery with backoff, and a dead-letter stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from opentelemetry import trace
from sqlalchemy import text
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
from chassis.statements import insert_row
from chassis.telemetry import extract_context
from dwf.events.v1 import envelope_pb2

log = logging.getLogger("dwf.bus")

# A whole batch's inbox rows in one statement; returns the event ids seen for the first time.
_CLAIM_INBOX = text(
    """
    INSERT INTO inbox (consumer, event_id, event_type)
    SELECT :consumer, i, t FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) AS u(i, t)
    ON CONFLICT DO NOTHING
    RETURNING event_id::text
    """
)
_CLAIM_ONE = insert_row(
    inbox,
    frozenset(("consumer", "event_id", "event_type")),
    on_conflict="nothing",
    returning="event_id",
)
tracer = trace.get_tracer("dwf.bus")

DUPLICATE_WINDOW_SECONDS = 120.0
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600.0

Handler = Callable[[AsyncSession, envelope_pb2.EventEnvelope], Awaitable[None]]
# Names the row an event's handler locks (e.g. "order:<id>"), to order a batch by.
LockKey = Callable[[envelope_pb2.EventEnvelope], str]


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
    # When given, a batch is applied in the order of this key, stably (one key's events
    # keep their delivery order). Batches of other consumers or replicas that lock the same
    # rows then take their locks in one global order and queue instead of deadlocking.
    lock_key: LockKey | None = None


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
                await self.process_batch(messages)
        finally:
            await subscription.unsubscribe()

    async def process(self, msg: Msg) -> None:
        await self.process_batch([msg])

    async def process_batch(self, messages: Sequence[Msg]) -> None:
        """Apply a fetched batch in one transaction: one durable commit for many events.

        Optimistically first: one inbox statement for the events delivered for the first
        time, then each handler, with no savepoints. Handlers rarely fail, and the savepoint
        pair and the inbox insert per event were most of a consumer's statements. If anything
        fails, that transaction rolls back and the batch runs again with a savepoint per
        event, so a failing handler rolls back only its own effects (and is retried or
        dead-lettered alone)."""
        decoded: list[tuple[Msg, envelope_pb2.EventEnvelope, int]] = []
        for msg in messages:
            attempt = msg.metadata.num_delivered
            try:
                envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
            except Exception as exc:  # an undecodable body never gets better: dead-letter now
                await self._dead_letter(msg, None, f"undecodable envelope: {exc}", attempt)
                continue
            if attempt > self.max_deliver:
                await self._dead_letter(msg, envelope, "delivery budget exhausted", attempt)
                continue
            decoded.append((msg, envelope, attempt))
        if not decoded:
            return
        if self.spec.lock_key is not None and len(decoded) > 1:
            decoded.sort(key=lambda item: self._lock_key(item[1]))
        # A redelivered event failed before (or its ack was lost): it goes one at a time,
        # so a poison event does not make the whole batch run twice on every delivery.
        fresh = [item for item in decoded if item[2] == 1]
        again = [item for item in decoded if item[2] > 1]
        if len(fresh) > 1:
            try:
                await self._apply_batch(fresh)
            except Exception as exc:
                log.info(
                    "batch of %d on %s failed as a whole (%r); again, one event at a time",
                    len(fresh),
                    self.spec.durable,
                    exc,
                )
            else:
                for msg, _, _ in fresh:
                    await msg.ack()
                fresh = []
        if len(fresh) + len(again) == 1:
            await self._apply_one(*(fresh or again)[0])
        elif fresh or again:
            await self._apply_each([*fresh, *again])

    def _lock_key(self, envelope: envelope_pb2.EventEnvelope) -> str:
        assert self.spec.lock_key is not None
        try:
            return self.spec.lock_key(envelope)
        except Exception:  # the handler reports what is wrong with the event
            return ""

    async def _apply_one(
        self, msg: Msg, envelope: envelope_pb2.EventEnvelope, attempt: int
    ) -> None:
        """A lone event in its own transaction: nothing else to protect, so no savepoint."""
        with self._span(msg, envelope):
            try:
                await self._apply(envelope)
            except Exception as exc:
                await self._retry_or_dead_letter(msg, envelope, attempt, exc)
                return
        await msg.ack()

    async def _apply_batch(
        self, decoded: Sequence[tuple[Msg, envelope_pb2.EventEnvelope, int]]
    ) -> None:
        async with self.sessions.begin() as session:
            first_time = await self._claim_inbox(session, [e for _, e, _ in decoded])
            for msg, envelope, _ in decoded:
                if envelope.id not in first_time:
                    log.debug("duplicate %s dropped by inbox of %s", envelope.id, self.spec.durable)
                    continue
                first_time.discard(envelope.id)  # a repeat inside the batch runs once
                with self._span(msg, envelope):
                    await self.spec.handler(session, envelope)

    async def _claim_inbox(
        self, session: AsyncSession, envelopes: Sequence[envelope_pb2.EventEnvelope]
    ) -> set[str]:
        """Inbox rows for a batch in one statement; returns the ids seen for the first time."""
        unique = {envelope.id: envelope.type for envelope in envelopes}
        ids = sorted(unique)
        result = await session.execute(
            _CLAIM_INBOX,
            {"consumer": self.spec.durable, "ids": ids, "types": [unique[i] for i in ids]},
        )
        return set(result.scalars())

    async def _apply_each(
        self, decoded: Sequence[tuple[Msg, envelope_pb2.EventEnvelope, int]]
    ) -> None:
        applied: list[Msg] = []
        failed: list[tuple[Msg, envelope_pb2.EventEnvelope, int, Exception]] = []
        try:
            async with self.sessions.begin() as session:
                for msg, envelope, attempt in decoded:
                    with self._span(msg, envelope):
                        try:
                            async with session.begin_nested():
                                await self._apply_in(session, envelope)
                            applied.append(msg)
                        except Exception as exc:
                            failed.append((msg, envelope, attempt, exc))
        except Exception as commit_error:  # the commit itself failed: nothing was applied
            log.warning(
                "batch of %d on %s not committed (%r)",
                len(decoded),
                self.spec.durable,
                commit_error,
            )
            failed = [(m, e, a, commit_error) for m, e, a in decoded]
            applied = []
        for msg in applied:
            await msg.ack()
        for msg, envelope, attempt, error in failed:
            await self._retry_or_dead_letter(msg, envelope, attempt, error)

    def _span(self, msg: Msg, envelope: envelope_pb2.EventEnvelope) -> Any:
        """The consumer span of one message, continuing the producer's trace; it also sets
        the correlation and causation ids that events recorded by the handler inherit."""
        correlation_id_var.set(envelope.correlation_id or None)
        causation_id_var.set(envelope.id)
        return tracer.start_as_current_span(
            f"consume {msg.subject}",
            context=extract_context(msg.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.consumer.group.name": self.spec.durable,
                "dwf.event.id": envelope.id,
                "dwf.event.type": envelope.type,
            },
        )

    async def _retry_or_dead_letter(
        self, msg: Msg, envelope: envelope_pb2.EventEnvelope, attempt: int, exc: Exception
    ) -> None:
        if attempt >= self.max_deliver:
            log.error("giving up on %s after %d attempts: %s", envelope.id, attempt, exc)
            await self._dead_letter(msg, envelope, repr(exc), attempt)
            return
        delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
        log.warning(
            "attempt %d of %s failed (%r); retry in %.1fs", attempt, envelope.id, exc, delay
        )
        await msg.nak(delay=delay)

    async def _apply(self, envelope: envelope_pb2.EventEnvelope) -> None:
        """One event in its own transaction."""
        async with self.sessions.begin() as session:
            await self._apply_in(session, envelope)

    async def _apply_in(self, session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        """Inbox row and the handler's effects, in the caller's transaction."""
        first_time = await session.scalar(
            _CLAIM_ONE,
            {"consumer": self.spec.durable, "event_id": envelope.id, "event_type": envelope.type},
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
