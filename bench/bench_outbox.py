"""Chassis benchmark: the outbox path against raw JetStream, measured in the same run.

Figures printed:
* baseline: sequential JetStream publish + ack of N messages (what the relay does per event);
* outbox write: N transactions each recording one event (state change + outbox row);
* relay: publishing N pending outbox events (ratio against the baseline);
* end to end: commit of an event → a consumer's handler running (NOTIFY-woken relay), p50/p95.
Uses embedded Postgres/NATS unless DWF_DATABASE_URL / DWF_NATS_URL are set.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import nats
from sqlalchemy import text

from bench.support import servers
from chassis import bus, db
from chassis.events import DLQ, STREAMS
from chassis.outbox import EventRecorder, OutboxRelay
from dwf.events.v1 import envelope_pb2
from dwf.order.v1 import events_pb2

N = int(os.environ.get("DWF_BENCH_EVENTS", "2000"))
LATENCY_SAMPLES = int(os.environ.get("DWF_BENCH_LATENCY_SAMPLES", "200"))


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


async def main() -> None:
    async with servers() as env:
        engine = db.create_engine(
            env.service_urls["order_gateway"], "order_gateway", application_name="b"
        )
        consumer_engine = db.create_engine(
            env.service_urls["notifications"], "notifications", application_name="b"
        )
        nats_url, user, password = env.nats_url, env.nats_user, env.nats_password
        client = await nats.connect(nats_url, user=user, password=password)
        js = client.jetstream()
        await bus.declare_stream(js, STREAMS["order_gateway"])
        await bus.declare_stream(js, DLQ)
        payload = events_pb2.OrderStatusChanged(order_id="o" * 36, reason="bench")
        body = envelope_pb2.EventEnvelope(id=str(uuid.uuid4())).SerializeToString() + (
            payload.SerializeToString()
        )

        started = time.perf_counter()
        for i in range(N):
            await js.publish(
                "dwf.order_gateway.bench_baseline.v1",
                body,
                headers={"Nats-Msg-Id": f"b-{uuid.uuid4()}-{i}"},
            )
        baseline = time.perf_counter() - started

        recorder = EventRecorder("order_gateway", "order_gateway")
        sessions = db.session_factory(engine)
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE bench_plain (id text, body bytea)"))
        started = time.perf_counter()
        for i in range(N):
            async with sessions.begin() as session:
                await session.execute(
                    text("INSERT INTO bench_plain VALUES (:i, :b)"), {"i": str(i), "b": body}
                )
        plain = time.perf_counter() - started

        started = time.perf_counter()
        for i in range(N):
            async with sessions.begin() as session:
                await recorder.record(
                    session, aggregate_type="order", aggregate_id=f"bench-{i % 50}", payload=payload
                )
        writes = time.perf_counter() - started

        relay = OutboxRelay(engine, js, "order_gateway", batch_size=500)
        started = time.perf_counter()
        relayed = 0
        while relayed < N:
            relayed += await relay.relay_batch()
        relaying = time.perf_counter() - started

        latencies = await end_to_end(engine, consumer_engine, js, recorder, payload)

        print(f"events per run: {N}")
        print(f"baseline  raw JetStream publish+ack : {rate(N, baseline)}")
        print(f"baseline  plain 1-row transaction   : {rate(N, plain)}")
        print(
            f"outbox    record (1 event per tx)   : {rate(N, writes)}  "
            f"({(N / writes) / (N / plain):.2f}x plain transaction)"
        )
        print(
            f"relay     outbox → JetStream        : {rate(N, relaying)}  "
            f"({(N / relaying) / (N / baseline):.2f}x baseline)"
        )
        print(
            f"e2e       commit → consumer handler : p50 {latencies[0]:.1f} ms, "
            f"p95 {latencies[1]:.1f} ms over {LATENCY_SAMPLES} events"
        )
        await client.close()
        await engine.dispose()
        await consumer_engine.dispose()


async def end_to_end(engine, consumer_engine, js, recorder, payload) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    committed: dict[str, float] = {}
    seen: dict[str, float] = {}
    arrived = asyncio.Event()

    async def handler(session: object, envelope: envelope_pb2.EventEnvelope) -> None:
        seen[envelope.aggregate_id] = time.perf_counter()
        arrived.set()

    spec = bus.ConsumerSpec(
        durable=f"bench_{uuid.uuid4().hex[:6]}",
        stream=STREAMS["order_gateway"].name,
        subjects=["dwf.order_gateway.order_status_changed.v1"],
        handler=handler,
    )
    consumer = bus.Consumer(
        spec, service="notifications", js=js, sessions=db.session_factory(consumer_engine)
    )
    subscription = await consumer.declare()
    stop = asyncio.Event()
    relay = OutboxRelay(engine, js, "order_gateway", poll_interval=1.0)
    workers = [
        asyncio.create_task(consumer.consume(subscription, stop)),
        asyncio.create_task(relay.run(stop)),
    ]
    sessions = db.session_factory(engine)
    # Drain what the throughput part left behind before measuring.
    for i in range(LATENCY_SAMPLES):
        aggregate = f"latency-{i}"
        async with sessions.begin() as session:
            await recorder.record(
                session, aggregate_type="order", aggregate_id=aggregate, payload=payload
            )
        committed[aggregate] = time.perf_counter()
        while aggregate not in seen:
            arrived.clear()
            await arrived.wait()
    stop.set()
    await asyncio.gather(*workers)
    samples = sorted((seen[a] - committed[a]) * 1000 for a in committed)
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


if __name__ == "__main__":
    asyncio.run(main())
