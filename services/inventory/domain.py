"""Pure domain core of the inventory service: no I/O, unit- and property-tested.

Quantities are int64 counts of the SKU's base unit. Available-to-promise (ATP) of a stock
position = on_hand - reserved - allocated - safety_stock; the invariant the store enforces is
reserved + allocated <= on_hand - safety_stock for every (sku, warehouse), so ATP >= 0 except
after a negative drift correction (then it counts as 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import Enum

MAX_HOLD_TTL = timedelta(minutes=60)
MAX_LINES = 1000


@dataclass(frozen=True)
class Warehouse:
    code: str
    region_code: str  # ISO 3166-1 alpha-2 country of the warehouse
    postal_code: str
    priority: int  # lower ranks first in a priority list
    channels: frozenset[str]  # channels allowed to sell from it; empty = every channel


@dataclass(frozen=True)
class StockPosition:
    sku: str
    warehouse: str
    on_hand: int = 0
    reserved: int = 0
    allocated: int = 0
    safety_stock: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved - self.allocated - self.safety_stock

    @property
    def sellable(self) -> int:
        """ATP as callers may use it: never negative."""
        return max(self.available, 0)

    def holds_invariant(self) -> bool:
        return (
            self.reserved >= 0
            and self.allocated >= 0
            and self.on_hand >= 0
            and self.reserved + self.allocated <= max(self.on_hand - self.safety_stock, 0)
        )


@dataclass(frozen=True)
class Line:
    line_id: str
    sku: str
    quantity: int


class Mode(Enum):
    ALL_OR_NOTHING = 1
    PARTIAL = 2


@dataclass(frozen=True)
class LineReservation:
    """What one line holds, per warehouse."""

    line: Line
    by_warehouse: Mapping[str, int] = field(default_factory=dict)

    @property
    def reserved(self) -> int:
        return sum(self.by_warehouse.values())

    @property
    def shortfall(self) -> int:
        return self.line.quantity - self.reserved


@dataclass(frozen=True)
class ReservationPlan:
    lines: tuple[LineReservation, ...]

    @property
    def reserved_total(self) -> int:
        return sum(line.reserved for line in self.lines)

    @property
    def shortfalls(self) -> tuple[LineReservation, ...]:
        return tuple(line for line in self.lines if line.shortfall > 0)

    def take(self) -> dict[tuple[str, str], int]:
        """Quantity to add to ``reserved`` per (sku, warehouse)."""
        totals: dict[tuple[str, str], int] = {}
        for line in self.lines:
            for warehouse, quantity in line.by_warehouse.items():
                key = (line.line.sku, warehouse)
                totals[key] = totals.get(key, 0) + quantity
        return totals


def plan_reservation(
    lines: Sequence[Line],
    positions: Mapping[tuple[str, str], StockPosition],
    ranked_warehouses: Sequence[str],
    mode: Mode,
) -> ReservationPlan:
    """Reserve each line from the best-ranked warehouses with ATP, in line order.

    Lines of the same SKU share the ATP they draw from. In ALL_OR_NOTHING mode a single short
    line empties the whole plan (nothing is reserved) but still reports what was available.
    """
    remaining = {key: position.sellable for key, position in positions.items()}
    planned: list[LineReservation] = []
    for line in lines:
        need = line.quantity
        taken: dict[str, int] = {}
        for warehouse in ranked_warehouses:
            if need == 0:
                break
            key = (line.sku, warehouse)
            quantity = min(need, remaining.get(key, 0))
            if quantity > 0:
                taken[warehouse] = quantity
                remaining[key] -= quantity
                need -= quantity
        planned.append(LineReservation(line, taken))
    plan = ReservationPlan(tuple(planned))
    if mode is Mode.ALL_OR_NOTHING and plan.shortfalls:
        return plan  # caller reports shortfalls and reserves nothing
    return plan


def apply_reserve(position: StockPosition, quantity: int) -> StockPosition:
    if quantity < 0 or quantity > position.sellable:
        raise ValueError(f"cannot reserve {quantity} of {position}")
    return replace(position, reserved=position.reserved + quantity)


def apply_release(position: StockPosition, quantity: int) -> StockPosition:
    """Release reserved quantity; capped so reserved never goes negative."""
    return replace(position, reserved=position.reserved - min(quantity, position.reserved))


def expired(expires_at_epoch: float | None, now_epoch: float) -> bool:
    return expires_at_epoch is not None and expires_at_epoch <= now_epoch


def distinct_line_ids(lines: Iterable[Line]) -> bool:
    ids = [line.line_id for line in lines]
    return len(ids) == len(set(ids))


def release_from(holds: Mapping[str, int], quantity: int) -> dict[str, int]:
    """Which warehouses give back ``quantity`` of a line's holds, in reverse warehouse-code
    order (deterministic, so a retry frees the same stock). Capped at what is held."""
    freed: dict[str, int] = {}
    remaining = min(quantity, sum(holds.values()))
    for warehouse in sorted(holds, reverse=True):
        take = min(remaining, holds[warehouse])
        if take > 0:
            freed[warehouse] = take
            remaining -= take
    return freed


@dataclass(frozen=True)
class CommitMatch:
    """A hold's stock matched to an order's lines."""

    holds: dict[str, dict[str, int]]  # line_id -> warehouse -> quantity kept
    excess: dict[tuple[str, str], int]  # (sku, warehouse) -> held quantity no line needs
    short: tuple[Line, ...]  # what the order needs beyond what was held


def match_commit(
    order_lines: Sequence[Line],
    held: Mapping[tuple[str, str], int],
    ranked_warehouses: Sequence[str],
) -> CommitMatch:
    """Match held (sku, warehouse) quantities to order lines by SKU, best-ranked first."""
    pool = {key: qty for key, qty in held.items() if qty > 0}
    rank = {warehouse: i for i, warehouse in enumerate(ranked_warehouses)}
    holds: dict[str, dict[str, int]] = {}
    short: list[Line] = []
    for line in order_lines:
        need, taken = line.quantity, {}
        candidates = sorted(
            (key for key in pool if key[0] == line.sku),
            key=lambda key: (rank.get(key[1], len(rank)), key[1]),
        )
        for key in candidates:
            take = min(need, pool[key])
            if take > 0:
                taken[key[1]] = take
                pool[key] -= take
                need -= take
        holds[line.line_id] = taken
        if need:
            short.append(Line(line.line_id, line.sku, need))
    return CommitMatch(holds, {k: q for k, q in pool.items() if q > 0}, tuple(short))
