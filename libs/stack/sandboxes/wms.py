"""WMS / 3PL sandbox: releases accepted at once, handled asynchronously, reported in a feed.

Each release gets a simulation (an asyncio task, started when the release arrives, cancelled
on reset and on shutdown) that appends to the event feed: an acknowledgement after
``ack_delay_ms`` (or a rejection, or nothing at all), then, with ``auto_ship``, PICKED →
PACKED → SHIPPED ``step_delay_ms`` apart, with partial shipments, short picks, repeated and
swapped events at the configured rates. Cancellations and returns are answered in the feed
too. See docs/sandboxes.md, "WMS / 3PL".

    python -m stack.sandboxes.wms --port 8092 --token T     # env: DWF_WMS_ACK_DELAY_MS=200 ...
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stack.sandboxes.common import (
    ApiError,
    Body,
    FaultInjector,
    Faults,
    Numbers,
    admin_routes,
    api,
    apply_settings,
    chance,
    invalid,
    make_app,
    make_rng,
    not_found,
    parse_bool,
    parse_non_negative,
    parse_rate,
    parse_texts,
    read_object,
    rfc3339,
    run_cli,
    setting,
    setting_names,
    tracking_number,
    unique_line_ids,
)

log = logging.getLogger("dwf.sandboxes.wms")

#: What a warehouse holds of a SKU it has not been told about (``/_admin/inventory``).
DEFAULT_ON_HAND = 1000
DEFAULT_PAGE = 100
MAX_PAGE = 500

Event = dict[str, Any]
Quantities = dict[str, int]  # line id → quantity


@dataclass
class WmsSettings(Faults):
    """The common fault fields (business API) and the warehouse's behaviour."""

    ack_delay_ms: float = setting(50.0, parse_non_negative)
    step_delay_ms: float = setting(50.0, parse_non_negative)
    reject_rate: float = setting(0.0, parse_rate)
    # Every release to these warehouses is rejected (e.g. a site that lost its stock).
    reject_warehouses: tuple[str, ...] = setting((), parse_texts)
    never_ack_rate: float = setting(0.0, parse_rate)
    auto_ship: bool = setting(True, parse_bool)
    partial_shipment_rate: float = setting(0.0, parse_rate)
    short_pick_rate: float = setting(0.0, parse_rate)
    # Every release to these warehouses comes up short on one line.
    short_pick_warehouses: tuple[str, ...] = setting((), parse_texts)
    duplicate_rate: float = setting(0.0, parse_rate)
    out_of_order_rate: float = setting(0.0, parse_rate)
    cancel_refuse_rate: float = setting(0.0, parse_rate)
    return_delay_ms: float = setting(100.0, parse_non_negative)


class Feed:
    """The append-only event feed. Cursors are integers (sent as strings) that only grow:
    across ``/_admin/reset`` and, starting from the clock in microseconds, across restarts of
    the sandbox, so a consumer's stored cursor never skips new events."""

    def __init__(self) -> None:
        self.head = time.time_ns() // 1000  # the cursor of the latest event ever appended
        self.entries: list[tuple[int, Event]] = []

    def append(self, event: Event) -> None:
        self.head += 1
        self.entries.append((self.head, event))

    def page(self, after: int | None, limit: int) -> tuple[list[Event], int]:
        """Events after ``after`` (exclusive), and the cursor to ask with next."""
        start = 0
        if after is not None:
            start = bisect.bisect_right(self.entries, after, key=lambda entry: entry[0])
        chosen = self.entries[start : start + limit]
        if chosen:
            return [event for _, event in chosen], chosen[-1][0]
        return [], self.head if after is None else after

    def clear(self) -> None:
        self.entries.clear()


@dataclass
class Stream:
    """The events of one release (or return) on their way into the feed: its own seeded RNG,
    an event held back to be swapped with the next one, and events to be repeated later."""

    rng: random.Random
    held: Event | None = None
    echoes: list[Event] = field(default_factory=list)


@dataclass
class ReleaseLine:
    line_id: str
    sku: str
    quantity: int
    shipped: int = 0
    canceled: int = 0
    short: int = 0

    @property
    def open(self) -> int:
        return self.quantity - self.shipped - self.canceled - self.short

    def to_json(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "shipped": self.shipped,
            "canceled": self.canceled,
            "short_picked": self.short,
            "open": self.open,
        }


@dataclass
class Release:
    release_id: str
    wms_release_id: str
    order_id: str
    warehouse_id: str
    carrier_code: str | None
    service_code: str | None
    ship_to: dict[str, Any]
    lines: list[ReleaseLine]
    stream: Stream
    created_at: str = field(default_factory=rfc3339)
    stage: str = "RECEIVED"  # ACKNOWLEDGED, REJECTED, PICKED, PACKED

    def line(self, line_id: str) -> ReleaseLine | None:
        return next((line for line in self.lines if line.line_id == line_id), None)

    def open_quantities(self) -> Quantities:
        return {line.line_id: line.open for line in self.lines if line.open > 0}

    def still_open(self, quantities: Quantities) -> Quantities:
        """``quantities`` limited to what is still open (a cancel may have come meanwhile)."""
        limited = {}
        for line_id, quantity in quantities.items():
            line = self.line(line_id)
            if line is not None and min(quantity, line.open) > 0:
                limited[line_id] = min(quantity, line.open)
        return limited

    def event_lines(self, quantities: Quantities) -> list[dict[str, Any]]:
        lines = []
        for line_id, quantity in quantities.items():
            line = self.line(line_id)
            assert line is not None
            lines.append({"line_id": line_id, "sku": line.sku, "quantity": quantity})
        return lines

    @property
    def status(self) -> str:
        shipped = sum(line.shipped for line in self.lines)
        if self.stage == "REJECTED":
            return "REJECTED"
        if not self.open_quantities():
            if shipped:
                return "SHIPPED"
            return "CANCELED" if any(line.canceled for line in self.lines) else "CLOSED"
        return "PARTIALLY_SHIPPED" if shipped else self.stage

    def to_json(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "wms_release_id": self.wms_release_id,
            "order_id": self.order_id,
            "warehouse_id": self.warehouse_id,
            "carrier_code": self.carrier_code,
            "service_code": self.service_code,
            "status": self.status,
            "created_at": self.created_at,
            "lines": [line.to_json() for line in self.lines],
        }


@dataclass
class Return:
    rma_number: str
    order_id: str
    warehouse_id: str
    lines: list[dict[str, Any]]
    stream: Stream


def unit_weight_grams(sku: str) -> int:
    """A stable, plausible weight per unit of a SKU."""
    return 100 + zlib.crc32(sku.encode()) % 1900


class Wms:
    def __init__(self, faults: FaultInjector[WmsSettings]) -> None:
        self.faults = faults
        self.numbers = Numbers()
        self.feed = Feed()
        self.releases: dict[str, Release] = {}
        self.returns: dict[str, Return] = {}
        self.on_hand: dict[str, dict[str, int]] = {}  # warehouse → sku → units
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def settings(self) -> WmsSettings:
        return self.faults.settings

    # --- background work ---------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("WMS simulation failed", exc_info=task.exception())

    async def aclose(self) -> None:
        """Stop every simulation (on reset and at shutdown)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        await self.aclose()
        self.releases.clear()
        self.returns.clear()
        self.on_hand.clear()
        self.feed.clear()

    async def _pause(self, milliseconds: float) -> None:
        await asyncio.sleep(milliseconds / 1000)

    # --- the feed ----------------------------------------------------------------------------

    def _stream(self, key: str) -> Stream:
        return Stream(make_rng(self.settings.seed, key))

    @staticmethod
    def _event(kind: str, release_id: str | None, **payload: Any) -> Event:
        return {
            "event_id": str(uuid.uuid4()),
            "type": kind,
            "release_id": release_id,
            "occurred_at": rfc3339(),
            **payload,
        }

    def _emit(self, stream: Stream, event: Event, *, final: bool) -> None:
        """Append ``event``, maybe held back to follow the stream's next event (out of order;
        never the ``final`` one), maybe to be repeated after the next one (duplicate)."""
        echoes, stream.echoes = stream.echoes, []
        if (
            not final
            and stream.held is None
            and chance(stream.rng, self.settings.out_of_order_rate)
        ):
            stream.held = event
        else:
            self.feed.append(event)
            self._release_held(stream)
        for echo in echoes:
            self.feed.append(echo)
        if chance(stream.rng, self.settings.duplicate_rate):
            stream.echoes.append(event)
        if final:
            self._flush(stream)

    def _release_held(self, stream: Stream) -> None:
        if stream.held is not None:
            self.feed.append(stream.held)
            stream.held = None

    def _flush(self, stream: Stream) -> None:
        self._release_held(stream)
        for echo in stream.echoes:
            self.feed.append(echo)
        stream.echoes = []

    # --- releases ----------------------------------------------------------------------------

    async def create_release(self, request: Request) -> Response:
        body = await read_object(request)
        release_id = body.text("release_id")
        order_id = body.text("order_id")
        warehouse_id = body.text("warehouse_id")
        carrier_code = body.optional_text("carrier_code")
        service_code = body.optional_text("service_code")
        ship_to = body.mapping("ship_to")
        line_bodies = body.objects("lines")
        unique_line_ids(line_bodies)
        lines = [ReleaseLine(b.text("line_id"), b.text("sku"), b.quantity()) for b in line_bodies]
        existing = self.releases.get(release_id)
        if existing is not None:
            return JSONResponse(_release_ack(existing), 200)
        release = Release(
            release_id,
            self.numbers.next("WR"),
            order_id,
            warehouse_id,
            carrier_code,
            service_code,
            ship_to,
            lines,
            self._stream(f"release:{release_id}"),
        )
        self.releases[release_id] = release
        stock = self.on_hand.setdefault(warehouse_id, {})
        for line in lines:
            stock.setdefault(line.sku, DEFAULT_ON_HAND)
        self._spawn(self._simulate(release))
        return JSONResponse(_release_ack(release), 202)

    async def _simulate(self, release: Release) -> None:
        try:
            if await self._acknowledge(release):
                await self._fulfil(release)
        finally:
            self._flush(release.stream)

    async def _acknowledge(self, release: Release) -> bool:
        """Ack, reject or ignore the release; True if it is to be shipped now."""
        await self._pause(self.settings.ack_delay_ms)
        rng = release.stream.rng
        if not release.open_quantities() or chance(rng, self.settings.never_ack_rate):
            return False  # canceled meanwhile, or the warehouse never answers
        if release.warehouse_id in self.settings.reject_warehouses or chance(
            rng, self.settings.reject_rate
        ):
            release.stage = "REJECTED"
            line = rng.choice(release.lines)
            event = self._event(
                "RELEASE_REJECTED",
                release.release_id,
                reason=rng.choice(["INVENTORY_DISCREPANCY", "UNKNOWN_ITEM"]),
                lines=[{"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity}],
            )
            self._emit(release.stream, event, final=True)
            return False
        auto_ship = self.settings.auto_ship
        release.stage = "ACKNOWLEDGED"
        event = self._event(
            "RELEASE_ACKNOWLEDGED", release.release_id, wms_release_id=release.wms_release_id
        )
        self._emit(release.stream, event, final=not auto_ship)
        return auto_ship

    async def _fulfil(self, release: Release) -> None:
        """Pick (maybe short) → pack → ship (maybe in two parts) → report the short pick."""
        await self._pause(self.settings.step_delay_ms)
        picked, shorts = self._pick(release)
        for stage in ("PICKED", "PACKED"):
            picked = release.still_open(picked)
            if picked:
                release.stage = stage
                event = self._event(stage, release.release_id, lines=release.event_lines(picked))
                self._emit(release.stream, event, final=False)
                await self._pause(self.settings.step_delay_ms)
        parts = self._split(release, picked)
        for index, part in enumerate(parts):
            if index:
                await self._pause(self.settings.step_delay_ms)
            part = release.still_open(part)
            if part:
                self._ship(release, part, final=index == len(parts) - 1 and not shorts)
        if shorts:
            event = self._event(
                "SHORT_PICKED", release.release_id, lines=release.event_lines(shorts)
            )
            self._emit(release.stream, event, final=True)

    def _pick(self, release: Release) -> tuple[Quantities, Quantities]:
        """What is picked, and what is missing (at ``short_pick_rate`` one line comes up short;
        something is still shipped unless the release holds a single unit)."""
        picked = release.open_quantities()
        rng = release.stream.rng
        if not picked or not (
            release.warehouse_id in self.settings.short_pick_warehouses
            or chance(rng, self.settings.short_pick_rate)
        ):
            return picked, {}
        line_id = rng.choice(sorted(picked))
        missing = rng.randint(1, picked[line_id])
        if missing == sum(picked.values()) and missing > 1:
            missing -= 1
        line = release.line(line_id)
        assert line is not None
        line.short += missing
        picked[line_id] -= missing
        return {k: v for k, v in picked.items() if v > 0}, {line_id: missing}

    def _split(self, release: Release, picked: Quantities) -> list[Quantities]:
        """One shipment, or two at ``partial_shipment_rate`` (by lines, or halving one line)."""
        if sum(picked.values()) < 2 or not chance(
            release.stream.rng, self.settings.partial_shipment_rate
        ):
            return [picked] if picked else []
        ids = list(picked)
        if len(ids) > 1:
            half = len(ids) // 2
            return [{i: picked[i] for i in ids[:half]}, {i: picked[i] for i in ids[half:]}]
        quantity = picked[ids[0]]
        return [{ids[0]: quantity // 2}, {ids[0]: quantity - quantity // 2}]

    def _ship(self, release: Release, quantities: Quantities, *, final: bool) -> Event:
        stock = self.on_hand.setdefault(release.warehouse_id, {})
        cartons = []
        for line_id, quantity in quantities.items():
            line = release.line(line_id)
            assert line is not None
            line.shipped += quantity
            stock[line.sku] = max(0, stock.get(line.sku, DEFAULT_ON_HAND) - quantity)
            cartons.append(
                {
                    "carton_id": self.numbers.next("CT"),
                    "tracking_number": tracking_number(release.carrier_code),
                    "weight_grams": 150 + unit_weight_grams(line.sku) * quantity,
                    "lines": release.event_lines({line_id: quantity}),
                }
            )
        event = self._event(
            "SHIPPED",
            release.release_id,
            wms_shipment_id=self.numbers.next("WS"),
            carrier_code=release.carrier_code,
            service_code=release.service_code,
            shipped_at=rfc3339(),
            lines=release.event_lines(quantities),
            cartons=cartons,
        )
        self._emit(release.stream, event, final=final)
        return event

    # --- cancellations -----------------------------------------------------------------------

    async def cancel_release(self, request: Request) -> Response:
        release = self._release(request.path_params["release_id"])
        body = await read_object(request, allow_empty=True)
        requested = _requested_lines(release, body.objects("lines", required=False))
        self._spawn(self._cancel_later(release, requested))
        return JSONResponse({"release_id": release.release_id, "status": "CANCEL_REQUESTED"}, 202)

    async def _cancel_later(self, release: Release, requested: dict[str, int | None]) -> None:
        """Decide (after ``ack_delay_ms``, like an acknowledgement) and report a cancellation:
        refused for a rejected release, when all asked for has shipped, or at
        ``cancel_refuse_rate``; otherwise what is still open of what was asked is canceled."""
        await self._pause(self.settings.ack_delay_ms)
        asked: Quantities = {}
        cancelable: Quantities = {}
        shipped = False
        everything = dict.fromkeys(line.line_id for line in release.lines)
        for line_id, quantity in (requested or everything).items():
            line = release.line(line_id)
            assert line is not None
            asked[line_id] = line.quantity if quantity is None else quantity
            shipped = shipped or line.shipped > 0
            if min(asked[line_id], line.open) > 0:
                cancelable[line_id] = min(asked[line_id], line.open)
        if release.stage == "REJECTED":
            self._cancel_outcome(release, "CANCEL_REFUSED", asked, "RELEASE_REJECTED")
        elif not cancelable and shipped:
            self._cancel_outcome(release, "CANCEL_REFUSED", asked, "ALREADY_SHIPPED")
        elif not cancelable:
            self._cancel_outcome(release, "CANCEL_ACCEPTED", {}, "NOTHING_OPEN")
        elif chance(release.stream.rng, self.settings.cancel_refuse_rate):
            self._cancel_outcome(release, "CANCEL_REFUSED", asked, "PICK_IN_PROGRESS")
        else:
            for line_id, quantity in cancelable.items():
                line = release.line(line_id)
                assert line is not None
                line.canceled += quantity
            self._cancel_outcome(release, "CANCEL_ACCEPTED", cancelable, None)

    def _cancel_outcome(
        self, release: Release, kind: str, quantities: Quantities, reason: str | None
    ) -> None:
        event = self._event(
            kind, release.release_id, lines=release.event_lines(quantities), reason=reason
        )
        self._emit(release.stream, event, final=True)

    def _release(self, release_id: str) -> Release:
        release = self.releases.get(release_id)
        if release is None:
            raise not_found("RELEASE_NOT_FOUND", f"no release {release_id!r}")
        return release

    # --- returns -----------------------------------------------------------------------------

    async def create_return(self, request: Request) -> Response:
        body = await read_object(request)
        rma_number = body.text("rma_number")
        order_id = body.text("order_id")
        warehouse_id = body.text("warehouse_id")
        line_bodies = body.objects("lines")
        lines = [
            {"line_id": b.text("line_id"), "sku": b.text("sku"), "quantity": b.quantity()}
            for b in line_bodies
        ]
        answer = {"rma_number": rma_number, "status": "ACCEPTED"}
        if rma_number in self.returns:
            return JSONResponse(answer, 200)
        stream = self._stream(f"return:{rma_number}")
        returned = Return(rma_number, order_id, warehouse_id, lines, stream)
        self.returns[rma_number] = returned
        self._spawn(self._receive(returned))
        return JSONResponse(answer, 202)

    async def _receive(self, returned: Return) -> None:
        await self._pause(self.settings.return_delay_ms)
        stock = self.on_hand.setdefault(returned.warehouse_id, {})
        for line in returned.lines:
            stock[line["sku"]] = stock.get(line["sku"], DEFAULT_ON_HAND) + line["quantity"]
        event = self._event(
            "RETURN_RECEIVED",
            None,
            rma_number=returned.rma_number,
            order_id=returned.order_id,
            warehouse_id=returned.warehouse_id,
            receipt_id=self.numbers.next("RR"),
            lines=[{**line, "disposition": "RESTOCK"} for line in returned.lines],
        )
        self._emit(returned.stream, event, final=True)

    # --- reads -------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        after = request.query_params.get("after") or None
        if after is not None and not after.isdigit():
            raise invalid("after", "not a cursor this feed handed out")
        limit = request.query_params.get("limit") or str(DEFAULT_PAGE)
        if not limit.isdigit() or int(limit) < 1:
            raise invalid("limit", "a positive integer is required")
        events, cursor = self.feed.page(
            int(after) if after is not None else None, min(int(limit), MAX_PAGE)
        )
        return JSONResponse({"events": events, "next_cursor": str(cursor)})

    async def inventory_snapshot(self, request: Request) -> Response:
        warehouse_id = request.query_params.get("warehouse_id")
        if not warehouse_id:
            raise invalid("warehouse_id", "the query parameter is required")
        stock = self.on_hand.get(warehouse_id, {})
        return JSONResponse(
            {
                "snapshot_id": self.numbers.next("SNAP"),
                "warehouse_id": warehouse_id,
                "taken_at": rfc3339(),
                "lines": [{"sku": sku, "on_hand": stock[sku]} for sku in sorted(stock)],
            }
        )

    # --- admin -------------------------------------------------------------------------------

    async def ship_now(self, request: Request) -> Response:
        """``{"release_id", "lines": [{"line_id", "quantity"}]}`` (no lines: all that is open)."""
        body = await read_object(request)
        release = self._release(body.text("release_id"))
        if release.stage == "REJECTED":
            raise ApiError(409, "RELEASE_REJECTED", f"release {release.release_id} was rejected")
        requested = _requested_lines(release, body.objects("lines", required=False))
        quantities = release.open_quantities()
        if requested:
            quantities = {}
            for index, (line_id, quantity) in enumerate(requested.items()):
                line = release.line(line_id)
                assert line is not None
                wanted = line.open if quantity is None else quantity
                if wanted > line.open:
                    raise ApiError(
                        422,
                        "QUANTITY_EXCEEDS_OPEN",
                        f"line {line_id!r}: {wanted} requested, {line.open} open",
                        field=f"lines[{index}].quantity",
                    )
                if wanted:
                    quantities[line_id] = wanted
        if not quantities:
            raise ApiError(409, "NOTHING_OPEN", f"release {release.release_id} has nothing open")
        return JSONResponse({"event": self._ship(release, quantities, final=True)})

    async def list_releases(self, request: Request) -> Response:
        return JSONResponse({"items": [r.to_json() for r in self.releases.values()]})

    async def read_inventory(self, request: Request) -> Response:
        return JSONResponse({"on_hand": self.on_hand})

    async def write_inventory(self, request: Request) -> Response:
        """``{"warehouse_id": "W1", "on_hand": {"BOLT": 40}}`` sets those SKUs' units."""
        body = await read_object(request)
        warehouse_id = body.text("warehouse_id")
        levels = body.mapping("on_hand")
        for sku, units in levels.items():
            if isinstance(units, bool) or not isinstance(units, int) or units < 0:
                raise invalid(f"on_hand.{sku}", "a non-negative integer is required")
        self.on_hand.setdefault(warehouse_id, {}).update(levels)
        return JSONResponse({"warehouse_id": warehouse_id, "on_hand": self.on_hand[warehouse_id]})


def _release_ack(release: Release) -> dict[str, Any]:
    return {"release_id": release.release_id, "wms_release_id": release.wms_release_id}


def _requested_lines(release: Release, lines: list[Body]) -> dict[str, int | None]:
    """``[{"line_id", "quantity"?}]`` checked against the release (no quantity: all of it)."""
    unique_line_ids(lines)
    requested: dict[str, int | None] = {}
    for item in lines:
        line_id = item.text("line_id")
        if release.line(line_id) is None:
            raise ApiError(422, "UNKNOWN_LINE", f"no line {line_id!r}", field=item.where("line_id"))
        requested[line_id] = item.quantity() if item.has("quantity") else None
    return requested


def create_app(token: str, **behaviour: object) -> Starlette:
    """The WMS sandbox; ``behaviour`` are :class:`WmsSettings` fields (``ack_delay_ms=5``...)."""
    injector = FaultInjector(apply_settings(WmsSettings(), behaviour))
    wms = Wms(injector)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await wms.aclose()

    routes: list[BaseRoute] = [
        api("/api/v1/releases", wms.create_release, ["POST"], token, injector),
        api("/api/v1/releases/{release_id}/cancel", wms.cancel_release, ["POST"], token, injector),
        api("/api/v1/returns", wms.create_return, ["POST"], token, injector),
        api("/api/v1/events", wms.events, ["GET"], token, injector),
        api("/api/v1/inventory-snapshot", wms.inventory_snapshot, ["GET"], token, injector),
        *admin_routes(injector, wms.reset, settings_paths=("/_admin/faults", "/_admin/behaviour")),
        Route("/_admin/ship", wms.ship_now, methods=["POST"]),
        Route("/_admin/releases", wms.list_releases, methods=["GET"]),
        Route("/_admin/inventory", wms.read_inventory, methods=["GET"]),
        Route("/_admin/inventory", wms.write_inventory, methods=["POST"]),
    ]
    app = make_app(routes, lifespan)
    app.state.wms = wms
    app.state.faults = injector
    return app


def main(argv: list[str] | None = None) -> None:
    run_cli(
        "wms",
        "dwf WMS/3PL sandbox (releases, event feed, returns, inventory snapshots)",
        create_app,
        setting_names(WmsSettings),
        argv,
    )


if __name__ == "__main__":
    main()
