"""No oversell under concurrency: hundreds of simultaneous Reserve calls spread over two
inventory processes, on real Postgres, while an observer watches availability."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from chassis import db
from dwf.inventory.v1 import inventory_pb2 as pb
from dwf.inventory.v1 import inventory_pb2_grpc
from services.inventory.store.master_data import load_master_data
from services.inventory.store.tables import (
    ledger_entry,
    reservation,
    reservation_hold,
    reservation_line,
    stock_position,
)
from stack.ports import free_port
from stack.supervisor import health_status
from tests.conftest import Databases, NatsServer
from tests.integration.harness import eventually, service_env, settings_for
from tests.integration.inventory.conftest import WAREHOUSES, seconds

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_processes(
    databases: Databases, nats_server: NatsServer, scratch_dir: Path
) -> AsyncIterator[list[inventory_pb2_grpc.InventoryServiceStub]]:
    processes, channels = [], []
    for index in range(2):
        port = free_port()
        settings = settings_for(
            "inventory", databases, nats_server, grpc_port=port, db_pool_size=20
        )
        log = (scratch_dir / f"inventory-{index}-{uuid.uuid4().hex[:4]}.log").open("wb")
        processes.append(
            await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "services.inventory"],
                env=service_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))

        async def serving(port: int = port) -> bool:
            return await health_status(f"127.0.0.1:{port}") == "SERVING"

        await eventually(serving, timeout=30, what=f"inventory process {index} SERVING")
    try:
        yield [inventory_pb2_grpc.InventoryServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.to_thread(process.wait, 30)


async def _seed(databases: Databases, stocks: dict[str, dict[str, int]]) -> None:
    engine = db.create_engine(
        databases.service_urls["inventory"], "inventory", application_name="seed"
    )
    try:
        async with db.session_factory(engine).begin() as session:
            await load_master_data(
                session, {"warehouses": WAREHOUSES, "items": [{"sku": sku} for sku in stocks]}
            )
    finally:
        await engine.dispose()


async def _receive(
    stub: inventory_pb2_grpc.InventoryServiceStub, stocks: dict[str, dict[str, int]]
) -> None:
    for sku, by_warehouse in stocks.items():
        for warehouse, quantity in by_warehouse.items():
            await stub.RecordStockMovement(
                pb.RecordStockMovementRequest(
                    request_id=str(uuid.uuid4()),
                    sku=sku,
                    warehouse_id=warehouse,
                    kind=pb.MOVEMENT_KIND_RECEIPT,
                    quantity_delta=quantity,
                    reference=f"PO-{uuid.uuid4().hex[:6]}",
                )
            )


async def _storm(
    stubs: list[inventory_pb2_grpc.InventoryServiceStub],
    requests: list[pb.ReserveRequest],
    skus: list[str],
) -> tuple[list[pb.ReserveResponse], list[int]]:
    """Fire every request at once (alternating processes) while observing availability."""
    observed: list[int] = []
    done = asyncio.Event()

    async def observe() -> None:
        while not done.is_set():
            answer = await stubs[1].GetAvailability(pb.GetAvailabilityRequest(skus=skus))
            observed.extend(level.available for sku in answer.skus for level in sku.warehouses)

    observer = asyncio.create_task(observe())
    answers = await asyncio.gather(
        *(stubs[i % 2].Reserve(request, timeout=120) for i, request in enumerate(requests))
    )
    done.set()
    await observer
    return list(answers), observed


async def _books(databases: Databases, skus: list[str]) -> dict[str, int]:
    """Check positions against the ledger and the active holds; return reserved per SKU."""
    engine = db.create_engine(
        databases.service_urls["inventory"], "inventory", application_name="audit"
    )
    try:
        async with engine.connect() as conn:
            positions = (
                await conn.execute(select(stock_position).where(stock_position.c.sku.in_(skus)))
            ).all()
            ledger = {
                (row.sku, row.warehouse): row.total
                for row in await conn.execute(
                    select(
                        ledger_entry.c.sku,
                        ledger_entry.c.warehouse,
                        func.sum(ledger_entry.c.quantity_delta).label("total"),
                    )
                    .where(ledger_entry.c.sku.in_(skus))
                    .group_by(ledger_entry.c.sku, ledger_entry.c.warehouse)
                )
            }
            held = {
                (row.sku, row.warehouse): row.total
                for row in await conn.execute(
                    select(
                        reservation_line.c.sku,
                        reservation_hold.c.warehouse,
                        func.sum(reservation_hold.c.quantity).label("total"),
                    )
                    .select_from(
                        reservation_hold.join(
                            reservation_line,
                            (reservation_line.c.reservation_id == reservation_hold.c.reservation_id)
                            & (reservation_line.c.line_id == reservation_hold.c.line_id),
                        ).join(
                            reservation,
                            reservation.c.reservation_id == reservation_hold.c.reservation_id,
                        )
                    )
                    .where(reservation.c.state == "ACTIVE", reservation_line.c.sku.in_(skus))
                    .group_by(reservation_line.c.sku, reservation_hold.c.warehouse)
                )
            }
    finally:
        await engine.dispose()
    reserved: dict[str, int] = {}
    for position in positions:
        key = (position.sku, position.warehouse)
        assert position.on_hand == ledger[key], f"ledger disagrees with on_hand at {key}"
        assert position.reserved == held.get(key, 0), f"holds disagree with reserved at {key}"
        assert position.reserved + position.allocated + position.safety_stock <= position.on_hand
        reserved[position.sku] = reserved.get(position.sku, 0) + position.reserved
    return reserved


def _hold(lines: list[tuple[str, int]], mode: int) -> pb.ReserveRequest:
    return pb.ReserveRequest(
        request_id=str(uuid.uuid4()),
        owner=pb.ReservationOwner(
            type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=f"storm-{uuid.uuid4()}"
        ),
        channel_id="web",
        mode=mode,
        ttl=seconds(900),
        lines=[
            pb.LineItem(line_id=f"l{i}", sku=sku, quantity=qty)
            for i, (sku, qty) in enumerate(lines)
        ],
    )


async def test_500_concurrent_holds_on_one_sku_reserve_exactly_100(
    databases: Databases,
    two_processes: list[inventory_pb2_grpc.InventoryServiceStub],
) -> None:
    sku = f"HOT-{uuid.uuid4().hex[:6]}"
    stocks = {sku: {"EAST-1": 60, "WEST-1": 40}}
    await _seed(databases, stocks)
    await _receive(two_processes[0], stocks)
    requests = [_hold([(sku, 1)], pb.RESERVATION_MODE_ALL_OR_NOTHING) for _ in range(500)]
    answers, observed = await _storm(two_processes, requests, [sku])
    granted = sum(a.reservation.lines[0].reserved_quantity for a in answers if a.reservation.lines)
    assert granted == 100
    assert sum(1 for a in answers if a.shortfalls) == 400
    assert observed and min(observed) >= 0
    assert await _books(databases, [sku]) == {sku: 100}


async def test_mixed_modes_on_three_skus_never_oversell(
    databases: Databases,
    two_processes: list[inventory_pb2_grpc.InventoryServiceStub],
) -> None:
    skus = [f"MIX{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    stocks = {sku: {"EAST-1": 50, "WEST-1": 50} for sku in skus}
    await _seed(databases, stocks)
    await _receive(two_processes[0], stocks)
    rng = random.Random(7)
    requests = []
    for _ in range(510):
        chosen = rng.sample(skus, rng.randint(1, 3))
        lines = [(sku, rng.randint(1, 3)) for sku in chosen]
        mode = rng.choice([pb.RESERVATION_MODE_ALL_OR_NOTHING, pb.RESERVATION_MODE_PARTIAL])
        requests.append(_hold(lines, mode))
    answers, observed = await _storm(two_processes, requests, skus)
    granted: dict[str, int] = dict.fromkeys(skus, 0)
    for answer in answers:
        for line in answer.reservation.lines:
            granted[line.sku] += line.reserved_quantity
    # Demand (~680 per SKU) far exceeds supply: every unit ends up reserved, none twice.
    assert granted == dict.fromkeys(skus, 100)
    assert observed and min(observed) >= 0
    assert await _books(databases, skus) == dict.fromkeys(skus, 100)


async def test_retries_racing_on_two_processes_reserve_once(
    databases: Databases,
    two_processes: list[inventory_pb2_grpc.InventoryServiceStub],
) -> None:
    """Each of 30 holds is sent 4 times at once, to both processes: one reservation per
    request id, and every copy gets the same answer (whichever batch wrote it first)."""
    sku = f"RETRY-{uuid.uuid4().hex[:6]}"
    stocks = {sku: {"EAST-1": 300, "WEST-1": 200}}
    await _seed(databases, stocks)
    await _receive(two_processes[0], stocks)
    originals = [_hold([(sku, 2)], pb.RESERVATION_MODE_ALL_OR_NOTHING) for _ in range(30)]
    copies = [request for request in originals for _ in range(4)]
    answers, observed = await _storm(two_processes, copies, [sku])
    by_request: dict[str, set[bytes]] = {}
    for request, answer in zip(copies, answers, strict=True):
        by_request.setdefault(request.request_id, set()).add(
            answer.SerializeToString(deterministic=True)
        )
    assert all(len(distinct) == 1 for distinct in by_request.values())
    assert len({a.reservation.reservation_id for a in answers}) == 30
    assert observed and min(observed) >= 0
    assert await _books(databases, [sku]) == {sku: 60}
