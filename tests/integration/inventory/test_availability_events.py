"""AvailabilityChanged is coalesced: a burst of reservations becomes one event per warehouse
carrying the latest levels, published through the outbox."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from chassis.schema import outbox
from dwf.events.v1 import envelope_pb2
from dwf.inventory.v1 import events_pb2, inventory_pb2
from services.inventory.handlers import publish_availability_once
from services.inventory.store.master_data import load_master_data
from tests.integration.inventory.conftest import Inventory

pytestmark = pytest.mark.integration


async def _published_levels(inventory: Inventory, sku: str) -> list[inventory_pb2.StockLevel]:
    """Every level of sku that AvailabilityChanged events carried, oldest first. The
    coalescer may have run meanwhile; drain until nothing is dirty, then look."""
    runtime = inventory.app.runtime
    while await publish_availability_once(runtime):
        pass
    async with runtime.sessions() as session:
        bodies = (
            await session.scalars(
                select(outbox.c.body)
                .where(outbox.c.event_type == "dwf.inventory.v1.AvailabilityChanged")
                .order_by(outbox.c.position)  # not heap order: the relay updates rows
            )
        ).all()
    levels: list[inventory_pb2.StockLevel] = []
    for body in bodies:
        payload = events_pb2.AvailabilityChanged()
        envelope_pb2.EventEnvelope.FromString(body).payload.Unpack(payload)
        levels += [level for level in payload.entries if level.sku == sku]
    return levels


async def test_a_burst_of_holds_becomes_one_event_per_warehouse(inventory: Inventory) -> None:
    (sku,) = await inventory.new_skus()
    await inventory.receive(sku, "EAST-1", 30)
    await inventory.receive(sku, "WEST-1", 30)
    await asyncio.gather(*(inventory.hold([(sku, 1)]) for _ in range(40)))
    levels = await _published_levels(inventory, sku)
    latest = {level.warehouse_id: level.available for level in levels}
    assert latest == {"EAST-1": 0, "WEST-1": 20}  # 30 from EAST-1 first, then 10 from WEST-1
    # 2 receipts + 40 holds changed availability 42 times; far fewer events carried it.
    assert len(levels) < 42 / 2


async def _latest_published_level(inventory: Inventory, sku: str, warehouse: str) -> int | None:
    """The available quantity of the newest AvailabilityChanged naming sku@warehouse."""
    levels = await _published_levels(inventory, sku)
    found = [level for level in levels if level.warehouse_id == warehouse]
    return found[-1].available if found else None


async def test_every_kind_of_position_change_is_announced(inventory: Inventory) -> None:
    """A safety stock set by master data (a new position, then an existing one), a receipt
    and a hold each change availability, and each is announced."""
    (sku,) = await inventory.new_skus()
    runtime = inventory.app.runtime

    async def safety_stock(quantity: int) -> None:
        async with runtime.sessions.begin() as session:
            await load_master_data(
                session,
                {"safety_stock": [{"sku": sku, "warehouse": "EAST-1", "quantity": quantity}]},
            )

    await safety_stock(2)
    assert await _latest_published_level(inventory, sku, "EAST-1") == -2
    await inventory.receive(sku, "EAST-1", 30)
    assert await _latest_published_level(inventory, sku, "EAST-1") == 28
    await inventory.hold([(sku, 5)])
    assert await _latest_published_level(inventory, sku, "EAST-1") == 23
    await safety_stock(0)
    assert await _latest_published_level(inventory, sku, "EAST-1") == 25
