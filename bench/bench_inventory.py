"""Inventory benchmark (issue 3): every figure is compared with a baseline run in the same
process on the same machine, seconds apart.

1. Hot SKU at the store layer, in process, 256 concurrent requesters: the coalesced Reserve
   path vs the naive one-transaction-per-request row lock. Both must reserve exactly the
   stock there is (0 oversold).
2. GetAvailability through gRPC (64 in flight, 2 inventory processes) vs a raw grpc.aio echo,
   the two alternating in halves.
3. Hot SKU through gRPC (Reserve) vs the echo, alternating the same way.
4. Cold SKUs (1,000 SKUs) through gRPC: Reserve throughput and p99.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import grpc
from google.protobuf import duration_pb2
from sqlalchemy import text

from bench.support import (
    Servers,
    alternating,
    echo_process,
    processes,
    run_load,
    run_load_cpu,
    servers,
    service_process,
)
from chassis.context import new_id
from chassis.server import Runtime
from dwf.inventory.v1 import inventory_pb2 as pb
from dwf.inventory.v1 import inventory_pb2_grpc
from services.inventory.api import InventoryService
from services.inventory.store.master_data import load_master_data
from stack.ports import free_port

HOT_REQUESTS = int(os.environ.get("DWF_BENCH_HOT_REQUESTS", "6000"))
HOT_STOCK = HOT_REQUESTS * 2 // 3  # a third of the requests must be refused
GRPC_REQUESTS = int(os.environ.get("DWF_BENCH_GRPC_REQUESTS", "6000"))
COLD_SKUS = 1000
WARM_UP = 500
WAREHOUSES = [{"code": "BENCH-1", "region_code": "US", "postal_code": "10001", "priority": 1}]


def hold(sku: str, quantity: int = 1) -> pb.ReserveRequest:
    return pb.ReserveRequest(
        request_id=new_id(),
        owner=pb.ReservationOwner(type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=new_id()),
        channel_id="web",
        ttl=duration_pb2.Duration(seconds=900),
        lines=[pb.LineItem(line_id="1", sku=sku, quantity=quantity)],
    )


async def seed(
    runtime: Runtime,
    stub: inventory_pb2_grpc.InventoryServiceStub | None,
    skus: list[str],
    quantity: int,
) -> None:
    async with runtime.sessions.begin() as session:
        await load_master_data(
            session, {"warehouses": WAREHOUSES, "items": [{"sku": s} for s in skus]}
        )
    service = InventoryService(runtime)
    for sku in skus:
        request = pb.RecordStockMovementRequest(
            request_id=str(uuid.uuid4()),
            sku=sku,
            warehouse_id="BENCH-1",
            kind=pb.MOVEMENT_KIND_RECEIPT,
            quantity_delta=quantity,
            reference=f"PO-{sku}",
        )
        if stub is not None:
            await stub.RecordStockMovement(request)
        else:
            await service.RecordStockMovement(request, None)


async def reserved(runtime: Runtime, sku: str) -> int:
    async with runtime.engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT reserved FROM stock_position WHERE sku = :s"), {"s": sku}
            )
            or 0
        )


async def settled(runtime: Runtime, timeout: float = 60) -> None:
    """Wait until inventory has published every event of the set-up (the outbox and the
    coalesced availability changes): the measures then time the calls, not the backlog."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with runtime.engine.connect() as conn:
            backlog = await conn.scalar(
                text(
                    "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL)"
                    " + (SELECT count(*) FROM availability_dirty)"
                )
            )
        if not backlog:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"inventory still has {backlog} events to publish")
        await asyncio.sleep(0.2)  # polling the service processes' relay


async def store_layer(env: Servers) -> None:
    runtime = Runtime(env.settings("inventory", db_pool_size=32))
    naive_sku, coalesced_sku = f"NAIVE-{uuid.uuid4().hex[:6]}", f"HOT-{uuid.uuid4().hex[:6]}"
    warm_naive, warm_coalesced = f"WARM-N-{uuid.uuid4().hex[:6]}", f"WARM-C-{uuid.uuid4().hex[:6]}"
    await seed(runtime, None, [naive_sku, coalesced_sku], HOT_STOCK)
    await seed(runtime, None, [warm_naive, warm_coalesced], WARM_UP)

    async def naive(index: int, sku: str = naive_sku) -> None:
        # The textbook path: one transaction per request, row lock, guarded update, insert.
        async with runtime.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT on_hand - reserved - allocated - safety_stock AS atp "
                        "FROM stock_position WHERE sku = :s AND warehouse = 'BENCH-1' FOR UPDATE"
                    ),
                    {"s": sku},
                )
            ).one()
            if row.atp < 1:
                return
            await conn.execute(
                text(
                    "UPDATE stock_position SET reserved = reserved + 1 "
                    "WHERE sku = :s AND warehouse = 'BENCH-1'"
                ),
                {"s": sku},
            )
            await conn.execute(
                text(
                    "INSERT INTO reservation (reservation_id, owner_type, owner_id, channel_id, "
                    "mode, state) VALUES (:id, 'HOLD', :owner, 'web', 'ALL_OR_NOTHING', "
                    "'RELEASED')"
                ),
                {"id": str(uuid.uuid4()), "owner": str(uuid.uuid4())},
            )

    service = InventoryService(runtime)

    async def coalesced(index: int, sku: str = coalesced_sku) -> None:
        await service.Reserve(hold(sku), None)

    # Warm-up of both paths on their own SKUs (connections, prepared statements).
    await run_load(lambda i: naive(i, warm_naive), WARM_UP, 256)
    await run_load(lambda i: coalesced(i, warm_coalesced), WARM_UP, 256)
    naive_load = await run_load(naive, HOT_REQUESTS, 256)
    coalesced_load = await run_load(coalesced, HOT_REQUESTS, 256)
    naive_reserved, hot_reserved = (
        await reserved(runtime, naive_sku),
        await reserved(runtime, coalesced_sku),
    )
    print(f"1. hot SKU, store layer, 256 requesters, {HOT_REQUESTS} requests, stock {HOT_STOCK}")
    print("   " + naive_load.line("naive: 1 tx per request, row lock"))
    print("   " + coalesced_load.line("dwf: coalesced Reserve (full path)"))
    print(
        f"   ratio {coalesced_load.rate / naive_load.rate:.1f}x the naive path (target >= 10x);"
        f" reserved {naive_reserved} / {hot_reserved} of {HOT_STOCK}"
        f" (oversold {max(naive_reserved - HOT_STOCK, 0)} / "
        f"{max(hot_reserved - HOT_STOCK, 0)})"
    )
    await service.reserve_writer.close()
    await runtime.engine.dispose()


async def through_grpc(env: Servers) -> None:
    runtime = Runtime(env.settings("inventory"))
    hot = f"GRPC-HOT-{uuid.uuid4().hex[:6]}"
    cold = [f"COLD-{i:04d}-{uuid.uuid4().hex[:4]}" for i in range(COLD_SKUS)]
    ports = [free_port(), free_port()]
    commands = [
        service_process(env.settings("inventory", grpc_port=p, db_pool_size=16)) for p in ports
    ]
    echo = echo_process()
    async with processes([*commands, echo]) as started:
        service_pids, echo_pids = [p.pid for p in started[:2]], [started[2].pid]
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in ports]
        stubs = [inventory_pb2_grpc.InventoryServiceStub(c) for c in channels]
        await seed(runtime, stubs[0], [hot], GRPC_REQUESTS * 2)
        await seed(runtime, stubs[0], cold, 1000)
        echo_channel = grpc.aio.insecure_channel(f"127.0.0.1:{echo[2]}")
        echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
        payload = hold(hot).SerializeToString()

        async def echo_once(index: int) -> None:
            await echo_call(payload, timeout=30)

        async def reserve_hot(index: int) -> None:
            await stubs[index % 2].Reserve(hold(hot), timeout=30)

        async def reserve_cold(index: int) -> None:
            await stubs[index % 2].Reserve(hold(cold[index % COLD_SKUS]), timeout=30)

        availability = pb.GetAvailabilityRequest(skus=[hot])

        async def get_availability(index: int) -> None:
            await stubs[index % 2].GetAvailability(availability, timeout=30)

        await run_load(echo_once, 500, 64)  # warm-up of both paths
        await run_load(get_availability, 500, 64)
        await settled(runtime)
        # Each measure alternates with the echo in halves. GetAvailability goes first: after
        # the Reserve runs the processes are still relaying those runs' events for a while.
        (
            (availability_echo, availability_echo_cpu),
            (availability_load, availability_cpu),
        ) = await alternating(
            [(echo_once, echo_pids), (get_availability, service_pids)], GRPC_REQUESTS, 64
        )
        (reserve_echo, reserve_echo_cpu), (hot_load, hot_cpu) = await alternating(
            [(echo_once, echo_pids), (reserve_hot, service_pids)], GRPC_REQUESTS, 64
        )
        cold_load, cold_cpu = await run_load_cpu(reserve_cold, GRPC_REQUESTS, 64, service_pids)
        print(f"2-4. through gRPC, 64 in flight, 2 inventory processes, {GRPC_REQUESTS} calls")
        print("   (server CPU per call: user + system time of the server processes / calls;")
        print("   each measure alternates with the echo in halves, so each has its own baseline)")
        print(
            "   "
            + availability_echo.line("baseline: raw grpc.aio echo")
            + f"   cpu {availability_echo_cpu:,.0f} us"
        )
        print(
            "   " + availability_load.line("GetAvailability") + f"   cpu {availability_cpu:,.0f} us"
        )
        print(
            "   "
            + reserve_echo.line("baseline: raw grpc.aio echo")
            + f"   cpu {reserve_echo_cpu:,.0f} us"
        )
        print("   " + hot_load.line("Reserve, hot SKU") + f"   cpu {hot_cpu:,.0f} us")
        print(
            "   "
            + cold_load.line(f"Reserve, cold SKUs ({COLD_SKUS})")
            + f"   cpu {cold_cpu:,.0f} us"
        )
        print(
            f"   Reserve hot {hot_load.rate / reserve_echo.rate:.2f}x echo (target >= 0.6x); "
            f"GetAvailability {availability_load.rate / availability_echo.rate:.2f}x echo "
            f"(target >= 0.7x)"
        )
        for channel in (*channels, echo_channel):
            await channel.close()
    await runtime.engine.dispose()


async def main() -> None:
    async with servers() as env:
        await store_layer(env)
        await through_grpc(env)


if __name__ == "__main__":
    asyncio.run(main())
