"""WMS / 3PL connector: releases, cancellations, returns, the event feed and inventory
snapshots (docs/sandboxes.md, WMS).

Releases are idempotent by ``release_id`` (dwf's fulfillment order id): a retry after a
timeout gets ``200`` and the same ``wms_release_id``. What happens next arrives through the
event feed (:meth:`WmsClient.events_after`), which may repeat events (same ``event_id``:
consumers dedupe) and deliver them out of order. Events come back typed; an unknown type, or
a known one whose payload cannot be read, comes back as :class:`UnknownWmsEvent` so that one
odd event never blocks the feed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from services.fulfillment.connectors.http import (
    DECODE_ERRORS,
    BusinessRuleError,
    ConnectorError,
    DataQualityError,
    ResilientClient,
    classify_code,
    integer,
    optional_text,
    text,
    timestamp,
)

RELEASES: Final = "/api/v1/releases"
RETURNS: Final = "/api/v1/returns"
EVENTS: Final = "/api/v1/events"
INVENTORY_SNAPSHOT: Final = "/api/v1/inventory-snapshot"


# --------------------------------------------------------------------------------------------
# What we send
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WmsLine:
    line_id: str
    sku: str
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {"line_id": self.line_id, "sku": self.sku, "quantity": self.quantity}


@dataclass(frozen=True)
class ReleaseRequest:
    release_id: str  # dwf's fulfillment order id: the idempotency key
    order_id: str
    warehouse_id: str
    ship_to: Mapping[str, Any]
    carrier_code: str
    service_code: str
    lines: tuple[WmsLine, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "order_id": self.order_id,
            "warehouse_id": self.warehouse_id,
            "ship_to": dict(self.ship_to),
            "carrier_code": self.carrier_code,
            "service_code": self.service_code,
            "lines": [line.to_json() for line in self.lines],
        }


@dataclass(frozen=True)
class CancelLine:
    line_id: str
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {"line_id": self.line_id, "quantity": self.quantity}


@dataclass(frozen=True)
class ReturnRequest:
    rma_number: str
    order_id: str
    warehouse_id: str
    lines: tuple[WmsLine, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "rma_number": self.rma_number,
            "order_id": self.order_id,
            "warehouse_id": self.warehouse_id,
            "lines": [line.to_json() for line in self.lines],
        }


# --------------------------------------------------------------------------------------------
# What the WMS answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WmsRelease:
    release_id: str
    wms_release_id: str
    #: True for a new release (202); False when the WMS already had it (200).
    created: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class SnapshotLine:
    sku: str
    on_hand: int


@dataclass(frozen=True)
class InventorySnapshot:
    snapshot_id: str
    warehouse_id: str
    taken_at: datetime | None
    lines: tuple[SnapshotLine, ...]


@dataclass(frozen=True)
class EventLine:
    line_id: str
    sku: str | None = None
    quantity: int = 0


@dataclass(frozen=True)
class ReturnLine:
    line_id: str
    sku: str | None
    quantity: int
    disposition: str  # RESTOCK | SCRAP


@dataclass(frozen=True)
class Carton:
    carton_id: str
    tracking_number: str | None
    weight_grams: int | None
    lines: tuple[EventLine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class WmsEvent:
    """Fields every feed event has; ``raw`` is the event as received."""

    event_id: str
    type: str
    release_id: str | None
    occurred_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class ReleaseAcknowledged(WmsEvent):
    wms_release_id: str | None


@dataclass(frozen=True, kw_only=True)
class ReleaseRejected(WmsEvent):
    reason: str  # INVENTORY_DISCREPANCY | UNKNOWN_ITEM | ...
    lines: tuple[EventLine, ...] = ()

    def error(self) -> ConnectorError:
        """The rejection as an exception the workflow records: DATA_QUALITY for data reasons
        (UNKNOWN_ITEM...), BUSINESS_RULE otherwise (INVENTORY_DISCREPANCY: re-source)."""
        data_quality = classify_code(self.reason) == "DATA_QUALITY"
        cls: type[ConnectorError] = DataQualityError if data_quality else BusinessRuleError
        return cls(
            f"release {self.release_id} rejected: {self.reason}",
            system="WMS",
            code=self.reason,
            request_payload={"release_id": self.release_id},
            operation=f"POST {RELEASES}",
        )


@dataclass(frozen=True, kw_only=True)
class Picked(WmsEvent):
    lines: tuple[EventLine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Packed(WmsEvent):
    lines: tuple[EventLine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Shipped(WmsEvent):
    wms_shipment_id: str
    carrier_code: str | None
    service_code: str | None
    shipped_at: datetime | None
    lines: tuple[EventLine, ...] = ()
    cartons: tuple[Carton, ...] = ()

    @property
    def tracking_numbers(self) -> tuple[str, ...]:
        return tuple(c.tracking_number for c in self.cartons if c.tracking_number)


@dataclass(frozen=True, kw_only=True)
class ShortPicked(WmsEvent):
    lines: tuple[EventLine, ...] = ()  # the missing quantities


@dataclass(frozen=True, kw_only=True)
class CancelAccepted(WmsEvent):
    lines: tuple[EventLine, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class CancelRefused(WmsEvent):
    lines: tuple[EventLine, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReturnReceived(WmsEvent):
    rma_number: str
    receipt_id: str
    lines: tuple[ReturnLine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class UnknownWmsEvent(WmsEvent):
    """An event of a type we do not know, or whose payload we could not read (``error``)."""

    error: str | None = None


# --------------------------------------------------------------------------------------------
# Parsing the feed
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Common:
    event_id: str
    type: str
    release_id: str | None
    occurred_at: datetime | None
    raw: Mapping[str, Any]


def _ident(data: Mapping[str, Any], key: str) -> str:
    """An identifier: a non-empty string (numbers tolerated)."""
    value = data[key]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(data, key)


def _optional_ident(data: Mapping[str, Any], key: str) -> str | None:
    return _ident(data, key) if data.get(key) not in (None, "") else None


def _list(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{key!r} is not a list of objects")
    return value


def _lines(data: Mapping[str, Any], key: str = "lines") -> tuple[EventLine, ...]:
    return tuple(
        EventLine(
            line_id=_ident(line, "line_id"),
            sku=optional_text(line, "sku"),
            quantity=integer(line, "quantity") if "quantity" in line else 0,
        )
        for line in _list(data, key)
    )


def _acknowledged(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return ReleaseAcknowledged(**vars(c), wms_release_id=_optional_ident(d, "wms_release_id"))


def _rejected(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return ReleaseRejected(**vars(c), reason=optional_text(d, "reason") or "", lines=_lines(d))


def _picked(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return Picked(**vars(c), lines=_lines(d))


def _packed(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return Packed(**vars(c), lines=_lines(d))


def _shipped(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return Shipped(
        **vars(c),
        wms_shipment_id=_ident(d, "wms_shipment_id"),
        carrier_code=optional_text(d, "carrier_code"),
        service_code=optional_text(d, "service_code"),
        shipped_at=timestamp(d, "shipped_at") or c.occurred_at,
        lines=_lines(d),
        cartons=tuple(
            Carton(
                carton_id=_ident(carton, "carton_id"),
                tracking_number=optional_text(carton, "tracking_number"),
                weight_grams=(
                    integer(carton, "weight_grams")
                    if carton.get("weight_grams") is not None
                    else None
                ),
                lines=_lines(carton),
            )
            for carton in _list(d, "cartons")
        ),
    )


def _short_picked(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return ShortPicked(**vars(c), lines=_lines(d))


def _cancel_accepted(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return CancelAccepted(**vars(c), lines=_lines(d), reason=optional_text(d, "reason"))


def _cancel_refused(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return CancelRefused(**vars(c), lines=_lines(d), reason=optional_text(d, "reason"))


def _return_received(d: Mapping[str, Any], c: _Common) -> WmsEvent:
    return ReturnReceived(
        **vars(c),
        rma_number=_ident(d, "rma_number"),
        receipt_id=_ident(d, "receipt_id"),
        lines=tuple(
            ReturnLine(
                line_id=_ident(line, "line_id"),
                sku=optional_text(line, "sku"),
                quantity=integer(line, "quantity"),
                disposition=text(line, "disposition"),
            )
            for line in _list(d, "lines")
        ),
    )


_PARSERS: Final[dict[str, Callable[[Mapping[str, Any], _Common], WmsEvent]]] = {
    "RELEASE_ACKNOWLEDGED": _acknowledged,
    "RELEASE_REJECTED": _rejected,
    "PICKED": _picked,
    "PACKED": _packed,
    "SHIPPED": _shipped,
    "SHORT_PICKED": _short_picked,
    "CANCEL_ACCEPTED": _cancel_accepted,
    "CANCEL_REFUSED": _cancel_refused,
    "RETURN_RECEIVED": _return_received,
}

#: The event types this connector reads into their own classes.
KNOWN_EVENT_TYPES: Final = frozenset(_PARSERS)


def parse_event(data: object) -> WmsEvent:
    """One feed event, typed; never raises (see :class:`UnknownWmsEvent`)."""
    if not isinstance(data, dict):
        return UnknownWmsEvent(
            event_id="",
            type="",
            release_id=None,
            occurred_at=None,
            raw={"value": data},
            error="the event is not a JSON object",
        )
    raw_type = data.get("type")
    event_type = raw_type if isinstance(raw_type, str) else ""
    event_id = data.get("event_id")
    release_id = data.get("release_id")
    try:
        occurred_at = timestamp(data, "occurred_at")
    except DECODE_ERRORS:
        occurred_at = None
    common = _Common(
        event_id=str(event_id) if event_id not in (None, "") else "",
        type=event_type,
        release_id=str(release_id) if release_id not in (None, "") else None,
        occurred_at=occurred_at,
        raw=data,
    )
    parser = _PARSERS.get(event_type)
    if parser is None:
        return UnknownWmsEvent(**vars(common))
    if not common.event_id:
        return UnknownWmsEvent(**vars(common), error="the event has no event_id")
    try:
        return parser(data, common)
    except DECODE_ERRORS as exc:
        return UnknownWmsEvent(**vars(common), error=f"unreadable {event_type} event: {exc!r}")


def _feed(body: Mapping[str, Any], cursor: str | None) -> tuple[list[WmsEvent], str | None]:
    events = body.get("events")
    if events is None:
        events = []
    if not isinstance(events, list):
        raise ValueError("'events' is not a list")
    next_cursor = body.get("next_cursor")
    if isinstance(next_cursor, int) and not isinstance(next_cursor, bool):
        next_cursor = str(next_cursor)
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise ValueError("'next_cursor' is not a string")
    return [parse_event(event) for event in events], next_cursor or cursor


def _snapshot(body: Mapping[str, Any]) -> InventorySnapshot:
    return InventorySnapshot(
        snapshot_id=_ident(body, "snapshot_id"),
        warehouse_id=_ident(body, "warehouse_id"),
        taken_at=timestamp(body, "taken_at"),
        lines=tuple(
            SnapshotLine(sku=text(line, "sku"), on_hand=integer(line, "on_hand"))
            for line in _list(body, "lines")
        ),
    )


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class WmsClient:
    """Typed calls to the WMS/3PL over a :class:`ResilientClient` (system "WMS")."""

    def __init__(self, http: ResilientClient) -> None:
        if http.system != "WMS":
            raise ValueError(f"a WMS client needs the WMS's HTTP client, not {http.system}'s")
        self.http = http

    async def aclose(self) -> None:
        await self.http.aclose()

    async def release(self, fulfillment_order: ReleaseRequest) -> WmsRelease:
        """Release a fulfillment order (idempotent by ``release_id``). The outcome
        (acknowledged or rejected) comes through the feed."""
        return await self.http.call(
            "POST",
            RELEASES,
            lambda status, body: WmsRelease(
                release_id=optional_text(body, "release_id") or fulfillment_order.release_id,
                wms_release_id=_ident(body, "wms_release_id"),
                created=status == 202,
            ),
            json=fulfillment_order.to_json(),
        )

    async def cancel_release(self, release_id: str, lines: tuple[CancelLine, ...] = ()) -> None:
        """Ask to cancel (no lines: all of it); CANCEL_ACCEPTED / CANCEL_REFUSED follow in
        the feed."""
        await self.http.request(
            "POST",
            f"{RELEASES}/{quote(release_id, safe='')}/cancel",
            json={"lines": [line.to_json() for line in lines]},
        )

    async def create_return(self, request: ReturnRequest) -> None:
        """Announce a return (RMA); RETURN_RECEIVED follows in the feed."""
        await self.http.request("POST", RETURNS, json=request.to_json())

    async def events_after(
        self, cursor: str | None, limit: int = 100
    ) -> tuple[list[WmsEvent], str | None]:
        """The next events after ``cursor`` (None: from the start) and the cursor to pass
        next time (the same one when the WMS names none)."""
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["after"] = cursor
        return await self.http.call(
            "GET", EVENTS, lambda _, body: _feed(body, cursor), params=params
        )

    async def inventory_snapshot(self, warehouse_id: str) -> InventorySnapshot:
        return await self.http.call(
            "GET",
            INVENTORY_SNAPSHOT,
            lambda _, body: _snapshot(body),
            params={"warehouse_id": warehouse_id},
        )
