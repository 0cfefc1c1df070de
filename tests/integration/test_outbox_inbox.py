"""Outbox → relay → JetStream → consumer → inbox, on real Postgres and NATS JetStream."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from chassis import bus
from chassis.events import DLQ, STREAMS, dlq_subject
from chassis.outbox import OutboxRelay
from chassis.schema import dead_letter, inbox, outbox
from chassis.server import Runtime
from dwf.events.v1 import envelope_pb2
from dwf.order.v1 import events_pb2
from tests.conftest import Databases, NatsServer
from tests.integration.harness import eventually, settings_for

pytestmark = pytest.mark.integration

PRODUCER = "order_gateway"
CONSUMER = "notifications"
STREAM = STREAMS[PRODUCER].name
SUBJECT = "dwf.order_gateway.order_status_changed.v1"


async def _runtime(service: str, databases: Databases, nats: NatsServer) -> Runtime:
    settings = settings_for(service, databases, nats)
    runtime = Runtime(settings)
    runtime.nats = await bus.connect(
        settings.nats_url,
        name=f"test-{service}",
        user=settings.nats_user,
        password=settings.nats_password,
    )
    await bus.declare_stream(runtime.js, STREAMS[service])
    await bus.declare_stream(runtime.js, DLQ)
    return runtime


@pytest.fixture
async def producer(databases: Databases, nats_server: NatsServer) -> AsyncIterator[Runtime]:
    runtime = await _runtime(PRODUCER, databases, nats_server)
    yield runtime
    assert runtime.nats is not None
    await runtime.nats.close()
    await runtime.engine.dispose()


@pytest.fixture
async def consumer_runtime(databases: Databases, nats_server: NatsServer) -> AsyncIterator[Runtime]:
    runtime = await _runtime(CONSUMER, databases, nats_server)
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS test_effect (event_id text, aggregate_id text, "
                "sequence bigint)"
            )
        )
    yield runtime
    assert runtime.nats is not None
    await runtime.nats.close()
    await runtime.engine.dispose()


@dataclass
class Recorder:
    """A consumer handler that applies an effect and counts its calls."""

    calls: list[str] = field(default_factory=list)
    seen: dict[str, asyncio.Event] = field(default_factory=dict)
    fail: bool = False
    fail_for: set[str] = field(default_factory=set)  # aggregates whose events always fail

    def expect(self, aggregate_id: str) -> asyncio.Event:
        return self.seen.setdefault(aggregate_id, asyncio.Event())

    async def __call__(self, session: object, envelope: envelope_pb2.EventEnvelope) -> None:
        self.calls.append(envelope.aggregate_id)
        if self.fail or envelope.aggregate_id in self.fail_for:
            self.expect(envelope.aggregate_id).set()
            raise RuntimeError("handler always fails")
        await session.execute(  # type: ignore[attr-defined]
            text("INSERT INTO test_effect VALUES (:id, :agg, :seq)"),
            {"id": envelope.id, "agg": envelope.aggregate_id, "seq": envelope.sequence},
        )
        self.expect(envelope.aggregate_id).set()


async def _record(runtime: Runtime, aggregate_id: str) -> envelope_pb2.EventEnvelope:
    async with runtime.sessions.begin() as session:
        return await runtime.events.record(
            session,
            aggregate_type="order",
            aggregate_id=aggregate_id,
            payload=events_pb2.OrderStatusChanged(order_id=aggregate_id, reason="test"),
        )


async def _effects(runtime: Runtime, aggregate_id: str) -> int:
    async with runtime.engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT count(*) FROM test_effect WHERE aggregate_id = :a"),
                {"a": aggregate_id},
            )
            or 0
        )


def _consumer(
    runtime: Runtime, handler: Recorder, subject: str = SUBJECT, **kwargs: object
) -> bus.Consumer:
    spec = bus.ConsumerSpec(
        durable=f"test_{uuid.uuid4().hex[:10]}",
        stream=STREAM,
        subjects=[subject],
        handler=handler,
    )
    options: dict[str, object] = {
        "max_deliver": 3,
        "backoff_seconds": [0.05],
        "ack_wait_seconds": 5.0,
    }
    options.update(kwargs)
    return bus.Consumer(spec, service=CONSUMER, js=runtime.js, sessions=runtime.sessions, **options)  # type: ignore[arg-type]


async def _publish_copies(
    producer: Runtime, subject: str, envelopes: Sequence[envelope_pb2.EventEnvelope]
) -> None:
    """The envelopes again on a test's own subject, after the relay sent the originals, so
    a consumer of that subject sees exactly these, in this order."""
    await OutboxRelay(producer.engine, producer.js, PRODUCER).relay_batch()  # leave none behind
    for envelope in envelopes:
        await producer.js.publish(
            subject, envelope.SerializeToString(), headers={"Nats-Msg-Id": f"copy-{envelope.id}"}
        )


def _batch_sizes(consumer: bus.Consumer) -> list[int]:
    """The sizes of the batches the consumer goes on to process, in order."""
    sizes: list[int] = []
    original_batch = consumer.process_batch

    async def counted(messages: Sequence[object]) -> None:
        sizes.append(len(messages))
        await original_batch(messages)  # type: ignore[arg-type]

    consumer.process_batch = counted  # type: ignore[method-assign,assignment]
    return sizes


class Running:
    def __init__(self, consumer: bus.Consumer) -> None:
        self.stop = asyncio.Event()
        self.consumer = consumer
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> bus.Consumer:
        subscription = await self.consumer.declare()
        self.task = asyncio.create_task(self.consumer.consume(subscription, self.stop))
        return self.consumer

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def test_round_trip_orders_sequences_and_records_inbox(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    aggregate = f"order-{uuid.uuid4()}"
    first = await _record(producer, aggregate)
    second = await _record(producer, aggregate)
    assert (first.sequence, second.sequence) == (1, 2)
    assert first.producer == PRODUCER and first.type == "dwf.order.v1.OrderStatusChanged"

    relay = OutboxRelay(producer.engine, producer.js, PRODUCER)
    assert await relay.relay_batch() >= 2
    async with producer.engine.connect() as conn:
        unpublished = await conn.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.aggregate_id == aggregate, outbox.c.published_at.is_(None))
        )
    assert unpublished == 0

    handler = Recorder()
    async with Running(_consumer(consumer_runtime, handler)) as consumer:
        await eventually(lambda: _count(consumer_runtime, aggregate, 2), what="two effects")
        async with consumer_runtime.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        text("SELECT sequence FROM test_effect WHERE aggregate_id = :a ORDER BY 1"),
                        {"a": aggregate},
                    )
                )
                .scalars()
                .all()
            )
            inbox_rows = await conn.scalar(
                select(func.count())
                .select_from(inbox)
                .where(
                    inbox.c.consumer == consumer.spec.durable,
                    inbox.c.event_id.in_([first.id, second.id]),
                )
            )
    assert rows == [1, 2]
    assert inbox_rows == 2


async def test_one_recording_numbers_interleaved_aggregates_in_the_order_given(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    """One record_many over two aggregates, one of them with an event already: each
    aggregate's events get its next sequences in the order given, the outbox keeps that
    order, and the published envelopes carry the same sequences."""
    a, b = f"order-{uuid.uuid4()}", f"order-{uuid.uuid4()}"
    await _record(producer, a)
    order = [a, b, a, a, b]
    async with producer.sessions.begin() as session:
        envelopes = await producer.events.record_many(
            session,
            [("order", x, events_pb2.OrderStatusChanged(order_id=x, reason="t")) for x in order],
        )
    assert [(e.aggregate_id, e.sequence) for e in envelopes] == [
        (a, 2),
        (b, 1),
        (a, 3),
        (a, 4),
        (b, 2),
    ]
    async with producer.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(outbox.c.event_id, outbox.c.sequence)
                .where(outbox.c.event_id.in_([e.id for e in envelopes]))
                .order_by(outbox.c.position)
            )
        ).all()
    assert [(str(r.event_id), r.sequence) for r in stored] == [
        (e.id, e.sequence) for e in envelopes
    ]

    relay = OutboxRelay(producer.engine, producer.js, PRODUCER)
    while await relay.relay_batch():
        pass
    handler = Recorder()
    async with Running(_consumer(consumer_runtime, handler)):
        await eventually(lambda: _count(consumer_runtime, b, 2), what="b's two effects")
        await eventually(lambda: _count(consumer_runtime, a, 4), what="a's four effects")
    async with consumer_runtime.engine.connect() as conn:
        seen = {
            row.event_id: row.sequence
            for row in await conn.execute(
                text("SELECT event_id, sequence FROM test_effect WHERE aggregate_id IN (:a, :b)"),
                {"a": a, "b": b},
            )
        }
    assert {e.id: e.sequence for e in envelopes}.items() <= seen.items()


async def _count(runtime: Runtime, aggregate: str, want: int) -> bool:
    return await _effects(runtime, aggregate) >= want


async def test_duplicate_publish_is_a_no_op(producer: Runtime, consumer_runtime: Runtime) -> None:
    """The same event published again after the broker's dedupe window: inbox drops it."""
    aggregate = f"order-{uuid.uuid4()}"
    envelope = await _record(producer, aggregate)
    await OutboxRelay(producer.engine, producer.js, PRODUCER).relay_batch()
    # A second copy under another Nats-Msg-Id gets past the broker's duplicate window.
    republished = await producer.js.publish(
        SUBJECT, envelope.SerializeToString(), headers={"Nats-Msg-Id": f"again-{envelope.id}"}
    )
    handler = Recorder()
    async with Running(_consumer(consumer_runtime, handler)) as consumer:

        async def both_handled() -> bool:
            info = await consumer_runtime.js.consumer_info(STREAM, consumer.spec.durable)
            return bool(info.delivered.stream_seq >= republished.seq and info.num_ack_pending == 0)

        await eventually(both_handled, what="the duplicate to be delivered and acked")
    assert await _effects(consumer_runtime, aggregate) == 1
    assert handler.calls.count(aggregate) == 1


async def test_redelivery_after_committed_effect_is_a_no_op(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    """The effect commits but the ack is lost (crash): the redelivery must change nothing."""
    aggregate = f"order-{uuid.uuid4()}"
    # On a subject of its own: the first delivery, whose ack is lost, must be this event,
    # not an older one other tests left on the shared subject.
    subject = f"dwf.{PRODUCER}.redelivery_test_{uuid.uuid4().hex[:8]}.v1"
    await _publish_copies(producer, subject, [await _record(producer, aggregate)])
    handler = Recorder()
    consumer = _consumer(consumer_runtime, handler, subject)
    deliveries: list[int] = []
    original_batch = consumer.process_batch

    async def lose_first_ack(messages: Sequence[object]) -> None:
        for msg in messages:
            deliveries.append(msg.metadata.num_delivered)  # type: ignore[attr-defined]
            if len(deliveries) == 1:
                await consumer._apply(bus_envelope(msg))  # effect committed...
                await msg.nak(delay=0.05)  # type: ignore[attr-defined]  # ...then no ack
                continue
            await original_batch([msg])  # type: ignore[list-item]

    consumer.process_batch = lose_first_ack  # type: ignore[method-assign,assignment]
    async with Running(consumer):
        await eventually(lambda: _delivered_twice(deliveries), what="a redelivery")

        async def settled() -> bool:
            info = await consumer_runtime.js.consumer_info(STREAM, consumer.spec.durable)
            return bool(
                info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0
            )

        await eventually(settled, what="the redelivery to be acked")
    assert deliveries == [1, 2]  # this event, its ack lost, then its redelivery
    assert await _effects(consumer_runtime, aggregate) == 1
    assert handler.calls.count(aggregate) == 1


def bus_envelope(msg: object) -> envelope_pb2.EventEnvelope:
    return envelope_pb2.EventEnvelope.FromString(msg.data)  # type: ignore[attr-defined]


async def _delivered_twice(deliveries: list[int]) -> bool:
    return len(deliveries) >= 2


async def test_dead_letter_after_max_deliveries(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    aggregate = f"order-{uuid.uuid4()}"
    envelope = await _record(producer, aggregate)
    await OutboxRelay(producer.engine, producer.js, PRODUCER).relay_batch()
    handler = Recorder(fail=True)
    consumer = _consumer(consumer_runtime, handler, max_deliver=3)

    async def dead_lettered() -> object:
        async with consumer_runtime.engine.connect() as conn:
            return (
                await conn.execute(select(dead_letter).where(dead_letter.c.event_id == envelope.id))
            ).first()

    async with Running(consumer):
        row = await eventually(dead_lettered, what="a dead_letter row")
    # Three deliveries, each running the handler (the first maybe twice: in its batch, then
    # alone), and no effect.
    assert 3 <= handler.calls.count(aggregate) <= 4
    assert row.deliveries == 3 and row.consumer == consumer.spec.durable  # type: ignore[attr-defined]
    assert "handler always fails" in row.error  # type: ignore[attr-defined]
    dlq_message = await consumer_runtime.js.get_last_msg(
        DLQ.name, dlq_subject(CONSUMER, consumer.spec.durable)
    )
    assert envelope_pb2.EventEnvelope.FromString(dlq_message.data).id == envelope.id
    assert dlq_message.headers is not None
    assert dlq_message.headers["dwf-dlq-original-subject"] == SUBJECT
    assert await _effects(consumer_runtime, aggregate) == 0


async def test_one_failing_event_in_a_batch_leaves_the_others_applied_once(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    """A batch is applied in one transaction; when one handler fails the batch runs again
    event by event: the others take effect exactly once, the failing one alone is retried
    and dead-lettered, and every message is settled."""
    good = [f"order-{uuid.uuid4()}" for _ in range(5)]
    bad = f"order-{uuid.uuid4()}"
    # A subject of this test's own, so the six events are all the consumer sees.
    subject = f"dwf.{PRODUCER}.batch_test_{uuid.uuid4().hex[:8]}.v1"
    envelopes = [await _record(producer, aggregate) for aggregate in [*good[:2], bad, *good[2:]]]
    await _publish_copies(producer, subject, envelopes)
    handler = Recorder(fail_for={bad})
    consumer = _consumer(consumer_runtime, handler, subject, max_deliver=2)
    batches = _batch_sizes(consumer)

    async def dead_lettered() -> object:
        async with consumer_runtime.engine.connect() as conn:
            return (
                await conn.execute(
                    select(dead_letter).where(dead_letter.c.event_id == envelopes[2].id)
                )
            ).first()

    async with Running(consumer):
        row = await eventually(dead_lettered, what="the failing event dead-lettered")

        async def settled() -> bool:
            info = await consumer_runtime.js.consumer_info(STREAM, consumer.spec.durable)
            return bool(info.num_ack_pending == 0 and info.num_pending == 0)

        await eventually(settled, what="every message settled")
    assert batches[0] == 6  # the six arrived as one batch
    assert [await _effects(consumer_runtime, aggregate) for aggregate in good] == [1] * 5
    assert await _effects(consumer_runtime, bad) == 0
    assert row.deliveries == 2  # type: ignore[attr-defined]
    # In the batch, then alone; its redelivery runs alone at once.
    assert handler.calls.count(bad) == 3
    # The batch attempt stopped at the failing event: the two before it ran twice.
    assert [handler.calls.count(aggregate) for aggregate in good] == [2, 2, 1, 1, 1]


async def test_a_batch_is_applied_in_lock_key_order_keeping_each_keys_own_order(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    """With a lock key, the consumer applies a fetched batch sorted by it, stably: every
    batch takes its row locks in one global order (no deadlock between consumers that lock
    the same rows), and one aggregate's events still apply in the order they were sent."""
    a, b, c = (f"order-{letter}-{uuid.uuid4()}" for letter in "abc")
    subject = f"dwf.{PRODUCER}.lock_order_test_{uuid.uuid4().hex[:8]}.v1"
    envelopes = [await _record(producer, aggregate) for aggregate in [c, a, b, a, c, a]]
    await _publish_copies(producer, subject, envelopes)
    applied: list[str] = []
    handler = Recorder()

    async def recording(session: object, envelope: envelope_pb2.EventEnvelope) -> None:
        applied.append(envelope.id)
        await handler(session, envelope)

    consumer = _consumer(consumer_runtime, handler, subject)
    consumer.spec = dataclasses.replace(
        consumer.spec, handler=recording, lock_key=lambda envelope: envelope.aggregate_id
    )
    batches = _batch_sizes(consumer)

    async def all_applied() -> bool:
        return len(applied) == 6

    async with Running(consumer):
        await eventually(all_applied, what="all six applied")
    assert batches[0] == 6  # one batch, so its order is the consumer's choice
    order_of = {envelope.id: i for i, envelope in enumerate(envelopes)}
    by_key = sorted(envelopes, key=lambda e: (e.aggregate_id, order_of[e.id]))
    assert applied == [envelope.id for envelope in by_key]
    assert handler.calls == [a, a, a, b, c, c]


RELAY_CRASH_SCRIPT = Path(__file__).with_name("relay_crash.py")


async def test_relay_killed_between_publish_and_mark_sent_causes_no_duplicate(
    producer: Runtime, consumer_runtime: Runtime
) -> None:
    aggregate = f"order-{uuid.uuid4()}"
    envelope = await _record(producer, aggregate)
    settings = producer.settings
    env = {
        **os.environ,
        "DWF_SERVICE": PRODUCER,
        "DWF_DATABASE_URL": settings.database_url,
        "DWF_NATS_URL": settings.nats_url,
        "DWF_NATS_USER": settings.nats_user or "",
        "DWF_NATS_PASSWORD": settings.nats_password or "",
    }
    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(RELAY_CRASH_SCRIPT)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    assert f"published {envelope.id}".encode() in crashed.stdout

    async with producer.engine.connect() as conn:
        published_at = await conn.scalar(
            select(outbox.c.published_at).where(outbox.c.event_id == envelope.id)
        )
    assert published_at is None, "the killed relay must not have marked the event sent"
    last_seq = (await producer.js.stream_info(STREAM)).state.last_seq

    assert await OutboxRelay(producer.engine, producer.js, PRODUCER).relay_batch() >= 1
    assert (await producer.js.stream_info(STREAM)).state.last_seq == last_seq, (
        "the republish must be dropped by the stream's duplicate window"
    )
    handler = Recorder()
    async with Running(_consumer(consumer_runtime, handler)):
        await eventually(lambda: _count(consumer_runtime, aggregate, 1), what="the effect")
    assert await _effects(consumer_runtime, aggregate) == 1
