"""The carrier sandbox against docs/sandboxes.md ("Carrier")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from stack.sandboxes import carrier
from stack.sandboxes.common import running
from tests.integration.harness import eventually

TOKEN = "carrier-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def carrier_client(**faults: object) -> AsyncIterator[httpx.AsyncClient]:
    app = carrier.create_app(TOKEN, **faults)
    transport = httpx.ASGITransport(app=app)
    async with (
        running(app),
        httpx.AsyncClient(transport=transport, base_url="http://carrier", headers=AUTH) as client,
    ):
        yield client


def label_request(reference: str = "shp-1", cartons: int = 2) -> dict[str, Any]:
    return {
        "shipment_reference": reference,
        "carrier_code": "UPS",
        "service_code": "UPS_GROUND",
        "ship_to": {"name": "ACME", "country": "US"},
        "cartons": [{"carton_id": f"CT-{i}", "weight_grams": 1200} for i in range(cartons)],
    }


async def test_labels_are_idempotent_by_shipment_reference() -> None:
    async with carrier_client() as client:
        created = await client.post("/api/v1/labels", json=label_request())
        assert created.status_code == 201
        labels = created.json()["labels"]
        assert [label["carton_id"] for label in labels] == ["CT-0", "CT-1"]
        numbers = [label["tracking_number"] for label in labels]
        assert len(set(numbers)) == 2 and all(n.startswith("1Z") for n in numbers)
        again = await client.post("/api/v1/labels", json=label_request())
        assert (again.status_code, again.json()) == (200, created.json())
        assert len((await client.get("/_admin/labels")).json()["items"]) == 1
        document = await client.get(labels[0]["label_url"])
        assert document.status_code == 200
        assert document.headers["content-type"] == "application/pdf"


async def test_label_failures_have_no_effect() -> None:
    async with carrier_client(label_failure_rate=1) as client:
        failed = await client.post("/api/v1/labels", json=label_request())
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "LABEL_SERVICE_UNAVAILABLE"
        assert (await client.get("/_admin/labels")).json()["items"] == []
        await client.post("/_admin/faults", json={"label_failure_rate": 0})
        assert (await client.post("/api/v1/labels", json=label_request())).status_code == 201


async def test_tracking_events_appear_over_time() -> None:
    async with carrier_client(tracking_step_ms=15) as client:
        labels = (await client.post("/api/v1/labels", json=label_request())).json()["labels"]
        number = labels[0]["tracking_number"]
        first = (await client.get(f"/api/v1/tracking/{number}")).json()
        assert first == {"tracking_number": number, "events": []}

        async def delivered() -> list[dict[str, Any]] | None:
            events = (await client.get(f"/api/v1/tracking/{number}")).json()["events"]
            codes = [e["code"] for e in events]
            assert codes == ["PICKED_UP", "IN_TRANSIT", "DELIVERED"][: len(codes)]
            return list(events) if "DELIVERED" in codes else None

        events = await eventually(delivered, 3, "the parcel to be delivered")
        moments = [e["occurred_at"] for e in events]
        assert moments == sorted(moments) and all(m.endswith("Z") for m in moments)


async def test_unknown_tracking_numbers_start_their_clock_when_asked() -> None:
    async with carrier_client(tracking_step_ms=0) as client:
        response = await client.get("/api/v1/tracking/1Z999")
        assert response.status_code == 200
        assert [e["code"] for e in response.json()["events"]] == [
            "PICKED_UP",
            "IN_TRANSIT",
            "DELIVERED",
        ]


async def test_validation_auth_and_common_faults() -> None:
    async with carrier_client() as client:
        no_cartons = await client.post("/api/v1/labels", json=label_request(cartons=0))
        assert no_cartons.json()["error"]["field"] == "cartons"
        light = label_request() | {"cartons": [{"carton_id": "A", "weight_grams": 0}]}
        weightless = await client.post("/api/v1/labels", json=light)
        assert weightless.status_code == 422
        assert weightless.json()["error"]["field"] == "cartons[0].weight_grams"
        anonymous = await client.get("/api/v1/tracking/1Z1", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        await client.post("/_admin/faults", json={"rate_5xx": 1})
        assert (await client.get("/api/v1/tracking/1Z1")).status_code in (500, 503)
        await client.post("/_admin/reset")
        assert (await client.get("/_admin/faults")).json()["rate_5xx"] == 0
        assert (await client.get("/api/v1/tracking/1Z1")).status_code == 200
