"""gRPC API of the inventory service: proto ↔ domain translation, validation, and the
transaction script of each RPC (decisions in ``domain``, SQL in ``store.stock``).

Validation happens before any transaction, so a refused request writes nothing. Every
mutating RPC runs through ``Runtime.once`` (request_id idempotency, one transaction with its
outbox events). RPCs not overridden here answer UNIMPLEMENTED until their part lands.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.batching import Coalescer, ExpiringValue, SharedReads
from chassis.context import new_id
from chassis.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from chassis.idempotency import (
    ConcurrentDuplicate,
    answered_many,
    fingerprint,
    record_answers,
    reused,
)
from chassis.outbox import PendingEvent, caller_context
from chassis.pagination import encode_page_token, filters_of, page_after
from chassis.protos import ts
from chassis.server import Runtime
from chassis.validation import Violations
from dwf.common.v1 import common_pb2
from dwf.inventory.v1 import events_pb2, inventory_pb2, inventory_pb2_grpc
from services.inventory import domain, sourcing
from services.inventory.store import allocations as alloc
from services.inventory.store import stock

pb = inventory_pb2
HOLD, ORDER = "HOLD", "ORDER"
OWNER_TYPES = {pb.RESERVATION_OWNER_TYPE_HOLD: HOLD, pb.RESERVATION_OWNER_TYPE_ORDER: ORDER}


def owner_of(request: pb.ReserveRequest) -> tuple[str, str]:
    return OWNER_TYPES[request.owner.type], request.owner.owner_id


OWNER_ENUM = {name: value for value, name in OWNER_TYPES.items()}
MODE_NAMES = {pb.RESERVATION_MODE_PARTIAL: "PARTIAL"}
STATE_ENUM = {
    "ACTIVE": pb.RESERVATION_STATE_ACTIVE,
    "RELEASED": pb.RESERVATION_STATE_RELEASED,
    "EXPIRED": pb.RESERVATION_STATE_EXPIRED,
    "CONSUMED": pb.RESERVATION_STATE_CONSUMED,
}
MOVEMENT_KINDS = {
    pb.MOVEMENT_KIND_RECEIPT: "RECEIPT",
    pb.MOVEMENT_KIND_ADJUSTMENT: "ADJUSTMENT",
    pb.MOVEMENT_KIND_SHIPMENT: "SHIPMENT",
    pb.MOVEMENT_KIND_RETURN: "RETURN",
    pb.MOVEMENT_KIND_RECONCILIATION: "RECONCILIATION",
}
MOVEMENT_ENUM = {name: value for value, name in MOVEMENT_KINDS.items()}
SUPPLY_KINDS = {
    pb.SUPPLY_KIND_PURCHASE_ORDER: "PURCHASE_ORDER",
    pb.SUPPLY_KIND_TRANSFER: "TRANSFER",
    pb.SUPPLY_KIND_OTHER: "OTHER",
}
SUPPLY_ENUM = {name: value for value, name in SUPPLY_KINDS.items()}
log = logging.getLogger("dwf.inventory")
MAX_SKUS = 1000
# Concurrent Reserve batches per process: while one waits on the database the next plans.
RESERVE_WRITERS = 2
# A batch whose guard refused (stock moved since its unlocked read) runs again, locked.
RESERVE_ATTEMPTS = 3
DEADLOCK_DETECTED = "40P01"  # SQLSTATE
MAX_PAGE = 1000
DEFAULT_PAGE = 100


# --- conversions ------------------------------------------------------------------------


def reservation_proto(
    record: stock.ReservationRecord,
    stamp: Callable[[datetime | None], timestamp_pb2.Timestamp | None] = ts,
) -> pb.Reservation:
    return pb.Reservation(
        reservation_id=record.reservation_id,
        owner=pb.ReservationOwner(type=OWNER_ENUM[record.owner_type], owner_id=record.owner_id),
        channel_id=record.channel_id,
        mode=pb.RESERVATION_MODE_PARTIAL
        if record.mode == "PARTIAL"
        else pb.RESERVATION_MODE_ALL_OR_NOTHING,
        state=STATE_ENUM[record.state],
        lines=[line_proto(line) for line in record.lines],
        created_at=stamp(record.created_at),
        updated_at=stamp(record.updated_at),
        expires_at=stamp(record.expires_at),
    )


def line_proto(line: stock.ReservationLineRecord) -> pb.ReservationLine:
    return pb.ReservationLine(
        line_id=line.line_id,
        sku=line.sku,
        requested_quantity=line.requested,
        reserved_quantity=line.reserved,
        warehouses=[
            pb.WarehouseQuantity(warehouse_id=wh, quantity=qty)
            for wh, qty in sorted(line.holds.items())
        ],
    )


def level_proto(row: Any, incoming: int = 0) -> pb.StockLevel:
    position = domain.StockPosition(
        row.sku, row.warehouse, row.on_hand, row.reserved, row.allocated, row.safety_stock
    )
    return pb.StockLevel(
        sku=row.sku,
        warehouse_id=row.warehouse,
        on_hand=row.on_hand,
        reserved=row.reserved,
        allocated=row.allocated,
        safety_stock=row.safety_stock,
        available=position.available,
        incoming=incoming,
        updated_at=ts(row.updated_at),
    )


def ledger_proto(row: Any) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=row.entry_id,
        sku=row.sku,
        warehouse_id=row.warehouse,
        kind=MOVEMENT_ENUM[row.kind],
        quantity_delta=row.quantity_delta,
        on_hand_after=row.on_hand_after,
        sequence=row.sequence,
        reference=row.reference,
        order_id=row.order_id,
        line_id=row.line_id,
        reason=row.reason,
        occurred_at=ts(row.occurred_at),
        recorded_at=ts(row.recorded_at),
    )


def supply_proto(row: Any) -> pb.IncomingSupply:
    return pb.IncomingSupply(
        supply_id=row.supply_id,
        sku=row.sku,
        warehouse_id=row.warehouse,
        kind=SUPPLY_ENUM[row.kind],
        quantity=row.quantity,
        expected_at=ts(row.expected_at),
        updated_at=ts(row.updated_at),
    )


# --- validation -------------------------------------------------------------------------


def check_lines(v: Violations, lines: Sequence[pb.LineItem], field: str = "lines") -> None:
    if not v.check(1 <= len(lines) <= domain.MAX_LINES, field, "1 to 1000 lines"):
        return
    seen: set[str] = set()
    for i, line in enumerate(lines):
        v.check(bool(line.line_id), f"{field}[{i}].line_id", "required")
        v.check(line.line_id not in seen, f"{field}[{i}].line_id", "duplicate line_id")
        seen.add(line.line_id)
        v.check(bool(line.sku), f"{field}[{i}].sku", "required")
        v.check(line.quantity > 0, f"{field}[{i}].quantity", "must be > 0")


def check_ttl(v: Violations, request: Any, field: str = "ttl") -> float | None:
    if not request.HasField("ttl"):
        v.add(field, "required for a hold: > 0 and <= 60 minutes")
        return None
    seconds = request.ttl.ToTimedelta().total_seconds()
    if not v.check(
        0 < seconds <= domain.MAX_HOLD_TTL.total_seconds(), field, "must be > 0 and <= 60 minutes"
    ):
        return None
    return float(seconds)


def domain_lines(lines: Sequence[pb.LineItem]) -> list[domain.Line]:
    return [domain.Line(line.line_id, line.sku, line.quantity) for line in lines]


class KnownNames:
    """SKUs and warehouse codes that exist, for validating requests. Master data is
    upserted and never deleted, so a name once found stays valid: only a name not seen yet
    costs a query (a refused one is asked again next time, in case it was added meanwhile).
    Warehouse codes come from the service's warehouse snapshot, reloaded on a miss; SKUs
    are too many to load whole, so each one is learned when first asked for. Each replica
    learns on its own; nothing is shared or stale."""

    def __init__(self, warehouses: ExpiringValue[dict[str, domain.Warehouse]]) -> None:
        self.skus: set[str] = set()
        self.warehouses = warehouses

    async def require_skus(
        self, session: AsyncSession, skus: Sequence[str], field: str = "lines"
    ) -> None:
        missing = {sku for sku in skus if sku not in self.skus}
        if missing:
            self.skus |= await stock.known_skus(session, missing)
        unknown = [
            FieldViolation(f"{field}[{i}].sku", f"unknown SKU {sku!r}")
            for i, sku in enumerate(skus)
            if sku not in self.skus
        ]
        if unknown:
            raise InvalidArgument(unknown, reason="UNKNOWN_SKU")

    async def require_warehouses(self, codes: Sequence[str], field: str) -> None:
        known = await self.warehouses.get()
        if any(code not in known for code in codes):
            self.warehouses.invalidate()
            known = await self.warehouses.get()
        unknown = [
            FieldViolation(f"{field}[{i}]" if len(codes) > 1 else field, f"unknown warehouse {c!r}")
            for i, c in enumerate(codes)
            if c not in known
        ]
        if unknown:
            raise InvalidArgument(unknown, reason="UNKNOWN_WAREHOUSE")


RANKINGS = {
    pb.WAREHOUSE_RANKING_PRIORITY_LIST: sourcing.Ranking.PRIORITY_LIST,
    pb.WAREHOUSE_RANKING_NEAREST_TO_SHIP_TO: sourcing.Ranking.NEAREST_TO_SHIP_TO,
}
SPLIT_RULES = {
    pb.SPLIT_RULE_SHIP_COMPLETE: sourcing.SplitRule.SHIP_COMPLETE,
    pb.SPLIT_RULE_ALLOW_SPLIT: sourcing.SplitRule.ALLOW_SPLIT,
    pb.SPLIT_RULE_FEWEST_SPLITS: sourcing.SplitRule.FEWEST_SPLITS,
}
RANKING_ENUM = {value: key for key, value in RANKINGS.items()}
SPLIT_ENUM = {value: key for key, value in SPLIT_RULES.items()}


def effective_policy(configured: sourcing.Policy, request: Any) -> sourcing.Policy:
    """The channel's policy with the request's overrides (unset fields keep the channel's)."""
    if not request.HasField("policy"):
        return configured
    override = request.policy
    return sourcing.Policy(
        RANKINGS.get(override.ranking, configured.ranking),
        tuple(override.warehouse_priority) or configured.warehouse_priority,
        SPLIT_RULES.get(override.split_rule, configured.split_rule),
        override.allow_backorder,
    )


def policy_proto(policy: sourcing.Policy) -> pb.SourcingPolicy:
    return pb.SourcingPolicy(
        ranking=RANKING_ENUM[policy.ranking],
        warehouse_priority=list(policy.warehouse_priority),
        split_rule=SPLIT_ENUM[policy.split_rule],
        allow_backorder=policy.allow_backorder,
    )


def ship_to_of(request: Any) -> sourcing.ShipTo | None:
    if not request.HasField("ship_to"):
        return None
    return sourcing.ShipTo(request.ship_to.region_code, request.ship_to.postal_code)


def allocation_proto(
    allocation_id: str,
    warehouse: str,
    allocated_at: datetime | None,
    lines: Sequence[tuple[str, str, int]],
) -> pb.WarehouseAllocation:
    return pb.WarehouseAllocation(
        allocation_id=allocation_id,
        warehouse_id=warehouse,
        allocated_at=ts(allocated_at),
        lines=[pb.AllocatedLine(line_id=lid, sku=sku, quantity=q) for lid, sku, q in lines],
    )


def substitute_shortfalls(
    plan: sourcing.AllocationPlan,
    allow_backorder: bool,
    may_substitute: set[str],
    substitutes: dict[str, list[str]],
    available: dict[tuple[str, str], int],
    ranked: list[str],
) -> tuple[sourcing.AllocationPlan, sourcing.SubstitutionPlan]:
    """What the plan would backorder (or leave unfilled) of lines that allow substitution,
    covered where possible by their substitutes' remaining ATP; the plan's shortfalls shrink
    by what the substitutes cover."""
    if not substitutes:
        return plan, sourcing.SubstitutionPlan()
    short = plan.backorders if allow_backorder else plan.unfilled
    candidates = [line for line in short if line.line_id in may_substitute]
    net = dict(available)
    for key, quantity in plan.taken_atp.items():
        net[key] = net.get(key, 0) - quantity
    substituted = sourcing.plan_substitutions(candidates, substitutes, net, ranked)
    if not substituted.substitutions:
        return plan, substituted
    left = {line.line_id: line.quantity for line in substituted.uncovered}
    tried = {line.line_id for line in candidates}
    remaining = tuple(
        sourcing.LineQuantity(line.line_id, line.sku, quantity)
        for line in short
        if (quantity := left.get(line.line_id, 0) if line.line_id in tried else line.quantity)
    )
    if allow_backorder:
        return dataclasses.replace(plan, backorders=remaining), substituted
    return dataclasses.replace(plan, unfilled=remaining), substituted


def substitution_allocations(
    plan: sourcing.SubstitutionPlan,
) -> list[tuple[str, list[sourcing.Substitution]]]:
    """Substitutions grouped into allocations per warehouse, a line at most once in each
    (two substitutes of one line in one warehouse make two allocations)."""
    groups: list[tuple[str, list[sourcing.Substitution]]] = []
    for sub in plan.substitutions:
        for warehouse, members in groups:
            if warehouse == sub.warehouse and all(m.line_id != sub.line_id for m in members):
                members.append(sub)
                break
        else:
            groups.append((sub.warehouse, [sub]))
    return groups


def supply_of(row: Any) -> sourcing.Supply:
    return sourcing.Supply(row.supply_id, row.sku, row.warehouse, row.quantity, row.expected_at)


def shortfall_protos(plan: domain.ReservationPlan) -> list[pb.ReservationShortfall]:
    return [
        pb.ReservationShortfall(
            line_id=line.line.line_id,
            sku=line.line.sku,
            requested_quantity=line.line.quantity,
            available_quantity=line.reserved,
        )
        for line in plan.shortfalls
    ]


def not_active(reservation_id: str, state: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"reservation {reservation_id} is {state.lower()}, not active",
        "RESERVATION_NOT_ACTIVE",
        [PreconditionViolation("RESERVATION_STATE", reservation_id, f"state is {state}")],
        {"reservation_id": reservation_id, "state": state},
    )


def is_lapsed(record: stock.ReservationRecord, now: datetime) -> bool:
    return record.state != stock.ACTIVE or (
        record.expires_at is not None and record.expires_at <= now
    )


def reserve_refusal(
    request: pb.ReserveRequest, known: set[str], owner_busy: bool, ranked: list[str]
) -> DomainError | None:
    unknown = [
        FieldViolation(f"lines[{i}].sku", f"unknown SKU {line.sku!r}")
        for i, line in enumerate(request.lines)
        if line.sku not in known
    ]
    if unknown:
        return InvalidArgument(unknown, reason="UNKNOWN_SKU")
    if owner_busy:
        return AlreadyExists(
            "the owner already has an active reservation",
            reason="OWNER_HAS_RESERVATION",
            owner_id=request.owner.owner_id,
        )
    if not ranked:
        return FailedPrecondition(
            f"no warehouse serves channel {request.channel_id!r}",
            "NO_ELIGIBLE_WAREHOUSE",
            [PreconditionViolation("CHANNEL_WAREHOUSES", request.channel_id, "no warehouse")],
        )
    return None


class InventoryService(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Concurrent Reserves coalesce into one transaction (the hot-SKU path).
        # Warehouses are master data: the read path may see a change a few seconds late.
        self.warehouses = ExpiringValue(self._load_warehouses, ttl_seconds=5.0)
        self.known = KnownNames(self.warehouses)
        self.reserve_writer: Coalescer[
            tuple[pb.ReserveRequest, str | None, dict[str, str]], pb.ReserveResponse
        ] = Coalescer(self._reserve_batch, max_batch=128, writers=RESERVE_WRITERS)
        runtime.on_close(self.reserve_writer.close)
        self.availability_reads: SharedReads[bytes, pb.GetAvailabilityResponse] = SharedReads()

    async def _load_warehouses(self) -> dict[str, domain.Warehouse]:
        async with self.runtime.sessions() as session:
            return await stock.warehouses_by_code(session)

    async def _event(
        self, session: AsyncSession, aggregate_type: str, aggregate_id: str, payload: Any
    ) -> None:
        await self.runtime.events.record(
            session, aggregate_type=aggregate_type, aggregate_id=aggregate_id, payload=payload
        )

    # --- reservations -------------------------------------------------------------------

    async def Reserve(self, request: pb.ReserveRequest, context: Any) -> pb.ReserveResponse:
        v = Violations()
        v.request_id(request.request_id)
        owner_type = OWNER_TYPES.get(request.owner.type)
        v.check(owner_type is not None, "owner.type", "HOLD or ORDER")
        v.check(bool(request.owner.owner_id), "owner.owner_id", "required")
        v.check(bool(request.channel_id), "channel_id", "required")
        if owner_type == HOLD:
            check_ttl(v, request)
        elif owner_type == ORDER:
            v.check(not request.HasField("ttl"), "ttl", "must be unset for an ORDER reservation")
        check_lines(v, request.lines)
        v.raise_if_any()
        assert owner_type is not None

        correlation_id, trace_headers = caller_context()
        return await self.reserve_writer.submit((request, correlation_id, trace_headers))

    async def _reserve_batch(
        self, items: Sequence[tuple[pb.ReserveRequest, str | None, dict[str, str]]]
    ) -> list[pb.ReserveResponse | BaseException]:
        """Every Reserve that queued up meanwhile, in one transaction. The batch is planned
        from an unlocked read and the positions are locked last, by the guarded UPDATE, so
        the hot rows stay locked for one statement and a commit while the next batch does
        its reads and writes. Each request's idempotency key is written once, with its
        answer, at the end. If the guard refuses (stock moved since the read), an owner
        already holds an active reservation (the unique index says so), or another
        transaction answered one of the request ids meanwhile, the batch is rolled back and
        runs again, locking the positions and checking owners before it plans."""
        for attempt in range(RESERVE_ATTEMPTS):
            last = attempt == RESERVE_ATTEMPTS - 1
            try:
                return await self._reserve_batch_once(items, lock_first=attempt > 0)
            except stock.GuardViolated:
                if last:
                    raise
                log.info("reserve batch of %d planned on moved stock; again, locked", len(items))
            except IntegrityError as exc:
                if last or "reservation_active_owner" not in str(exc.orig):
                    raise
                log.info("reserve batch of %d met a busy owner; again, checked", len(items))
            except DBAPIError as exc:
                # Two batches for one owner under different request ids, one planning
                # locked and one not, can still meet in opposite orders: Postgres picks one.
                if last or getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED:
                    raise
                log.info("reserve batch of %d lost a deadlock; again", len(items))
            except ConcurrentDuplicate as exc:
                if last:
                    raise
                log.info("reserve batch: %s answered meanwhile elsewhere; again", exc.args[0])
        raise AssertionError("unreachable")

    async def _reserve_batch_once(
        self,
        items: Sequence[tuple[pb.ReserveRequest, str | None, dict[str, str]]],
        lock_first: bool,
    ) -> list[pb.ReserveResponse | BaseException]:
        requests = [request for request, _, _ in items]
        outcomes: list[pb.ReserveResponse | BaseException | None] = [None] * len(requests)
        first_of: dict[str, int] = {}
        async with self.runtime.sessions.begin() as session:
            # Waits for any other transaction working on one of these request ids.
            stored = await answered_many(
                session, "Reserve", [request.request_id for request in requests]
            )
            todo: list[int] = []
            for i, request in enumerate(requests):
                if request.request_id in first_of:  # a retry inside the same batch
                    continue
                first_of[request.request_id] = i
                if request.request_id not in stored:
                    todo.append(i)
                    continue
                print_, response = stored[request.request_id]
                if print_ != fingerprint(request):
                    outcomes[i] = reused(request.request_id, "Reserve")
                else:
                    assert response is not None  # keys commit with their answer
                    outcomes[i] = pb.ReserveResponse.FromString(response)
            skus = {line.sku for i in todo for line in requests[i].lines}
            warehouses = await stock.warehouses_by_code(session)
            if lock_first:
                known = await stock.known_skus(session, skus)
                positions = await stock.lock_positions(session, known, warehouses)
                now: datetime | None = await stock.now(session)
            else:
                snapshot = await stock.read_for_reserve(session, skus)
                known, positions, now = snapshot.known, snapshot.positions, snapshot.now
            # Owners are nearly always new (a hold per checkout, an order's own id): the
            # optimistic attempt lets the unique index catch a busy one, and the re-run asks.
            busy: set[tuple[str, str]] = set()
            if lock_first:
                busy = await stock.owners_with_active_reservation(
                    session, {owner_of(requests[i]) for i in todo}
                )
            ranked_for: dict[str, list[str]] = {}
            planned: list[tuple[int, str, list[str]]] = []
            for i in todo:
                request = requests[i]
                owner = owner_of(request)
                ranked = ranked_for.get(request.channel_id)
                if ranked is None:
                    ranked = ranked_for[request.channel_id] = stock.by_priority(
                        stock.eligible(warehouses.values(), request.channel_id)
                    )
                error = reserve_refusal(request, known, owner in busy, ranked)
                if error is not None:
                    outcomes[i] = error
                    continue
                busy.add(owner)
                planned.append((i, owner[0], ranked))
            stamp = functools.lru_cache(maxsize=None)(ts)  # one Timestamp per distinct time
            deltas: dict[tuple[str, str], int] = {}
            heads: list[dict[str, Any]] = []
            line_rows: list[dict[str, Any]] = []
            hold_rows: list[dict[str, Any]] = []
            events: list[PendingEvent] = []
            responses: dict[str, pb.ReserveResponse] = {}
            for i, owner_type, ranked in planned:
                assert now is not None  # a planned request has a known SKU, so a row
                request = requests[i]
                mode = (
                    domain.Mode.PARTIAL
                    if request.mode == pb.RESERVATION_MODE_PARTIAL
                    else domain.Mode.ALL_OR_NOTHING
                )
                lines = domain_lines(request.lines)
                plan = domain.plan_reservation(lines, positions, ranked, mode)
                shortfalls = shortfall_protos(plan)
                if (mode is domain.Mode.ALL_OR_NOTHING and plan.shortfalls) or not (
                    plan.reserved_total
                ):
                    responses[request.request_id] = pb.ReserveResponse(shortfalls=shortfalls)
                    continue
                for key, quantity in plan.take().items():
                    positions[key] = domain.apply_reserve(positions[key], quantity)
                    deltas[key] = deltas.get(key, 0) + quantity
                reservation_id = new_id()
                ttl = request.ttl.ToTimedelta() if request.HasField("ttl") else None
                record = stock.ReservationRecord(
                    reservation_id,
                    owner_type,
                    request.owner.owner_id,
                    request.channel_id,
                    mode.name,
                    stock.ACTIVE,
                    now + ttl if ttl else None,
                    now,
                    now,
                    [
                        stock.ReservationLineRecord(
                            p.line.line_id, p.line.sku, p.line.quantity, dict(p.by_warehouse)
                        )
                        for p in plan.lines
                    ],
                )
                heads.append(
                    {
                        "reservation_id": reservation_id,
                        "owner_type": owner_type,
                        "owner_id": request.owner.owner_id,
                        "channel_id": request.channel_id,
                        "mode": mode.name,
                        "state": stock.ACTIVE,
                        "expires_at": record.expires_at,
                    }
                )
                for index, line in enumerate(record.lines):
                    line_rows.append(
                        {
                            "reservation_id": reservation_id,
                            "line_id": line.line_id,
                            "position": index,
                            "sku": line.sku,
                            "requested": line.requested,
                        }
                    )
                    hold_rows.extend(
                        {
                            "reservation_id": reservation_id,
                            "line_id": line.line_id,
                            "warehouse": wh,
                            "quantity": qty,
                        }
                        for wh, qty in line.holds.items()
                    )
                reservation = reservation_proto(record, stamp)
                _, correlation_id, trace_headers = items[i]
                events.append(
                    PendingEvent(
                        "reservation",
                        reservation_id,
                        events_pb2.ReservationCreated(reservation=reservation),
                        correlation_id,
                        trace_headers,
                    )
                )
                responses[request.request_id] = pb.ReserveResponse(
                    reservation=reservation, shortfalls=shortfalls
                )
            await stock.insert_reservations_many(session, heads, line_rows, hold_rows)
            await self.runtime.events.record_many(session, events)
            await record_answers(session, "Reserve", {r.request_id: r for r in requests}, responses)
            # Last: the guarded UPDATE takes the position row locks until the commit.
            await stock.add_reserved_many(session, deltas)
        for request_id, answer in responses.items():
            outcomes[first_of[request_id]] = answer
        for i, request in enumerate(requests):
            if outcomes[i] is None:  # a retry inside the batch answers like its first
                outcomes[i] = outcomes[first_of[request.request_id]]
        return [outcome for outcome in outcomes if outcome is not None]

    async def _ranked(self, session: AsyncSession, channel_id: str) -> list[str]:
        warehouses = stock.eligible((await stock.warehouses_by_code(session)).values(), channel_id)
        if not warehouses:
            raise FailedPrecondition(
                f"no warehouse serves channel {channel_id!r}",
                "NO_ELIGIBLE_WAREHOUSE",
                [PreconditionViolation("CHANNEL_WAREHOUSES", channel_id, "no warehouse")],
            )
        return stock.by_priority(warehouses)

    async def _locked_reservation(
        self, session: AsyncSession, reservation_id: str
    ) -> stock.ReservationRecord:
        record = await stock.load_reservation(session, reservation_id, lock=True)
        if record is None:
            raise NotFound(
                f"reservation {reservation_id!r} not found",
                reason="RESERVATION_NOT_FOUND",
                reservation_id=reservation_id,
            )
        return record

    async def _active_hold(
        self, session: AsyncSession, reservation_id: str
    ) -> tuple[stock.ReservationRecord, datetime]:
        """The locked reservation, which must be a HOLD that is active and not yet expired
        (the sweeper may not have run yet: the expiry time decides)."""
        record = await self._locked_reservation(session, reservation_id)
        if record.owner_type != HOLD:
            raise FailedPrecondition(
                "only a HOLD reservation can be extended or committed",
                "NOT_A_HOLD",
                [PreconditionViolation("OWNER_TYPE", record.reservation_id, "ORDER")],
            )
        now = await stock.now(session)
        if is_lapsed(record, now):
            raise not_active(
                record.reservation_id,
                "EXPIRED" if record.state == stock.ACTIVE else record.state,
            )
        return record, now

    async def ExtendReservation(
        self, request: pb.ExtendReservationRequest, context: Any
    ) -> pb.ExtendReservationResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.reservation_id), "reservation_id", "required")
        ttl = check_ttl(v, request)
        v.raise_if_any()
        assert ttl is not None

        async def work(session: AsyncSession) -> pb.ExtendReservationResponse:
            record, now = await self._active_hold(session, request.reservation_id)
            previous = record.expires_at
            assert previous is not None
            expires = max(previous, now + timedelta(seconds=ttl))
            await stock.update_reservation(session, record.reservation_id, expires_at=expires)
            updated = await stock.load_reservation(session, record.reservation_id)
            assert updated is not None
            await self._event(
                session,
                "reservation",
                record.reservation_id,
                events_pb2.ReservationExtended(
                    reservation_id=record.reservation_id,
                    owner=pb.ReservationOwner(
                        type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=record.owner_id
                    ),
                    previous_expires_at=ts(previous),
                    expires_at=ts(expires),
                ),
            )
            return pb.ExtendReservationResponse(reservation=reservation_proto(updated))

        return await self.runtime.once(
            "ExtendReservation", request, pb.ExtendReservationResponse, work
        )

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Any
    ) -> pb.ReleaseReservationResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.reservation_id), "reservation_id", "required")
        for i, selection in enumerate(request.lines):
            v.check(bool(selection.line_id), f"lines[{i}].line_id", "required")
            v.check(selection.quantity >= 0, f"lines[{i}].quantity", "must be >= 0")
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.ReleaseReservationResponse:
            record = await self._locked_reservation(session, request.reservation_id)
            if record.state != stock.ACTIVE:
                return pb.ReleaseReservationResponse(reservation=reservation_proto(record))
            line_ids = {line.line_id for line in record.lines}
            unknown = [
                FieldViolation(f"lines[{i}].line_id", "not a line of this reservation")
                for i, sel in enumerate(request.lines)
                if sel.line_id not in line_ids
            ]
            if unknown:
                raise InvalidArgument(unknown)
            wanted = {sel.line_id: sel.quantity for sel in request.lines}
            released = await self._release(session, record, wanted or None)
            now = await stock.now(session)
            state = stock.ACTIVE if any(line.holds for line in record.lines) else "RELEASED"
            await stock.update_reservation(session, record.reservation_id, state=state)
            updated = await stock.load_reservation(session, record.reservation_id)
            assert updated is not None
            reservation = reservation_proto(updated)
            await self._event(
                session,
                "reservation",
                record.reservation_id,
                events_pb2.ReservationReleased(
                    reservation=reservation,
                    released=released,
                    reason=request.reason,
                    released_at=ts(now),
                ),
            )
            return pb.ReleaseReservationResponse(reservation=reservation)

        return await self.runtime.once(
            "ReleaseReservation", request, pb.ReleaseReservationResponse, work
        )

    async def _release(
        self,
        session: AsyncSession,
        record: stock.ReservationRecord,
        wanted: dict[str, int] | None,
    ) -> list[pb.ReservationLine]:
        """Give held stock back: everything (``wanted`` None) or per line (0 = all of it)."""
        deltas: dict[tuple[str, str], int] = {}
        released: list[pb.ReservationLine] = []
        for line in record.lines:
            if wanted is not None and line.line_id not in wanted:
                continue
            asked = line.reserved if wanted is None else wanted[line.line_id] or line.reserved
            freed = domain.release_from(line.holds, asked)
            for wh, take in freed.items():
                line.holds[wh] -= take
                deltas[(line.sku, wh)] = deltas.get((line.sku, wh), 0) - take
            line.holds = {wh: q for wh, q in line.holds.items() if q > 0}
            if freed:
                released.append(
                    line_proto(
                        stock.ReservationLineRecord(line.line_id, line.sku, line.requested, freed)
                    )
                )
        await stock.lock_positions(session, [s for s, _ in deltas], [w for _, w in deltas])
        await stock.add_reserved(session, deltas)
        await stock.set_holds(session, record)
        return released

    async def expire(self, session: AsyncSession, reservation_id: str) -> None:
        """Called by the sweeper with the reservation row already locked."""
        record = await stock.load_reservation(session, reservation_id, lock=True)
        if record is None or record.state != stock.ACTIVE:
            return
        expired = await self._release(session, record, None)
        await stock.update_reservation(session, reservation_id, state="EXPIRED")
        updated = await stock.load_reservation(session, reservation_id)
        assert updated is not None
        await self._event(
            session,
            "reservation",
            reservation_id,
            events_pb2.ReservationExpired(
                reservation=reservation_proto(updated),
                expired=expired,
                expired_at=ts(record.expires_at),
            ),
        )

    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: Any
    ) -> pb.CommitReservationResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.reservation_id), "reservation_id", "required")
        v.check(bool(request.order_id), "order_id", "required")
        check_lines(v, request.lines)
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.CommitReservationResponse:
            record, _ = await self._active_hold(session, request.reservation_id)
            lines = domain_lines(request.lines)
            await self.known.require_skus(session, [line.sku for line in lines])
            if await stock.active_reservation_of(session, ORDER, request.order_id):
                raise AlreadyExists(
                    "the order already has an active reservation",
                    reason="OWNER_HAS_RESERVATION",
                    owner_id=request.order_id,
                )
            ranked = await self._ranked(session, record.channel_id)
            held = record.holds()
            skus = {line.sku for line in lines} | {sku for sku, _ in held}
            positions = await stock.lock_positions(
                session, skus, set(ranked) | {wh for _, wh in held}
            )
            match = domain.match_commit(lines, held, ranked)
            new_lines = [
                stock.ReservationLineRecord(
                    ln.line_id, ln.sku, ln.quantity, match.holds[ln.line_id]
                )
                for ln in lines
            ]
            short = list(match.short)
            deltas = {key: -qty for key, qty in match.excess.items()}  # excess goes back
            if request.reserve_shortfall and short:
                freed = {k: p for k, p in positions.items()}
                for key, delta in deltas.items():  # released excess is available again
                    if key in freed:
                        freed[key] = domain.apply_release(freed[key], -delta)
                extra = domain.plan_reservation(short, freed, ranked, domain.Mode.PARTIAL)
                by_id = {line.line_id: line for line in new_lines}
                for planned in extra.lines:
                    for wh, qty in planned.by_warehouse.items():
                        target = by_id[planned.line.line_id].holds
                        target[wh] = target.get(wh, 0) + qty
                        key = (planned.line.sku, wh)
                        deltas[key] = deltas.get(key, 0) + qty
            await stock.add_reserved(session, {k: d for k, d in deltas.items() if d < 0})
            await stock.add_reserved(session, {k: d for k, d in deltas.items() if d > 0})
            shortfalls = [
                pb.ReservationShortfall(
                    line_id=ln.line_id,
                    sku=ln.sku,
                    requested_quantity=ln.requested,
                    available_quantity=ln.reserved,
                )
                for ln in new_lines
                if ln.reserved < ln.requested
            ]
            record.lines = new_lines
            await stock.replace_lines(session, record)
            await stock.update_reservation(
                session,
                record.reservation_id,
                owner_type=ORDER,
                owner_id=request.order_id,
                expires_at=None,
            )
            updated = await stock.load_reservation(session, record.reservation_id)
            assert updated is not None
            reservation = reservation_proto(updated)
            await self._event(
                session,
                "reservation",
                record.reservation_id,
                events_pb2.ReservationCommitted(
                    reservation=reservation,
                    hold_id=record.owner_id,
                    order_id=request.order_id,
                    shortfalls=shortfalls,
                ),
            )
            return pb.CommitReservationResponse(reservation=reservation, shortfalls=shortfalls)

        return await self.runtime.once(
            "CommitReservation", request, pb.CommitReservationResponse, work
        )

    # --- sourcing ----------------------------------------------------------------------

    async def _ranked_for(
        self,
        session: AsyncSession,
        channel_id: str,
        policy: sourcing.Policy,
        ship_to: sourcing.ShipTo | None,
    ) -> list[str]:
        eligible = sourcing.eligible_warehouses(
            (await stock.warehouses_by_code(session)).values(), channel_id
        )
        ranked = sourcing.rank_warehouses(eligible, policy, ship_to)
        if not ranked:
            raise FailedPrecondition(
                f"no warehouse serves channel {channel_id!r}",
                "NO_ELIGIBLE_WAREHOUSE",
                [PreconditionViolation("CHANNEL_WAREHOUSES", channel_id, "no warehouse")],
            )
        return ranked

    async def PromiseLines(
        self, request: pb.PromiseLinesRequest, context: Any
    ) -> pb.PromiseLinesResponse:
        v = Violations()
        v.check(bool(request.channel_id), "channel_id", "required")
        check_lines(v, request.lines)
        v.raise_if_any()
        lines = domain_lines(request.lines)
        skus = [line.sku for line in lines]
        async with self.runtime.sessions() as session:
            await self.known.require_skus(session, skus)
            policy = await alloc.policy_of(session, request.channel_id)
            ranked = await self._ranked_for(
                session, request.channel_id, policy, ship_to_of(request)
            )
            rows = await stock.read_positions(session, skus, ranked)
            supplies = [
                supply_of(row)
                for row in await stock.supplies_for(session, skus)
                if row.warehouse in ranked
            ]
            now = await stock.now(session)
        available = {(r.sku, r.warehouse): level_proto(r).available for r in rows}
        promises = sourcing.promise_lines(lines, available, supplies, ranked, now)
        outcome = {
            sourcing.PromiseOutcome.AVAILABLE_NOW: pb.PROMISE_OUTCOME_AVAILABLE_NOW,
            sourcing.PromiseOutcome.PROMISED: pb.PROMISE_OUTCOME_PROMISED,
            sourcing.PromiseOutcome.CANNOT_PROMISE: pb.PROMISE_OUTCOME_CANNOT_PROMISE,
        }
        return pb.PromiseLinesResponse(
            evaluated_at=ts(now),
            lines=[
                pb.LinePromise(
                    line_id=p.line_id,
                    sku=p.sku,
                    requested_quantity=p.requested_quantity,
                    available_now_quantity=p.available_now_quantity,
                    sources=[
                        pb.WarehouseQuantity(warehouse_id=s.warehouse, quantity=s.quantity)
                        for s in p.sources
                    ],
                    promised_quantity=p.promised_quantity,
                    promised_at=ts(p.promised_at),
                    unpromisable_quantity=p.unpromisable_quantity,
                    outcome=outcome[p.outcome],
                )
                for p in promises
            ],
        )

    async def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.order_id), "order_id", "required")
        v.check(bool(request.channel_id), "channel_id", "required")
        check_lines(v, request.lines)
        for i, code in enumerate(request.excluded_warehouses):
            v.check(bool(code), f"excluded_warehouses[{i}]", "must not be empty")
        if request.HasField("policy"):
            v.check(request.policy.ranking in (0, *RANKINGS), "policy.ranking", "unknown")
            v.check(request.policy.split_rule in (0, *SPLIT_RULES), "policy.split_rule", "unknown")
            if request.policy.ranking == pb.WAREHOUSE_RANKING_NEAREST_TO_SHIP_TO:
                v.check(
                    request.HasField("ship_to"),
                    "ship_to",
                    "required when ranking is NEAREST_TO_SHIP_TO",
                )
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.AllocateResponse:
            lines = domain_lines(request.lines)
            await self.known.require_skus(session, [line.sku for line in lines])
            configured = await alloc.policy_of(session, request.channel_id)
            policy = effective_policy(configured, request)
            ranked = await self._ranked_for(
                session, request.channel_id, policy, ship_to_of(request)
            )
            if request.excluded_warehouses:
                # Not checked against master data: excluding a warehouse that has since
                # been retired is harmless, and re-sourcing must not fail on it.
                excluded = set(request.excluded_warehouses)
                ranked = [wh for wh in ranked if wh not in excluded]
                if not ranked:  # nowhere left to source or to wait for supply
                    policy = dataclasses.replace(policy, allow_backorder=False)
            reservation_id = await stock.active_reservation_of(session, ORDER, request.order_id)
            record = (
                await stock.load_reservation(session, reservation_id, lock=True)
                if reservation_id
                else None
            )
            reserved: dict[tuple[str, str], int] = {}
            if record is not None:
                for line in record.lines:
                    for wh, qty in line.holds.items():
                        reserved[(line.line_id, wh)] = qty
            may_substitute = {i.line_id for i in request.lines if i.substitution_allowed}
            substitutes = (
                await stock.substitutes_of(
                    session, {line.sku for line in lines if line.line_id in may_substitute}
                )
                if may_substitute and policy.split_rule is not sourcing.SplitRule.SHIP_COMPLETE
                else {}
            )
            positions = await stock.lock_positions(
                session,
                [line.sku for line in lines]
                + [sku for subs in substitutes.values() for sku in subs],
                set(ranked) | {wh for _, wh in reserved},
            )
            available = {key: position.sellable for key, position in positions.items()}
            plan = sourcing.plan_allocation(
                lines, reserved, available, ranked, policy.split_rule, policy.allow_backorder
            )
            plan, substituted = substitute_shortfalls(
                plan, policy.allow_backorder, may_substitute, substitutes, available, ranked
            )
            sku_of = {line.line_id: line.sku for line in lines}
            moves: dict[tuple[str, str], tuple[int, int]] = {}

            def move(key: tuple[str, str], d_reserved: int, d_allocated: int) -> None:
                r, a = moves.get(key, (0, 0))
                moves[key] = (r + d_reserved, a + d_allocated)

            for (line_id, wh), qty in plan.consumed_reservation.items():
                move((sku_of[line_id], wh), -qty, qty)
            for (sku, wh), qty in plan.taken_atp.items():
                move((sku, wh), 0, qty)
            for (line_id, wh), qty in plan.released_reservation.items():
                move((sku_of[line_id], wh), -qty, 0)
            for (sku, wh), qty in substituted.taken_atp().items():
                move((sku, wh), 0, qty)
            await alloc.move_stock(session, moves)
            if record is not None:
                await self._take_from_reservation(
                    session, record, plan.consumed_reservation, plan.released_reservation
                )
            answer = pb.AllocateResponse(
                unfilled=[
                    common_pb2.LineSelection(line_id=u.line_id, quantity=u.quantity)
                    for u in plan.unfilled
                ]
            )
            for planned in plan.allocations:
                rows = [(ln.line_id, ln.sku, ln.quantity) for ln in planned.lines]
                allocation_id, at = await alloc.insert_allocation(
                    session, request.order_id, request.channel_id, planned.warehouse, rows
                )
                answer.allocations.append(
                    allocation_proto(allocation_id, planned.warehouse, at, rows)
                )
            for warehouse, subs in substitution_allocations(substituted):
                rows = [(sub.line_id, sub.sku, sub.quantity) for sub in subs]
                allocation_id, at = await alloc.insert_allocation(
                    session, request.order_id, request.channel_id, warehouse, rows
                )
                made = allocation_proto(allocation_id, warehouse, at, rows)
                for allocated, sub in zip(made.lines, subs, strict=True):
                    allocated.substituted_for_sku = sub.substituted_for
                answer.allocations.append(made)
            created = [
                await alloc.insert_backorder(
                    session,
                    order_id=request.order_id,
                    channel_id=request.channel_id,
                    line_id=b.line_id,
                    sku=b.sku,
                    quantity=b.quantity,
                    priority=request.backorder_priority,
                    warehouses=ranked,
                )
                for b in plan.backorders
            ]
            if created:
                etas = await self._refresh_etas(session, {b.sku for b in created})
                for row in created:
                    eta = etas.get(row.backorder_id)
                    answer.backorders.append(
                        pb.BackorderLine(
                            backorder_id=row.backorder_id,
                            line_id=row.line_id,
                            sku=row.sku,
                            quantity=row.quantity,
                            created_at=ts(row.created_at),
                            expected_at=ts(eta.expected_at) if eta else None,
                            warehouse_id=eta.warehouse if eta else "",
                        )
                    )
            if answer.allocations:
                await self._event(
                    session,
                    "order_allocation",
                    request.order_id,
                    events_pb2.StockAllocated(
                        order_id=request.order_id,
                        channel_id=request.channel_id,
                        reservation_id=record.reservation_id if record else "",
                        allocations=answer.allocations,
                        policy=policy_proto(policy),
                    ),
                )
            if answer.backorders:
                await self._event(
                    session,
                    "order_allocation",
                    request.order_id,
                    events_pb2.BackorderCreated(
                        order_id=request.order_id,
                        channel_id=request.channel_id,
                        backorders=answer.backorders,
                    ),
                )
            return answer

        return await self.runtime.once("Allocate", request, pb.AllocateResponse, work)

    async def _take_from_reservation(
        self,
        session: AsyncSession,
        record: stock.ReservationRecord,
        *taken_maps: Any,
    ) -> None:
        """Remove allocated or released quantities from the order's holds."""
        taken: dict[tuple[str, str], int] = {}
        for mapping in taken_maps:
            for key, qty in mapping.items():
                taken[key] = taken.get(key, 0) + qty
        for line in record.lines:
            line.holds = {
                wh: left
                for wh, qty in line.holds.items()
                if (left := qty - taken.get((line.line_id, wh), 0)) > 0
            }
        await stock.set_holds(session, record)
        if not any(line.holds for line in record.lines):
            await stock.update_reservation(session, record.reservation_id, state="CONSUMED")

    async def _announce_eta_changes(self, session: AsyncSession, skus: set[str]) -> None:
        before = {row.backorder_id: row for row in await alloc.open_backorders(session, skus)}
        etas = await self._refresh_etas(session, skus)
        for backorder_id, eta in etas.items():
            row = before[backorder_id]
            new = eta.expected_at if eta else None
            if new != row.expected_at:
                await self._event(
                    session,
                    "order_allocation",
                    row.order_id,
                    events_pb2.BackorderEtaChanged(
                        order_id=row.order_id,
                        backorder_id=backorder_id,
                        line_id=row.line_id,
                        sku=row.sku,
                        previous_expected_at=ts(row.expected_at),
                        expected_at=ts(new),
                    ),
                )

    async def _refresh_etas(
        self, session: AsyncSession, skus: set[str]
    ) -> dict[str, sourcing.Eta | None]:
        """Recompute the ETA of every open backorder of these SKUs (fill order takes supply)."""
        rows = await alloc.open_backorders(session, skus, lock=True)
        supplies = [supply_of(r) for r in await stock.supplies_for(session, skus)]
        ranked = sorted({s.warehouse for s in supplies})
        etas = sourcing.backorder_etas([alloc.as_backorder(r) for r in rows], supplies, ranked)
        for row in rows:
            eta = etas.get(row.backorder_id)
            await alloc.set_backorder(
                session,
                row.backorder_id,
                expected_at=eta.expected_at if eta else None,
                eta_warehouse=eta.warehouse if eta else "",
            )
        return etas

    async def Deallocate(
        self, request: pb.DeallocateRequest, context: Any
    ) -> pb.DeallocateResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.order_id), "order_id", "required")
        v.check(
            request.disposition
            in (pb.DEALLOCATION_DISPOSITION_RELEASE, pb.DEALLOCATION_DISPOSITION_RESERVE),
            "disposition",
            "RELEASE or RESERVE",
        )
        for i, selection in enumerate(request.lines):
            v.check(bool(selection.line_id), f"lines[{i}].line_id", "required")
            v.check(selection.quantity >= 0, f"lines[{i}].quantity", "must be >= 0")
        v.raise_if_any()
        keep_reserved = request.disposition == pb.DEALLOCATION_DISPOSITION_RESERVE

        async def work(session: AsyncSession) -> pb.DeallocateResponse:
            rows = await alloc.allocations_of(session, request.order_id, lock=True)
            if request.allocation_id and not any(
                r.allocation_id == request.allocation_id for r in rows
            ):
                raise NotFound(
                    f"allocation {request.allocation_id!r} not found for the order",
                    reason="ALLOCATION_NOT_FOUND",
                )
            # Per selected line, how much is still to remove (None: all of it).
            asked: dict[str, int | None] = {
                sel.line_id: sel.quantity or None for sel in request.lines
            }
            moves: dict[tuple[str, str], tuple[int, int]] = {}
            removed: dict[str, list[tuple[str, str, int]]] = {}
            back: dict[str, dict[str, int]] = {}  # line_id -> warehouse -> qty to re-reserve
            skus: dict[str, str] = {}
            for row in rows:
                if request.allocation_id and row.allocation_id != request.allocation_id:
                    continue
                if asked and row.line_id not in asked:
                    continue
                left = asked.get(row.line_id)
                qty = row.quantity if left is None else min(left, row.quantity)
                if left is not None:
                    asked[row.line_id] = left - qty
                if qty <= 0:
                    continue
                await alloc.change_allocation_line(
                    session, row.allocation_id, row.line_id, quantity=-qty
                )
                r, a = moves.get((row.sku, row.warehouse), (0, 0))
                moves[(row.sku, row.warehouse)] = (r + (qty if keep_reserved else 0), a - qty)
                removed.setdefault(row.allocation_id, []).append((row.line_id, row.sku, qty))
                skus[row.line_id] = row.sku
                if keep_reserved:
                    per_wh = back.setdefault(row.line_id, {})
                    per_wh[row.warehouse] = per_wh.get(row.warehouse, 0) + qty
            await stock.lock_positions(session, [k[0] for k in moves], [k[1] for k in moves])
            await alloc.move_stock(session, moves)
            if back:
                await self._reserve_back(session, request.order_id, rows[0].channel_id, back, skus)
            at = {r.allocation_id: (r.warehouse, r.allocated_at) for r in rows}
            remaining: dict[str, list[tuple[str, str, int]]] = {}
            for r in await alloc.allocations_of(session, request.order_id):
                if r.quantity > 0:
                    remaining.setdefault(r.allocation_id, []).append((r.line_id, r.sku, r.quantity))
            answer = pb.DeallocateResponse(
                deallocated=[
                    allocation_proto(aid, at[aid][0], at[aid][1], lines)
                    for aid, lines in removed.items()
                ],
                remaining=[
                    allocation_proto(aid, at[aid][0], at[aid][1], lines)
                    for aid, lines in remaining.items()
                ],
            )
            if answer.deallocated:
                await self._event(
                    session,
                    "order_allocation",
                    request.order_id,
                    events_pb2.StockDeallocated(
                        order_id=request.order_id,
                        deallocated=answer.deallocated,
                        disposition=request.disposition,
                        reason=request.reason,
                        deallocated_at=ts(await stock.now(session)),
                    ),
                )
            return answer

        return await self.runtime.once("Deallocate", request, pb.DeallocateResponse, work)

    async def _reserve_back(
        self,
        session: AsyncSession,
        order_id: str,
        channel_id: str,
        back: dict[str, dict[str, int]],
        skus: dict[str, str],
    ) -> None:
        """Deallocated-but-kept quantity joins the order's reservation (created if needed)."""
        reservation_id = await stock.active_reservation_of(session, ORDER, order_id)
        if reservation_id is None:
            lines = [
                domain.Line(line_id, skus[line_id], sum(by_wh.values()))
                for line_id, by_wh in back.items()
            ]
            await stock.insert_reservation(
                session,
                owner_type=ORDER,
                owner_id=order_id,
                channel_id=channel_id,
                mode="PARTIAL",
                ttl_seconds=None,
                lines=lines,
                holds=back,
            )
            return
        record = await stock.load_reservation(session, reservation_id, lock=True)
        assert record is not None
        by_id = {line.line_id: line for line in record.lines}
        for line_id, by_wh in back.items():
            line = by_id.get(line_id)
            if line is None:
                line = stock.ReservationLineRecord(line_id, skus[line_id], 0)
                record.lines.append(line)
                by_id[line_id] = line
            for wh, qty in by_wh.items():
                line.holds[wh] = line.holds.get(wh, 0) + qty
            line.requested = max(line.requested, line.reserved)
        await stock.replace_lines(session, record)

    # --- stock ---------------------------------------------------------------------------

    async def GetAvailability(
        self, request: pb.GetAvailabilityRequest, context: Any
    ) -> pb.GetAvailabilityResponse:
        v = Violations()
        v.check(1 <= len(request.skus) <= MAX_SKUS, "skus", "1 to 1000 SKUs")
        for i, sku in enumerate(request.skus):
            v.check(bool(sku), f"skus[{i}]", "must not be empty")
        v.raise_if_any()
        warehouses = await self.warehouses.get()
        unknown = [
            FieldViolation(f"warehouse_ids[{i}]", f"unknown warehouse {code!r}")
            for i, code in enumerate(request.warehouse_ids)
            if code not in warehouses
        ]
        if unknown:
            raise InvalidArgument(unknown, reason="UNKNOWN_WAREHOUSE")
        # Identical concurrent reads (a flash sale's hot SKU) share one query and answer.
        return await self.availability_reads.get(
            request.SerializeToString(deterministic=True),
            lambda: self._availability(request, warehouses),
        )

    async def _availability(
        self, request: pb.GetAvailabilityRequest, warehouses: dict[str, domain.Warehouse]
    ) -> pb.GetAvailabilityResponse:
        async with self.runtime.reads.connect() as conn:
            rows, supplies, as_of = await stock.availability_rows(
                conn, request.skus, request.warehouse_ids
            )
        incoming: dict[tuple[str, str], int] = {}
        for supply in supplies:
            key = (supply.sku, supply.warehouse)
            incoming[key] = incoming.get(key, 0) + supply.quantity
        by_sku: dict[str, list[Any]] = {}
        for row in rows:
            by_sku.setdefault(row.sku, []).append(row)
        answer = pb.GetAvailabilityResponse(as_of=ts(as_of))
        for sku in request.skus:
            levels = [
                level_proto(row, incoming.get((sku, row.warehouse), 0))
                for row in by_sku.get(sku, [])
            ]
            totals = []
            for channel in request.channel_ids:
                serving = {w.code for w in stock.eligible(warehouses.values(), channel)}
                totals.append(
                    pb.ChannelAvailability(
                        channel_id=channel,
                        sku=sku,
                        available=sum(
                            max(lv.available, 0) for lv in levels if lv.warehouse_id in serving
                        ),
                    )
                )
            answer.skus.append(
                pb.SkuAvailability(
                    sku=sku,
                    warehouses=levels,
                    total_available=sum(max(level.available, 0) for level in levels),
                    channel_totals=totals,
                    incoming_supplies=[supply_proto(s) for s in supplies if s.sku == sku],
                )
            )
        return answer

    async def RecordStockMovement(
        self, request: pb.RecordStockMovementRequest, context: Any
    ) -> pb.RecordStockMovementResponse:
        v = Violations()
        v.request_id(request.request_id)
        kind = MOVEMENT_KINDS.get(request.kind)
        v.check(bool(request.sku), "sku", "required")
        v.check(bool(request.warehouse_id), "warehouse_id", "required")
        if v.check(kind is not None, "kind", "RECEIPT, ADJUSTMENT, SHIPMENT or RETURN"):
            v.check(kind != "RECONCILIATION", "kind", "RECONCILIATION is written by Reconcile")
            delta = request.quantity_delta
            if kind in ("RECEIPT", "RETURN"):
                v.check(delta > 0, "quantity_delta", f"must be > 0 for {kind}")
            elif kind == "SHIPMENT":
                v.check(delta < 0, "quantity_delta", "must be < 0 for SHIPMENT")
            else:
                v.check(delta != 0, "quantity_delta", "must not be 0")
            if kind in ("RECEIPT", "SHIPMENT", "RETURN"):
                v.check(bool(request.reference), "reference", f"required for {kind}")
            if kind in ("SHIPMENT", "RETURN"):
                v.check(bool(request.order_id), "order_id", f"required for {kind}")
                v.check(bool(request.line_id), "line_id", f"required for {kind}")
            if kind == "ADJUSTMENT":
                v.check(bool(request.reason), "reason", "required for ADJUSTMENT")
        v.raise_if_any()
        assert kind is not None
        movement = stock.Movement(
            sku=request.sku,
            warehouse=request.warehouse_id,
            kind=kind,
            quantity_delta=request.quantity_delta,
            reference=request.reference,
            order_id=request.order_id,
            line_id=request.line_id,
            reason=request.reason,
            occurred_at=request.occurred_at.ToDatetime(UTC)
            if request.HasField("occurred_at")
            else None,
        )

        async def work(session: AsyncSession) -> pb.RecordStockMovementResponse:
            await self.known.require_skus(session, [request.sku], "sku")
            await self.known.require_warehouses([request.warehouse_id], "warehouse_id")
            existing = await stock.existing_movement(session, movement)
            if existing is not None:
                rows = await stock.read_positions(session, [movement.sku], [movement.warehouse])
                return pb.RecordStockMovementResponse(
                    entry=ledger_proto(existing), level=level_proto(rows[0]), duplicate=True
                )
            entry, position = await stock.append_ledger(session, movement)
            if entry is None:
                raise FailedPrecondition(
                    "on-hand would become negative",
                    "NEGATIVE_ON_HAND",
                    [
                        PreconditionViolation(
                            "ON_HAND",
                            f"{movement.sku}@{movement.warehouse}",
                            f"on_hand is {position.on_hand}",
                        )
                    ],
                )
            if kind == "SHIPMENT":
                position = await self._consume_allocation(session, movement)
            level = level_proto(position)
            await self._event(
                session,
                "stock_item",
                f"{movement.warehouse}:{movement.sku}",
                events_pb2.StockChanged(entry=ledger_proto(entry), level=level),
            )
            if kind in ("RECEIPT", "RETURN"):
                await self._fill_backorders(session, movement, entry.entry_id)
                level = level_proto(
                    (await stock.read_positions(session, [movement.sku], [movement.warehouse]))[0]
                )
            return pb.RecordStockMovementResponse(entry=ledger_proto(entry), level=level)

        return await self.runtime.once(
            "RecordStockMovement", request, pb.RecordStockMovementResponse, work
        )

    async def _consume_allocation(self, session: AsyncSession, movement: stock.Movement) -> Any:
        """A shipment consumes the order line's allocation at that warehouse (up to what
        is allocated; any excess was shipped from free stock)."""
        left = -movement.quantity_delta
        moved = 0
        for row in await alloc.allocations_of(session, movement.order_id, lock=True):
            if left == 0:
                break
            if (row.line_id, row.warehouse, row.sku) != (
                movement.line_id,
                movement.warehouse,
                movement.sku,
            ):
                continue  # another line, warehouse, or SKU (a line's substitute)
            take = min(left, row.quantity)
            if take > 0:
                await alloc.change_allocation_line(
                    session, row.allocation_id, row.line_id, quantity=-take, shipped=take
                )
                left -= take
                moved += take
        if moved:
            await alloc.move_stock(session, {(movement.sku, movement.warehouse): (0, -moved)})
        return (await stock.read_positions(session, [movement.sku], [movement.warehouse]))[0]

    async def _fill_backorders(
        self, session: AsyncSession, movement: stock.Movement, entry_id: str
    ) -> None:
        """Received stock goes to open backorders first, by priority then age."""
        rows = await alloc.open_backorders(session, [movement.sku], lock=True)
        if not rows:
            return
        position = (await stock.lock_positions(session, [movement.sku], [movement.warehouse]))[
            (movement.sku, movement.warehouse)
        ]
        fills = sourcing.fill_backorders(
            [alloc.as_backorder(r) for r in rows],
            movement.sku,
            movement.warehouse,
            min(movement.quantity_delta, position.sellable),
        )
        by_id = {row.backorder_id: row for row in rows}
        for backorder_id, quantity in fills:
            row = by_id[backorder_id]
            await alloc.move_stock(session, {(movement.sku, movement.warehouse): (0, quantity)})
            lines = [(row.line_id, row.sku, quantity)]
            allocation_id, at = await alloc.insert_allocation(
                session, row.order_id, row.channel_id, movement.warehouse, lines
            )
            await alloc.set_backorder(session, backorder_id, quantity=row.quantity - quantity)
            await self._event(
                session,
                "order_allocation",
                row.order_id,
                events_pb2.BackorderFilled(
                    order_id=row.order_id,
                    backorder_id=backorder_id,
                    line_id=row.line_id,
                    sku=row.sku,
                    filled_quantity=quantity,
                    remaining_quantity=row.quantity - quantity,
                    allocation=allocation_proto(allocation_id, movement.warehouse, at, lines),
                    ledger_entry_id=entry_id,
                ),
            )

    async def SetIncomingSupply(
        self, request: pb.SetIncomingSupplyRequest, context: Any
    ) -> pb.SetIncomingSupplyResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(1 <= len(request.supplies) <= 1000, "supplies", "1 to 1000 supplies")
        for i, s in enumerate(request.supplies):
            f = f"supplies[{i}]"
            v.check(bool(s.supply_id), f"{f}.supply_id", "required")
            v.check(bool(s.sku), f"{f}.sku", "required")
            v.check(bool(s.warehouse_id), f"{f}.warehouse_id", "required")
            v.check(s.kind in SUPPLY_KINDS, f"{f}.kind", "PURCHASE_ORDER, TRANSFER or OTHER")
            v.check(s.quantity >= 0, f"{f}.quantity", "must be >= 0 (0 removes the supply)")
            v.check(
                s.quantity == 0 or s.HasField("expected_at"),
                f"{f}.expected_at",
                "required when quantity > 0",
            )
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.SetIncomingSupplyResponse:
            await self.known.require_skus(session, [s.sku for s in request.supplies], "supplies")
            await self.known.require_warehouses(
                [s.warehouse_id for s in request.supplies], "supplies"
            )
            answer = pb.SetIncomingSupplyResponse()
            for s in request.supplies:
                row = await stock.upsert_supply(
                    session,
                    {
                        "supply_id": s.supply_id,
                        "sku": s.sku,
                        "warehouse": s.warehouse_id,
                        "kind": SUPPLY_KINDS[s.kind],
                        "quantity": s.quantity,
                        "expected_at": s.expected_at.ToDatetime(UTC),
                    },
                )
                answer.supplies.append(
                    supply_proto(row)
                    if row is not None
                    else pb.IncomingSupply(
                        supply_id=s.supply_id,
                        sku=s.sku,
                        warehouse_id=s.warehouse_id,
                        kind=s.kind,
                        quantity=0,
                    )
                )
            await self._announce_eta_changes(session, {s.sku for s in request.supplies})
            return answer

        return await self.runtime.once(
            "SetIncomingSupply", request, pb.SetIncomingSupplyResponse, work
        )

    async def Reconcile(self, request: pb.ReconcileRequest, context: Any) -> pb.ReconcileResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.warehouse_id), "warehouse_id", "required")
        v.check(bool(request.snapshot_id), "snapshot_id", "required")
        v.check(request.HasField("snapshot_taken_at"), "snapshot_taken_at", "required")
        v.check(request.max_correction_quantity >= 0, "max_correction_quantity", "must be >= 0")
        if v.check(1 <= len(request.lines) <= 100_000, "lines", "1 to 100000 lines"):
            seen: set[str] = set()
            for i, line in enumerate(request.lines):
                v.check(bool(line.sku), f"lines[{i}].sku", "required")
                v.check(line.sku not in seen, f"lines[{i}].sku", "duplicate SKU")
                v.check(line.on_hand >= 0, f"lines[{i}].on_hand", "must be >= 0")
                seen.add(line.sku)
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.ReconcileResponse:
            stored = await stock.stored_reconciliation(
                session, request.warehouse_id, request.snapshot_id
            )
            if stored is not None:  # a snapshot is reconciled at most once
                return pb.ReconcileResponse(report=pb.ReconciliationReport.FromString(stored))
            await self.known.require_warehouses([request.warehouse_id], "warehouse_id")
            await self.known.require_skus(session, [line.sku for line in request.lines])
            taken_at = request.snapshot_taken_at.ToDatetime(UTC)
            wms = {line.sku: line.on_hand for line in request.lines}
            dwf = await stock.on_hand_as_of(
                session,
                request.warehouse_id,
                None if request.complete_snapshot else list(wms),
                taken_at,
            )
            compared = sorted(set(wms) | (set(dwf) if request.complete_snapshot else set()))
            report = pb.ReconciliationReport(
                reconciliation_id=str(uuid.uuid4()),
                warehouse_id=request.warehouse_id,
                snapshot_id=request.snapshot_id,
                snapshot_taken_at=request.snapshot_taken_at,
                reconciled_at=ts(await stock.now(session)),
                skus_compared=len(compared),
                applied=request.apply_corrections,
            )
            limit = request.max_correction_quantity
            for sku in compared:
                ours, theirs = dwf.get(sku, 0), wms.get(sku, 0)
                drift = theirs - ours
                if drift == 0:
                    continue
                line = pb.DriftLine(
                    sku=sku,
                    warehouse_id=request.warehouse_id,
                    dwf_on_hand=ours,
                    wms_on_hand=theirs,
                    drift=drift,
                )
                if request.apply_corrections and (not limit or abs(drift) <= limit):
                    entry, _ = await stock.append_ledger(
                        session,
                        stock.Movement(
                            sku=sku,
                            warehouse=request.warehouse_id,
                            kind="RECONCILIATION",
                            quantity_delta=drift,
                            reference=request.snapshot_id,
                            reason=f"reconciliation {report.reconciliation_id}",
                        ),
                    )
                    if entry is not None:  # a correction below zero on-hand is left to people
                        line.corrected, line.ledger_entry_id = True, entry.entry_id
                report.drifts.append(line)
            report.skus_with_drift = len(report.drifts)
            await stock.save_reconciliation(
                session,
                report.reconciliation_id,
                request.warehouse_id,
                request.snapshot_id,
                report.SerializeToString(deterministic=True),
            )
            await self._event(
                session,
                "warehouse",
                request.warehouse_id,
                events_pb2.DriftReconciled(
                    report=report,
                    total_absolute_drift=sum(abs(d.drift) for d in report.drifts),
                ),
            )
            return pb.ReconcileResponse(report=report)

        return await self.runtime.once("Reconcile", request, pb.ReconcileResponse, work)

    async def ListLedger(
        self, request: pb.ListLedgerRequest, context: Any
    ) -> pb.ListLedgerResponse:
        v = Violations()
        v.check(request.page_size >= 0, "page_size", "must be >= 0")
        kinds = []
        for i, kind in enumerate(request.kinds):
            if v.check(kind in MOVEMENT_KINDS, f"kinds[{i}]", "unknown movement kind"):
                kinds.append(MOVEMENT_KINDS[kind])
        filters = filters_of(request)
        after = page_after(v, request.page_token, filters, uuid_key=True)
        v.raise_if_any()
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        async with self.runtime.sessions() as session:
            rows = await stock.list_ledger(
                session,
                limit=limit + 1,
                after=after,
                sku=request.sku,
                warehouse_code=request.warehouse_id,
                kinds=kinds,
                order_id=request.order_id,
                occurred_after=request.occurred_after.ToDatetime(UTC)
                if request.HasField("occurred_after")
                else None,
                occurred_before=request.occurred_before.ToDatetime(UTC)
                if request.HasField("occurred_before")
                else None,
            )
        page, more = rows[:limit], len(rows) > limit
        token = (
            encode_page_token(filters, page[-1].recorded_at, str(page[-1].entry_id)) if more else ""
        )
        return pb.ListLedgerResponse(entries=[ledger_proto(r) for r in page], next_page_token=token)
