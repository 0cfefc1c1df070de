"""Reservations on real Postgres: holds, modes, expiry, extension, commit, release, errors."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from dwf.inventory.v1 import inventory_pb2 as pb
from services.inventory.handlers import sweep_expired_holds_once
from services.inventory.store.master_data import load_master_data
from services.inventory.store.tables import ledger_entry, reservation
from tests.integration.harness import eventually
from tests.integration.inventory.conftest import Inventory, seconds

pytestmark = pytest.mark.integration


def details(error: grpc.aio.AioRpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


async def test_hold_reserves_from_the_preferred_warehouse_then_the_next(
    inventory: Inventory,
) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 5)
    await inventory.receive(sku, "WEST-1", 10)
    answer = await inventory.hold([(sku, 8)])
    line = answer.reservation.lines[0]
    assert line.reserved_quantity == 8
    assert {(w.warehouse_id, w.quantity) for w in line.warehouses} == {("EAST-1", 5), ("WEST-1", 3)}
    assert answer.reservation.state == pb.RESERVATION_STATE_ACTIVE
    assert answer.reservation.HasField("expires_at")
    assert (await inventory.level(sku, "EAST-1")).available == 0
    assert (await inventory.level(sku, "WEST-1")).available == 7


async def test_all_or_nothing_shortfall_reserves_nothing_partial_takes_what_there_is(
    inventory: Inventory,
) -> None:
    a, b = await inventory.new_skus(2)
    await inventory.receive(a, "EAST-1", 10)
    await inventory.receive(b, "EAST-1", 2)
    refused = await inventory.hold([(a, 4), (b, 3)])
    assert not refused.HasField("reservation")
    assert [(s.sku, s.requested_quantity, s.available_quantity) for s in refused.shortfalls] == [
        (b, 3, 2)
    ]
    assert (await inventory.level(a, "EAST-1")).reserved == 0
    partial = await inventory.hold([(a, 4), (b, 3)], mode=pb.RESERVATION_MODE_PARTIAL)
    assert [ln.reserved_quantity for ln in partial.reservation.lines] == [4, 2]
    assert (await inventory.level(b, "EAST-1")).available == 0


async def test_channel_only_draws_from_its_warehouses(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "B2B-ONLY", 10)
    web = await inventory.hold([(sku, 1)], channel="web")
    assert not web.HasField("reservation")
    b2b = await inventory.hold([(sku, 1)], channel="b2b")
    assert b2b.reservation.lines[0].warehouses[0].warehouse_id == "B2B-ONLY"


async def test_expired_hold_is_released_by_the_sweeper(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 3)
    held = await inventory.hold([(sku, 3)], ttl=0.5)
    assert (await inventory.level(sku, "EAST-1")).available == 0

    async def released() -> bool:
        return (await inventory.level(sku, "EAST-1")).available == 3

    await eventually(released, what="the sweeper to release the expired hold")
    async with inventory.app.runtime.sessions() as session:
        state = await session.scalar(
            select(reservation.c.state).where(
                reservation.c.reservation_id == held.reservation.reservation_id
            )
        )
    assert state == "EXPIRED"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory.stub.CommitReservation(
            pb.CommitReservationRequest(
                request_id=str(uuid.uuid4()),
                reservation_id=held.reservation.reservation_id,
                order_id=f"order-{uuid.uuid4()}",
                lines=[pb.LineItem(line_id="1", sku=sku, quantity=3)],
            )
        )
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details(failure.value)["ErrorInfo"].reason == "RESERVATION_NOT_ACTIVE"  # type: ignore[attr-defined]
    assert (await inventory.level(sku, "EAST-1")).reserved == 0


async def test_extension_prevents_expiry(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 3)
    held = await inventory.hold([(sku, 2)], ttl=3)  # room to extend on a slow machine
    extended = await inventory.stub.ExtendReservation(
        pb.ExtendReservationRequest(
            request_id=str(uuid.uuid4()),
            reservation_id=held.reservation.reservation_id,
            ttl=seconds(600),
        )
    )
    assert extended.reservation.expires_at.ToDatetime() > held.reservation.expires_at.ToDatetime()
    # Once the original expiry has passed, sweeping changes nothing for this hold.
    async with inventory.app.runtime.sessions() as session:

        async def past_original_expiry() -> bool:
            now = await session.scalar(select(func.clock_timestamp()))
            return bool(now.timestamp() > held.reservation.expires_at.ToSeconds() + 0.1)

        await eventually(past_original_expiry, what="the original expiry to pass")
    await sweep_expired_holds_once(inventory.app.runtime, inventory.app.runtime.inventory_service)  # type: ignore[attr-defined]
    assert (await inventory.level(sku, "EAST-1")).reserved == 2


async def test_commit_turns_a_hold_into_the_order_reservation(inventory: Inventory) -> None:
    a, b = await inventory.new_skus(2)
    await inventory.receive(a, "EAST-1", 10)
    await inventory.receive(b, "EAST-1", 10)
    held = await inventory.hold([(a, 5), (b, 2)])
    order_id = f"order-{uuid.uuid4()}"
    committed = await inventory.stub.CommitReservation(
        pb.CommitReservationRequest(
            request_id=str(uuid.uuid4()),
            reservation_id=held.reservation.reservation_id,
            order_id=order_id,
            reserve_shortfall=True,
            lines=[
                pb.LineItem(line_id="ol-1", sku=a, quantity=3),  # 2 of a held too many
                pb.LineItem(line_id="ol-2", sku=b, quantity=4),
            ],
        )
    )  # 2 of b missing
    reservation_ = committed.reservation
    assert reservation_.owner.type == pb.RESERVATION_OWNER_TYPE_ORDER
    assert reservation_.owner.owner_id == order_id
    assert not reservation_.HasField("expires_at")
    assert [(ln.line_id, ln.reserved_quantity) for ln in reservation_.lines] == [
        ("ol-1", 3),
        ("ol-2", 4),
    ]
    assert not committed.shortfalls
    assert (await inventory.level(a, "EAST-1")).reserved == 3
    assert (await inventory.level(b, "EAST-1")).reserved == 4


async def test_release_part_then_all_then_again(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 10)
    held = await inventory.hold([(sku, 6)])
    rid = held.reservation.reservation_id

    async def release(*lines: tuple[str, int]) -> pb.ReleaseReservationResponse:
        return await inventory.stub.ReleaseReservation(
            pb.ReleaseReservationRequest(
                request_id=str(uuid.uuid4()),
                reservation_id=rid,
                reason="test",
                lines=[{"line_id": line_id, "quantity": qty} for line_id, qty in lines],
            )
        )

    partly = await release(("l0", 2))
    assert partly.reservation.lines[0].reserved_quantity == 4
    assert partly.reservation.state == pb.RESERVATION_STATE_ACTIVE
    fully = await release()
    assert fully.reservation.state == pb.RESERVATION_STATE_RELEASED
    again = await release()
    assert again.reservation.state == pb.RESERVATION_STATE_RELEASED
    level = await inventory.level(sku, "EAST-1")
    assert (level.reserved, level.available) == (0, 10)


async def test_a_warehouse_added_after_a_refusal_is_usable_at_once(inventory: Inventory) -> None:
    """Validation answers known warehouse codes from the service's snapshot and reloads it
    on a miss: an unknown code is refused naming its field and writes nothing, and once the
    warehouse is added the same movement is taken without waiting for the snapshot to age."""
    (sku,) = await inventory.new_skus()
    code = f"LAB-{uuid.uuid4().hex[:6]}"
    await inventory.receive(sku, "EAST-1", 1)  # the snapshot is loaded and holds EAST-1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await inventory.receive(sku, code, 5)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = details(refused.value)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert [v.field for v in violations] == ["warehouse_id"]
    async with inventory.app.runtime.sessions.begin() as session:
        await load_master_data(
            session,
            {
                "warehouses": [
                    # Serving a channel of its own, so no other test's sourcing sees it.
                    {
                        "code": code,
                        "region_code": "US",
                        "postal_code": "10001",
                        "priority": 9,
                        "channels": [f"lab-{code}"],
                    }
                ]
            },
        )
    await inventory.receive(sku, code, 5)
    assert (await inventory.level(sku, code)).on_hand == 5  # the refused receipt wrote nothing


async def test_bad_input_is_refused_with_field_paths_and_writes_nothing(
    inventory: Inventory,
) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 10)

    async def refused(request: pb.ReserveRequest) -> dict[str, object]:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await inventory.stub.Reserve(request)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        return details(failure.value)

    base = dict(
        request_id=str(uuid.uuid4()),
        channel_id="web",
        owner=pb.ReservationOwner(type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id="h"),
    )
    found = await refused(
        pb.ReserveRequest(
            **base, ttl=seconds(60), lines=[pb.LineItem(line_id="1", sku="NOPE", quantity=1)]
        )
    )
    assert [v.field for v in found["BadRequest"].field_violations] == ["lines[0].sku"]  # type: ignore[attr-defined]
    found = await refused(
        pb.ReserveRequest(
            **base, ttl=seconds(7200), lines=[pb.LineItem(line_id="1", sku=sku, quantity=0)]
        )
    )
    assert {v.field for v in found["BadRequest"].field_violations} == {  # type: ignore[attr-defined]
        "ttl",
        "lines[0].quantity",
    }
    order = pb.ReservationOwner(type=pb.RESERVATION_OWNER_TYPE_ORDER, owner_id="o")
    found = await refused(
        pb.ReserveRequest(
            request_id=str(uuid.uuid4()),
            channel_id="web",
            owner=order,
            ttl=seconds(60),
            lines=[pb.LineItem(line_id="1", sku=sku, quantity=1)],
        )
    )
    assert [v.field for v in found["BadRequest"].field_violations] == ["ttl"]  # type: ignore[attr-defined]
    level = await inventory.level(sku, "EAST-1")
    assert (level.reserved, level.on_hand) == (0, 10)


async def test_same_request_id_same_answer_other_payload_refused(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 10)
    request = pb.ReserveRequest(
        request_id=str(uuid.uuid4()),
        channel_id="web",
        ttl=seconds(60),
        owner=pb.ReservationOwner(type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id="h-idem"),
        lines=[pb.LineItem(line_id="1", sku=sku, quantity=2)],
    )
    first = await inventory.stub.Reserve(request)
    again = await inventory.stub.Reserve(request)
    assert first == again
    assert (await inventory.level(sku, "EAST-1")).reserved == 2
    request.lines[0].quantity = 3
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory.stub.Reserve(request)
    assert failure.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert details(failure.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"  # type: ignore[attr-defined]


async def test_one_active_reservation_per_owner(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 10)
    await inventory.hold([(sku, 1)], owner="hold-dup")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory.hold([(sku, 1)], owner="hold-dup")
    assert failure.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert details(failure.value)["ErrorInfo"].reason == "OWNER_HAS_RESERVATION"  # type: ignore[attr-defined]


async def test_movements_ledger_duplicates_and_negative_on_hand(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    first = await inventory.receive(sku, "EAST-1", 7)
    assert (first.entry.sequence, first.entry.on_hand_after, first.level.on_hand) == (1, 7, 7)
    duplicate = await inventory.stub.RecordStockMovement(
        pb.RecordStockMovementRequest(
            request_id=str(uuid.uuid4()),
            sku=sku,
            warehouse_id="EAST-1",
            kind=pb.MOVEMENT_KIND_RECEIPT,
            quantity_delta=7,
            reference=first.entry.reference,
        )
    )
    assert duplicate.duplicate and duplicate.entry.entry_id == first.entry.entry_id
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory.stub.RecordStockMovement(
            pb.RecordStockMovementRequest(
                request_id=str(uuid.uuid4()),
                sku=sku,
                warehouse_id="EAST-1",
                kind=pb.MOVEMENT_KIND_ADJUSTMENT,
                quantity_delta=-8,
                reason="cycle count",
            )
        )
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    for delta in (-2, 4, -1):
        await inventory.stub.RecordStockMovement(
            pb.RecordStockMovementRequest(
                request_id=str(uuid.uuid4()),
                sku=sku,
                warehouse_id="EAST-1",
                kind=pb.MOVEMENT_KIND_ADJUSTMENT,
                quantity_delta=delta,
                reason="count",
            )
        )
    pages, token = [], ""
    while True:
        page = await inventory.stub.ListLedger(
            pb.ListLedgerRequest(sku=sku, page_size=2, page_token=token)
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    entries = [e for page in pages for e in page.entries]
    assert [e.sequence for e in entries] == [4, 3, 2, 1]
    assert sum(e.quantity_delta for e in entries) == entries[0].on_hand_after == 8
    async with inventory.app.runtime.sessions() as session:
        rows = await session.scalar(
            select(func.count()).select_from(ledger_entry).where(ledger_entry.c.sku == sku)
        )
    assert rows == 4
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory.stub.ListLedger(
            pb.ListLedgerRequest(sku="other", page_token=token or pages[0].next_page_token)
        )
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_coalesced_batch_isolates_failures_and_answers_retries_alike(
    inventory: Inventory,
) -> None:
    """Concurrent Reserves share one transaction; each still gets its own answer."""
    import asyncio

    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 3)

    def hold(owner: str, item: str, request_id: str | None = None) -> pb.ReserveRequest:
        return pb.ReserveRequest(
            request_id=request_id or str(uuid.uuid4()),
            channel_id="web",
            ttl=seconds(60),
            owner=pb.ReservationOwner(type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=owner),
            lines=[pb.LineItem(line_id="1", sku=item, quantity=1)],
        )

    retried = hold("h-retry", sku)
    calls = [
        hold("h-ok-1", sku),
        hold("h-bad", "NOPE"),
        retried,
        retried,
        hold("h-same-owner", sku),
        hold("h-same-owner", sku),
        hold("h-ok-2", sku),
    ]
    answers = await asyncio.gather(
        *(inventory.stub.Reserve(call) for call in calls), return_exceptions=True
    )
    codes = [a.code() if isinstance(a, grpc.aio.AioRpcError) else "OK" for a in answers]
    assert codes[1] is grpc.StatusCode.INVALID_ARGUMENT
    assert answers[2] == answers[3]  # same request_id: one effect, one answer
    assert sorted(str(c) for c in (codes[4], codes[5])) == sorted(
        ["OK", str(grpc.StatusCode.ALREADY_EXISTS)]
    )
    level = await inventory.level(sku, "EAST-1")
    assert (level.reserved, level.available) == (3, 0)  # 3 units, 4 valid owners: one short
    granted = [a for a in answers if not isinstance(a, BaseException) and a.reservation.lines]
    assert len({a.reservation.reservation_id for a in granted}) == 3
