"""Carrier sandbox: shipping labels and tracking (docs/sandboxes.md, "Carrier").

Labels are idempotent by ``shipment_reference``; creating one fails (503, nothing created) at
``label_failure_rate``. Tracking events appear over time: PICKED_UP, IN_TRANSIT and DELIVERED
one, two and three ``tracking_step_ms`` after the label was created, computed when asked (no
background work).

    python -m stack.sandboxes.carrier --port 8093 --token T  # DWF_CARRIER_TRACKING_STEP_MS=500
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stack.sandboxes.common import (
    ApiError,
    FaultInjector,
    Faults,
    admin_routes,
    api,
    apply_settings,
    chance,
    invalid,
    make_app,
    parse_non_negative,
    parse_rate,
    read_object,
    rfc3339,
    run_cli,
    setting,
    setting_names,
    tracking_number,
)

TRACKING_STEPS = ("PICKED_UP", "IN_TRANSIT", "DELIVERED")

#: A stand-in for the label document behind every ``label_url``.
LABEL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


@dataclass
class CarrierFaults(Faults):
    label_failure_rate: float = setting(0.0, parse_rate)
    tracking_step_ms: float = setting(2000.0, parse_non_negative)


class Carrier:
    def __init__(self, faults: FaultInjector[CarrierFaults]) -> None:
        self.faults = faults
        self.labels: dict[str, dict[str, Any]] = {}  # shipment reference → the 201 answer
        self.created: dict[str, float] = {}  # tracking number → when its clock started

    async def reset(self) -> None:
        self.labels.clear()
        self.created.clear()

    async def create_labels(self, request: Request) -> Response:
        body = await read_object(request)
        reference = body.text("shipment_reference")
        carrier_code = body.text("carrier_code")
        body.text("service_code")
        body.mapping("ship_to")
        cartons = body.objects("cartons")
        seen: set[str] = set()
        for carton in cartons:
            carton_id = carton.text("carton_id")
            if carton_id in seen:
                raise invalid(carton.where("carton_id"), f"carton {carton_id!r} appears twice")
            seen.add(carton_id)
            carton.quantity("weight_grams")
        existing = self.labels.get(reference)
        if existing is not None:
            return JSONResponse(existing, 200)
        if chance(self.faults.rng, self.faults.settings.label_failure_rate):
            raise ApiError(503, "LABEL_SERVICE_UNAVAILABLE", "label creation failed, try again")
        labels = []
        for carton in cartons:
            number = tracking_number(carrier_code)
            self.created[number] = time.time()
            labels.append(
                {
                    "carton_id": carton.text("carton_id"),
                    "tracking_number": number,
                    "label_url": f"{request.base_url}labels/{number}.pdf",
                }
            )
        answer = {"shipment_reference": reference, "labels": labels}
        self.labels[reference] = answer
        return JSONResponse(answer, 201)

    async def tracking(self, request: Request) -> Response:
        """Events so far. A number this carrier did not issue (e.g. one a 3PL bought itself)
        starts its clock when first asked about, so every shipment eventually delivers."""
        number = request.path_params["tracking_number"]
        started = self.created.setdefault(number, time.time())
        step = self.faults.settings.tracking_step_ms / 1000
        now = time.time()
        events = []
        for index, code in enumerate(TRACKING_STEPS, start=1):
            moment = started + index * step
            if moment > now:
                break
            events.append(
                {"code": code, "occurred_at": rfc3339(datetime.fromtimestamp(moment, UTC))}
            )
        return JSONResponse({"tracking_number": number, "events": events})

    async def label_document(self, request: Request) -> Response:
        if request.path_params["tracking_number"] not in self.created:
            raise ApiError(404, "LABEL_NOT_FOUND", "no such label")
        return Response(LABEL_PDF, media_type="application/pdf")

    async def list_labels(self, request: Request) -> Response:
        return JSONResponse({"items": list(self.labels.values())})


def create_app(token: str, **faults: object) -> Starlette:
    """The carrier sandbox; ``faults`` are :class:`CarrierFaults` fields."""
    injector = FaultInjector(apply_settings(CarrierFaults(), faults))
    carrier = Carrier(injector)
    routes: list[BaseRoute] = [
        api("/api/v1/labels", carrier.create_labels, ["POST"], token, injector),
        api("/api/v1/tracking/{tracking_number}", carrier.tracking, ["GET"], token, injector),
        Route("/labels/{tracking_number}.pdf", carrier.label_document, methods=["GET"]),
        *admin_routes(injector, carrier.reset),
        Route("/_admin/labels", carrier.list_labels, methods=["GET"]),
    ]
    app = make_app(routes)
    app.state.carrier = carrier
    app.state.faults = injector
    return app


def main(argv: list[str] | None = None) -> None:
    run_cli(
        "carrier",
        "dwf carrier sandbox (labels, tracking)",
        create_app,
        setting_names(CarrierFaults),
        argv,
    )


if __name__ == "__main__":
    main()
