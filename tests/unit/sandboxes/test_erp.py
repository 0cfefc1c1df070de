"""The ERP sandbox against docs/sandboxes.md ("ERP" and "Common rules")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from stack.sandboxes import Sandbox, erp
from stack.sandboxes.common import env_settings, running, setting_names

TOKEN = "erp-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def erp_client(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = erp.create_app(TOKEN, **settings)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with (
        running(app),
        httpx.AsyncClient(transport=transport, base_url="http://erp", headers=AUTH) as client,
    ):
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with erp_client() as client:
        yield client


def order(reference: str = "ord-1", customer: str = "C-100", **extra: Any) -> dict[str, Any]:
    return {
        "external_reference": reference,
        "customer_id": customer,
        "currency": "USD",
        "ship_to": {"name": "ACME", "country": "US"},
        "lines": [
            {"line_id": "1", "sku": "BOLT", "quantity": 5, "unit_price": "1.20"},
            {"line_id": "2", "sku": "NUT", "quantity": 2, "unit_price": "0.35"},
        ],
        **extra,
    }


async def book(client: httpx.AsyncClient, reference: str = "ord-1", **extra: Any) -> str:
    response = await client.post("/api/v1/sales-orders", json=order(reference, **extra))
    assert response.status_code == 201, response.text
    return str(response.json()["sales_order_number"])


async def test_sales_orders_are_booked_and_found(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/sales-orders", json=order())
    assert created.status_code == 201
    body = created.json()
    assert body["sales_order_number"].startswith("SO-")
    assert body["status"] == "OPEN"
    assert [line["sku"] for line in body["lines"]] == ["BOLT", "NUT"]
    number = body["sales_order_number"]

    found = await client.get("/api/v1/sales-orders", params={"external_reference": "ord-1"})
    assert [o["sales_order_number"] for o in found.json()["items"]] == [number]
    missing = await client.get("/api/v1/sales-orders", params={"external_reference": "nope"})
    assert missing.json() == {"items": []}
    fetched = await client.get(f"/api/v1/sales-orders/{number}")
    assert fetched.json()["external_reference"] == "ord-1"
    unknown = await client.get("/api/v1/sales-orders/SO-999999")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "SALES_ORDER_NOT_FOUND"


async def test_numbers_increment(client: httpx.AsyncClient) -> None:
    numbers = [await book(client, f"ord-{i}") for i in range(3)]
    values = [int(n.removeprefix("SO-")) for n in numbers]
    assert values == [values[0], values[0] + 1, values[0] + 2]
    assert all(len(n) == len("SO-000001") for n in numbers)


async def test_one_sales_order_per_external_reference(client: httpx.AsyncClient) -> None:
    number = await book(client)
    again = await client.post("/api/v1/sales-orders", json=order())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "DUPLICATE_EXTERNAL_REFERENCE"
    assert again.json()["sales_order_number"] == number
    stored = (await client.get("/_admin/sales-orders")).json()["items"]
    assert [o["external_reference"] for o in stored] == ["ord-1"]


async def test_master_data_refusals_and_credit_hold(client: httpx.AsyncClient) -> None:
    await client.post(
        "/_admin/master-data",
        json={
            "unknown_items": ["NUT"],
            "unknown_customers": ["C-X"],
            "credit_hold_customers": ["C-7"],
        },
    )
    item = await client.post("/api/v1/sales-orders", json=order("a"))
    assert item.status_code == 422
    assert item.json()["error"] | {"message": ""} == {
        "code": "UNKNOWN_ITEM",
        "field": "lines[1].sku",
        "message": "",
    }
    customer = await client.post("/api/v1/sales-orders", json=order("b", customer="C-X"))
    assert customer.status_code == 422
    assert customer.json()["error"]["code"] == "UNKNOWN_CUSTOMER"
    assert customer.json()["error"]["field"] == "customer_id"
    assert (await client.get("/_admin/sales-orders")).json()["items"] == []

    await client.post("/_admin/master-data", json={"unknown_items": []})
    held = await client.post("/api/v1/sales-orders", json=order("c", customer="C-7"))
    assert held.json()["status"] == "CREDIT_HOLD"
    number = held.json()["sales_order_number"]
    blocked = await client.post(
        f"/api/v1/sales-orders/{number}/shipments",
        json={"external_reference": "s", "lines": [{"line_id": "1", "quantity": 1}]},
    )
    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "CREDIT_HOLD"
    released = await client.post("/_admin/release-credit-hold", json={"sales_order_number": number})
    assert released.json()["status"] == "OPEN"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lines": []}, "lines"),
        ({"customer_id": ""}, "customer_id"),
        (
            {"lines": [{"line_id": "1", "sku": "B", "quantity": 0, "unit_price": "1"}]},
            "lines[0].quantity",
        ),
        (
            {"lines": [{"line_id": "1", "sku": "B", "quantity": 1, "unit_price": "x"}]},
            "lines[0].unit_price",
        ),
        (
            {"lines": [{"line_id": "1", "sku": "B", "quantity": 1, "unit_price": "1"}] * 2},
            "lines[1].line_id",
        ),
    ],
)
async def test_invalid_requests_name_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/sales-orders", json=order() | change)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert response.json()["error"]["field"] == field


async def test_malformed_json_and_auth(client: httpx.AsyncClient) -> None:
    bad = await client.post("/api/v1/sales-orders", content=b"{nope")
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "INVALID_REQUEST"
    anonymous = await client.get("/api/v1/sales-orders/SO-1", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = await client.get("/api/v1/sales-orders/SO-1", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    health = await client.get("/_admin/health", headers={"Authorization": ""})
    assert health.json() == {"ok": True}


async def test_cancel_until_shipped(client: httpx.AsyncClient) -> None:
    first = await book(client, "a")
    canceled = await client.post(f"/api/v1/sales-orders/{first}/cancel", json={"reason": "dup"})
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "CANCELED"
    shipped = await book(client, "b")
    posted = await client.post(
        f"/api/v1/sales-orders/{shipped}/shipments",
        json={"external_reference": "shp-1", "lines": [{"line_id": "1", "quantity": 1}]},
    )
    assert posted.status_code == 201
    refused = await client.post(f"/api/v1/sales-orders/{shipped}/cancel", json={})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "ALREADY_SHIPPED"


async def test_shipments_invoices_and_credit_memos_are_idempotent(
    client: httpx.AsyncClient,
) -> None:
    number = await book(client)
    path = f"/api/v1/sales-orders/{number}"
    shipment = {
        "external_reference": "shp-1",
        "lines": [{"line_id": "1", "sku": "BOLT", "quantity": 5}, {"line_id": "2", "quantity": 2}],
        "carrier_code": "UPS",
        "tracking_numbers": ["1Z1"],
    }
    first = await client.post(f"{path}/shipments", json=shipment)
    assert first.status_code == 201
    assert first.json()["shipment_reference"].startswith("IF-")
    repeat = await client.post(f"{path}/shipments", json=shipment)
    assert (repeat.status_code, repeat.json()) == (200, first.json())
    more = await client.post(
        f"{path}/shipments",
        json={"external_reference": "shp-2", "lines": [{"line_id": "1", "quantity": 1}]},
    )
    assert more.status_code == 422
    assert more.json()["error"]["code"] == "QUANTITY_EXCEEDS_OPEN"

    invoice = {"external_reference": "shp-1", "lines": shipment["lines"]}
    billed = await client.post(f"{path}/invoices", json=invoice)
    assert billed.status_code == 201
    assert billed.json()["invoice_number"].startswith("INV-")
    assert (billed.json()["amount"], billed.json()["currency"]) == ("6.70", "USD")
    again = await client.post(f"{path}/invoices", json=invoice)
    assert (again.status_code, again.json()) == (200, billed.json())
    assert (await client.get(path)).json()["status"] == "CLOSED"

    memo = {
        "external_reference": "rma-1/rcpt-1",
        "sales_order_number": number,
        "lines": [{"line_id": "1", "sku": "BOLT", "quantity": 2}],
    }
    credited = await client.post("/api/v1/credit-memos", json=memo)
    assert credited.status_code == 201
    assert credited.json()["credit_memo_number"].startswith("CM-")
    assert credited.json()["amount"] == "2.40"
    assert (await client.post("/api/v1/credit-memos", json=memo)).status_code == 200
    too_much = await client.post(
        "/api/v1/credit-memos",
        json=memo
        | {"external_reference": "rma-1/rcpt-2", "lines": [{"line_id": "1", "quantity": 4}]},
    )
    assert too_much.json()["error"]["code"] == "QUANTITY_EXCEEDS_INVOICED"


async def test_invoices_need_shipments(client: httpx.AsyncClient) -> None:
    number = await book(client)
    response = await client.post(
        f"/api/v1/sales-orders/{number}/invoices",
        json={"external_reference": "s", "lines": [{"line_id": "1", "quantity": 1}]},
    )
    assert response.status_code == 422
    assert response.json()["error"] | {"message": ""} == {
        "code": "QUANTITY_EXCEEDS_SHIPPED",
        "field": "lines[0].quantity",
        "message": "",
    }


async def test_429_and_5xx_have_no_effect(client: httpx.AsyncClient) -> None:
    await client.post("/_admin/faults", json={"rate_429": 1, "retry_after_seconds": 3})
    limited = await client.post("/api/v1/sales-orders", json=order())
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json()["error"]["code"] == "RATE_LIMITED"
    await client.post("/_admin/faults", json={"rate_429": 0, "rate_5xx": 1})
    failed = await client.post("/api/v1/sales-orders", json=order())
    assert failed.status_code in (500, 503)
    assert (await client.get("/_admin/sales-orders")).json()["items"] == []
    await client.post("/_admin/faults", json={"rate_5xx": 0})
    assert (await client.post("/api/v1/sales-orders", json=order())).status_code == 201


async def test_timeout_after_commit_commits_then_hangs(client: httpx.AsyncClient) -> None:
    await client.post("/_admin/faults", json={"rate_timeout_after_commit": 1, "hang_seconds": 30})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.post("/api/v1/sales-orders", json=order()), 0.1)
    await client.post("/_admin/faults", json={"hang_seconds": 0.01})
    late = await client.get("/api/v1/sales-orders", params={"external_reference": "ord-1"})
    assert late.status_code == 200  # answered after the (short) hang
    assert len(late.json()["items"]) == 1  # the timed-out request had taken effect


async def test_latency(client: httpx.AsyncClient) -> None:
    await client.post("/_admin/faults", json={"latency_ms": [30, 30]})
    started = time.monotonic()
    await client.get("/api/v1/sales-orders", params={"external_reference": "x"})
    assert time.monotonic() - started >= 0.03


async def test_seeded_faults_are_reproducible() -> None:
    async def statuses(seed: int) -> list[int]:
        async with erp_client(seed=seed, rate_429=0.3, rate_5xx=0.3) as client:
            return [
                (
                    await client.get("/api/v1/sales-orders", params={"external_reference": "x"})
                ).status_code
                for _ in range(30)
            ]

    first = await statuses(7)
    assert first == await statuses(7)
    assert {200, 429} <= set(first)
    assert first != await statuses(8)


async def test_admin_faults_and_reset(client: httpx.AsyncClient) -> None:
    changed = await client.post("/_admin/faults", json={"latency_ms": 5, "seed": 1})
    assert changed.json()["latency_ms"] == [5, 5]
    assert (await client.get("/_admin/faults")).json()["seed"] == 1
    bad = await client.post("/_admin/faults", json={"rate_429": 2})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "rate_429"
    unknown = await client.post("/_admin/faults", json={"rate_teapot": 1})
    assert unknown.json()["error"]["field"] == "rate_teapot"
    await book(client)
    assert (await client.post("/_admin/reset")).json() == {"ok": True}
    assert (await client.get("/_admin/faults")).json()["latency_ms"] == [0, 0]
    assert (await client.get("/_admin/sales-orders")).json()["items"] == []
    assert (await client.post("/api/v1/sales-orders", json=order())).status_code == 201


def test_settings_from_the_environment() -> None:
    names = [*setting_names(erp.ErpFaults), *setting_names(erp.MasterData)]
    environ = {
        "DWF_ERP_RATE_429": "0.3",
        "DWF_ERP_LATENCY_MS": "10,200",
        "DWF_ERP_CREDIT_HOLD_CUSTOMERS": "C-1,C-2",
        "DWF_ERP_URL": "http://not-a-setting",
    }
    found = env_settings("DWF_ERP_", names, environ)
    assert found == {
        "rate_429": 0.3,
        "latency_ms": "10,200",
        "credit_hold_customers": "C-1,C-2",
    }
    app = erp.create_app(TOKEN, **found)  # type: ignore[arg-type]
    assert app.state.faults.settings.latency_ms == (10, 200)
    assert app.state.erp.master.credit_hold_customers == ("C-1", "C-2")
    with pytest.raises(ValueError, match="rate_5xx"):
        erp.create_app(TOKEN, rate_5xx="often")


async def test_runner_serves_on_a_real_port() -> None:
    """The in-process runner: a real socket, a client timeout on a committed request, and a
    stop that does not wait out the hang (the client's disconnect ends it)."""
    app = erp.create_app(TOKEN, rate_timeout_after_commit=1, hang_seconds=30)
    async with Sandbox(app) as sandbox:
        assert sandbox.url == f"http://127.0.0.1:{sandbox.port}" and sandbox.port > 0
        async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH, timeout=0.3) as client:
            assert (await client.get("/_admin/health")).json() == {"ok": True}
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/api/v1/sales-orders", json=order())
        async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as client:
            await client.post("/_admin/faults", json={"rate_timeout_after_commit": 0})
            found = await client.get("/api/v1/sales-orders", params={"external_reference": "ord-1"})
            assert len(found.json()["items"]) == 1
        started = time.monotonic()
    assert time.monotonic() - started < 1.5
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"{sandbox.url}/_admin/health")
