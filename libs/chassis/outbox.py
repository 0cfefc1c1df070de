"""Transactional outbox: record an event in the same transaction as the state change, and a
relay that publishes recorded events to JetStream in order.

* Ordering: each event takes the next per-aggregate sequence from ``aggregate_sequence`` (the
  row lock serialises writers of one aggregate), and the relay publishes in ``position`` order
  while holding a per-schema advisory lock, so one relay publishes at a time and an aggregate's
  events reach the stream in sequence order.
* Safety with several relays: the advisory lock is taken with ``pg_try_``: the other relays
  simply find nothing to do until the holder's batch commits.
* Exactly-once effect: the relay publishes with ``Nats-Msg-Id`` = event id, so a relay that dies
  between publish and mark-sent leads to a republish the stream drops as a duplicate (and a
  consumer's inbox drops it if the duplicate window has passed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from nats.js import JetStreamContext
from opentelemetry import trace
from sqlalchemy import ARRAY, BigInteger, any_, bindparam, func, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from chassis.context import causation_id_var, correlation_id_var, new_id
from chassis.events import (
    HEADER_CORRELATION_ID,
    HEADER_EVENT_TYPE,
    HEADER_MSG_ID,
    event_type,
    subject_for,
)
from chassis.schema import outbox
from chassis.telemetry import extract_context, inject_headers
from dwf.events.v1 import envelope_pb2

log = logging.getLogger("dwf.outbox")
tracer = trace.get_tracer("dwf.outbox")


def notify_channel(schema: str) -> str:
    return f"dwf_outbox_{schema}"


# One statement records a batch of events: it takes every aggregate's next sequences (the row
# lock on aggregate_sequence serialises writers of one aggregate; keys arrive sorted, so
# writers lock in one order) and inserts the outbox rows numbered from them, in the order
# given (positions follow it). An event's sequence is its aggregate's new last_sequence
# minus the events of that aggregate in this batch plus its own rank among them.
_RECORD_EVENTS = text(
    """
    WITH taken AS (
        INSERT INTO aggregate_sequence (aggregate_type, aggregate_id, last_sequence)
        SELECT * FROM unnest(CAST(:types AS text[]), CAST(:ids AS text[]),
                             CAST(:counts AS bigint[]))
        ON CONFLICT (aggregate_type, aggregate_id)
        DO UPDATE SET last_sequence = aggregate_sequence.last_sequence + excluded.last_sequence
        RETURNING aggregate_type, aggregate_id, last_sequence
    )
    INSERT INTO outbox (event_id, subject, event_type, aggregate_type, aggregate_id,
                        sequence, body, headers)
    SELECT e.event_id, e.subject, e.event_type, e.aggregate_type, e.aggregate_id,
           taken.last_sequence - e.of_aggregate + e.rank, e.body, e.headers
    FROM unnest(CAST(:event_id AS uuid[]), CAST(:subject AS text[]),
                CAST(:event_type AS text[]), CAST(:aggregate_type AS text[]),
                CAST(:aggregate_id AS text[]), CAST(:rank AS bigint[]),
                CAST(:of_aggregate AS bigint[]), CAST(:body AS bytea[]),
                CAST(:headers AS jsonb[]))
         WITH ORDINALITY
         AS e(event_id, subject, event_type, aggregate_type, aggregate_id, rank,
              of_aggregate, body, headers, ordinal)
    JOIN taken USING (aggregate_type, aggregate_id)
    ORDER BY e.ordinal
    RETURNING event_id, sequence
    """
)


def published_body(body: bytes, sequence: int) -> bytes:
    """The envelope as published: the outbox stores it without its sequence (known only
    once the recording statement ran) and the relay adds it. Concatenated protobuf
    messages parse as one merged message, so this is the envelope with ``sequence`` set."""
    return body + envelope_pb2.EventEnvelope(sequence=sequence).SerializeToString()


class PendingEvent(NamedTuple):
    aggregate_type: str
    aggregate_id: str
    payload: Message
    correlation_id: str | None = None
    trace_headers: dict[str, str] | None = None  # W3C context captured from the caller


def caller_context() -> tuple[str | None, dict[str, str]]:
    """The current correlation id and trace headers, to attach to a deferred event."""
    headers: dict[str, str] = {}
    inject_headers(headers)
    return correlation_id_var.get(), headers


class EventRecorder:
    """Writes events into the outbox of the producing service, inside the caller's transaction."""

    def __init__(self, producer: str, schema: str) -> None:
        self.producer = producer

    async def record(
        self,
        session: AsyncSession,
        *,
        aggregate_type: str,
        aggregate_id: str,
        payload: Message,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> envelope_pb2.EventEnvelope:
        (envelope,) = await self.record_many(
            session,
            [(aggregate_type, aggregate_id, payload)],
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        return envelope

    async def record_many(
        self,
        session: AsyncSession,
        events: Sequence[tuple[str, str, Message] | PendingEvent],
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> list[envelope_pb2.EventEnvelope]:
        """Record several events with one statement: it takes every aggregate's next
        sequences and inserts the outbox rows. Events of one aggregate keep their order.
        A :class:`PendingEvent` carries its own correlation id and trace headers (events
        of coalesced requests each keep their caller's)."""
        if not events:
            return []
        pending = [e if isinstance(e, PendingEvent) else PendingEvent(*e) for e in events]
        correlation = correlation_id or correlation_id_var.get() or new_id()
        causation = causation_id or causation_id_var.get() or ""
        occurred_at = _now()
        headers_base: dict[str, str] = {}
        inject_headers(headers_base)  # the trace continues when the relay publishes
        counts: dict[tuple[str, str], int] = {}
        envelopes: list[envelope_pb2.EventEnvelope] = []
        columns: dict[str, list[Any]] = {
            name: []
            for name in (
                "event_id",
                "subject",
                "event_type",
                "aggregate_type",
                "aggregate_id",
                "rank",
                "body",
                "headers",
            )
        }
        for aggregate_type, aggregate_id, payload, own_correlation, own_headers in pending:
            key = (aggregate_type, aggregate_id)
            rank = counts[key] = counts.get(key, 0) + 1
            # Without its sequence: the statement numbers the row, the relay completes it.
            envelope = envelope_pb2.EventEnvelope(
                id=new_id(),
                type=event_type(payload),
                occurred_at=occurred_at,
                producer=self.producer,
                correlation_id=own_correlation or correlation,
                causation_id=causation,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
            )
            envelope.payload.Pack(payload)
            envelopes.append(envelope)
            columns["event_id"].append(envelope.id)
            columns["subject"].append(subject_for(self.producer, envelope.type))
            columns["event_type"].append(envelope.type)
            columns["aggregate_type"].append(aggregate_type)
            columns["aggregate_id"].append(aggregate_id)
            columns["rank"].append(rank)
            columns["body"].append(envelope.SerializeToString())
            columns["headers"].append(
                json.dumps(
                    {
                        **(own_headers if own_headers is not None else headers_base),
                        HEADER_EVENT_TYPE: envelope.type,
                        HEADER_CORRELATION_ID: envelope.correlation_id,
                    }
                )
            )
        # Sorted keys: concurrent writers lock aggregate rows in one order (no deadlock).
        keys = sorted(counts)
        columns["of_aggregate"] = [
            counts[(t, i)]
            for t, i in zip(columns["aggregate_type"], columns["aggregate_id"], strict=True)
        ]
        # The outbox_notify trigger wakes the relay at commit (chassis.schema).
        rows = await session.execute(
            _RECORD_EVENTS,
            {
                "types": [t for t, _ in keys],
                "ids": [i for _, i in keys],
                "counts": [counts[key] for key in keys],
                **columns,
            },
        )
        sequences = {str(row.event_id): row.sequence for row in rows}
        for envelope in envelopes:
            envelope.sequence = sequences[envelope.id]
        return envelopes


# The relay's statements, built once: it runs them after every commit that wrote events, and
# building a statement (and its cache key) costs more than executing it.
# One relay per schema at a time (per-aggregate order): the batch is read only by the
# transaction that got the lock; the others read nothing. One statement, lock and read.
_LOCK_AND_READ_UNPUBLISHED = text(
    """
    WITH relay AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(hashtext(:name)) AS held)
    SELECT position, event_id, subject, sequence, body, headers
    FROM outbox, relay
    WHERE relay.held AND published_at IS NULL
    ORDER BY position
    LIMIT :limit
    """
).columns(
    outbox.c.position,
    outbox.c.event_id,
    outbox.c.subject,
    outbox.c.sequence,
    outbox.c.body,
    outbox.c.headers,
)
_MARK_PUBLISHED = (
    update(outbox)
    .where(outbox.c.position == any_(bindparam("positions", type_=ARRAY(BigInteger))))
    .values(published_at=func.now())
)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


PublishedHook = Callable[[str], Awaitable[None]]


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        schema: str,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        after_publish: PublishedHook | None = None,
    ) -> None:
        self.engine = engine
        self.js = js
        self.schema = schema
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # Test seam: runs after a message is acknowledged by the stream, before mark-sent.
        self.after_publish = after_publish
        self._wake = asyncio.Event()

    async def relay_batch(self) -> int:
        """Publish up to one batch; 0 when there is nothing to do or another relay holds it."""
        async with self.engine.begin() as conn:
            params = {"name": f"dwf-relay:{self.schema}", "limit": self.batch_size}
            rows = (await conn.execute(_LOCK_AND_READ_UNPUBLISHED, params)).all()
            # Pipelined: every publish is sent before the first ack is awaited. One
            # connection keeps the stream's order, so per-aggregate order holds.
            acks = [await self._publish(row) for row in rows]
            for row, ack in zip(rows, acks, strict=True):
                await ack  # raises if the stream refused it: nothing is marked, all retried
                if self.after_publish is not None:
                    await self.after_publish(row.event_id)
            if rows:
                await conn.execute(_MARK_PUBLISHED, {"positions": [row.position for row in rows]})
            return len(rows)

    async def _publish(self, row: Any) -> asyncio.Future[Any]:
        headers: dict[str, str] = dict(row.headers)
        parent = extract_context(headers)
        with tracer.start_as_current_span(
            f"publish {row.subject}", context=parent, kind=trace.SpanKind.PRODUCER
        ):
            inject_headers(headers)
            headers[HEADER_MSG_ID] = row.event_id
            return await self.js.publish_async(
                row.subject, published_body(row.body, row.sequence), headers=headers
            )

    async def run(self, stop: asyncio.Event) -> None:
        async with self.engine.connect() as listen_conn:
            raw = await listen_conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            channel = notify_channel(self.schema)
            await driver.add_listener(channel, self._on_notify)
            try:
                while not stop.is_set():
                    self._wake.clear()
                    try:
                        published = await self.relay_batch()
                    except Exception:
                        log.exception("outbox relay batch failed; retrying")
                        published = 0
                    if published >= self.batch_size:
                        continue
                    await _wait_any(self._wake, stop, timeout=self.poll_interval)
            finally:
                await driver.remove_listener(channel, self._on_notify)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
