"""Request validation remembers the SKUs and warehouses it found (master data is never
deleted) and asks again only for names it has not seen."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from chassis.batching import ExpiringValue
from chassis.errors import InvalidArgument
from services.inventory import api
from services.inventory.store import stock


class FakeMasterData:
    def __init__(self) -> None:
        self.skus = {"A", "B"}
        self.warehouses = {"EAST-1"}
        self.sku_queries: list[set[str]] = []
        self.warehouse_queries = 0

    async def known_skus(self, session: Any, skus: Iterable[str]) -> set[str]:
        asked = set(skus)
        self.sku_queries.append(asked)
        return asked & self.skus

    async def warehouses_by_code(self) -> dict[str, Any]:
        self.warehouse_queries += 1
        return {code: object() for code in self.warehouses}

    def names(self) -> api.KnownNames:
        # A snapshot that never expires on its own: only a miss reloads it.
        return api.KnownNames(ExpiringValue(self.warehouses_by_code, ttl_seconds=3600))


@pytest.fixture
def master(monkeypatch: pytest.MonkeyPatch) -> FakeMasterData:
    fake = FakeMasterData()
    monkeypatch.setattr(stock, "known_skus", fake.known_skus)
    return fake


async def test_a_found_sku_is_not_asked_for_again(master: FakeMasterData) -> None:
    known = master.names()
    await known.require_skus(None, ["A", "B"])  # type: ignore[arg-type]
    await known.require_skus(None, ["B", "A", "A"])  # type: ignore[arg-type]
    assert master.sku_queries == [{"A", "B"}]


async def test_an_unknown_sku_is_refused_until_it_is_added(master: FakeMasterData) -> None:
    known = master.names()
    with pytest.raises(InvalidArgument) as refused:
        await known.require_skus(None, ["A", "NEW"], "supplies")  # type: ignore[arg-type]
    assert [v.field for v in refused.value.violations] == ["supplies[1].sku"]
    master.skus.add("NEW")
    await known.require_skus(None, ["A", "NEW"])  # type: ignore[arg-type]
    assert master.sku_queries == [{"A", "NEW"}, {"NEW"}]


async def test_warehouses_are_loaded_again_only_for_a_code_not_seen(
    master: FakeMasterData,
) -> None:
    known = master.names()
    await known.require_warehouses(["EAST-1"], "warehouse_id")
    await known.require_warehouses(["EAST-1"], "warehouse_id")
    assert master.warehouse_queries == 1
    with pytest.raises(InvalidArgument) as refused:
        await known.require_warehouses(["WEST-9"], "warehouse_id")
    assert [v.field for v in refused.value.violations] == ["warehouse_id"]
    master.warehouses.add("WEST-9")
    await known.require_warehouses(["WEST-9"], "warehouse_id")
    assert master.warehouse_queries == 3
