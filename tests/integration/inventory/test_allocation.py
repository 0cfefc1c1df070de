"""Allocation by sourcing policy, backorders filled by receipts, shipments, promises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from dwf.common.v1 import common_pb2
from dwf.inventory.v1 import inventory_pb2 as pb
from services.inventory.store.allocations import allocations_of
from services.inventory.store.master_data import load_master_data
from tests.integration.inventory.conftest import Inventory, stamp
from tests.integration.inventory.test_reservations import details

pytestmark = pytest.mark.integration


async def order_reservation(
    inventory: Inventory, order_id: str, lines: list[tuple[str, str, int]]
) -> pb.ReserveResponse:
    return await inventory.stub.Reserve(
        pb.ReserveRequest(
            request_id=str(uuid.uuid4()),
            channel_id="web",
            mode=pb.RESERVATION_MODE_PARTIAL,
            owner=pb.ReservationOwner(type=pb.RESERVATION_OWNER_TYPE_ORDER, owner_id=order_id),
            lines=[pb.LineItem(line_id=lid, sku=sku, quantity=q) for lid, sku, q in lines],
        )
    )


async def allocate(
    inventory: Inventory,
    order_id: str,
    lines: list[tuple[str, str, int]],
    split: int = pb.SPLIT_RULE_ALLOW_SPLIT,
    backorder: bool = True,
    priority: int = 0,
) -> pb.AllocateResponse:
    return await inventory.stub.Allocate(
        pb.AllocateRequest(
            request_id=str(uuid.uuid4()),
            order_id=order_id,
            channel_id="web",
            lines=[pb.LineItem(line_id=lid, sku=sku, quantity=q) for lid, sku, q in lines],
            policy=pb.SourcingPolicy(split_rule=split, allow_backorder=backorder),
            backorder_priority=priority,
        )
    )


def placed(answer: pb.AllocateResponse) -> dict[str, list[tuple[str, int]]]:
    return {
        a.warehouse_id: [(ln.line_id, ln.quantity) for ln in a.lines] for a in answer.allocations
    }


async def test_split_consumes_the_reservation_then_backorders_the_rest(
    inventory: Inventory,
) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 4)
    await inventory.receive(sku, "WEST-1", 3)
    order_id = f"o-{uuid.uuid4()}"
    await order_reservation(inventory, order_id, [("1", sku, 5)])
    answer = await allocate(inventory, order_id, [("1", sku, 9)])
    assert placed(answer) == {"EAST-1": [("1", 4)], "WEST-1": [("1", 3)]}
    assert [(b.line_id, b.quantity) for b in answer.backorders] == [("1", 2)]
    east, west = await inventory.level(sku, "EAST-1"), await inventory.level(sku, "WEST-1")
    assert (east.reserved, east.allocated, west.reserved, west.allocated) == (0, 4, 0, 3)


async def test_ship_complete_picks_one_warehouse_or_keeps_reserved(inventory: Inventory) -> None:
    a, b = await inventory.new_skus(2)
    await inventory.receive(a, "EAST-1", 5)
    await inventory.receive(a, "WEST-1", 5)
    await inventory.receive(b, "WEST-1", 5)
    order_id = f"o-{uuid.uuid4()}"
    answer = await allocate(
        inventory, order_id, [("1", a, 3), ("2", b, 2)], split=pb.SPLIT_RULE_SHIP_COMPLETE
    )
    assert placed(answer) == {"WEST-1": [("1", 3), ("2", 2)]}  # only WEST-1 has both
    other = f"o-{uuid.uuid4()}"
    await order_reservation(inventory, other, [("1", a, 2), ("2", b, 3)])
    kept = await allocate(
        inventory,
        other,
        [("1", a, 2), ("2", b, 9)],
        split=pb.SPLIT_RULE_SHIP_COMPLETE,
        backorder=False,
    )
    assert not kept.allocations
    assert {(u.line_id, u.quantity) for u in kept.unfilled} == {("1", 2), ("2", 9)}


async def test_receipt_fills_backorders_by_priority_then_age(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    older, newer, urgent = (f"o-{uuid.uuid4()}" for _ in range(3))
    for order_id, priority in ((older, 0), (newer, 0), (urgent, 100)):
        answer = await allocate(inventory, order_id, [("1", sku, 3)], priority=priority)
        assert [b.quantity for b in answer.backorders] == [3]
    receipt = await inventory.receive(sku, "WEST-1", 5)
    assert receipt.level.allocated == 5  # urgent 3, then the older order 2
    filled = {}
    async with inventory.app.runtime.sessions() as session:
        for order_id in (older, newer, urgent):
            rows = await allocations_of(session, order_id)
            filled[order_id] = sum(row.quantity for row in rows)
    assert filled == {urgent: 3, older: 2, newer: 0}


async def test_shipment_consumes_allocation_and_deallocate_release_or_reserve(
    inventory: Inventory,
) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 10)
    order_id = f"o-{uuid.uuid4()}"
    await allocate(inventory, order_id, [("1", sku, 6)])
    shipped = await inventory.stub.RecordStockMovement(
        pb.RecordStockMovementRequest(
            request_id=str(uuid.uuid4()),
            sku=sku,
            warehouse_id="EAST-1",
            kind=pb.MOVEMENT_KIND_SHIPMENT,
            quantity_delta=-2,
            reference="SHIP-1",
            order_id=order_id,
            line_id="1",
        )
    )
    assert (shipped.level.on_hand, shipped.level.allocated) == (8, 4)
    kept = await inventory.stub.Deallocate(
        pb.DeallocateRequest(
            request_id=str(uuid.uuid4()),
            order_id=order_id,
            reason="WMS_REJECTED",
            disposition=pb.DEALLOCATION_DISPOSITION_RESERVE,
            lines=[common_pb2.LineSelection(line_id="1", quantity=1)],
        )
    )
    assert [ln.quantity for a in kept.deallocated for ln in a.lines] == [1]
    level = await inventory.level(sku, "EAST-1")
    assert (level.allocated, level.reserved) == (3, 1)
    released = await inventory.stub.Deallocate(
        pb.DeallocateRequest(
            request_id=str(uuid.uuid4()),
            order_id=order_id,
            reason="ORDER_CANCELED",
            disposition=pb.DEALLOCATION_DISPOSITION_RELEASE,
        )
    )
    assert not released.remaining
    level = await inventory.level(sku, "EAST-1")
    assert (level.on_hand, level.allocated, level.reserved, level.available) == (8, 0, 1, 7)


async def test_promise_dates_from_incoming_supply(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 2)
    soon, later = datetime.now(UTC) + timedelta(days=3), datetime.now(UTC) + timedelta(days=9)
    await inventory.stub.SetIncomingSupply(
        pb.SetIncomingSupplyRequest(
            request_id=str(uuid.uuid4()),
            supplies=[
                pb.IncomingSupply(
                    supply_id="PO-1/1",
                    sku=sku,
                    warehouse_id="WEST-1",
                    kind=pb.SUPPLY_KIND_PURCHASE_ORDER,
                    quantity=3,
                    expected_at=stamp(soon),
                ),
                pb.IncomingSupply(
                    supply_id="PO-2/1",
                    sku=sku,
                    warehouse_id="EAST-1",
                    kind=pb.SUPPLY_KIND_PURCHASE_ORDER,
                    quantity=10,
                    expected_at=stamp(later),
                ),
            ],
        )
    )
    promise = await inventory.stub.PromiseLines(
        pb.PromiseLinesRequest(
            channel_id="web",
            lines=[
                pb.LineItem(line_id="1", sku=sku, quantity=2),
                pb.LineItem(line_id="2", sku=sku, quantity=4),
                pb.LineItem(line_id="3", sku=sku, quantity=50),
            ],
        )
    )
    first, second, third = promise.lines
    assert first.outcome == pb.PROMISE_OUTCOME_AVAILABLE_NOW
    assert second.outcome == pb.PROMISE_OUTCOME_PROMISED and second.promised_quantity == 4
    assert second.promised_at.ToDatetime(UTC) == later.replace(microsecond=later.microsecond)
    assert third.outcome == pb.PROMISE_OUTCOME_CANNOT_PROMISE
    backordered = await allocate(inventory, f"o-{uuid.uuid4()}", [("1", sku, 4)])
    assert [b.quantity for b in backordered.backorders] == [2]
    assert backordered.backorders[0].expected_at.ToDatetime(UTC) == soon


async def test_excluded_warehouses_are_skipped_and_their_reservation_released(
    inventory: Inventory,
) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 4)
    await inventory.receive(sku, "WEST-1", 4)
    order_id = f"o-{uuid.uuid4()}"
    await order_reservation(inventory, order_id, [("1", sku, 3)])  # held at EAST-1
    answer = await inventory.stub.Allocate(
        pb.AllocateRequest(
            request_id=str(uuid.uuid4()),
            order_id=order_id,
            channel_id="web",
            lines=[pb.LineItem(line_id="1", sku=sku, quantity=3)],
            excluded_warehouses=["EAST-1"],
        )
    )
    assert placed(answer) == {"WEST-1": [("1", 3)]}
    east, west = await inventory.level(sku, "EAST-1"), await inventory.level(sku, "WEST-1")
    assert (east.reserved, east.allocated, west.reserved, west.allocated) == (0, 0, 0, 3)


async def test_with_every_warehouse_excluded_nothing_is_allocated_or_backordered(
    inventory: Inventory,
) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 4)
    order_id = f"o-{uuid.uuid4()}"
    answer = await inventory.stub.Allocate(
        pb.AllocateRequest(
            request_id=str(uuid.uuid4()),
            order_id=order_id,
            channel_id="web",
            lines=[pb.LineItem(line_id="1", sku=sku, quantity=2)],
            policy=pb.SourcingPolicy(allow_backorder=True),
            excluded_warehouses=["EAST-1", "WEST-1", "RETIRED-9"],
        )
    )
    assert placed(answer) == {} and list(answer.backorders) == []
    assert [(u.line_id, u.quantity) for u in answer.unfilled] == [("1", 2)]


async def test_an_empty_excluded_warehouse_code_is_invalid(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await inventory.stub.Allocate(
            pb.AllocateRequest(
                request_id=str(uuid.uuid4()),
                order_id=f"o-{uuid.uuid4()}",
                channel_id="web",
                lines=[pb.LineItem(line_id="1", sku=sku, quantity=1)],
                excluded_warehouses=[""],
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(refused.value)
    assert [v.field for v in found["BadRequest"].field_violations] == [  # type: ignore[attr-defined]
        "excluded_warehouses[0]"
    ]


async def test_substitutes_cover_a_shortfall_only_where_the_line_allows_it(
    inventory: Inventory,
) -> None:
    ordered, substitute = await inventory.new_skus(2)
    async with inventory.app.runtime.sessions.begin() as session:
        await load_master_data(session, {"items": [{"sku": ordered, "substitutes": [substitute]}]})
    await inventory.receive(ordered, "EAST-1", 1)
    await inventory.receive(substitute, "WEST-1", 5)

    async def allocate_line(
        allowed: bool, split: int = pb.SPLIT_RULE_ALLOW_SPLIT
    ) -> pb.AllocateResponse:
        return await inventory.stub.Allocate(
            pb.AllocateRequest(
                request_id=str(uuid.uuid4()),
                order_id=f"o-{uuid.uuid4()}",
                channel_id="web",
                lines=[
                    pb.LineItem(line_id="1", sku=ordered, quantity=4, substitution_allowed=allowed)
                ],
                policy=pb.SourcingPolicy(split_rule=split, allow_backorder=True),
            )
        )

    plain = await allocate_line(False)
    assert placed(plain) == {"EAST-1": [("1", 1)]}
    assert [(b.line_id, b.sku, b.quantity) for b in plain.backorders] == [("1", ordered, 3)]

    whole = await allocate_line(True, pb.SPLIT_RULE_SHIP_COMPLETE)  # never substitutes
    assert placed(whole) == {} and all(b.sku == ordered for b in whole.backorders)

    answer = await allocate_line(True)
    assert placed(answer) == {"WEST-1": [("1", 4)]}  # EAST-1 has nothing left: all substitute
    (line,) = answer.allocations[0].lines
    assert (line.sku, line.substituted_for_sku) == (substitute, ordered)
    assert list(answer.backorders) == []
    west = await inventory.level(substitute, "WEST-1")
    assert (west.on_hand, west.allocated) == (5, 4)
