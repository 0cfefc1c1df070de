"""SQL for allocations, backorders and channel sourcing policies (caller's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.inventory.sourcing import Backorder, Policy, Ranking, SplitRule
from services.inventory.store.stock import GuardViolated
from services.inventory.store.tables import (
    allocation,
    allocation_line,
    backorder,
    channel_policy,
    stock_position,
)

DEFAULT_POLICY = Policy(Ranking.PRIORITY_LIST, (), SplitRule.ALLOW_SPLIT, True)


async def upsert_channel_policies(
    session: AsyncSession, policies: Iterable[Mapping[str, Any]]
) -> None:
    for row in policies:
        values = {
            "ranking": row.get("ranking", "PRIORITY_LIST"),
            "warehouse_priority": list(row.get("warehouse_priority", [])),
            "split_rule": row.get("split_rule", "ALLOW_SPLIT"),
            "allow_backorder": bool(row.get("allow_backorder", True)),
        }
        await session.execute(
            insert(channel_policy)
            .values(channel_id=row["channel_id"], **values)
            .on_conflict_do_update(index_elements=["channel_id"], set_=values)
        )


async def policy_of(session: AsyncSession, channel_id: str) -> Policy:
    row = (
        await session.execute(
            select(channel_policy).where(channel_policy.c.channel_id == channel_id)
        )
    ).first()
    if row is None:
        return DEFAULT_POLICY
    return Policy(
        Ranking[row.ranking],
        tuple(row.warehouse_priority),
        SplitRule[row.split_rule],
        row.allow_backorder,
    )


async def move_stock(
    session: AsyncSession,
    deltas: Mapping[tuple[str, str], tuple[int, int]],
) -> None:
    """Apply (reserved delta, allocated delta) per (sku, warehouse), guarded: the sum of
    reserved and allocated may only grow within on_hand - safety_stock."""
    for (sku, wh), (d_reserved, d_allocated) in sorted(deltas.items()):
        if d_reserved == 0 and d_allocated == 0:
            continue
        guards = [
            stock_position.c.reserved + d_reserved >= 0,
            stock_position.c.allocated + d_allocated >= 0,
        ]
        if d_reserved + d_allocated > 0:
            guards.append(
                stock_position.c.reserved
                + stock_position.c.allocated
                + stock_position.c.safety_stock
                + (d_reserved + d_allocated)
                <= stock_position.c.on_hand
            )
        result = await session.execute(
            update(stock_position)
            .where(stock_position.c.sku == sku, stock_position.c.warehouse == wh, *guards)
            .values(
                reserved=stock_position.c.reserved + d_reserved,
                allocated=stock_position.c.allocated + d_allocated,
                updated_at=func.now(),
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise GuardViolated(f"stock move {d_reserved:+d}/{d_allocated:+d} refused {sku}@{wh}")


async def insert_allocation(
    session: AsyncSession,
    order_id: str,
    channel_id: str,
    warehouse: str,
    lines: Sequence[tuple[str, str, int]],
) -> tuple[str, datetime]:
    allocation_id = str(uuid.uuid4())
    allocated_at = (
        await session.execute(
            allocation.insert()
            .values(
                allocation_id=allocation_id,
                order_id=order_id,
                channel_id=channel_id,
                warehouse=warehouse,
            )
            .returning(allocation.c.allocated_at)
        )
    ).scalar_one()
    await session.execute(
        allocation_line.insert(),
        [
            {"allocation_id": allocation_id, "line_id": line_id, "sku": sku, "quantity": qty}
            for line_id, sku, qty in lines
        ],
    )
    return allocation_id, allocated_at


async def allocations_of(session: AsyncSession, order_id: str, *, lock: bool = False) -> list[Any]:
    """Rows of (allocation_id, warehouse, allocated_at, channel_id, line_id, sku, quantity,
    shipped) for an order, oldest allocation first."""
    query = (
        select(
            allocation.c.allocation_id,
            allocation.c.warehouse,
            allocation.c.allocated_at,
            allocation.c.channel_id,
            allocation_line.c.line_id,
            allocation_line.c.sku,
            allocation_line.c.quantity,
            allocation_line.c.shipped,
        )
        .select_from(
            allocation.join(
                allocation_line, allocation_line.c.allocation_id == allocation.c.allocation_id
            )
        )
        .where(allocation.c.order_id == order_id)
        .order_by(allocation.c.allocated_at, allocation.c.allocation_id, allocation_line.c.line_id)
    )
    if lock:
        query = query.with_for_update(of=allocation_line)
    return list(await session.execute(query))


async def change_allocation_line(
    session: AsyncSession, allocation_id: str, line_id: str, *, quantity: int, shipped: int = 0
) -> None:
    await session.execute(
        update(allocation_line)
        .where(
            allocation_line.c.allocation_id == allocation_id,
            allocation_line.c.line_id == line_id,
        )
        .values(
            quantity=allocation_line.c.quantity + quantity,
            shipped=allocation_line.c.shipped + shipped,
        )
    )


async def insert_backorder(
    session: AsyncSession,
    *,
    order_id: str,
    channel_id: str,
    line_id: str,
    sku: str,
    quantity: int,
    priority: int,
    warehouses: Sequence[str],
) -> Any:
    return (
        await session.execute(
            backorder.insert()
            .values(
                backorder_id=str(uuid.uuid4()),
                order_id=order_id,
                channel_id=channel_id,
                line_id=line_id,
                sku=sku,
                quantity=quantity,
                priority=priority,
                warehouses=list(warehouses),
            )
            .returning(backorder)
        )
    ).one()


async def open_backorders(
    session: AsyncSession, skus: Iterable[str], *, lock: bool = False
) -> list[Any]:
    query = (
        select(backorder)
        .where(backorder.c.sku.in_(sorted(set(skus))), backorder.c.quantity > 0)
        .order_by(backorder.c.backorder_id)
    )
    if lock:
        query = query.with_for_update()
    return list(await session.execute(query))


def as_backorder(row: Any) -> Backorder:
    return Backorder(
        row.backorder_id,
        row.line_id,
        row.sku,
        row.quantity,
        row.priority,
        row.created_at,
        frozenset(row.warehouses),
    )


async def set_backorder(session: AsyncSession, backorder_id: str, **values: Any) -> None:
    await session.execute(
        update(backorder).where(backorder.c.backorder_id == backorder_id).values(**values)
    )
