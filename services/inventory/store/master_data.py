"""Inventory master data: warehouses, items, safety stock and channel sourcing policies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.inventory.store.allocations import upsert_channel_policies
from services.inventory.store.stock import set_safety_stock, upsert_items, upsert_warehouses

SECTIONS = ("warehouses", "items", "safety_stock", "channel_policies")


async def load_master_data(session: AsyncSession, data: Mapping[str, Any]) -> dict[str, int]:
    """Upsert every section present in a master-data document (docs/inventory.md)."""
    await upsert_warehouses(session, data.get("warehouses", []))
    await upsert_items(session, data.get("items", []))
    for row in data.get("safety_stock", []):
        await set_safety_stock(session, row["sku"], row["warehouse"], int(row["quantity"]))
    await upsert_channel_policies(session, data.get("channel_policies", []))
    return {key: len(data.get(key, [])) for key in SECTIONS}
