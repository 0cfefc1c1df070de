"""SQL of the inventory service. Every function runs inside the caller's transaction.

Lock order, everywhere: a reservation row before stock positions, and stock positions in
(sku, warehouse) order, so concurrent reservations, releases and the expiry sweeper never
deadlock. The position UPDATEs are guarded (reserved + allocated + safety <= on_hand), so even
a planning bug could not oversell: the guard failing is an internal error, never an oversell.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, func, literal, select, text, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.inventory.domain import Line, StockPosition, Warehouse
from services.inventory.store.tables import (
    availability_dirty,
    incoming_supply,
    item,
    ledger_entry,
    reconciliation,
    reservation,
    reservation_hold,
    reservation_line,
    stock_position,
    warehouse,
)

ACTIVE = "ACTIVE"


class GuardViolated(RuntimeError):
    """A guarded stock update matched no row: the plan disagreed with the locked rows."""


# --- master data ------------------------------------------------------------------------


async def upsert_warehouses(session: AsyncSession, warehouses: Iterable[Mapping[str, Any]]) -> None:
    for row in warehouses:
        values = {
            "code": row["code"],
            "name": row.get("name", ""),
            "region_code": row["region_code"],
            "postal_code": row.get("postal_code", ""),
            "priority": int(row.get("priority", 100)),
            "channels": list(row.get("channels", [])),
            "active": bool(row.get("active", True)),
        }
        await session.execute(
            insert(warehouse)
            .values(**values)
            .on_conflict_do_update(index_elements=["code"], set_=values)
        )


async def upsert_items(session: AsyncSession, items: Iterable[Mapping[str, Any]]) -> None:
    for row in items:
        values = {"sku": row["sku"], "description": row.get("description", "")}
        if "substitutes" in row:  # a document without the key keeps what is there
            values["substitutes"] = [str(sku) for sku in row["substitutes"]]
        await session.execute(
            insert(item)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["sku"], set_={k: v for k, v in values.items() if k != "sku"}
            )
        )


async def substitutes_of(session: AsyncSession, skus: Iterable[str]) -> dict[str, list[str]]:
    """The named substitutes of these SKUs that are themselves known items, best first."""
    rows = await session.execute(
        text(
            """
            SELECT i.sku, array_agg(s.sku ORDER BY n.position) AS substitutes
            FROM item AS i
            CROSS JOIN LATERAL unnest(i.substitutes) WITH ORDINALITY AS n(sku, position)
            JOIN item AS s ON s.sku = n.sku
            WHERE i.sku = ANY(CAST(:skus AS text[])) AND s.sku <> i.sku
            GROUP BY i.sku
            """
        ),
        {"skus": sorted(set(skus))},
    )
    return {row.sku: list(row.substitutes) for row in rows}


async def set_safety_stock(session: AsyncSession, sku: str, warehouse_code: str, qty: int) -> None:
    await session.execute(
        insert(stock_position)
        .values(sku=sku, warehouse=warehouse_code, safety_stock=qty)
        .on_conflict_do_update(
            index_elements=["sku", "warehouse"],
            set_={"safety_stock": qty, "updated_at": func.now()},
        )
    )


async def known_skus(session: AsyncSession, skus: Iterable[str]) -> set[str]:
    wanted = sorted(set(skus))
    if not wanted:
        return set()
    rows = await session.execute(select(item.c.sku).where(item.c.sku.in_(wanted)))
    return set(rows.scalars())


async def warehouses_by_code(session: AsyncSession) -> dict[str, Warehouse]:
    rows = await session.execute(select(warehouse).where(warehouse.c.active))
    return {
        row.code: Warehouse(
            row.code, row.region_code, row.postal_code, row.priority, frozenset(row.channels)
        )
        for row in rows
    }


def eligible(warehouses: Iterable[Warehouse], channel_id: str) -> list[Warehouse]:
    return [w for w in warehouses if not w.channels or channel_id in w.channels]


def by_priority(warehouses: Iterable[Warehouse]) -> list[str]:
    return [w.code for w in sorted(warehouses, key=lambda w: (w.priority, w.code))]


# --- stock positions --------------------------------------------------------------------


def _position(row: Any) -> StockPosition:
    return StockPosition(
        row.sku, row.warehouse, row.on_hand, row.reserved, row.allocated, row.safety_stock
    )


async def lock_positions(
    session: AsyncSession, skus: Iterable[str], warehouses: Iterable[str]
) -> dict[tuple[str, str], StockPosition]:
    """Lock the existing positions of these SKUs in these warehouses, in lock order."""
    skus, warehouses = sorted(set(skus)), sorted(set(warehouses))
    if not skus or not warehouses:
        return {}
    rows = await session.execute(
        select(stock_position)
        .where(stock_position.c.sku.in_(skus), stock_position.c.warehouse.in_(warehouses))
        .order_by(stock_position.c.sku, stock_position.c.warehouse)
        .with_for_update()
    )
    return {(row.sku, row.warehouse): _position(row) for row in rows}


_RESERVE_READ = text(
    """
    SELECT i.sku, p.warehouse, p.on_hand, p.reserved, p.allocated, p.safety_stock,
           now() AS now
    FROM item AS i LEFT JOIN stock_position AS p ON p.sku = i.sku
    WHERE i.sku = ANY(CAST(:skus AS text[]))
    """
)


@dataclass(frozen=True)
class ReserveSnapshot:
    """What a batch of Reserves plans against: which SKUs exist, their positions, and the
    transaction's clock."""

    known: set[str]
    positions: dict[tuple[str, str], StockPosition]
    now: datetime | None  # None when no SKU is known (nothing will be reserved)


async def read_for_reserve(session: AsyncSession, skus: Iterable[str]) -> ReserveSnapshot:
    """Known SKUs, their positions in every warehouse and now(), in one unlocked read. A
    plan made from it is only a proposal: the guarded UPDATE decides, under the row lock."""
    rows = await session.execute(_RESERVE_READ, {"skus": sorted(set(skus))})
    known: set[str] = set()
    positions: dict[tuple[str, str], StockPosition] = {}
    now: datetime | None = None
    for row in rows:
        known.add(row.sku)
        now = row.now
        if row.warehouse is not None:
            positions[(row.sku, row.warehouse)] = _position(row)
    return ReserveSnapshot(known, positions, now)


async def read_positions(
    session: AsyncSession, skus: Iterable[str], warehouses: Iterable[str] | None = None
) -> list[Any]:
    query = select(stock_position).where(stock_position.c.sku.in_(sorted(set(skus))))
    if warehouses:
        query = query.where(stock_position.c.warehouse.in_(sorted(set(warehouses))))
    return list(
        await session.execute(query.order_by(stock_position.c.sku, stock_position.c.warehouse))
    )


async def add_reserved(session: AsyncSession, deltas: Mapping[tuple[str, str], int]) -> None:
    """reserved += delta per position; a positive delta is guarded against overselling."""
    for (sku, wh), delta in sorted(deltas.items()):
        if delta == 0:
            continue
        guard = (
            stock_position.c.reserved
            + stock_position.c.allocated
            + stock_position.c.safety_stock
            + delta
            <= stock_position.c.on_hand
            if delta > 0
            else stock_position.c.reserved + delta >= 0
        )
        result = await session.execute(
            update(stock_position)
            .where(stock_position.c.sku == sku, stock_position.c.warehouse == wh, guard)
            .values(reserved=stock_position.c.reserved + delta, updated_at=func.now())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise GuardViolated(f"reserved {delta:+d} refused for {sku}@{wh}")


# --- reservations -----------------------------------------------------------------------


@dataclass
class ReservationLineRecord:
    line_id: str
    sku: str
    requested: int
    holds: dict[str, int] = field(default_factory=dict)

    @property
    def reserved(self) -> int:
        return sum(self.holds.values())


@dataclass
class ReservationRecord:
    reservation_id: str
    owner_type: str
    owner_id: str
    channel_id: str
    mode: str
    state: str
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    lines: list[ReservationLineRecord]

    def holds(self) -> dict[tuple[str, str], int]:
        """Reserved quantity per (sku, warehouse)."""
        totals: dict[tuple[str, str], int] = {}
        for line in self.lines:
            for wh, qty in line.holds.items():
                totals[(line.sku, wh)] = totals.get((line.sku, wh), 0) + qty
        return totals


async def active_reservation_of(
    session: AsyncSession, owner_type: str, owner_id: str
) -> str | None:
    return await session.scalar(
        select(reservation.c.reservation_id).where(
            reservation.c.owner_type == owner_type,
            reservation.c.owner_id == owner_id,
            reservation.c.state == ACTIVE,
        )
    )


async def insert_reservation(
    session: AsyncSession,
    *,
    owner_type: str,
    owner_id: str,
    channel_id: str,
    mode: str,
    ttl_seconds: float | None,
    lines: Sequence[Line],
    holds: Mapping[str, Mapping[str, int]],
) -> str:
    reservation_id = str(uuid.uuid4())
    expires = (
        func.now() + func.make_interval(0, 0, 0, 0, 0, 0, ttl_seconds)
        if ttl_seconds is not None
        else None
    )
    await session.execute(
        reservation.insert().values(
            reservation_id=reservation_id,
            owner_type=owner_type,
            owner_id=owner_id,
            channel_id=channel_id,
            mode=mode,
            state=ACTIVE,
            expires_at=expires,
        )
    )
    await session.execute(
        reservation_line.insert(),
        [
            {
                "reservation_id": reservation_id,
                "line_id": line.line_id,
                "position": index,
                "sku": line.sku,
                "requested": line.quantity,
            }
            for index, line in enumerate(lines)
        ],
    )
    await _insert_holds(session, reservation_id, holds)
    return reservation_id


async def _insert_holds(
    session: AsyncSession, reservation_id: str, holds: Mapping[str, Mapping[str, int]]
) -> None:
    rows = [
        {"reservation_id": reservation_id, "line_id": line_id, "warehouse": wh, "quantity": qty}
        for line_id, by_wh in holds.items()
        for wh, qty in by_wh.items()
        if qty > 0
    ]
    if rows:
        await session.execute(reservation_hold.insert(), rows)


async def load_reservation(
    session: AsyncSession, reservation_id: str, *, lock: bool = False
) -> ReservationRecord | None:
    try:
        uuid.UUID(reservation_id)
    except ValueError:
        return None
    query = select(reservation).where(reservation.c.reservation_id == reservation_id)
    if lock:
        query = query.with_for_update()
    head = (await session.execute(query)).first()
    if head is None:
        return None
    lines = {
        row.line_id: ReservationLineRecord(row.line_id, row.sku, row.requested)
        for row in await session.execute(
            select(reservation_line)
            .where(reservation_line.c.reservation_id == reservation_id)
            .order_by(reservation_line.c.position)
        )
    }
    for row in await session.execute(
        select(reservation_hold).where(reservation_hold.c.reservation_id == reservation_id)
    ):
        lines[row.line_id].holds[row.warehouse] = row.quantity
    return ReservationRecord(
        head.reservation_id,
        head.owner_type,
        head.owner_id,
        head.channel_id,
        head.mode,
        head.state,
        head.expires_at,
        head.created_at,
        head.updated_at,
        list(lines.values()),
    )


async def set_holds(session: AsyncSession, record: ReservationRecord) -> None:
    """Replace the reservation's holds with what ``record.lines`` says now."""
    await session.execute(
        reservation_hold.delete().where(reservation_hold.c.reservation_id == record.reservation_id)
    )
    await _insert_holds(
        session, record.reservation_id, {line.line_id: line.holds for line in record.lines}
    )


async def update_reservation(session: AsyncSession, reservation_id: str, **values: Any) -> None:
    await session.execute(
        update(reservation)
        .where(reservation.c.reservation_id == reservation_id)
        .values(updated_at=func.now(), **values)
    )


async def due_for_expiry(session: AsyncSession, limit: int) -> list[str]:
    """ACTIVE holds past their expiry, locked; rows another sweeper holds are skipped."""
    rows = await session.execute(
        select(reservation.c.reservation_id)
        .where(reservation.c.state == ACTIVE, reservation.c.expires_at <= func.now())
        .order_by(reservation.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows.scalars())


async def now(session: AsyncSession) -> datetime:
    value: datetime | None = await session.scalar(select(func.now()))
    assert value is not None
    return value


# --- ledger -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Movement:
    sku: str
    warehouse: str
    kind: str
    quantity_delta: int
    reference: str = ""
    order_id: str = ""
    line_id: str = ""
    reason: str = ""
    occurred_at: datetime | None = None


async def existing_movement(session: AsyncSession, movement: Movement) -> Any | None:
    if not movement.reference:
        return None
    return (
        await session.execute(
            select(ledger_entry).where(
                ledger_entry.c.kind == movement.kind,
                ledger_entry.c.reference == movement.reference,
                ledger_entry.c.sku == movement.sku,
                ledger_entry.c.warehouse == movement.warehouse,
                ledger_entry.c.line_id == movement.line_id,
            )
        )
    ).first()


async def append_ledger(session: AsyncSession, movement: Movement) -> tuple[Any, Any]:
    """Apply a movement to on-hand and append its ledger entry; returns (entry, position).

    The position row is created on first movement. Returns ``(None, position)`` when on-hand
    would go negative (the caller refuses the movement).
    """
    await session.execute(
        insert(stock_position)
        .values(sku=movement.sku, warehouse=movement.warehouse)
        .on_conflict_do_nothing()
    )
    position = (
        await session.execute(
            update(stock_position)
            .where(
                stock_position.c.sku == movement.sku,
                stock_position.c.warehouse == movement.warehouse,
                stock_position.c.on_hand + movement.quantity_delta >= 0,
            )
            .values(
                on_hand=stock_position.c.on_hand + movement.quantity_delta,
                ledger_sequence=stock_position.c.ledger_sequence + 1,
                updated_at=func.now(),
            )
            .returning(stock_position)
        )
    ).first()
    if position is None:
        current = (
            await session.execute(
                select(stock_position).where(
                    stock_position.c.sku == movement.sku,
                    stock_position.c.warehouse == movement.warehouse,
                )
            )
        ).first()
        return None, current
    entry = (
        await session.execute(
            ledger_entry.insert()
            .values(
                entry_id=str(uuid.uuid4()),
                sku=movement.sku,
                warehouse=movement.warehouse,
                kind=movement.kind,
                quantity_delta=movement.quantity_delta,
                on_hand_after=position.on_hand,
                sequence=position.ledger_sequence,
                reference=movement.reference,
                order_id=movement.order_id,
                line_id=movement.line_id,
                reason=movement.reason,
                occurred_at=movement.occurred_at or func.now(),
            )
            .returning(ledger_entry)
        )
    ).one()
    return entry, position


async def list_ledger(
    session: AsyncSession,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    sku: str = "",
    warehouse_code: str = "",
    kinds: Sequence[str] = (),
    order_id: str = "",
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
) -> list[Any]:
    """Newest first, keyset-paged on (recorded_at, entry_id)."""
    conditions = []
    if sku:
        conditions.append(ledger_entry.c.sku == sku)
    if warehouse_code:
        conditions.append(ledger_entry.c.warehouse == warehouse_code)
    if kinds:
        conditions.append(ledger_entry.c.kind.in_(list(kinds)))
    if order_id:
        conditions.append(ledger_entry.c.order_id == order_id)
    if occurred_after is not None:
        conditions.append(ledger_entry.c.occurred_at >= occurred_after)
    if occurred_before is not None:
        conditions.append(ledger_entry.c.occurred_at < occurred_before)
    if after is not None:
        conditions.append(
            tuple_(ledger_entry.c.recorded_at, ledger_entry.c.entry_id)
            < tuple_(
                literal(after[0], type_=ledger_entry.c.recorded_at.type),
                literal(after[1], type_=ledger_entry.c.entry_id.type),
            )
        )
    query = (
        select(ledger_entry)
        .where(and_(true(), *conditions))
        .order_by(ledger_entry.c.recorded_at.desc(), ledger_entry.c.entry_id.desc())
        .limit(limit)
    )
    return list(await session.execute(query))


# --- incoming supply --------------------------------------------------------------------


async def upsert_supply(session: AsyncSession, row: Mapping[str, Any]) -> Any | None:
    key = (
        incoming_supply.c.supply_id == row["supply_id"],
        incoming_supply.c.sku == row["sku"],
        incoming_supply.c.warehouse == row["warehouse"],
    )
    if row["quantity"] == 0:
        await session.execute(incoming_supply.delete().where(*key))
        return None
    values = {
        "kind": row["kind"],
        "quantity": row["quantity"],
        "expected_at": row["expected_at"],
        "updated_at": func.now(),
    }
    return (
        await session.execute(
            insert(incoming_supply)
            .values(
                supply_id=row["supply_id"], sku=row["sku"], warehouse=row["warehouse"], **values
            )
            .on_conflict_do_update(index_elements=["supply_id", "sku", "warehouse"], set_=values)
            .returning(incoming_supply)
        )
    ).one()


async def supplies_for(session: AsyncSession, skus: Iterable[str]) -> list[Any]:
    return list(
        await session.execute(
            select(incoming_supply)
            .where(incoming_supply.c.sku.in_(sorted(set(skus))))
            .order_by(incoming_supply.c.expected_at, incoming_supply.c.supply_id)
        )
    )


# --- coalesced availability -------------------------------------------------------------


async def take_dirty(session: AsyncSession, limit: int) -> list[tuple[str, str]]:
    rows = await session.execute(
        availability_dirty.delete()
        .where(
            tuple_(availability_dirty.c.sku, availability_dirty.c.warehouse).in_(
                select(availability_dirty.c.sku, availability_dirty.c.warehouse)
                .order_by(availability_dirty.c.marked_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        .returning(availability_dirty.c.sku, availability_dirty.c.warehouse)
    )
    return [(row.sku, row.warehouse) for row in rows]


async def replace_lines(session: AsyncSession, record: ReservationRecord) -> None:
    """Replace the reservation's lines (and holds) with ``record.lines``."""
    await session.execute(
        reservation_hold.delete().where(reservation_hold.c.reservation_id == record.reservation_id)
    )
    await session.execute(
        reservation_line.delete().where(reservation_line.c.reservation_id == record.reservation_id)
    )
    await session.execute(
        reservation_line.insert(),
        [
            {
                "reservation_id": record.reservation_id,
                "line_id": line.line_id,
                "position": index,
                "sku": line.sku,
                "requested": line.requested,
            }
            for index, line in enumerate(record.lines)
        ],
    )
    await set_holds(session, record)


async def stored_reconciliation(
    session: AsyncSession, warehouse_code: str, snapshot_id: str
) -> bytes | None:
    report: bytes | None = await session.scalar(
        select(reconciliation.c.report).where(
            reconciliation.c.warehouse == warehouse_code,
            reconciliation.c.snapshot_id == snapshot_id,
        )
    )
    return report


async def save_reconciliation(
    session: AsyncSession,
    reconciliation_id: str,
    warehouse_code: str,
    snapshot_id: str,
    report: bytes,
) -> None:
    await session.execute(
        reconciliation.insert().values(
            reconciliation_id=reconciliation_id,
            warehouse=warehouse_code,
            snapshot_id=snapshot_id,
            report=report,
        )
    )


async def on_hand_as_of(
    session: AsyncSession, warehouse_code: str, skus: Iterable[str] | None, as_of: datetime
) -> dict[str, int]:
    """On-hand per SKU in a warehouse at ``as_of``: today's on-hand minus later movements.
    ``skus`` None means every SKU stocked there. Positions are locked (consistent reading)."""
    query = select(stock_position.c.sku, stock_position.c.on_hand).where(
        stock_position.c.warehouse == warehouse_code
    )
    if skus is not None:
        query = query.where(stock_position.c.sku.in_(sorted(set(skus))))
    rows = await session.execute(query.order_by(stock_position.c.sku).with_for_update())
    current = {row.sku: row.on_hand for row in rows}
    later = await session.execute(
        select(ledger_entry.c.sku, func.sum(ledger_entry.c.quantity_delta).label("delta"))
        .where(
            ledger_entry.c.warehouse == warehouse_code,
            ledger_entry.c.occurred_at > as_of,
            ledger_entry.c.sku.in_(list(current)),
        )
        .group_by(ledger_entry.c.sku)
    )
    for row in later:
        current[row.sku] -= row.delta
    return current


# --- batched reservation writes (one statement each for a whole coalesced batch) -------


_ACTIVE_OWNERS = text(
    """
    SELECT r.owner_type, r.owner_id
    FROM reservation AS r
    JOIN unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS o(owner_type, owner_id)
      ON r.owner_type = o.owner_type AND r.owner_id = o.owner_id
    WHERE r.state = 'ACTIVE'
    """
)


async def owners_with_active_reservation(
    session: AsyncSession, owners: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    wanted = sorted(set(owners))
    if not wanted:
        return set()
    rows = await session.execute(
        _ACTIVE_OWNERS, {"types": [t for t, _ in wanted], "ids": [i for _, i in wanted]}
    )
    return {(row.owner_type, row.owner_id) for row in rows}


_ADD_RESERVED_MANY = text(
    """
    UPDATE stock_position AS p
    SET reserved = p.reserved + d.delta, updated_at = now()
    FROM unnest(CAST(:skus AS text[]), CAST(:warehouses AS text[]), CAST(:deltas AS bigint[]))
         AS d(sku, warehouse, delta)
    WHERE p.sku = d.sku AND p.warehouse = d.warehouse
      AND p.reserved + p.allocated + p.safety_stock + d.delta <= p.on_hand
      AND p.reserved + d.delta >= 0
    """
)


async def add_reserved_many(session: AsyncSession, deltas: Mapping[tuple[str, str], int]) -> None:
    """``add_reserved`` for many positions in one guarded statement (rows already locked)."""
    items = sorted((key, delta) for key, delta in deltas.items() if delta)
    if not items:
        return
    result = await session.execute(
        _ADD_RESERVED_MANY,
        {
            "skus": [sku for (sku, _), _ in items],
            "warehouses": [wh for (_, wh), _ in items],
            "deltas": [delta for _, delta in items],
        },
    )
    if result.rowcount != len(items):  # type: ignore[attr-defined]
        raise GuardViolated(f"batched reserve refused on {len(items) - result.rowcount} rows")  # type: ignore[attr-defined]


# The three tables of a batch of reservations in one statement (one round trip).
_INSERT_RESERVATIONS = text(
    """
    WITH heads AS (
        INSERT INTO reservation (reservation_id, owner_type, owner_id, channel_id, mode,
                                 state, expires_at)
        SELECT * FROM unnest(CAST(:reservation_id AS uuid[]), CAST(:owner_type AS text[]),
                             CAST(:owner_id AS text[]), CAST(:channel_id AS text[]),
                             CAST(:mode AS text[]), CAST(:state AS text[]),
                             CAST(:expires_at AS timestamptz[]))
    ), lines AS (
        INSERT INTO reservation_line (reservation_id, line_id, position, sku, requested)
        SELECT * FROM unnest(CAST(:line_reservation_id AS uuid[]),
                             CAST(:line_line_id AS text[]), CAST(:line_position AS integer[]),
                             CAST(:line_sku AS text[]), CAST(:line_requested AS bigint[]))
    )
    INSERT INTO reservation_hold (reservation_id, line_id, warehouse, quantity)
    SELECT * FROM unnest(CAST(:hold_reservation_id AS uuid[]), CAST(:hold_line_id AS text[]),
                         CAST(:hold_warehouse AS text[]), CAST(:hold_quantity AS bigint[]))
    """
)


def _columns(rows: Sequence[Mapping[str, Any]], prefix: str = "") -> dict[str, list[Any]]:
    return {prefix + column: [row[column] for row in rows] for column in rows[0]}


async def insert_reservations_many(
    session: AsyncSession,
    heads: Sequence[Mapping[str, Any]],
    lines: Sequence[Mapping[str, Any]],
    holds: Sequence[Mapping[str, Any]],
) -> None:
    """Rows of a whole batch (every head has lines; a line may hold nothing). Heads go in
    owner order: two batches reserving for the same owners then meet on the owner's unique
    index in the same order, and one waits for the other instead of deadlocking."""
    if not heads:
        return
    heads = sorted(heads, key=lambda head: (head["owner_type"], head["owner_id"]))
    empty_holds: dict[str, list[Any]] = {
        f"hold_{column}": [] for column in ("reservation_id", "line_id", "warehouse", "quantity")
    }
    await session.execute(
        _INSERT_RESERVATIONS,
        {
            **_columns(heads),
            **_columns(lines, "line_"),
            **(_columns(holds, "hold_") if holds else empty_holds),
        },
    )


# --- the availability read path (hot: two fixed statements, no ORM session) ------------

# Run on the asyncpg connection itself: on this path SQLAlchemy's per-statement work cost
# several times the query's own client-side CPU.
_AVAILABILITY = """
    SELECT 'p' AS kind, p.sku, p.warehouse, p.on_hand, p.reserved, p.allocated,
           p.safety_stock, p.updated_at, now() AS as_of,
           NULL AS supply_id, NULL AS supply_kind, NULL::bigint AS quantity,
           NULL::timestamptz AS expected_at
    FROM stock_position AS p
    WHERE p.sku = ANY($1::text[])
      AND (cardinality($2::text[]) = 0 OR p.warehouse = ANY($2::text[]))
    UNION ALL
    SELECT 's', s.sku, s.warehouse, NULL, NULL, NULL, NULL, s.updated_at, now(),
           s.supply_id, s.kind, s.quantity, s.expected_at
    FROM incoming_supply AS s
    WHERE s.sku = ANY($1::text[])
    UNION ALL
    SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL, now(), NULL, NULL, NULL, NULL
    ORDER BY 1, 2, 3, 13, 10
"""


class PositionRow(NamedTuple):
    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    allocated: int
    safety_stock: int
    updated_at: datetime


@dataclass(frozen=True)
class SupplyRow:
    supply_id: str
    sku: str
    warehouse: str
    kind: str
    quantity: int
    expected_at: datetime
    updated_at: datetime


async def availability_rows(
    conn: AsyncConnection, skus: Sequence[str], warehouses: Sequence[str]
) -> tuple[list[PositionRow], list[SupplyRow], datetime]:
    """Positions, open supplies (earliest first) and the database time, in one round trip."""
    positions: list[PositionRow] = []
    supplies: list[SupplyRow] = []
    as_of: datetime | None = None
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    for row in await driver.fetch(_AVAILABILITY, list(skus), list(warehouses)):
        kind = row[0]
        as_of = row[8]
        if kind == "p":
            positions.append(PositionRow(row[1], row[2], row[3], row[4], row[5], row[6], row[7]))
        elif kind == "s":
            supplies.append(SupplyRow(row[9], row[1], row[2], row[10], row[11], row[12], row[7]))
    assert as_of is not None
    supplies.sort(key=lambda s: (s.expected_at, s.supply_id))
    return positions, supplies, as_of
