"""The availability feed: inventory's AvailabilityChanged events become coalesced stock
updates per endpoint — each SKU at most once per delivery, latest numbers, stale ones
dropped, the next update only after the previous one was delivered."""

from __future__ import annotations

import pytest

from tests.integration.harness import eventually
from tests.integration.notifications.conftest import AVAILABILITY, Notifications, new_id

pytestmark = pytest.mark.integration


async def test_availability_is_coalesced_per_sku(notifications: Notifications) -> None:
    n = notifications
    hook = f"stock-{new_id()[:8]}"
    await n.endpoint(hook, vocabulary="shopify", event_types=[AVAILABILITY])
    n.sandbox.configure(hook, latency=0.2)  # a slow channel: updates pile up meanwhile
    warehouse = f"WH-{new_id()[:6]}"
    sku_a, sku_b = f"A-{new_id()[:6]}", f"B-{new_id()[:6]}"
    for sequence in range(1, 31):
        await n.availability(warehouse, sequence, {sku_a: 100 - sequence, sku_b: sequence})
    await n.availability(warehouse, 5, {sku_a: 999})  # stale: an older sequence

    mine = {sku_a, sku_b}  # the endpoint also hears of other tests' stock

    def latest() -> dict[str, int]:
        levels: dict[str, int] = {}
        for r in n.sandbox.accepted(hook):
            for level in r.json()["inventory_levels"]:
                if level["sku"] in mine:
                    levels[level["sku"]] = level["available"]
        return levels

    async def final() -> bool:
        return latest() == {sku_a: 70, sku_b: 30}

    await eventually(final, timeout=20, what="the latest levels")
    received = n.sandbox.accepted(hook)
    carrying = [r for r in received if mine & {x["sku"] for x in r.json()["inventory_levels"]}]
    assert len(carrying) < 30  # 30 events, far fewer deliveries
    for r in received:
        levels = r.json()["inventory_levels"]
        skus = [(level["sku"], level["location_id"]) for level in levels]
        assert len(skus) == len(set(skus))  # each SKU (and warehouse) once per delivery
        assert all(level["location_id"] == warehouse for level in levels if level["sku"] in mine)
    sequences = [r.sequence for r in received]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert n.sandbox.hook(hook).max_in_flight_per_order == 0  # not an order feed
    # An endpoint that did not subscribe hears nothing about stock.
    other = f"orders-only-{new_id()[:8]}"
    await n.endpoint(other)
    await n.availability(warehouse, 31, {sku_a: 1})
    await eventually(lambda: _has(n, hook, sku_a, 1), what="the next update")
    assert n.sandbox.received(other) == []


async def _has(n: Notifications, hook: str, sku: str, available: int) -> bool:
    return any(
        level["sku"] == sku and level["available"] == available
        for r in n.sandbox.accepted(hook)
        for level in r.json()["inventory_levels"]
    )
