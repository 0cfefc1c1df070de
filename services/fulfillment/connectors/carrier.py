"""Carrier connector: shipping labels and tracking (docs/sandboxes.md, Carrier).

Labels are idempotent by ``shipment_reference``: a retry after a failure or a timeout gets
``200`` with the same labels, so label creation is retried like any idempotent call (the
carrier's occasional 503 included). Tracking events appear over time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from services.fulfillment.connectors.http import (
    ResilientClient,
    objects,
    optional_text,
    text,
    timestamp,
)

LABELS: Final = "/api/v1/labels"
TRACKING: Final = "/api/v1/tracking"


@dataclass(frozen=True)
class LabelCarton:
    carton_id: str
    weight_grams: int

    def to_json(self) -> dict[str, Any]:
        return {"carton_id": self.carton_id, "weight_grams": self.weight_grams}


@dataclass(frozen=True)
class LabelRequest:
    shipment_reference: str  # the idempotency key
    carrier_code: str
    service_code: str
    ship_to: Mapping[str, Any]
    cartons: tuple[LabelCarton, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "shipment_reference": self.shipment_reference,
            "carrier_code": self.carrier_code,
            "service_code": self.service_code,
            "ship_to": dict(self.ship_to),
            "cartons": [carton.to_json() for carton in self.cartons],
        }


@dataclass(frozen=True)
class Label:
    carton_id: str
    tracking_number: str
    label_url: str | None


@dataclass(frozen=True)
class LabelBatch:
    shipment_reference: str
    labels: tuple[Label, ...]
    #: True for new labels (201); False when the carrier already had them (200).
    created: bool = field(default=False, compare=False)

    @property
    def tracking_numbers(self) -> tuple[str, ...]:
        return tuple(label.tracking_number for label in self.labels)


@dataclass(frozen=True)
class TrackingEvent:
    code: str  # PICKED_UP | IN_TRANSIT | DELIVERED | ...
    occurred_at: datetime | None


@dataclass(frozen=True)
class Tracking:
    tracking_number: str
    events: tuple[TrackingEvent, ...]

    @property
    def latest(self) -> TrackingEvent | None:
        return self.events[-1] if self.events else None

    @property
    def delivered(self) -> bool:
        return any(event.code == "DELIVERED" for event in self.events)


def _label(data: Mapping[str, Any]) -> Label:
    carton_id = data["carton_id"]
    return Label(
        carton_id=str(carton_id) if isinstance(carton_id, int) else text(data, "carton_id"),
        tracking_number=text(data, "tracking_number"),
        label_url=optional_text(data, "label_url"),
    )


def _tracking(data: Mapping[str, Any], tracking_number: str) -> Tracking:
    events = tuple(
        TrackingEvent(code=text(event, "code"), occurred_at=timestamp(event, "occurred_at"))
        for event in objects(data, "events")
    )
    ordered = tuple(
        sorted(events, key=lambda e: e.occurred_at.timestamp() if e.occurred_at else 0.0)
    )
    return Tracking(
        tracking_number=optional_text(data, "tracking_number") or tracking_number,
        events=ordered,
    )


class CarrierClient:
    """Typed calls to the carrier over a :class:`ResilientClient` (system "CARRIER")."""

    def __init__(self, http: ResilientClient) -> None:
        if http.system != "CARRIER":
            raise ValueError(
                f"a carrier client needs the carrier's HTTP client, not {http.system}'s"
            )
        self.http = http

    async def aclose(self) -> None:
        await self.http.aclose()

    async def create_labels(self, request: LabelRequest) -> LabelBatch:
        return await self.http.call(
            "POST",
            LABELS,
            lambda status, body: LabelBatch(
                shipment_reference=request.shipment_reference,
                labels=tuple(_label(label) for label in objects(body, "labels")),
                created=status == 201,
            ),
            json=request.to_json(),
        )

    async def tracking(self, tracking_number: str) -> Tracking:
        """Tracking events so far, oldest first."""
        return await self.http.call(
            "GET",
            f"{TRACKING}/{quote(tracking_number, safe='')}",
            lambda _, body: _tracking(body, tracking_number),
        )
