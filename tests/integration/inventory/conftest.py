"""An inventory service on the session's real Postgres + NATS, with master data loaded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from chassis.server import ServiceApp
from dwf.inventory.v1 import inventory_pb2 as pb
from dwf.inventory.v1 import inventory_pb2_grpc
from services.inventory.main import SPEC
from services.inventory.store.master_data import load_master_data
from tests.conftest import Databases, NatsServer
from tests.integration.harness import settings_for

# Shared by every inventory test; each test uses its own SKUs.
WAREHOUSES = [
    {"code": "EAST-1", "region_code": "US", "postal_code": "10001", "priority": 1},
    {"code": "WEST-1", "region_code": "US", "postal_code": "94105", "priority": 2},
    {
        "code": "B2B-ONLY",
        "region_code": "US",
        "postal_code": "60601",
        "priority": 3,
        "channels": ["b2b"],
    },
]


@dataclass
class Inventory:
    app: ServiceApp
    stub: inventory_pb2_grpc.InventoryServiceStub

    async def new_skus(self, count: int = 1) -> list[str]:
        skus = [f"SKU-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        async with self.app.runtime.sessions.begin() as session:
            await load_master_data(session, {"items": [{"sku": s} for s in skus]})
        return skus

    async def receive(
        self, sku: str, warehouse: str, quantity: int
    ) -> pb.RecordStockMovementResponse:
        return await self.stub.RecordStockMovement(
            pb.RecordStockMovementRequest(
                request_id=str(uuid.uuid4()),
                sku=sku,
                warehouse_id=warehouse,
                kind=pb.MOVEMENT_KIND_RECEIPT,
                quantity_delta=quantity,
                reference=f"PO-{uuid.uuid4().hex[:6]}",
            )
        )

    async def hold(
        self,
        lines: Sequence[tuple[str, int]],
        *,
        ttl: float = 900,
        channel: str = "web",
        mode: int = pb.RESERVATION_MODE_ALL_OR_NOTHING,
        owner: str | None = None,
    ) -> pb.ReserveResponse:
        return await self.stub.Reserve(
            pb.ReserveRequest(
                request_id=str(uuid.uuid4()),
                owner=pb.ReservationOwner(
                    type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=owner or f"hold-{uuid.uuid4()}"
                ),
                channel_id=channel,
                mode=mode,
                ttl=seconds(ttl),
                lines=[
                    pb.LineItem(line_id=f"l{i}", sku=sku, quantity=qty)
                    for i, (sku, qty) in enumerate(lines)
                ],
            )
        )

    async def level(self, sku: str, warehouse: str) -> pb.StockLevel:
        answer = await self.stub.GetAvailability(pb.GetAvailabilityRequest(skus=[sku]))
        for level in answer.skus[0].warehouses:
            if level.warehouse_id == warehouse:
                return level
        return pb.StockLevel(sku=sku, warehouse_id=warehouse)


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


@pytest.fixture
async def inventory(databases: Databases, nats_server: NatsServer) -> AsyncIterator[Inventory]:
    app = ServiceApp(
        SPEC, settings_for("inventory", databases, nats_server, sweep_interval_seconds=0.2)
    )
    await app.start()
    await app.wait_until_ready(20)
    async with app.runtime.sessions.begin() as session:
        await load_master_data(session, {"warehouses": WAREHOUSES})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
        yield Inventory(app, inventory_pb2_grpc.InventoryServiceStub(channel))
    await app.stop()
