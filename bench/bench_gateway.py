"""Order gateway benchmark: one gateway process in front of one inventory process, on real
Postgres + NATS; the baseline is measured in the same run on the same machine, seconds apart.
Figures and ratios are printed (targets noted), nothing is asserted.

1. CheckAvailability through the gateway (64 in flight) on a hot read model: a handful of SKUs
   with stock whose availability rows the gateway already holds (no inventory fallback), the
   channel's rate limit out of the way, vs a raw grpc.aio echo process for the same duration
   (the two alternate in halves, so drift of the machine affects both alike).
2. AcceptOrder with the whole stack up (32 in flight): 1-3 lines per order on a pool of SKUs
   with plenty of stock, each with a new request_id and channel order id. Afterwards the
   gateway must hold exactly one order per successful answer, and inventory must have
   reserved exactly the quantity those orders accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import nats
from sqlalchemy import text

from bench.support import (
    Load,
    Servers,
    cpu_seconds,
    echo_process,
    processes,
    servers,
    service_process,
)
from chassis import bus
from chassis.events import STREAMS
from chassis.server import Runtime
from dwf.common.v1 import common_pb2
from dwf.inventory.v1 import inventory_pb2 as inv
from dwf.inventory.v1 import inventory_pb2_grpc
from dwf.order.v1 import master_data_pb2, master_data_pb2_grpc, order_gateway_pb2_grpc
from dwf.order.v1 import order_gateway_pb2 as pb
from services.inventory.store.master_data import load_master_data as load_inventory_master_data
from services.order_gateway.store.master_data import load_master_data as load_gateway_master_data
from stack.ports import free_port

SECONDS = float(os.environ.get("DWF_BENCH_GATEWAY_SECONDS", "6"))
WARM_UP_SECONDS = 1.0
AVAILABILITY_IN_FLIGHT = 64
ORDER_IN_FLIGHT = 32
HOT_SKUS = 8  # CheckAvailability asks for 2 of them per request
ORDER_SKUS = 64
STOCK = 1_000_000  # per SKU: no order can run short
WAREHOUSE = "BENCH-1"
WAREHOUSES = [{"code": WAREHOUSE, "region_code": "US", "postal_code": "10001", "priority": 1}]
RUN = uuid.uuid4().hex[:6]
ADMIN_KEY = f"bench-admin-{uuid.uuid4().hex}"
CHANNEL_ID = f"bench-{RUN}"
CHANNEL_KEY = f"bench-key-{uuid.uuid4().hex}"
AUTH = (("authorization", f"Bearer {CHANNEL_KEY}"),)
ADMIN_AUTH = (("authorization", f"Bearer {ADMIN_KEY}"),)


@dataclass
class Run:
    load: Load
    error: BaseException | None  # the first failure, if any (to say why, not just how many)
    cpu_seconds: float  # used meanwhile by the processes watched (the server under test)


async def run_for(
    call: Callable[[int], Awaitable[object]],
    seconds: float,
    in_flight: int,
    watched: Sequence[int] = (),
) -> Run:
    """``in_flight`` workers call back to back for ``seconds``; call(i) gets the request
    index. ``watched`` are server pids whose CPU time is measured meanwhile."""
    cpu_before = cpu_seconds(list(watched))
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    first_error: BaseException | None = None
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal errors, first_error
        while time.perf_counter() < deadline:
            index = next(counter)
            began = time.perf_counter()
            try:
                await call(index)
            except Exception as exc:
                errors += 1
                first_error = first_error or exc
            latencies.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    load = Load(len(latencies), time.perf_counter() - started, latencies, errors)
    return Run(load, first_error, cpu_seconds(list(watched)) - cpu_before)


def merged(runs: list[Run]) -> Run:
    loads = [run.load for run in runs]
    return Run(
        Load(
            sum(load.requests for load in loads),
            sum(load.seconds for load in loads),
            [ms for load in loads for ms in load.latencies_ms],
            sum(load.errors for load in loads),
        ),
        next((run.error for run in runs if run.error is not None), None),
        sum(run.cpu_seconds for run in runs),
    )


def report(run: Run, name: str) -> None:
    load, error = run.load, run.error
    per_call = run.cpu_seconds / max(load.requests, 1) * 1e6
    cpu = f"   server cpu {per_call:,.0f} us" if run.cpu_seconds else ""
    print("   " + load.line(name) + cpu)
    if error is not None:
        details = error.details() if isinstance(error, grpc.aio.AioRpcError) else ""
        print(f"      first error: {type(error).__name__} {details or error}"[:300])


async def declare_streams(env: Servers) -> None:
    """The gateway consumes inventory's and fulfillment's streams; fulfillment does not run
    here and inventory may come up after the gateway, so both are declared up front."""
    client = await nats.connect(env.nats_url, user=env.nats_user, password=env.nats_password)
    try:
        js = client.jetstream()
        for name in ("inventory", "fulfillment"):
            await bus.declare_stream(js, STREAMS[name])
    finally:
        await client.close()


async def seed_databases(env: Servers, skus: list[str]) -> None:
    """What must exist before the RPCs can: inventory's warehouses and items, and the
    gateway's admin credential (ApplyMasterData needs one)."""
    inventory = Runtime(env.settings("inventory"))
    gateway = Runtime(env.settings("order_gateway"))
    try:
        async with inventory.sessions.begin() as session:
            await load_inventory_master_data(
                session, {"warehouses": WAREHOUSES, "items": [{"sku": s} for s in skus]}
            )
        async with gateway.sessions.begin() as session:
            await load_gateway_master_data(
                session,
                {
                    "credentials": [
                        {"credential_id": f"admin-{RUN}", "api_key": ADMIN_KEY, "scopes": ["admin"]}
                    ]
                },
            )
    finally:
        await inventory.engine.dispose()
        await gateway.engine.dispose()


async def apply_master_data(
    admin: master_data_pb2_grpc.MasterDataServiceAsyncStub, skus: list[str]
) -> None:
    document: dict[str, Any] = {
        "channels": [
            {
                "channel_id": CHANNEL_ID,
                "name": "bench",
                "rate_limit_per_second": 1e6,
                "rate_limit_burst": 1_000_000,
            }
        ],
        "credentials": [
            {
                "credential_id": f"cred-{CHANNEL_ID}",
                "channel_id": CHANNEL_ID,
                "api_key": CHANNEL_KEY,
            }
        ],
        "items": [{"sku": s} for s in skus],
    }
    await admin.ApplyMasterData(
        master_data_pb2.ApplyMasterDataRequest(
            request_id=str(uuid.uuid4()), document=json.dumps(document)
        ),
        metadata=ADMIN_AUTH,
        timeout=30,
    )


async def receive(inventory: inventory_pb2_grpc.InventoryServiceAsyncStub, sku: str) -> None:
    await inventory.RecordStockMovement(
        inv.RecordStockMovementRequest(
            request_id=str(uuid.uuid4()),
            sku=sku,
            warehouse_id=WAREHOUSE,
            kind=inv.MOVEMENT_KIND_RECEIPT,
            quantity_delta=STOCK,
            reference=f"PO-{sku}",
        ),
        timeout=30,
    )


async def read_model_warm(env: Servers, skus: list[str], timeout: float = 30) -> float:
    """Wait until the gateway's read model holds every SKU from inventory's own events
    (AvailabilityChanged through the outbox and NATS), so CheckAvailability never falls back."""
    gateway = Runtime(env.settings("order_gateway"))
    started = time.monotonic()
    try:
        while True:
            async with gateway.engine.connect() as conn:
                known = await conn.scalar(
                    text(
                        "SELECT count(DISTINCT sku) FROM availability "
                        "WHERE sku = ANY(:skus) AND source_sequence > 0 AND available > 0"
                    ),
                    {"skus": skus},
                )
            if known == len(skus):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"read model holds {known} of {len(skus)} SKUs")
            await asyncio.sleep(0.2)  # polling another process's consumer
    finally:
        await gateway.engine.dispose()


def order_request(
    index: int,
    rng: random.Random,
    skus: list[str],
    *,
    max_lines: int = 3,
    order_prefix: str = "SO",
    customer_id: str = "",
) -> pb.AcceptOrderRequest:
    """A storefront order of 1 to ``max_lines`` lines on ``skus`` (the benches' shared shape)."""
    lines = rng.sample(skus, rng.randint(1, max_lines))
    return pb.AcceptOrderRequest(
        request_id=str(uuid.uuid4()),
        channel=common_pb2.ChannelReference(
            channel_id=CHANNEL_ID, channel_order_id=f"{order_prefix}-{RUN}-{index:07d}"
        ),
        customer=common_pb2.Customer(
            customer_id=customer_id, name="Jane Doe", email="jane@example.com"
        ),
        ship_to=common_pb2.PostalAddress(
            name="Jane Doe",
            lines=["1 Main St"],
            locality="Springfield",
            administrative_area="IL",
            postal_code="62701",
            region_code="US",
        ),
        lines=[
            common_pb2.OrderLine(
                line_id=str(i + 1),
                sku=sku,
                quantity=common_pb2.Quantity(value=rng.randint(1, 5)),
                unit_price=common_pb2.Money(currency_code="USD", units=10),
            )
            for i, sku in enumerate(lines)
        ],
        payment_reference=f"pay-{RUN}-{index}",
    )


async def check_availability(
    stub: order_gateway_pb2_grpc.OrderGatewayServiceAsyncStub,
    echo_port: int,
    hot: list[str],
    gateway_pid: int,
    echo_pid: int,
) -> None:
    requests = [
        pb.CheckAvailabilityRequest(
            channel_id=CHANNEL_ID,
            items=[
                pb.RequestedItem(
                    line_id=str(n + 1),
                    sku=hot[(i + n) % len(hot)],
                    quantity=common_pb2.Quantity(value=1 + n),
                )
                for n in range(2)
            ],
        )
        for i in range(len(hot))
    ]
    first = await stub.CheckAvailability(requests[0], metadata=AUTH, timeout=30)
    states = {pb.AvailabilityState.Name(item.state) for item in first.items}
    if states != {"AVAILABILITY_STATE_IN_STOCK"}:
        raise RuntimeError(f"hot SKUs are not in stock: {states}")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel:
        echo_call = echo_channel.unary_unary(
            "/bench.Echo/Echo",
            request_serializer=None,
            response_deserializer=None,
        )
        # Comparable bytes on the wire: the gateway's request, its metadata, an echoed body.
        payload = requests[0].SerializeToString()

        async def echo_once(index: int) -> None:
            await echo_call(payload, metadata=AUTH, timeout=30)

        async def check_once(index: int) -> None:
            await stub.CheckAvailability(requests[index % len(requests)], metadata=AUTH, timeout=30)

        await run_for(echo_once, WARM_UP_SECONDS, AVAILABILITY_IN_FLIGHT)
        await run_for(check_once, WARM_UP_SECONDS, AVAILABILITY_IN_FLIGHT)
        # Alternating halves: a machine that slows down or speeds up mid-run (a checkpoint, a
        # noisy neighbour) affects both sides alike.
        echo_runs, check_runs = [], []
        for _ in range(2):
            echo_runs.append(
                await run_for(echo_once, SECONDS / 2, AVAILABILITY_IN_FLIGHT, [echo_pid])
            )
            check_runs.append(
                await run_for(check_once, SECONDS / 2, AVAILABILITY_IN_FLIGHT, [gateway_pid])
            )
        echo, check = merged(echo_runs), merged(check_runs)
        echo_load, check_load = echo.load, check.load
    print(
        f"1. CheckAvailability, 1 gateway process, hot read model ({len(hot)} SKUs, "
        f"2 items per request), {AVAILABILITY_IN_FLIGHT} in flight, {SECONDS:g} s each"
    )
    report(echo, "baseline: raw grpc.aio echo")
    report(check, "CheckAvailability")
    print(
        f"   throughput {check_load.rate / echo_load.rate:.2f}x echo (target >= 0.7x); "
        f"p99 {check_load.percentile(0.99) / echo_load.percentile(0.99):.2f}x echo p99 "
        f"(target <= 1.5x)"
    )


async def accept_orders(
    env: Servers,
    stub: order_gateway_pb2_grpc.OrderGatewayServiceAsyncStub,
    skus: list[str],
    server_pids: list[int],
) -> None:
    rng = random.Random(7)
    accepted = 0
    accepted_quantity = 0
    existing = 0
    counter = itertools.count()

    async def accept_once(_: int) -> None:
        nonlocal accepted, accepted_quantity, existing
        request = order_request(next(counter), rng, skus)
        response = await stub.AcceptOrder(request, metadata=AUTH, timeout=30)
        accepted += 1
        existing += response.existing_order
        accepted_quantity += sum(line.quantity.value for line in request.lines)

    await run_for(accept_once, WARM_UP_SECONDS, ORDER_IN_FLIGHT)
    run = await run_for(accept_once, SECONDS, ORDER_IN_FLIGHT, server_pids)

    gateway = Runtime(env.settings("order_gateway"))
    inventory = Runtime(env.settings("inventory"))
    try:
        async with gateway.engine.connect() as conn:
            orders, distinct = (
                await conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT channel_order_id) FROM customer_order "
                        "WHERE channel_id = :c"
                    ),
                    {"c": CHANNEL_ID},
                )
            ).one()
        async with inventory.engine.connect() as conn:
            held, oversold = (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(reserved + allocated), 0), "
                        "coalesce(sum(greatest(reserved + allocated - on_hand, 0)), 0) "
                        "FROM stock_position WHERE sku = ANY(:skus)"
                    ),
                    {"skus": skus},
                )
            ).one()
    finally:
        await gateway.engine.dispose()
        await inventory.engine.dispose()
    print(
        f"2. AcceptOrder, gateway + inventory processes, {ORDER_IN_FLIGHT} in flight, "
        f"1-3 lines on {len(skus)} SKUs, {SECONDS:g} s"
    )
    report(run, "AcceptOrder (new request_id + order id)")
    print(
        f"   orders in the gateway {orders} = successful answers {accepted} "
        f"({'ok' if orders == accepted else 'MISMATCH'}; warm-up included); "
        f"duplicates {orders - distinct}, existing_order answers {existing}"
    )
    print(
        f"   reserved in inventory {held} = accepted quantity {accepted_quantity} "
        f"({'ok' if held == accepted_quantity else 'MISMATCH'}); oversold {oversold}"
    )


async def main() -> None:
    hot = [f"GW-HOT-{i:02d}-{RUN}" for i in range(HOT_SKUS)]
    pool = [f"GW-ORD-{i:03d}-{RUN}" for i in range(ORDER_SKUS)]
    started = time.monotonic()
    async with servers() as env:
        await declare_streams(env)
        await seed_databases(env, hot + pool)
        inventory_port, gateway_port = free_port(), free_port()
        inventory = service_process(
            env.settings("inventory", grpc_port=inventory_port, db_pool_size=16)
        )
        gateway = service_process(
            env.settings("order_gateway", grpc_port=gateway_port, db_pool_size=16)
        )
        gateway[1]["DWF_GATEWAY_INVENTORY_TARGET"] = f"127.0.0.1:{inventory_port}"
        echo = echo_process()
        async with (
            processes([inventory, gateway, echo]) as (inventory_process, gateway_process, echo_),
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as gateway_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{inventory_port}") as inventory_channel,
        ):
            stub = order_gateway_pb2_grpc.OrderGatewayServiceStub(gateway_channel)
            admin = master_data_pb2_grpc.MasterDataServiceStub(gateway_channel)
            inventory_stub = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
            await apply_master_data(admin, hot + pool)
            await asyncio.gather(*(receive(inventory_stub, s) for s in hot + pool))
            waited = await read_model_warm(env, hot)
            print(
                f"order gateway bench: {os.cpu_count()} CPUs; read model warm "
                f"{waited:.1f} s after the receipts"
            )
            await check_availability(stub, echo[2], hot, gateway_process.pid, echo_.pid)
            # Gateway + inventory (Postgres and NATS are shared with the client's machine).
            await accept_orders(env, stub, pool, [gateway_process.pid, inventory_process.pid])
    print(f"   (wall time {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
