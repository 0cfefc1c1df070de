"""Event handlers and background loops of the inventory service.

* The hold-expiry sweeper releases ACTIVE holds past their expiry. Each batch locks due
  reservations with SKIP LOCKED, so any number of replicas sweep without doing a hold twice.
* The availability coalescer turns the positions marked dirty since the last window into one
  AvailabilityChanged event per warehouse, so a flash sale does not flood the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from chassis.bus import ConsumerSpec
from chassis.protos import ts
from chassis.server import Runtime, Worker
from dwf.inventory.v1 import events_pb2, inventory_pb2
from services.inventory.api import InventoryService, level_proto
from services.inventory.store import stock

log = logging.getLogger("dwf.inventory")

SWEEP_BATCH = 100
AVAILABILITY_BATCH = 1000


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    return ()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def sweep_expired_holds_once(runtime: Runtime, service: InventoryService) -> int:
    async with runtime.sessions.begin() as session:
        due = await stock.due_for_expiry(session, SWEEP_BATCH)
        for reservation_id in due:
            await service.expire(session, reservation_id)
    return len(due)


async def sweep_expired_holds(
    runtime: Runtime, service: InventoryService, interval: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        expired = await sweep_expired_holds_once(runtime, service)
        if expired:
            log.info("expired %d holds", expired)
        if expired < SWEEP_BATCH:
            await _pause(stop, interval)


async def publish_availability_once(runtime: Runtime) -> int:
    """One window: every dirty position becomes part of its warehouse's event."""
    async with runtime.sessions.begin() as session:
        keys = await stock.take_dirty(session, AVAILABILITY_BATCH)
        if not keys:
            return 0
        rows = await stock.read_positions(session, {sku for sku, _ in keys})
        wanted = set(keys)
        by_warehouse: dict[str, list[inventory_pb2.StockLevel]] = {}
        for row in rows:
            if (row.sku, row.warehouse) in wanted:
                by_warehouse.setdefault(row.warehouse, []).append(level_proto(row))
        window_end = datetime.now(UTC)
        for warehouse, levels in sorted(by_warehouse.items()):
            await runtime.events.record(
                session,
                aggregate_type="warehouse",
                aggregate_id=warehouse,
                payload=events_pb2.AvailabilityChanged(
                    warehouse_id=warehouse, entries=levels, window_end=ts(window_end)
                ),
            )
    return len(keys)


async def publish_availability(runtime: Runtime, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        published = await publish_availability_once(runtime)
        if published < AVAILABILITY_BATCH:
            await _pause(stop, interval)


def workers(runtime: Runtime, service: InventoryService) -> Sequence[Worker]:
    settings = runtime.settings
    return (
        (
            "hold expiry sweeper",
            lambda stop: sweep_expired_holds(
                runtime, service, settings.sweep_interval_seconds, stop
            ),
        ),
        (
            "availability coalescer",
            lambda stop: publish_availability(runtime, settings.availability_window_seconds, stop),
        ),
    )
