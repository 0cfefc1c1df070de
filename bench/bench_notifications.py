"""Notifications benchmark (issue 6), against a baseline measured in the same run:

* baseline: raw signed-size HTTP POSTs with httpx to the same instant local receiver, 32 in
  flight (what a delivery costs on the wire, without dwf);
* dwf: OrderStatusChanged events published to JetStream → the notifications service (its own
  process) maps, queues, signs and delivers them to the receiver: deliveries/s, and
  event → delivery latency p50/p95 (publish time to the receiver's clock, same machine).
The receiver is the channel sandbox in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import nats

from bench.support import processes, run_load, servers, service_process
from chassis import bus
from chassis.events import STREAMS, subject_for
from dwf.common.v1 import common_pb2
from dwf.events.v1 import envelope_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from dwf.notifications.v1 import notifications_pb2_grpc
from dwf.order.v1 import events_pb2 as order_events
from stack.ports import free_port

ORDERS = int(os.environ.get("DWF_BENCH_ORDERS", "500"))
STATUSES = (2, 4)  # two status changes per order (ERP_BOOKED-like, ALLOCATED-like)
SECRET = "bench-shared-secret-0123456789abcdef"
HOOK = "bench-hook"


def status_envelope(order_id: str, status: int, sequence: int) -> envelope_pb2.EventEnvelope:
    payload = order_events.OrderStatusChanged(
        order_id=order_id,
        channel=common_pb2.ChannelReference(channel_id=HOOK, channel_order_id=order_id[:8]),
        status=status,  # type: ignore[arg-type]
        lifecycle_status=status,  # type: ignore[arg-type]
        status_sequence=sequence,
        lines=[
            common_pb2.OrderLine(
                line_id="1", sku="SKU-1", quantities=common_pb2.LineQuantities(ordered=2)
            )
        ],
    )
    envelope = envelope_pb2.EventEnvelope(
        id=str(uuid.uuid4()),
        type=str(payload.DESCRIPTOR.full_name),
        producer="order_gateway",
        correlation_id=str(uuid.uuid4()),
        aggregate_type="order",
        aggregate_id=order_id,
        sequence=sequence,
    )
    envelope.payload.Pack(payload)
    return envelope


async def main() -> None:
    async with servers() as env, receiver() as base, httpx.AsyncClient() as client:
        body = b"x" * 900  # about the size of a mapped status delivery

        async def post(i: int) -> None:
            response = await client.post(f"{base}/hooks/raw-baseline", content=body)
            response.raise_for_status()

        await run_load(post, 300, 32)
        baseline = await run_load(post, 3000, 32)

        port = free_port()
        command = service_process(env.settings("notifications", grpc_port=port))
        command[1]["DWF_NOTIFY_ALLOW_HTTP"] = "true"
        async with processes([command]):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = notifications_pb2_grpc.NotificationServiceStub(channel)
                await stub.UpsertChannelEndpoint(
                    pb.UpsertChannelEndpointRequest(
                        request_id=str(uuid.uuid4()),
                        endpoint=pb.ChannelEndpoint(
                            endpoint_id=HOOK,
                            channel_id=HOOK,
                            kind=pb.ENDPOINT_KIND_WEBHOOK,
                            url=f"{base}/hooks/{HOOK}",
                            secret=SECRET,
                            vocabulary="canonical",
                            enabled=True,
                        ),
                    )
                )
            nats_client = await nats.connect(
                env.nats_url, user=env.nats_user, password=env.nats_password
            )
            js = nats_client.jetstream()
            await bus.declare_stream(js, STREAMS["order_gateway"])  # no gateway runs here
            published: dict[str, float] = {}
            subject = subject_for("order_gateway", "dwf.order.v1.OrderStatusChanged")
            started = time.time()
            for _ in range(ORDERS):
                order_id = f"bench-{uuid.uuid4()}"
                for sequence, status in enumerate(STATUSES, start=1):
                    envelope = status_envelope(order_id, status, sequence)
                    published[envelope.id] = time.time()
                    await js.publish(
                        subject, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id}
                    )
            total = len(published)
            deadline = time.monotonic() + 300
            while len(got := await received(client, base)) < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(got)} of {total} arrived")
                await asyncio.sleep(0.5)  # polling the receiver's record
            await nats_client.close()
            hook_state = (await client.get(f"{base}/_admin/hooks/{HOOK}")).json()
        finished = max(r["received_at"] for r in got)
        latencies = sorted(
            (r["received_at"] - published[r["headers"]["dwf-event-id"]]) * 1000
            for r in got
            if r["headers"].get("dwf-event-id") in published
        )
        rate = total / (finished - started)
        print(f"notifications: {ORDERS} orders x {len(STATUSES)} statuses = {total} deliveries")
        print(f"   baseline raw httpx POST, 32 in flight     {baseline.rate:>9,.0f}/s")
        print(
            f"   dwf event -> signed delivery              {rate:>9,.0f}/s   "
            f"({rate / baseline.rate:.2f}x raw POST)"
        )
        print(
            f"   event -> delivery latency  p50 {statistics.median(latencies):.1f} ms   "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms"
        )
        signatures = {r["signature_valid"] for r in got}
        ordered = hook_state["max_in_flight_per_order"] <= 1 and not hook_state["regressions"]
        print(f"   signatures valid: {signatures == {True}}; per-order order kept: {ordered}")


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[str]:
    """The instant local receiver: the channel sandbox in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stack.sandbox_channel",
            "--port",
            str(port),
            "--secret",
            f"{HOOK}={SECRET}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get(f"{base}/_admin/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the channel sandbox did not start")
                await asyncio.sleep(0.05)  # readiness poll of a child process
        yield base
    finally:
        process.terminate()
        process.wait(10)


async def received(client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
    answer = await client.get(f"{base}/_admin/hooks/{HOOK}")
    return [r for r in answer.json()["received"] if 200 <= r["status"] < 300]


if __name__ == "__main__":
    asyncio.run(main())
