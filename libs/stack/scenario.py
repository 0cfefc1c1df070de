"""The ``make demo`` scenario against a running stack. It grows with each issue into the full
end-to-end flow; today it proves all four services are SERVING and discoverable by reflection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stack.supervisor import health_status


@dataclass
class Check:
    service: str
    address: str
    health: str
    reflected: list[str]

    @property
    def ok(self) -> bool:
        return self.health == "SERVING" and any(name.startswith("dwf.") for name in self.reflected)


async def reflected_services(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
            return [service.name for service in response.list_services_response.service]
    return []


async def check_services(addresses: dict[str, str]) -> list[Check]:
    checks = []
    for name, address in addresses.items():
        services = await reflected_services(address)
        own = [s for s in services if s.startswith("dwf.")]
        status = await health_status(address, own[0] if own else "")
        checks.append(Check(name, address, status, services))
    return checks


# --- inventory: seed, availability, a hold ---------------------------------------------

DEMO_MASTER_DATA: dict[str, list[dict[str, Any]]] = {
    "warehouses": [
        {
            "code": "CHI-1",
            "name": "Chicago DC",
            "region_code": "US",
            "postal_code": "60607",
            "priority": 1,
        },
        {
            "code": "DAL-1",
            "name": "Dallas DC",
            "region_code": "US",
            "postal_code": "75201",
            "priority": 2,
        },
        {
            "code": "B2B-NJ",
            "name": "Newark B2B",
            "region_code": "US",
            "postal_code": "07102",
            "priority": 3,
            "channels": ["b2b-portal"],
        },
    ],
    "items": [
        {"sku": "BOLT-M8-50", "description": "Hex bolt M8x50, zinc"},
        {"sku": "NUT-M8", "description": "Hex nut M8"},
        {"sku": "WASHER-M8", "description": "Flat washer M8"},
    ],
    "safety_stock": [{"sku": "BOLT-M8-50", "warehouse": "CHI-1", "quantity": 10}],
}
DEMO_RECEIPTS = [
    ("BOLT-M8-50", "CHI-1", 120),
    ("BOLT-M8-50", "DAL-1", 60),
    ("NUT-M8", "CHI-1", 500),
    ("NUT-M8", "B2B-NJ", 1000),
    ("WASHER-M8", "DAL-1", 40),
]


@dataclass
class InventoryDemo:
    levels_before: list[tuple[str, str, int, int, int]]
    hold_id: str
    hold_lines: list[tuple[str, str, int]]
    levels_after: list[tuple[str, str, int, int, int]]
    extended_until: str
    released_state: str
    levels_final: list[tuple[str, str, int, int, int]]

    @property
    def ok(self) -> bool:
        reserved_after = sum(r for _, _, _, r, _ in self.levels_after)
        reserved_final = sum(r for _, _, _, r, _ in self.levels_final)
        return reserved_after == 120 and reserved_final == 0 and self.released_state == "RELEASED"


async def run_inventory_demo(address: str, database_url: str) -> InventoryDemo:
    import uuid

    from google.protobuf import duration_pb2

    from chassis import db
    from dwf.inventory.v1 import inventory_pb2 as pb
    from dwf.inventory.v1 import inventory_pb2_grpc
    from services.inventory.store.master_data import load_master_data

    engine = db.create_engine(database_url, "inventory", application_name="dwf-demo")
    try:
        async with db.session_factory(engine).begin() as session:
            await load_master_data(session, DEMO_MASTER_DATA)
    finally:
        await engine.dispose()
    skus = [item["sku"] for item in DEMO_MASTER_DATA["items"]]

    def ttl(seconds: int) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=seconds)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)

        async def levels() -> list[tuple[str, str, int, int, int]]:
            answer = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=skus))
            return [
                (s.sku, lv.warehouse_id, lv.on_hand, lv.reserved, lv.available)
                for s in answer.skus
                for lv in s.warehouses
            ]

        for sku, warehouse, quantity in DEMO_RECEIPTS:
            await stub.RecordStockMovement(
                pb.RecordStockMovementRequest(
                    request_id=str(uuid.uuid4()),
                    sku=sku,
                    warehouse_id=warehouse,
                    kind=pb.MOVEMENT_KIND_RECEIPT,
                    quantity_delta=quantity,
                    reference=f"PO-DEMO-{sku}-{warehouse}",
                )
            )
        before = await levels()
        hold = await stub.Reserve(
            pb.ReserveRequest(
                request_id=str(uuid.uuid4()),
                channel_id="web-store",
                ttl=ttl(900),
                owner=pb.ReservationOwner(
                    type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=f"checkout-{uuid.uuid4().hex[:8]}"
                ),
                lines=[
                    pb.LineItem(line_id="1", sku="BOLT-M8-50", quantity=115),
                    pb.LineItem(line_id="2", sku="WASHER-M8", quantity=5),
                ],
            )
        )
        reservation = hold.reservation
        after = await levels()
        extended = await stub.ExtendReservation(
            pb.ExtendReservationRequest(
                request_id=str(uuid.uuid4()),
                reservation_id=reservation.reservation_id,
                ttl=ttl(1800),
            )
        )
        released = await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(
                request_id=str(uuid.uuid4()),
                reservation_id=reservation.reservation_id,
                reason="demo: checkout abandoned",
            )
        )
        final = await levels()
    return InventoryDemo(
        levels_before=before,
        hold_id=reservation.reservation_id,
        hold_lines=[
            (ln.sku, w.warehouse_id, w.quantity) for ln in reservation.lines for w in ln.warehouses
        ],
        levels_after=after,
        extended_until=extended.reservation.expires_at.ToJsonString(),
        released_state=pb.ReservationState.Name(released.reservation.state).removeprefix(
            "RESERVATION_STATE_"
        ),
        levels_final=final,
    )
