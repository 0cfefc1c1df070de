"""The ``make demo`` scenario against a running stack. It grows with each issue into the full
end-to-end flow; today it proves all four services are SERVING and discoverable by reflection.
"""

from __future__ import annotations

import asyncio
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


# --- notifications: the availability feed to channels, a failure, a replay --------------

AVAILABILITY_EVENT = "dwf.inventory.v1.AvailabilityChanged"
DEMO_SECRET = "demo-shared-secret-0123456789abcdef"  # >= 32 characters


@dataclass
class NotificationsDemo:
    rows: list[tuple[str, int, bool | None, int, str]]  # hook, status, signature ok, seq, skus
    dead_letter_id: str
    replayed: list[str]
    superseded: int  # replays skipped because a newer update had been delivered
    refused: int  # deliveries the endpoint refused (400) before it was fixed
    second_replay: str  # how a second replay of the same dead letter was answered
    deliveries_after_replay: int

    @property
    def ok(self) -> bool:
        recovered = any(h == "storefront-stock" and 200 <= s < 300 for h, s, *_ in self.rows)
        retried = any(h == "storefront-stock" and s == 503 for h, s, *_ in self.rows)
        signed = all(v for _, _, v, _, _ in self.rows)
        return (
            recovered
            and retried
            and signed
            and bool(self.dead_letter_id)
            and self.dead_letter_id in self.replayed
            and self.second_replay == "FAILED_PRECONDITION"
            and self.deliveries_after_replay >= 1
        )


async def register_demo_endpoints(address: str, sandbox: Any) -> None:
    import uuid

    from dwf.notifications.v1 import notifications_pb2 as npb
    from dwf.notifications.v1 import notifications_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        for hook, vocabulary in (("storefront-stock", "shopify"), ("edi-stock", "canonical")):
            sandbox.configure(hook, secret=DEMO_SECRET)
            await stub.UpsertChannelEndpoint(
                npb.UpsertChannelEndpointRequest(
                    request_id=str(uuid.uuid4()),
                    endpoint=npb.ChannelEndpoint(
                        endpoint_id=hook,
                        channel_id=hook,
                        kind=npb.ENDPOINT_KIND_WEBHOOK,
                        url=sandbox.url(hook),
                        secret=DEMO_SECRET,
                        event_types=[AVAILABILITY_EVENT],
                        vocabulary=vocabulary,
                        enabled=True,
                    ),
                )
            )
    sandbox.fail("storefront-stock", 503, times=2)  # down twice, then recovers by itself
    sandbox.fail("edi-stock", 400, times=None)  # refuses until fixed: dead letters, no storm


async def run_notifications_demo(
    address: str, sandbox: Any, timeout: float = 60
) -> NotificationsDemo:
    import time
    import uuid

    from dwf.notifications.v1 import notifications_pb2 as npb
    from dwf.notifications.v1 import notifications_pb2_grpc

    deadline = time.monotonic() + timeout

    async def until(condition: Any, what: str) -> None:
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo: timed out waiting for {what}")
            await asyncio.sleep(0.1)  # polling the sandbox's record of deliveries

    await until(lambda: sandbox.accepted("storefront-stock"), "the storefront feed")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        dead: list[Any] = []

        async def poll_dead() -> None:
            answer = await stub.ListDeadLetters(
                npb.ListDeadLettersRequest(
                    filter=npb.DeadLetterFilter(
                        endpoint_id="edi-stock", state=npb.DEAD_LETTER_STATE_PENDING
                    )
                )
            )
            dead[:] = list(answer.dead_letters)

        while not dead:
            if time.monotonic() > deadline:
                raise TimeoutError("demo: no dead letter for edi-stock")
            await poll_dead()
            await asyncio.sleep(0.1)  # polling the service's dead-letter list
        refused_before = len(sandbox.received("edi-stock"))
        sandbox.recover("edi-stock")  # the channel fixed its endpoint
        first = await stub.ReplayDeadLetter(
            npb.ReplayDeadLetterRequest(
                request_id=str(uuid.uuid4()),
                filter=npb.DeadLetterFilter(
                    endpoint_id="edi-stock", state=npb.DEAD_LETTER_STATE_PENDING
                ),
            )
        )
        await until(lambda: sandbox.accepted("edi-stock"), "the replayed delivery")
        dead_letter_id = (list(first.replayed_dead_letter_ids) or [""])[0]
        try:
            await stub.ReplayDeadLetter(
                npb.ReplayDeadLetterRequest(
                    request_id=str(uuid.uuid4()), dead_letter_id=dead_letter_id
                )
            )
            second_replay = "OK"
        except grpc.aio.AioRpcError as refused:
            second_replay = refused.code().name
    rows = []
    for hook in ("storefront-stock", "edi-stock"):
        for received in sandbox.received(hook):
            skus = ", ".join(sorted(_skus_in(received.json())))
            rows.append((hook, received.status, received.signature_valid, received.sequence, skus))
    return NotificationsDemo(
        rows=rows,
        dead_letter_id=dead_letter_id,
        replayed=list(first.replayed_dead_letter_ids),
        superseded=len(first.skipped),
        refused=refused_before,
        second_replay=second_replay,
        deliveries_after_replay=len(sandbox.accepted("edi-stock")),
    )


def _skus_in(document: Any) -> set[str]:
    """Every "sku" value anywhere in a channel payload (vocabularies nest them differently)."""
    if isinstance(document, dict):
        found = {str(document["sku"])} if "sku" in document else set()
        for value in document.values():
            found |= _skus_in(value)
        return found
    if isinstance(document, list):
        return set().union(*(_skus_in(item) for item in document)) if document else set()
    return set()
