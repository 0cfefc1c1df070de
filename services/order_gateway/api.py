"""gRPC API of the order gateway: authentication, validation, proto ↔ domain translation and
the transaction script of each RPC.

Validation and master-data resolution happen before any transaction, so a refused request
writes nothing. Mutating RPCs run through ``Runtime.once`` (request_id idempotency, one
transaction with the outbox events); calls to inventory made on a request's behalf carry a
request_id derived from it, so a retry replays them instead of acting twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.batching import ExpiringValue
from chassis.clients import open_channel, remote_error
from chassis.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from chassis.outbox import PendingEvent
from chassis.pagination import encode_page_token, page_after
from chassis.protos import ts
from chassis.server import Runtime
from chassis.validation import Violations
from dwf.common.v1 import common_pb2
from dwf.inventory.v1 import inventory_pb2 as inv
from dwf.inventory.v1 import inventory_pb2_grpc
from dwf.order.v1 import events_pb2, master_data_pb2, master_data_pb2_grpc, order_gateway_pb2_grpc
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway import domain
from services.order_gateway.auth import Authenticator, RateLimiter, require_admin, require_channel
from services.order_gateway.domain import MasterData, Principal
from services.order_gateway.feed import OrderChangeFeed
from services.order_gateway.settings import GatewaySettings
from services.order_gateway.store import master_data as md_store
from services.order_gateway.store import orders as store

log = logging.getLogger("dwf.order_gateway")
S = common_pb2
TERMINAL = {S.ORDER_STATUS_COMPLETED, S.ORDER_STATUS_CANCELED, S.ORDER_STATUS_RETURNED}
CURRENCY = re.compile(r"^[A-Z]{3}$")
REGION = re.compile(r"^[A-Z]{2}$")
MAX_BASE_QUANTITY = 10**9
MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_PAYLOAD = 4 * 1024 * 1024
FORMAT_NAMES = {
    S.CHANNEL_FORMAT_SHOPIFY_JSON: "SHOPIFY_JSON",
    S.CHANNEL_FORMAT_AMAZON_JSON: "AMAZON_JSON",
    S.CHANNEL_FORMAT_B2B_PORTAL_JSON: "B2B_PORTAL_JSON",
    S.CHANNEL_FORMAT_X12_850: "X12_850",
}
VERDICTS = {
    domain.Verdict.IN_STOCK: pb.AVAILABILITY_STATE_IN_STOCK,
    domain.Verdict.BACKORDERABLE: pb.AVAILABILITY_STATE_BACKORDERABLE,
    domain.Verdict.OUT_OF_STOCK: pb.AVAILABILITY_STATE_OUT_OF_STOCK,
}


# --- validation ---------------------------------------------------------------------------


def check_money(v: Violations, money: common_pb2.Money, field: str, currency: str | None) -> None:
    if money.currency_code == "" and money.units == 0 and money.nanos == 0:
        return
    v.check(bool(CURRENCY.match(money.currency_code)), f"{field}.currency_code", "ISO 4217 code")
    v.check(-999_999_999 <= money.nanos <= 999_999_999, f"{field}.nanos", "out of range")
    v.check(
        not (money.units > 0 and money.nanos < 0) and not (money.units < 0 and money.nanos > 0),
        f"{field}.nanos",
        "sign must agree with units",
    )
    if currency is not None and money.currency_code:
        v.check(money.currency_code == currency, f"{field}.currency_code", "one currency per order")


def check_non_negative(v: Violations, money: common_pb2.Money, field: str) -> None:
    v.check(money.units >= 0 and money.nanos >= 0, field, "must be >= 0")


def check_address(v: Violations, address: common_pb2.PostalAddress, field: str) -> None:
    v.check(bool(REGION.match(address.region_code)), f"{field}.region_code", "ISO 3166-1 alpha-2")
    v.check(1 <= len(address.lines) <= 4, f"{field}.lines", "1 to 4 address lines")
    if address.lines:
        v.check(bool(address.lines[0].strip()), f"{field}.lines[0]", "required")
    for i, line in enumerate(address.lines):
        v.check(len(line) <= 100, f"{field}.lines[{i}]", "at most 100 characters")
    v.check(bool(address.name or address.company), f"{field}.name", "name or company required")


def check_order(v: Violations, request: pb.AcceptOrderRequest) -> None:
    """Canonical validation of everything but master data (SKUs, units)."""
    v.check(bool(request.channel.channel_id), "channel.channel_id", "required")
    v.check(
        0 < len(request.channel.channel_order_id) <= 128,
        "channel.channel_order_id",
        "required, at most 128 characters",
    )
    if v.check(request.HasField("ship_to"), "ship_to", "required"):
        check_address(v, request.ship_to, "ship_to")
    if request.HasField("bill_to"):
        v.check(
            bool(REGION.match(request.bill_to.region_code)),
            "bill_to.region_code",
            "ISO 3166-1 alpha-2",
        )
    currency = next(
        (
            m.currency_code
            for m in [
                *(line.unit_price for line in request.lines),
                request.shipping_charge,
                request.total,
            ]
            if m.currency_code
        ),
        None,
    )
    check_money(v, request.shipping_charge, "shipping_charge", currency)
    check_non_negative(v, request.shipping_charge, "shipping_charge")
    check_money(v, request.total, "total", currency)
    if v.check(1 <= len(request.lines) <= domain.MAX_LINES, "lines", "1 to 1000 lines"):
        seen: set[str] = set()
        for i, line in enumerate(request.lines):
            field = f"lines[{i}]"
            v.check(0 < len(line.line_id) <= 64, f"{field}.line_id", "required, at most 64 chars")
            v.check(line.line_id not in seen, f"{field}.line_id", "duplicate line_id")
            seen.add(line.line_id)
            v.check(bool(line.sku or line.channel_sku), f"{field}.sku", "sku or channel_sku")
            v.check(line.quantity.value > 0, f"{field}.quantity.value", "must be > 0")
            check_money(v, line.unit_price, f"{field}.unit_price", currency)
            check_non_negative(v, line.unit_price, f"{field}.unit_price")
            check_money(v, line.discount, f"{field}.discount", currency)
            check_non_negative(v, line.discount, f"{field}.discount")
            check_money(v, line.tax, f"{field}.tax", currency)
            if line.HasField("requested_ship_date"):
                check_date(v, line.requested_ship_date, f"{field}.requested_ship_date")
    for key, value in request.attributes.items():
        v.check(0 < len(key) <= 64, "attributes", f"key {key[:64]!r}: 1 to 64 characters")
        v.check(
            not key.startswith("dwf."), f"attributes[{key[:64]}]", "the dwf. prefix is reserved"
        )
        v.check(len(value) <= 1024, f"attributes[{key[:64]}]", "at most 1024 characters")
    v.check(len(request.hold_id) <= 64, "hold_id", "at most 64 characters")
    if request.HasField("placed_at"):
        v.check(request.placed_at.seconds > 0, "placed_at", "must be a real time")


def check_date(v: Violations, date: common_pb2.Date, field: str) -> None:
    try:
        datetime(date.year, date.month, date.day)
    except ValueError:
        v.add(field, "not a valid calendar date")


def check_ttl(v: Violations, ttl: duration_pb2.Duration, field: str) -> float:
    seconds = ttl.ToTimedelta().total_seconds()
    v.check(0 < seconds <= domain.MAX_HOLD_TTL_SECONDS, field, "must be > 0 and <= 60 minutes")
    return seconds


@dataclass(frozen=True)
class ResolvedLine:
    sku: str
    base_quantity: int


@dataclass(frozen=True)
class Unresolved:
    index: int
    what: str  # "sku" or "unit"
    message: str


def resolve_lines(
    master: MasterData, channel_id: str, lines: Sequence[Any]
) -> tuple[list[ResolvedLine | None], list[Unresolved]]:
    """SKU and base quantity of each line (OrderLine or RequestedItem) via master data."""
    resolved: list[ResolvedLine | None] = []
    problems: list[Unresolved] = []
    for i, line in enumerate(lines):
        sku = master.resolve_sku(channel_id, line.sku, line.channel_sku)
        if sku is None:
            given = line.sku or line.channel_sku
            problems.append(Unresolved(i, "sku", f"unknown SKU {given!r} for this channel"))
            resolved.append(None)
            continue
        unit = master.canonical_unit(channel_id, line.quantity.unit_of_measure)
        factor = master.factor(sku, unit)
        if factor is None:
            problems.append(
                Unresolved(
                    i,
                    "unit",
                    f"unknown unit of measure {line.quantity.unit_of_measure!r} for SKU {sku!r}",
                )
            )
            resolved.append(None)
            continue
        base = line.quantity.value * factor
        if base > MAX_BASE_QUANTITY:
            problems.append(Unresolved(i, "unit", "quantity too large"))
            resolved.append(None)
            continue
        resolved.append(ResolvedLine(sku, base))
    return resolved, problems


def canonical_path(field: str, problem: Unresolved, line: Any) -> str:
    if problem.what == "sku":
        return f"{field}[{problem.index}].{'sku' if line.sku else 'channel_sku'}"
    return f"{field}[{problem.index}].quantity.unit_of_measure"


def content_hash(request: pb.AcceptOrderRequest) -> str:
    """What makes two submissions of one channel order "the same order"."""
    content = pb.AcceptOrderRequest()
    content.CopyFrom(request)
    content.request_id = ""
    content.hold_id = ""
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def effective_hold_state(held: pb.Hold, now: datetime) -> pb.HoldState.ValueType:
    lapsed = held.HasField("expires_at") and held.expires_at.ToDatetime(tzinfo=UTC) <= now
    if held.state == pb.HOLD_STATE_ACTIVE and lapsed:
        return pb.HOLD_STATE_EXPIRED
    return held.state


def hold_not_active(held: pb.Hold, state: pb.HoldState.ValueType) -> FailedPrecondition:
    name = pb.HoldState.Name(state).removeprefix("HOLD_STATE_")
    return FailedPrecondition(
        f"hold {held.hold_id} is {name.lower()}, not active",
        "HOLD_NOT_ACTIVE",
        [PreconditionViolation("HOLD_STATE", held.hold_id, f"state is {name}")],
        {"hold_id": held.hold_id, "state": name},
    )


# --- the gateway ----------------------------------------------------------------------------


class PositionCache:
    """Read-model rows per SKU, reused by this replica for ``ttl`` seconds.

    The read model itself trails inventory by an event window (0.5 s by default), so a short
    reuse adds little staleness while sparing the database a query per call on hot SKUs.
    An expired entry is still answered from while one background load refreshes it (callers
    never queue behind a refresh); only a SKU never seen waits for its load. A SKU with no
    rows is not cached: it is cold and goes to the inventory fallback.
    """

    def __init__(
        self, load: Callable[[set[str]], Awaitable[dict[str, list[domain.Position]]]], ttl: float
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._rows: dict[str, tuple[float, list[domain.Position]]] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, skus: set[str], *, fresh: bool = False) -> dict[str, list[domain.Position]]:
        now = asyncio.get_running_loop().time()
        found: dict[str, list[domain.Position]] = {}
        missing: set[str] = set()
        stale: set[str] = set()
        for sku in skus:
            cached = self._rows.get(sku)
            if cached is None or fresh:
                missing.add(sku)
                continue
            found[sku] = cached[1]
            if now - cached[0] >= self._ttl and sku not in self._refreshing:
                stale.add(sku)
        if stale:
            self._refreshing |= stale
            task = asyncio.create_task(self._refresh(stale))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if missing:
            found.update(await self._fetch(missing))
        return found

    async def _refresh(self, skus: set[str]) -> None:
        try:
            await self._fetch(skus)
        except Exception:  # the next caller retries; the stale rows stay meanwhile
            log.warning("refreshing availability of %d SKUs failed", len(skus), exc_info=True)
        finally:
            self._refreshing -= skus

    async def _fetch(self, skus: set[str]) -> dict[str, list[domain.Position]]:
        now = asyncio.get_running_loop().time()
        loaded = await self._load(skus)
        if len(self._rows) > 100_000:  # bounded: a catalogue scan must not grow memory
            self._rows.clear()
        for sku in skus:
            if sku in loaded:
                self._rows[sku] = (now, loaded[sku])
            else:
                self._rows.pop(sku, None)
        return loaded


class Gateway:
    """State shared by the gateway's servicers and handlers in one process."""

    def __init__(self, runtime: Runtime, settings: GatewaySettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.master = ExpiringValue(self._load_master, ttl_seconds=settings.master_data_ttl_seconds)
        self.auth = Authenticator(
            self._principal_for_key, self.master.get, settings.credential_ttl_seconds
        )
        self.limits = RateLimiter(settings.replicas)
        self.feed = OrderChangeFeed(runtime.engine)
        self.positions = PositionCache(self._read_positions, settings.availability_cache_seconds)
        self._inventory: inventory_pb2_grpc.InventoryServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None
        runtime.on_close(self._close)

    async def _close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def _load_master(self) -> MasterData:
        async with self.runtime.reads.connect() as connection:
            return await md_store.read_master_data(connection)

    async def _read_positions(self, skus: set[str]) -> dict[str, list[domain.Position]]:
        async with self.runtime.reads.connect() as connection:
            return await store.read_positions(connection, skus)

    async def _principal_for_key(self, key: str) -> Principal | None:
        async with self.runtime.reads.connect() as connection:
            return await md_store.principal_for_key(connection, key)

    @property
    def inventory(self) -> inventory_pb2_grpc.InventoryServiceStub:
        if self._inventory is None:
            self._channel = open_channel(self.settings.inventory_target, self.runtime.settings)
            self._inventory = inventory_pb2_grpc.InventoryServiceStub(self._channel)
        return self._inventory

    async def caller(self, context: Any) -> tuple[Principal, MasterData]:
        """Authenticate and rate-limit the caller."""
        principal = await self.auth.principal(context)
        master = await self.master.get()
        self.limits.check(principal, master)
        return principal, master

    async def fresh_master(self, master: MasterData, missing: bool) -> MasterData:
        """A snapshot that misses something may just be older than a master-data change."""
        if not missing:
            return master
        self.master.invalidate()
        return await self.master.get()

    async def call_inventory(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return await getattr(self.inventory, method)(
                request, timeout=timeout or self.settings.inventory_timeout_seconds
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, "inventory") from exc


def channel_of(master: MasterData, channel_id: str, field: str = "channel_id") -> domain.Channel:
    channel = master.channels.get(channel_id)
    if channel is None:
        raise InvalidArgument(
            [FieldViolation(field, f"unknown channel {channel_id!r}")], reason="UNKNOWN_CHANNEL"
        )
    return channel


def visible(principal: Principal, order: pb.Order) -> bool:
    return principal.is_admin or principal.channel_id == order.channel.channel_id


class OrderGatewayService(order_gateway_pb2_grpc.OrderGatewayServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.runtime = gateway.runtime

    # --- availability -------------------------------------------------------------------

    async def CheckAvailability(
        self, request: pb.CheckAvailabilityRequest, context: Any
    ) -> pb.CheckAvailabilityResponse:
        principal, master = await self.gateway.caller(context)
        v = Violations()
        check_items(v, request.items, domain.MAX_CHECK_ITEMS)
        v.check(bool(request.channel_id), "channel_id", "required")
        v.raise_if_any()
        require_channel(principal, request.channel_id)
        channel = channel_of(master, request.channel_id)
        resolved = await self._resolve_items(master, channel, request.items)
        skus = {line.sku for line in resolved if line is not None}
        positions = await self.gateway.positions.get(skus)
        cold = sorted(skus - positions.keys())
        if cold:
            positions.update(await self._fallback(cold))
        now = datetime.now(UTC)
        answers: list[pb.ItemAvailability] = []
        to_promise: list[inv.LineItem] = []
        oldest = now
        for item, line in zip(request.items, resolved, strict=True):
            if line is None:
                answers.append(
                    pb.ItemAvailability(
                        line_id=item.line_id, state=pb.AVAILABILITY_STATE_UNKNOWN_SKU
                    )
                )
                continue
            rows = domain.eligible(positions.get(line.sku, []), channel.warehouses)
            oldest = min([oldest, *(row.as_of for row in rows)])
            verdict = domain.judge(line.base_quantity, rows)
            answers.append(
                pb.ItemAvailability(
                    line_id=item.line_id,
                    sku=line.sku,
                    requested_quantity=line.base_quantity,
                    available_quantity=verdict.available,
                    state=VERDICTS[verdict.verdict],
                )
            )
            if verdict.verdict == domain.Verdict.BACKORDERABLE:
                to_promise.append(
                    inv.LineItem(line_id=item.line_id, sku=line.sku, quantity=line.base_quantity)
                )
        if to_promise:
            await self._promise_dates(channel.channel_id, request, to_promise, answers)
        return pb.CheckAvailabilityResponse(items=answers, as_of=ts(oldest))

    async def _resolve_items(
        self, master: MasterData, channel: domain.Channel, items: Sequence[pb.RequestedItem]
    ) -> list[ResolvedLine | None]:
        """Items of a check or hold: an unknown SKU is an answer (UNKNOWN_SKU, a shortfall),
        an unknown unit is a bad request."""
        resolved, problems = resolve_lines(master, channel.channel_id, items)
        if problems:
            master = await self.gateway.fresh_master(master, True)
            resolved, problems = resolve_lines(master, channel.channel_id, items)
        bad_units = [p for p in problems if p.what == "unit"]
        if bad_units:
            raise InvalidArgument(
                [
                    FieldViolation(f"items[{p.index}].quantity.unit_of_measure", p.message)
                    for p in bad_units
                ],
                reason="UNKNOWN_UNIT",
            )
        return resolved

    async def _fallback(self, skus: Sequence[str]) -> dict[str, list[domain.Position]]:
        """SKUs the read model has never seen: ask inventory once and remember the answer
        (an empty placeholder row for a SKU with no stock anywhere)."""
        response: inv.GetAvailabilityResponse = await self.gateway.call_inventory(
            "GetAvailability",
            inv.GetAvailabilityRequest(skus=list(skus)),
            self.gateway.settings.availability_fallback_timeout_seconds,
        )
        as_of = (
            response.as_of.ToDatetime(tzinfo=UTC)
            if response.HasField("as_of")
            else datetime.now(UTC)
        )
        levels: list[inv.StockLevel] = []
        for entry in response.skus:
            levels.extend(entry.warehouses)
            if not entry.warehouses:
                levels.append(inv.StockLevel(sku=entry.sku, warehouse_id=""))
        async with self.runtime.sessions.begin() as session:
            await store.seed_positions(session, levels, as_of)
        return await self.gateway.positions.get(set(skus), fresh=True)

    async def _promise_dates(
        self,
        channel_id: str,
        request: pb.CheckAvailabilityRequest,
        lines: list[inv.LineItem],
        answers: list[pb.ItemAvailability],
    ) -> None:
        """Promise dates come from inventory's incoming supply; if it cannot answer quickly
        the verdict stands and available_at stays unset."""
        try:
            promise: inv.PromiseLinesResponse = await self.gateway.call_inventory(
                "PromiseLines",
                inv.PromiseLinesRequest(
                    channel_id=channel_id,
                    lines=lines,
                    ship_to=request.ship_to if request.HasField("ship_to") else None,
                ),
                self.gateway.settings.availability_fallback_timeout_seconds,
            )
        except DomainError:
            return
        by_line = {p.line_id: p for p in promise.lines}
        for answer in answers:
            found = by_line.get(answer.line_id)
            if found is None:
                continue
            if found.outcome == inv.PROMISE_OUTCOME_CANNOT_PROMISE:
                answer.state = pb.AVAILABILITY_STATE_OUT_OF_STOCK
            elif found.HasField("promised_at"):
                answer.available_at.CopyFrom(found.promised_at)

    # --- holds --------------------------------------------------------------------------

    async def CreateHold(
        self, request: pb.CreateHoldRequest, context: Any
    ) -> pb.CreateHoldResponse:
        principal, master = await self.gateway.caller(context)
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.channel_id), "channel_id", "required")
        check_items(v, request.items, domain.MAX_CHECK_ITEMS)
        if request.HasField("ttl"):
            check_ttl(v, request.ttl, "ttl")
        v.check(len(request.checkout_reference) <= 256, "checkout_reference", "at most 256 chars")
        v.raise_if_any()
        require_channel(principal, request.channel_id)
        channel = channel_of(master, request.channel_id)
        resolved = await self._resolve_items(master, channel, request.items)
        ttl = (
            request.ttl.ToTimedelta().total_seconds()
            if request.HasField("ttl")
            else channel.default_hold_ttl_seconds
        )

        async def work(session: AsyncSession) -> pb.CreateHoldResponse:
            hold_id = domain.derived_request_id(request.request_id, "hold")
            unknown = [
                pb.HoldShortfall(line_id=item.line_id, requested_quantity=item.quantity.value)
                for item, line in zip(request.items, resolved, strict=True)
                if line is None
            ]
            known = [
                inv.LineItem(line_id=item.line_id, sku=line.sku, quantity=line.base_quantity)
                for item, line in zip(request.items, resolved, strict=True)
                if line is not None
            ]
            if not known or (unknown and not request.allow_partial):
                return pb.CreateHoldResponse(shortfalls=unknown)
            reserved: inv.ReserveResponse = await self.gateway.call_inventory(
                "Reserve",
                inv.ReserveRequest(
                    request_id=domain.derived_request_id(request.request_id, "reserve"),
                    owner=inv.ReservationOwner(
                        type=inv.RESERVATION_OWNER_TYPE_HOLD, owner_id=hold_id
                    ),
                    channel_id=channel.channel_id,
                    mode=inv.RESERVATION_MODE_PARTIAL
                    if request.allow_partial
                    else inv.RESERVATION_MODE_ALL_OR_NOTHING,
                    ttl=duration(ttl),
                    lines=known,
                    ship_to=request.ship_to if request.HasField("ship_to") else None,
                ),
            )
            shortfalls = unknown + [
                pb.HoldShortfall(
                    line_id=s.line_id,
                    sku=s.sku,
                    requested_quantity=s.requested_quantity,
                    available_quantity=s.available_quantity,
                )
                for s in reserved.shortfalls
            ]
            if not reserved.HasField("reservation"):
                return pb.CreateHoldResponse(shortfalls=shortfalls)
            reservation = reserved.reservation
            held_by_line = {line.line_id: line.reserved_quantity for line in reservation.lines}
            held = pb.Hold(
                hold_id=hold_id,
                channel_id=channel.channel_id,
                state=pb.HOLD_STATE_ACTIVE,
                lines=[
                    pb.HoldLine(
                        line_id=line.line_id,
                        sku=line.sku,
                        requested_quantity=line.quantity,
                        held_quantity=held_by_line.get(line.line_id, 0),
                    )
                    for line in known
                ],
                created_at=reservation.created_at,
                expires_at=reservation.expires_at,
                reservation_id=reservation.reservation_id,
            )
            await store.insert_hold(session, held)
            return pb.CreateHoldResponse(hold=held, shortfalls=shortfalls)

        return await self.runtime.once("CreateHold", request, pb.CreateHoldResponse, work)

    async def _own_hold(self, session: AsyncSession, principal: Principal, hold_id: str) -> pb.Hold:
        held = await store.load_hold(session, hold_id, for_update=True)
        if held is None or not principal.may_act_for(held.channel_id):
            raise NotFound(f"hold {hold_id!r} not found", "HOLD_NOT_FOUND", hold_id=hold_id)
        return held

    async def ExtendHold(
        self, request: pb.ExtendHoldRequest, context: Any
    ) -> pb.ExtendHoldResponse:
        principal, _ = await self.gateway.caller(context)
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.hold_id), "hold_id", "required")
        seconds = (
            check_ttl(v, request.ttl, "ttl")
            if v.check(request.HasField("ttl"), "ttl", "required")
            else 0
        )
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.ExtendHoldResponse:
            held = await self._own_hold(session, principal, request.hold_id)
            now = datetime.now(UTC)
            state = effective_hold_state(held, now)
            if state != pb.HOLD_STATE_ACTIVE:
                raise hold_not_active(held, state)
            deadline = held.created_at.ToDatetime(tzinfo=UTC) + timedelta(
                seconds=domain.MAX_HOLD_LIFE_SECONDS
            )
            if now + timedelta(seconds=seconds) > deadline:
                raise FailedPrecondition(
                    "a hold lives at most 2 hours",
                    "HOLD_LIFE_EXCEEDED",
                    [
                        PreconditionViolation(
                            "HOLD_LIFE", held.hold_id, f"ends at {deadline.isoformat()}"
                        )
                    ],
                    {"hold_id": held.hold_id},
                )
            try:
                extended: inv.ExtendReservationResponse = await self.gateway.call_inventory(
                    "ExtendReservation",
                    inv.ExtendReservationRequest(
                        request_id=domain.derived_request_id(request.request_id, "extend"),
                        reservation_id=held.reservation_id,
                        ttl=request.ttl,
                    ),
                )
            except DomainError as exc:
                if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise hold_not_active(held, pb.HOLD_STATE_EXPIRED) from exc
                raise
            held.expires_at.CopyFrom(extended.reservation.expires_at)
            await store.save_hold(session, held)
            return pb.ExtendHoldResponse(hold=held)

        return await self.runtime.once("ExtendHold", request, pb.ExtendHoldResponse, work)

    async def ReleaseHold(
        self, request: pb.ReleaseHoldRequest, context: Any
    ) -> pb.ReleaseHoldResponse:
        principal, _ = await self.gateway.caller(context)
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.hold_id), "hold_id", "required")
        v.check(len(request.reason) <= 256, "reason", "at most 256 characters")
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.ReleaseHoldResponse:
            held = await self._own_hold(session, principal, request.hold_id)
            state = effective_hold_state(held, datetime.now(UTC))
            if state == pb.HOLD_STATE_CONVERTED:
                raise FailedPrecondition(
                    f"hold {held.hold_id} became order {held.order_id}: cancel the order instead",
                    "HOLD_CONVERTED",
                    [PreconditionViolation("HOLD_STATE", held.hold_id, "state is CONVERTED")],
                    {"hold_id": held.hold_id, "order_id": held.order_id},
                )
            if state != pb.HOLD_STATE_ACTIVE:
                held.state = state
                return pb.ReleaseHoldResponse(hold=held)
            await self.gateway.call_inventory(
                "ReleaseReservation",
                inv.ReleaseReservationRequest(
                    request_id=domain.derived_request_id(request.request_id, "release"),
                    reservation_id=held.reservation_id,
                    reason=request.reason or "HOLD_RELEASED",
                ),
            )
            held.state = pb.HOLD_STATE_RELEASED
            await store.save_hold(session, held)
            return pb.ReleaseHoldResponse(hold=held)

        return await self.runtime.once("ReleaseHold", request, pb.ReleaseHoldResponse, work)

    # --- acceptance ---------------------------------------------------------------------

    async def AcceptOrder(
        self, request: pb.AcceptOrderRequest, context: Any
    ) -> pb.AcceptOrderResponse:
        principal, master = await self.gateway.caller(context)
        prepared = await self.prepare(principal, master, request, S.CHANNEL_FORMAT_CANONICAL)
        return await self.runtime.once(
            "AcceptOrder",
            request,
            pb.AcceptOrderResponse,
            lambda session: self.accept(session, prepared),
        )

    async def prepare(
        self,
        principal: Principal,
        master: MasterData,
        request: pb.AcceptOrderRequest,
        fmt: int,
        paths: Mapping[int, Mapping[str, str]] | None = None,
    ) -> Prepared:
        """Validate and map a canonical order; nothing is written. ``paths`` names the channel
        payload's fields per line index, so errors point into what the channel sent."""
        v = Violations()
        v.request_id(request.request_id)
        check_order(v, request)
        v.raise_if_any()
        require_channel(principal, request.channel.channel_id)
        channel = channel_of(master, request.channel.channel_id, "channel.channel_id")
        resolved, problems = resolve_lines(master, channel.channel_id, request.lines)
        if problems:
            master = await self.gateway.fresh_master(master, True)
            resolved, problems = resolve_lines(master, channel.channel_id, request.lines)
        if problems:
            violations = [
                FieldViolation(
                    (paths or {}).get(p.index, {}).get(p.what)
                    or canonical_path("lines", p, request.lines[p.index]),
                    p.message,
                )
                for p in problems
            ]
            reason = "UNKNOWN_SKU" if any(p.what == "sku" for p in problems) else "UNKNOWN_UNIT"
            raise InvalidArgument(violations, reason=reason)
        canonical = pb.AcceptOrderRequest()
        canonical.CopyFrom(request)
        canonical.channel.format = fmt  # type: ignore[assignment]
        lines = [line for line in resolved if line is not None]
        for line, mapped in zip(canonical.lines, lines, strict=True):
            line.sku = mapped.sku
            line.base_quantity = mapped.base_quantity
            line.ClearField("quantities")
            line.ClearField("backorder_eta")
            line.substituted_for_sku = ""
            if not line.quantity.unit_of_measure:
                line.quantity.unit_of_measure = domain.BASE_UNIT
        if not canonical.customer.customer_id:
            canonical.customer.customer_id = (
                master.customer_id(channel.channel_id, canonical.customer.channel_customer_id)
                if canonical.customer.channel_customer_id
                else ""
            ) or channel.default_customer_id
        return Prepared(canonical, channel, content_hash(canonical))

    async def accept(self, session: AsyncSession, prepared: Prepared) -> pb.AcceptOrderResponse:
        """One transaction: claim the channel order, reserve (or convert the hold), write the
        order and its events. A concurrent submission of the same channel order waits on the
        claim and then answers with the order this one created."""
        request, channel = prepared.request, prepared.channel
        order_id = domain.order_id_for(channel.channel_id, request.channel.channel_order_id)
        claimed = await store.claim_order(
            session,
            order_id,
            channel.channel_id,
            request.channel.channel_order_id,
            prepared.content,
        )
        if not claimed:
            existing = await store.load_order(session, order_id)
            assert existing is not None  # the claim row commits only with its order
            if existing.content_sha256 != prepared.content:
                raise AlreadyExists(
                    f"channel order {request.channel.channel_order_id!r} of {channel.channel_id!r} "
                    "was accepted with different content",
                    reason="CHANNEL_ORDER_CONFLICT",
                    order_id=order_id,
                    channel_order_id=request.channel.channel_order_id,
                )
            return pb.AcceptOrderResponse(order=existing.order, existing_order=True)

        items = [
            inv.LineItem(line_id=line.line_id, sku=line.sku, quantity=line.base_quantity)
            for line in request.lines
        ]
        refuse = channel.backorder_policy == domain.BackorderPolicy.REFUSE
        reservation, shortfalls, hold_id = await self._reserve_for(
            session, request, order_id, items, refuse
        )
        if refuse and shortfalls:
            if reservation is not None:  # a converted hold did not cover everything
                await self.gateway.call_inventory(
                    "ReleaseReservation",
                    inv.ReleaseReservationRequest(
                        request_id=domain.derived_request_id(request.request_id, "refuse"),
                        reservation_id=reservation.reservation_id,
                        reason="ORDER_REFUSED",
                    ),
                )
            raise FailedPrecondition(
                "not enough stock and the channel does not accept backorders",
                "INSUFFICIENT_STOCK",
                [
                    PreconditionViolation(
                        "INSUFFICIENT_STOCK",
                        f"lines[{index_of(request, s.line_id)}]",
                        f"line {s.line_id}: {s.requested_quantity} {s.sku} requested, "
                        f"{s.available_quantity} available",
                    )
                    for s in shortfalls
                ],
                {"order_id": order_id},
            )

        now = datetime.now(UTC)
        reserved = {
            line.line_id: line.reserved_quantity
            for line in (reservation.lines if reservation is not None else [])
        }
        order = build_order(request, order_id, now, hold_id)
        pending: dict[str, int] = {}
        for line in order.lines:
            line.quantities.reserved = min(reserved.get(line.line_id, 0), line.base_quantity)
            short = line.base_quantity - line.quantities.reserved
            line.quantities.backordered = short
            if short:
                pending[line.line_id] = short
        await store.save_order(session, order, pending_backorder=pending)
        await store.add_status_change(session, order, S.ORDER_STATUS_UNSPECIFIED, now)
        await self.runtime.events.record_many(
            session,
            [
                pending_event(
                    order_id,
                    events_pb2.OrderAccepted(
                        order=order,
                        reservation_id=reservation.reservation_id if reservation else "",
                        request_id=request.request_id,
                    ),
                ),
                pending_event(order_id, status_changed(order, S.ORDER_STATUS_UNSPECIFIED, now, "")),
            ],
        )
        return pb.AcceptOrderResponse(order=order)

    async def _reserve_for(
        self,
        session: AsyncSession,
        request: pb.AcceptOrderRequest,
        order_id: str,
        items: list[inv.LineItem],
        refuse: bool,
    ) -> tuple[inv.Reservation | None, list[inv.ReservationShortfall], str]:
        """Convert the checkout hold when it is still active, else reserve now."""
        if request.hold_id:
            held = await store.load_hold(session, request.hold_id, for_update=True)
            if held is None or held.channel_id != request.channel.channel_id:
                raise InvalidArgument(
                    [FieldViolation("hold_id", f"unknown hold {request.hold_id!r}")],
                    reason="HOLD_NOT_FOUND",
                )
            if effective_hold_state(held, datetime.now(UTC)) == pb.HOLD_STATE_ACTIVE:
                try:
                    committed: inv.CommitReservationResponse = await self.gateway.call_inventory(
                        "CommitReservation",
                        inv.CommitReservationRequest(
                            request_id=domain.derived_request_id(request.request_id, "commit"),
                            reservation_id=held.reservation_id,
                            order_id=order_id,
                            lines=items,
                            reserve_shortfall=True,
                        ),
                    )
                except DomainError as exc:
                    if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    # The hold lapsed at inventory meanwhile: reserve now, as for no hold.
                else:
                    held.state = pb.HOLD_STATE_CONVERTED
                    held.order_id = order_id
                    await store.save_hold(session, held)
                    return committed.reservation, list(committed.shortfalls), held.hold_id
        try:
            response: inv.ReserveResponse = await self.gateway.call_inventory(
                "Reserve",
                inv.ReserveRequest(
                    request_id=domain.derived_request_id(request.request_id, "reserve"),
                    owner=inv.ReservationOwner(
                        type=inv.RESERVATION_OWNER_TYPE_ORDER, owner_id=order_id
                    ),
                    channel_id=request.channel.channel_id,
                    mode=inv.RESERVATION_MODE_ALL_OR_NOTHING
                    if refuse
                    else inv.RESERVATION_MODE_PARTIAL,
                    lines=items,
                    ship_to=request.ship_to,
                ),
            )
        except DomainError as exc:
            if isinstance(exc, InvalidArgument) or exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            # No warehouse serves the channel: everything is backordered (or refused).
            shortfalls = [
                inv.ReservationShortfall(
                    line_id=i.line_id, sku=i.sku, requested_quantity=i.quantity
                )
                for i in items
            ]
            return None, shortfalls, ""
        reservation = response.reservation if response.HasField("reservation") else None
        return reservation, list(response.shortfalls), ""

    # --- channel payloads ---------------------------------------------------------------

    async def IngestChannelOrder(
        self, request: pb.IngestChannelOrderRequest, context: Any
    ) -> pb.IngestChannelOrderResponse:
        from services.order_gateway.ingest import ingest  # it builds on this module

        principal, master = await self.gateway.caller(context)
        return await ingest(self, principal, master, request)

    # --- the order view -----------------------------------------------------------------

    async def _visible_order(self, principal: Principal, order_id: str) -> pb.Order:
        async with self.runtime.reads.connect() as connection:
            stored = await store.load_order(connection, order_id)
        if stored is None or not visible(principal, stored.order):
            raise NotFound(f"order {order_id!r} not found", "ORDER_NOT_FOUND", order_id=order_id)
        return stored.order

    async def GetOrder(self, request: pb.GetOrderRequest, context: Any) -> pb.GetOrderResponse:
        principal, _ = await self.gateway.caller(context)
        if request.order_id:
            return pb.GetOrderResponse(order=await self._visible_order(principal, request.order_id))
        v = Violations()
        v.check(
            bool(request.channel_id), "channel_id", "order_id, or channel_id and channel_order_id"
        )
        v.check(bool(request.channel_order_id), "channel_order_id", "required with channel_id")
        v.raise_if_any()
        async with self.runtime.reads.connect() as connection:
            stored = await store.load_order_by_channel_key(
                connection, request.channel_id, request.channel_order_id
            )
        if stored is None or not visible(principal, stored.order):
            raise NotFound(
                f"order {request.channel_order_id!r} of channel {request.channel_id!r} not found",
                "ORDER_NOT_FOUND",
            )
        return pb.GetOrderResponse(order=stored.order)

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Any
    ) -> pb.ListOrdersResponse:
        principal, _ = await self.gateway.caller(context)
        v = Violations()
        v.check(request.page_size >= 0, "page_size", "must be >= 0")
        v.raise_if_any()
        channel_id = request.channel_id
        if not principal.is_admin:
            if channel_id and channel_id != principal.channel_id:
                require_channel(principal, channel_id)
            channel_id = principal.channel_id or ""
        filters = store.OrderFilter(
            channel_id=channel_id,
            statuses=tuple(sorted(set(request.statuses) - {S.ORDER_STATUS_UNSPECIFIED})),
            customer_id=request.customer_id,
            created_after=request.created_after.ToDatetime(tzinfo=UTC)
            if request.HasField("created_after")
            else None,
            created_before=request.created_before.ToDatetime(tzinfo=UTC)
            if request.HasField("created_before")
            else None,
        )
        filter_key = [
            filters.channel_id,
            list(filters.statuses),
            filters.customer_id,
            filters.created_after.isoformat() if filters.created_after else "",
            filters.created_before.isoformat() if filters.created_before else "",
        ]
        after = page_after(v, request.page_token, filter_key)
        v.raise_if_any()
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        async with self.runtime.reads.connect() as connection:
            rows = await store.list_orders(connection, filters, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_page_token(filter_key, rows[-1][0], rows[-1][1].order_id)
        return pb.ListOrdersResponse(orders=[order for _, order in rows], next_page_token=token)

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: Any
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        principal, _ = await self.gateway.caller(context)
        v = Violations()
        v.check(bool(request.order_id), "order_id", "required")
        v.raise_if_any()
        order = await self._visible_order(principal, request.order_id)
        last = request.after_sequence
        if last == 0:
            yield pb.WatchOrderResponse(
                order=order,
                status=order.status,
                status_sequence=order.status_sequence,
                changed_at=order.updated_at,
            )
            last = order.status_sequence
            if order.status in TERMINAL:
                return
        async with self.gateway.feed.watch(request.order_id) as wake:
            while True:
                async with self.runtime.reads.connect() as connection:
                    changes = await store.status_changes_after(connection, request.order_id, last)
                for change in changes:
                    yield pb.WatchOrderResponse(
                        order=change.order,
                        previous_status=change.previous_status,  # type: ignore[arg-type]
                        status=change.status,  # type: ignore[arg-type]
                        status_sequence=change.status_sequence,
                        changed_at=ts(change.changed_at),
                    )
                    last = change.status_sequence
                    if change.status in TERMINAL:
                        return
                if not changes:
                    await wake.wait_for_change(self.gateway.settings.watch_poll_seconds)

    # --- cancellations and returns ------------------------------------------------------

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: Any
    ) -> pb.CancelOrderResponse:
        principal, _ = await self.gateway.caller(context)
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.order_id), "order_id", "required")
        v.check(0 < len(request.reason_code) <= 64, "reason_code", "required, at most 64 chars")
        v.check(len(request.note) <= 1000, "note", "at most 1000 characters")
        seen: set[str] = set()
        for i, line in enumerate(request.lines):
            v.check(bool(line.line_id), f"lines[{i}].line_id", "required")
            v.check(line.line_id not in seen, f"lines[{i}].line_id", "duplicate line_id")
            seen.add(line.line_id)
            v.check(line.quantity >= 0, f"lines[{i}].quantity", "must be >= 0")
        v.raise_if_any()
        order = await self._visible_order(principal, request.order_id)
        open_qty = {line.line_id: cancellable(line) for line in order.lines}
        v = Violations()
        for i, line in enumerate(request.lines):
            if v.check(line.line_id in open_qty, f"lines[{i}].line_id", "no such line"):
                v.check(
                    line.quantity <= open_qty[line.line_id],
                    f"lines[{i}].quantity",
                    f"at most {open_qty[line.line_id]} can still be canceled",
                )
        v.raise_if_any()
        wanted = [line.line_id for line in request.lines] or list(open_qty)
        if order.status in TERMINAL or not any(open_qty.get(lid, 0) > 0 for lid in wanted):
            raise FailedPrecondition(
                "nothing left to cancel: request a return for shipped quantity",
                "NOTHING_TO_CANCEL",
                [
                    PreconditionViolation(
                        "ORDER_STATE", order.order_id, f"status {S.OrderStatus.Name(order.status)}"
                    )
                ],
                {"order_id": order.order_id},
            )

        async def work(session: AsyncSession) -> pb.CancelOrderResponse:
            cancellation_id = domain.derived_request_id(request.request_id, "cancel")
            now = datetime.now(UTC)
            event = events_pb2.OrderCancelRequested(
                order_id=order.order_id,
                cancellation_id=cancellation_id,
                lines=request.lines,
                reason_code=request.reason_code,
                note=request.note,
                requested_at=ts(now),
            )
            await store.record_order_request(
                session, cancellation_id, order.order_id, "CANCEL", event.SerializeToString()
            )
            await self.runtime.events.record_many(session, [pending_event(order.order_id, event)])
            return pb.CancelOrderResponse(cancellation_id=cancellation_id, order=order)

        return await self.runtime.once("CancelOrder", request, pb.CancelOrderResponse, work)

    async def RequestReturn(
        self, request: pb.RequestReturnRequest, context: Any
    ) -> pb.RequestReturnResponse:
        principal, _ = await self.gateway.caller(context)
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.order_id), "order_id", "required")
        v.check(1 <= len(request.lines) <= domain.MAX_LINES, "lines", "1 to 1000 lines")
        v.check(len(request.channel_return_id) <= 128, "channel_return_id", "at most 128 chars")
        seen: set[str] = set()
        for i, line in enumerate(request.lines):
            v.check(bool(line.line_id), f"lines[{i}].line_id", "required")
            v.check(line.line_id not in seen, f"lines[{i}].line_id", "duplicate line_id")
            seen.add(line.line_id)
            v.check(line.quantity > 0, f"lines[{i}].quantity", "must be > 0")
            v.check(0 < len(line.reason_code) <= 64, f"lines[{i}].reason_code", "required")
            v.check(len(line.note) <= 1000, f"lines[{i}].note", "at most 1000 characters")
        v.raise_if_any()
        order = await self._visible_order(principal, request.order_id)
        returnable = {
            line.line_id: line.quantities.shipped - line.quantities.returned for line in order.lines
        }
        v = Violations()
        for i, line in enumerate(request.lines):
            if v.check(line.line_id in returnable, f"lines[{i}].line_id", "no such line"):
                v.check(
                    line.quantity <= returnable[line.line_id],
                    f"lines[{i}].quantity",
                    f"at most {returnable[line.line_id]} shipped and not yet returned",
                )
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.RequestReturnResponse:
            return_id = domain.derived_request_id(request.request_id, "return")
            event = events_pb2.ReturnRequested(
                order_id=order.order_id,
                return_request_id=return_id,
                lines=request.lines,
                channel_return_id=request.channel_return_id,
                requested_at=ts(datetime.now(UTC)),
            )
            await store.record_order_request(
                session, return_id, order.order_id, "RETURN", event.SerializeToString()
            )
            await self.runtime.events.record_many(session, [pending_event(order.order_id, event)])
            return pb.RequestReturnResponse(return_request_id=return_id, order=order)

        return await self.runtime.once("RequestReturn", request, pb.RequestReturnResponse, work)


@dataclass(frozen=True)
class Prepared:
    """A validated, mapped canonical order, ready to accept."""

    request: pb.AcceptOrderRequest
    channel: domain.Channel
    content: str


def cancellable(line: common_pb2.OrderLine) -> int:
    q = line.quantities
    return max(q.ordered - q.shipped - q.canceled, 0)


def index_of(request: pb.AcceptOrderRequest, line_id: str) -> int:
    return next((i for i, line in enumerate(request.lines) if line.line_id == line_id), -1)


def check_items(v: Violations, items: Sequence[pb.RequestedItem], limit: int) -> None:
    if not v.check(1 <= len(items) <= limit, "items", f"1 to {limit} items"):
        return
    seen: set[str] = set()
    for i, item in enumerate(items):
        v.check(0 < len(item.line_id) <= 64, f"items[{i}].line_id", "required, at most 64 chars")
        v.check(item.line_id not in seen, f"items[{i}].line_id", "duplicate line_id")
        seen.add(item.line_id)
        v.check(bool(item.sku or item.channel_sku), f"items[{i}].sku", "sku or channel_sku")
        v.check(item.quantity.value > 0, f"items[{i}].quantity.value", "must be > 0")


def build_order(
    request: pb.AcceptOrderRequest, order_id: str, now: datetime, hold_id: str
) -> pb.Order:
    order = pb.Order(
        order_id=order_id,
        channel=request.channel,
        customer=request.customer,
        ship_to=request.ship_to,
        bill_to=request.bill_to if request.HasField("bill_to") else None,
        lines=request.lines,
        status=S.ORDER_STATUS_ACCEPTED,
        lifecycle_status=S.ORDER_STATUS_ACCEPTED,
        status_sequence=1,
        created_at=ts(now),
        updated_at=ts(now),
        placed_at=request.placed_at if request.HasField("placed_at") else ts(now),
        hold_id=hold_id,
        purchase_order_number=request.purchase_order_number,
        shipping_method=request.shipping_method,
        shipping_charge=request.shipping_charge if request.HasField("shipping_charge") else None,
        total=request.total if request.HasField("total") else None,
        payment_reference=request.payment_reference,
        attributes=dict(request.attributes),
    )
    for line in order.lines:
        line.quantities.ordered = line.base_quantity
    return order


def status_changed(
    order: pb.Order, previous: int, changed_at: datetime, reason: str
) -> events_pb2.OrderStatusChanged:
    return events_pb2.OrderStatusChanged(
        order_id=order.order_id,
        channel=order.channel,
        previous_status=previous,  # type: ignore[arg-type]
        status=order.status,
        status_sequence=order.status_sequence,
        lifecycle_status=order.lifecycle_status,
        changed_at=ts(changed_at),
        reason=reason,
        lines=order.lines,
        tracking=order.tracking,
        customer=order.customer,
    )


def pending_event(order_id: str, payload: Any) -> PendingEvent:
    return PendingEvent("order", order_id, payload)


# --- master data (operators) ----------------------------------------------------------------


class MasterDataService(master_data_pb2_grpc.MasterDataServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.runtime = gateway.runtime

    async def ApplyMasterData(
        self, request: master_data_pb2.ApplyMasterDataRequest, context: Any
    ) -> master_data_pb2.ApplyMasterDataResponse:
        principal = await self.gateway.auth.principal(context)
        require_admin(principal)
        v = Violations()
        v.request_id(request.request_id)
        v.check(0 < len(request.document) <= MAX_PAYLOAD, "document", "required, at most 4 MiB")
        v.raise_if_any()
        try:
            document = json.loads(request.document)
            md_store.validate(document)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                [FieldViolation("document", f"not JSON: {exc}")], reason="INVALID_MASTER_DATA"
            ) from exc
        except md_store.MasterDataError as exc:
            raise InvalidArgument(
                [FieldViolation(f"document.{exc.path}".rstrip("."), exc.message)],
                reason="INVALID_MASTER_DATA",
            ) from exc

        async def work(session: AsyncSession) -> master_data_pb2.ApplyMasterDataResponse:
            counts = await md_store.load_master_data(session, document)
            return master_data_pb2.ApplyMasterDataResponse(applied=counts)

        response = await self.runtime.once(
            "ApplyMasterData", request, master_data_pb2.ApplyMasterDataResponse, work
        )
        # This replica sees the change at once; others within their snapshot/credential TTLs.
        self.gateway.master.invalidate()
        self.gateway.auth.forget()
        return response

    async def GetMasterData(
        self, request: master_data_pb2.GetMasterDataRequest, context: Any
    ) -> master_data_pb2.GetMasterDataResponse:
        require_admin(await self.gateway.auth.principal(context))
        self.gateway.master.invalidate()
        return master_data_pb2.GetMasterDataResponse(
            document=md_store.master_data_json(await self.gateway.master.get())
        )

    async def ListIngestExceptions(
        self, request: master_data_pb2.ListIngestExceptionsRequest, context: Any
    ) -> master_data_pb2.ListIngestExceptionsResponse:
        require_admin(await self.gateway.auth.principal(context))
        v = Violations()
        v.check(request.page_size >= 0, "page_size", "must be >= 0")
        after = page_after(v, request.page_token, [request.channel_id], uuid_key=True)
        v.raise_if_any()
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        async with self.runtime.reads.connect() as connection:
            rows = await store.list_ingest_exceptions(
                connection, request.channel_id, after, size + 1
            )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_page_token(
                [request.channel_id], rows[-1].received_at, str(rows[-1].exception_id)
            )
        return master_data_pb2.ListIngestExceptionsResponse(
            exceptions=[
                master_data_pb2.IngestException(
                    exception_id=str(row.exception_id),
                    request_id=row.request_id,
                    channel_id=row.channel_id,
                    format=row.format,
                    channel_order_id=row.channel_order_id,
                    payload=row.payload,
                    payload_sha256=row.payload_sha256,
                    issues=[pb.ValidationIssue(**issue) for issue in row.issues],
                    received_at=ts(row.received_at),
                )
                for row in rows
            ],
            next_page_token=token,
        )
