"""Fulfillment's connectors against a simulated remote side (httpx.MockTransport).

Backoff sleeps go to a recorder and the breaker reads a fake clock, so nothing here waits
for real except the rate-limiter tests (a fraction of a second).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from services.fulfillment.connectors import (
    BreakerPolicy,
    BusinessRuleError,
    CarrierClient,
    CircuitOpenError,
    ConnectorError,
    ConnectorSettings,
    DataQualityError,
    DependencyError,
    ErpClient,
    InvoiceRequest,
    LabelCarton,
    LabelRequest,
    QuantityLine,
    ReleaseRejected,
    ReleaseRequest,
    ResilientClient,
    RetryableError,
    RetryPolicy,
    SalesOrderLine,
    SalesOrderRequest,
    ShipmentPosting,
    Shipped,
    System,
    SystemConfig,
    UnknownWmsEvent,
    WmsClient,
    WmsLine,
)
from services.fulfillment.connectors.http import parse_retry_after
from services.fulfillment.connectors.wms import ReleaseAcknowledged, ReturnReceived

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepRecorder:
    """The backoff sleep: records the delay and moves the fake clock, never waits."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


class Remote:
    """The simulated system: answers from a handler and records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.handler(request)

    def count(self, method: str, path: str | None = None) -> int:
        return sum(
            1 for r in self.requests if r.method == method and (path is None or r.url.path == path)
        )


def answers(*responses: httpx.Response | Exception) -> Handler:
    """A handler answering (or raising) these in turn; the last one repeats."""
    queue = list(responses)

    async def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def error(status: int, code: str, field: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": code.lower().replace("_", " ")}}
    if field:
        body["error"]["field"] = field
    body.update(extra)
    return httpx.Response(status, json=body)


class Harness:
    def __init__(
        self,
        handler: Handler,
        system: System = "ERP",
        *,
        attempts: int = 4,
        threshold: int = 3,
        reset: float = 10.0,
        rps: float | None = None,
        retry_after_max: float = 30.0,
    ) -> None:
        self.clock = FakeClock()
        self.sleep = SleepRecorder(self.clock)
        self.remote = Remote(handler)
        self.config = SystemConfig(
            system=system,
            base_url=f"http://{system.lower()}.test",
            token="secret-token",
            requests_per_second=rps,
            retry=RetryPolicy(
                attempts=attempts,
                backoff_initial_seconds=0.1,
                backoff_max_seconds=1.0,
                retry_after_max_seconds=retry_after_max,
            ),
            breaker=BreakerPolicy(failure_threshold=threshold, reset_seconds=reset),
        )
        self.http = ResilientClient(
            self.config,
            transport=httpx.MockTransport(self.remote),
            sleep=self.sleep,
            clock=self.clock,
        )


def breaker_state(h: Harness) -> str:
    return h.http.breaker.state


ORDER = SalesOrderRequest(
    external_reference="ord-1",
    customer_id="C-100",
    currency="USD",
    ship_to={"name": "Ada", "country": "US", "postal_code": "10001"},
    lines=(
        SalesOrderLine("1", "BOLT", 5, Decimal("1.20")),
        SalesOrderLine("2", "NUT", 10, Decimal("0.15")),
    ),
)


def sales_order(status: str = "OPEN", number: str = "SO-000123") -> dict[str, Any]:
    return {
        "sales_order_number": number,
        "external_reference": ORDER.external_reference,
        "customer_id": ORDER.customer_id,
        "status": status,
        "lines": [line.to_json() for line in ORDER.lines],
        "created_at": "2025-03-01T10:00:00Z",
    }


class FakeErp:
    """Just enough ERP for the booking tests: one order per external reference."""

    def __init__(self, on_create: Callable[[], None] | None = None) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.on_create = on_create or (lambda: None)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/sales-orders":
            body = json.loads(request.content)
            existing = self.orders.get(body["external_reference"])
            if existing is not None:
                return error(
                    409,
                    "DUPLICATE_EXTERNAL_REFERENCE",
                    sales_order_number=existing["sales_order_number"],
                )
            self.creates += 1
            order = {**body, "sales_order_number": f"SO-{self.creates:06d}", "status": "OPEN"}
            self.orders[body["external_reference"]] = order
            self.on_create()  # may raise: the effect happened, the answer is lost
            return httpx.Response(201, json=order)
        if request.method == "GET" and path == "/api/v1/sales-orders":
            found = self.orders.get(request.url.params["external_reference"])
            return httpx.Response(200, json={"items": [found] if found else []})
        if request.method == "GET" and path.startswith("/api/v1/sales-orders/"):
            number = path.rsplit("/", 1)[1]
            for order in self.orders.values():
                if order["sales_order_number"] == number:
                    return httpx.Response(200, json=order)
            return error(404, "NOT_FOUND")
        return error(404, "NOT_FOUND")


# --------------------------------------------------------------------------------------------
# Retries and Retry-After
# --------------------------------------------------------------------------------------------


async def test_retries_503_then_succeeds_with_capped_jittered_backoff() -> None:
    h = Harness(
        answers(
            error(503, "UNAVAILABLE"),
            error(503, "UNAVAILABLE"),
            httpx.Response(200, json={"ok": True}),
        )
    )
    response = await h.http.request("GET", "/api/v1/anything")
    assert response.json() == {"ok": True}
    assert len(h.remote.requests) == 3
    assert len(h.sleep.delays) == 2
    # Full jitter: uniform in [0, min(max, initial * 2**(n-1))].
    assert 0 <= h.sleep.delays[0] <= 0.1
    assert 0 <= h.sleep.delays[1] <= 0.2
    assert all(r.headers["Authorization"] == "Bearer secret-token" for r in h.remote.requests)
    assert breaker_state(h) == "CLOSED"


async def test_429_retry_after_seconds_is_honoured() -> None:
    h = Harness(
        answers(
            httpx.Response(429, headers={"Retry-After": "7"}, json={}),
            httpx.Response(200, json={"ok": True}),
        )
    )
    await h.http.request("GET", "/api/v1/anything")
    assert len(h.remote.requests) == 2
    assert h.sleep.delays[0] >= 7


async def test_429_retry_after_http_date_is_honoured() -> None:
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=12), usegmt=True)
    h = Harness(
        answers(
            httpx.Response(429, headers={"Retry-After": later}, json={}),
            httpx.Response(200, json={}),
        )
    )
    h.http._now = lambda: now
    await h.http.request("GET", "/api/v1/anything")
    assert h.sleep.delays[0] >= 12


async def test_retry_after_beyond_the_cap_ends_the_call_with_it() -> None:
    h = Harness(answers(httpx.Response(429, headers={"Retry-After": "3600"}, json={})))
    with pytest.raises(RetryableError) as caught:
        await h.http.request("GET", "/api/v1/anything")
    assert caught.value.retry_after == 3600
    assert caught.value.code == "RATE_LIMITED"
    assert caught.value.status == 429
    assert len(h.remote.requests) == 1
    assert h.sleep.delays == []


async def test_exhausted_retries_are_retryable_with_attempts_and_payload() -> None:
    h = Harness(answers(error(503, "MAINTENANCE")), threshold=10)
    with pytest.raises(RetryableError) as caught:
        await h.http.request("POST", "/api/v1/things", json={"a": 1})
    err = caught.value
    assert (err.category, err.system, err.code, err.status) == (
        "RETRYABLE",
        "ERP",
        "MAINTENANCE",
        503,
    )
    assert err.attempts == 4
    assert err.request_payload == {"a": 1}
    assert err.maybe_applied  # a 5xx after a POST may have had an effect
    assert len(h.remote.requests) == 4
    assert len(h.sleep.delays) == 3


async def test_read_timeouts_exhausted_are_retryable() -> None:
    h = Harness(answers(httpx.ReadTimeout("slow")), attempts=2, threshold=10)
    with pytest.raises(RetryableError) as caught:
        await h.http.request("GET", "/api/v1/anything")
    assert caught.value.code == "TIMEOUT"
    assert caught.value.attempts == 2
    assert not caught.value.maybe_applied  # a GET changes nothing


async def test_connection_refused_is_dependency() -> None:
    h = Harness(answers(httpx.ConnectError("refused")), attempts=3, threshold=10)
    with pytest.raises(DependencyError) as caught:
        await h.http.request("GET", "/api/v1/anything")
    assert caught.value.category == "DEPENDENCY"
    assert caught.value.code == "UNREACHABLE"
    assert len(h.remote.requests) == 3  # retried, then given up as a dependency failure


async def test_422_is_not_retried_and_names_code_and_field() -> None:
    h = Harness(answers(error(422, "UNKNOWN_ITEM", "lines[1].sku")))
    erp = ErpClient(h.http)
    with pytest.raises(DataQualityError) as caught:
        await erp.book_sales_order(ORDER)
    err = caught.value
    assert (err.category, err.code, err.field, err.status) == (
        "DATA_QUALITY",
        "UNKNOWN_ITEM",
        "lines[1].sku",
        422,
    )
    assert err.attempts == 1
    assert err.request_payload == ORDER.to_json()
    assert len(h.remote.requests) == 1
    assert h.sleep.delays == []
    assert err.to_record()["code"] == "UNKNOWN_ITEM"


@pytest.mark.parametrize(
    ("response", "category", "code"),
    [
        (error(422, "UNKNOWN_CUSTOMER", "customer_id"), "DATA_QUALITY", "UNKNOWN_CUSTOMER"),
        (error(422, "INVALID_REQUEST"), "DATA_QUALITY", "INVALID_REQUEST"),
        (error(400, "SOMETHING"), "DATA_QUALITY", "SOMETHING"),
        (error(409, "ALREADY_SHIPPED"), "BUSINESS_RULE", "ALREADY_SHIPPED"),
        (error(422, "CREDIT_HOLD"), "BUSINESS_RULE", "CREDIT_HOLD"),
        (httpx.Response(401, text="no"), "DEPENDENCY", "HTTP_401"),
    ],
)
async def test_other_4xx_are_classified_and_never_retried(
    response: httpx.Response, category: str, code: str
) -> None:
    h = Harness(answers(response))
    with pytest.raises(ConnectorError) as caught:
        await h.http.request("POST", "/api/v1/things", json={})
    assert (caught.value.category, caught.value.code) == (category, code)
    assert len(h.remote.requests) == 1


async def test_unreadable_answer_is_a_dependency_failure() -> None:
    h = Harness(answers(httpx.Response(200, text="<html>gateway</html>")))
    erp = ErpClient(h.http)
    with pytest.raises(DependencyError) as caught:
        await erp.get_sales_order("SO-1")
    assert caught.value.code == "BAD_RESPONSE"


# --------------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------------


async def test_breaker_opens_fails_fast_then_half_opens_and_closes() -> None:
    healthy = False

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={}) if healthy else error(503, "DOWN")

    h = Harness(handler, attempts=1, threshold=3, reset=10.0)
    for _ in range(3):
        with pytest.raises(RetryableError):
            await h.http.request("GET", "/api/v1/x")
    assert breaker_state(h) == "OPEN"

    with pytest.raises(CircuitOpenError) as caught:
        await h.http.request("GET", "/api/v1/x")
    assert caught.value.category == "DEPENDENCY"
    assert caught.value.code == "CIRCUIT_OPEN"
    assert caught.value.retry_after == pytest.approx(10.0)
    assert len(h.remote.requests) == 3  # failed fast: no request

    h.clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        await h.http.request("GET", "/api/v1/x")
    assert len(h.remote.requests) == 3

    h.clock.advance(0.1)
    assert breaker_state(h) == "HALF_OPEN"
    healthy = True
    await h.http.request("GET", "/api/v1/x")
    assert breaker_state(h) == "CLOSED"
    assert len(h.remote.requests) == 4


async def test_half_open_lets_one_probe_through_and_a_failed_probe_reopens() -> None:
    gate = asyncio.Event()
    arrived = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/probe":
            arrived.set()
            await gate.wait()
        return error(503, "DOWN")

    h = Harness(handler, attempts=1, threshold=1, reset=5.0)
    with pytest.raises(RetryableError):
        await h.http.request("GET", "/first")
    h.clock.advance(5.0)
    probe = asyncio.create_task(h.http.request("GET", "/probe"))
    await asyncio.wait_for(arrived.wait(), 5)  # the probe is at the remote side now
    with pytest.raises(CircuitOpenError):  # the probe is in flight: others still fail fast
        await h.http.request("GET", "/other")
    gate.set()
    with pytest.raises(RetryableError):
        await probe
    assert breaker_state(h) == "OPEN"
    assert h.remote.count("GET", "/other") == 0


async def test_breaker_opening_mid_call_stops_the_retries() -> None:
    h = Harness(answers(error(503, "DOWN")), attempts=5, threshold=2)
    with pytest.raises(CircuitOpenError) as caught:
        await h.http.request("GET", "/api/v1/x")
    assert len(h.remote.requests) == 2
    assert caught.value.attempts == 3


async def test_4xx_and_429_do_not_open_the_breaker() -> None:
    h = Harness(
        answers(error(503, "DOWN"), error(503, "DOWN"), error(422, "INVALID_REQUEST")),
        attempts=1,
        threshold=3,
    )
    for _ in range(2):
        with pytest.raises(RetryableError):
            await h.http.request("GET", "/x")
    with pytest.raises(DataQualityError):
        await h.http.request("GET", "/x")
    assert breaker_state(h) == "CLOSED"
    assert h.http.breaker.consecutive_failures == 0


# --------------------------------------------------------------------------------------------
# Rate limiter (real time, kept short)
# --------------------------------------------------------------------------------------------


async def test_rate_limiter_spaces_concurrent_requests() -> None:
    h = Harness(answers(httpx.Response(200, json={})), rps=20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(h.http.request("GET", "/x") for _ in range(5)))
    elapsed = loop.time() - started
    assert len(h.remote.requests) == 5
    assert elapsed >= (5 - 1) / 20 * 0.95


async def test_rate_limiter_applies_to_retries_too() -> None:
    h = Harness(
        answers(error(503, "DOWN"), error(503, "DOWN"), httpx.Response(200, json={})),
        rps=20,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await h.http.request("GET", "/x")  # the backoff sleeps are recorded, not waited
    assert loop.time() - started >= (3 - 1) / 20 * 0.95


# --------------------------------------------------------------------------------------------
# ERP
# --------------------------------------------------------------------------------------------


async def test_erp_timeout_after_commit_looks_up_instead_of_resubmitting() -> None:
    def lose_the_answer() -> None:
        raise httpx.ReadTimeout("the ERP committed, then hung")

    erp_side = FakeErp(on_create=lose_the_answer)
    h = Harness(erp_side)
    order = await ErpClient(h.http).book_sales_order(ORDER)
    assert order.sales_order_number == "SO-000001"
    assert order.external_reference == "ord-1"
    assert not order.created
    assert erp_side.creates == 1
    assert h.remote.count("POST", "/api/v1/sales-orders") == 1
    lookup = h.remote.requests[1]
    assert (lookup.method, lookup.url.params["external_reference"]) == ("GET", "ord-1")


async def test_erp_5xx_after_commit_looks_up_too() -> None:
    erp_side = FakeErp()
    first = True

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal first
        response = await erp_side(request)
        if request.method == "POST" and first:
            first = False
            return error(500, "INTERNAL")  # the work was done all the same
        return response

    h = Harness(handler)
    order = await ErpClient(h.http).book_sales_order(ORDER)
    assert order.sales_order_number == "SO-000001"
    assert erp_side.creates == 1
    assert [r.method for r in h.remote.requests] == ["POST", "GET"]


async def test_erp_lookup_finding_nothing_submits_again() -> None:
    erp_side = FakeErp()
    lost = [httpx.ReadTimeout("lost before the ERP saw it")]

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and lost:
            raise lost.pop()
        return await erp_side(request)

    h = Harness(handler)
    order = await ErpClient(h.http).book_sales_order(ORDER)
    assert order.created
    assert erp_side.creates == 1
    assert [r.method for r in h.remote.requests] == ["POST", "GET", "POST"]


async def test_erp_refused_connection_resubmits_without_lookup() -> None:
    erp_side = FakeErp()
    replies = iter([httpx.ConnectError("reset before sending")])

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            failure = next(replies, None)
            if failure is not None:
                raise failure
        return await erp_side(request)

    h = Harness(handler, threshold=10)
    order = await ErpClient(h.http).book_sales_order(ORDER)
    assert order.created
    assert erp_side.creates == 1
    # Refused before sending: nothing can have happened, so no look-up was needed.
    assert [r.method for r in h.remote.requests] == ["POST", "POST"]


async def test_erp_duplicate_reference_returns_the_existing_order() -> None:
    erp_side = FakeErp()
    erp_side.orders["ord-1"] = sales_order(number="SO-000777")
    h = Harness(erp_side)
    order = await ErpClient(h.http).book_sales_order(ORDER)
    assert order.sales_order_number == "SO-000777"
    assert not order.created
    assert h.remote.count("POST") == 1
    assert erp_side.creates == 0


async def test_erp_credit_hold_is_returned_and_can_be_raised() -> None:
    h = Harness(answers(httpx.Response(201, json=sales_order("CREDIT_HOLD"))))
    order = await ErpClient(h.http).book_sales_order(ORDER)
    assert order.on_credit_hold
    assert order.created
    assert order.lines[0].unit_price == Decimal("1.20")
    assert order.created_at == datetime(2025, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(BusinessRuleError) as caught:
        order.raise_for_credit_hold(ORDER.to_json())
    assert (caught.value.category, caught.value.code) == ("BUSINESS_RULE", "CREDIT_HOLD")
    assert caught.value.request_payload == ORDER.to_json()


async def test_erp_cancel_after_shipment_is_a_business_rule() -> None:
    h = Harness(answers(error(409, "ALREADY_SHIPPED")))
    with pytest.raises(BusinessRuleError) as caught:
        await ErpClient(h.http).cancel_sales_order("SO-000123", "customer asked")
    assert caught.value.code == "ALREADY_SHIPPED"
    assert caught.value.status == 409
    assert len(h.remote.requests) == 1


async def test_erp_shipment_invoice_and_lookups() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/shipments"):
            return httpx.Response(200, json={"shipment_reference": "IF-000045"})
        if path.endswith("/invoices"):
            body = json.loads(request.content)
            assert body["external_reference"] == "shp-1"
            return httpx.Response(
                201, json={"invoice_number": "INV-000045", "amount": "12.00", "currency": "USD"}
            )
        if path == "/api/v1/sales-orders":
            return httpx.Response(200, json={"items": []})
        return error(404, "NOT_FOUND")

    erp = ErpClient(Harness(handler).http)
    lines = (QuantityLine("1", "BOLT", 5),)
    shipment = await erp.post_shipment(
        "SO-000123", ShipmentPosting("shp-1", lines, "UPS", ("1Z1",))
    )
    assert (shipment.shipment_reference, shipment.created) == ("IF-000045", False)
    invoice = await erp.create_invoice("SO-000123", InvoiceRequest("shp-1", lines))
    assert (invoice.invoice_number, invoice.amount, invoice.created) == (
        "INV-000045",
        Decimal("12.00"),
        True,
    )
    assert await erp.find_by_external_reference("nope") is None
    assert await erp.get_sales_order("SO-404") is None


# --------------------------------------------------------------------------------------------
# WMS
# --------------------------------------------------------------------------------------------

FEED = {
    "events": [
        {
            "event_id": "e1",
            "type": "RELEASE_ACKNOWLEDGED",
            "release_id": "fo-1",
            "occurred_at": "2025-03-01T10:00:00Z",
            "wms_release_id": "WR-000031",
        },
        {
            "event_id": "e2",
            "type": "SHIPPED",
            "release_id": "fo-1",
            "occurred_at": "2025-03-01T11:00:00+00:00",
            "wms_shipment_id": "WS-1",
            "carrier_code": "UPS",
            "service_code": "UPS_GROUND",
            "shipped_at": "2025-03-01T11:00:00Z",
            "lines": [{"line_id": "1", "sku": "BOLT", "quantity": 3}],
            "cartons": [
                {
                    "carton_id": "CT-1",
                    "tracking_number": "1Z999",
                    "weight_grams": 1200,
                    "lines": [{"line_id": "1", "sku": "BOLT", "quantity": 3}],
                }
            ],
        },
        {"event_id": "e3", "type": "TELEPORTED", "release_id": "fo-1", "to": "Mars"},
        {"event_id": "e4", "type": "SHIPPED", "release_id": "fo-2"},  # no shipment id
        {
            "event_id": "e5",
            "type": "RETURN_RECEIVED",
            "release_id": None,
            "occurred_at": "2025-03-02T09:00:00Z",
            "rma_number": "RMA-1",
            "receipt_id": "RC-1",
            "lines": [{"line_id": "1", "sku": "BOLT", "quantity": 1, "disposition": "RESTOCK"}],
        },
        {
            "event_id": "e6",
            "type": "RELEASE_REJECTED",
            "release_id": "fo-3",
            "reason": "INVENTORY_DISCREPANCY",
            "lines": [{"line_id": "2", "sku": "NUT", "quantity": 10}],
        },
    ],
    "next_cursor": "c-6",
}


async def test_wms_feed_is_typed_and_tolerates_unknown_events() -> None:
    h = Harness(answers(httpx.Response(200, json=FEED)), system="WMS")
    events, cursor = await WmsClient(h.http).events_after("c-0", limit=50)
    assert cursor == "c-6"
    assert h.remote.requests[0].url.params["after"] == "c-0"
    assert h.remote.requests[0].url.params["limit"] == "50"
    ack, shipped, unknown, unreadable, returned, rejected = events

    assert isinstance(ack, ReleaseAcknowledged)
    assert (ack.type, ack.wms_release_id) == ("RELEASE_ACKNOWLEDGED", "WR-000031")

    assert isinstance(shipped, Shipped)
    assert shipped.wms_shipment_id == "WS-1"
    assert shipped.tracking_numbers == ("1Z999",)
    assert shipped.cartons[0].weight_grams == 1200
    assert shipped.lines[0].quantity == 3
    assert shipped.occurred_at == datetime(2025, 3, 1, 11, tzinfo=UTC)

    assert isinstance(unknown, UnknownWmsEvent)
    assert (unknown.type, unknown.event_id, unknown.error) == ("TELEPORTED", "e3", None)
    assert unknown.raw["to"] == "Mars"

    assert isinstance(unreadable, UnknownWmsEvent)
    assert unreadable.type == "SHIPPED"
    assert unreadable.error is not None

    assert isinstance(returned, ReturnReceived)
    assert returned.lines[0].disposition == "RESTOCK"
    assert returned.release_id is None

    assert isinstance(rejected, ReleaseRejected)
    assert rejected.error().category == "BUSINESS_RULE"
    assert rejected.error().code == "INVENTORY_DISCREPANCY"


async def test_wms_first_poll_and_missing_cursor() -> None:
    h = Harness(answers(httpx.Response(200, json={"events": []})), system="WMS")
    events, cursor = await WmsClient(h.http).events_after(None)
    assert (events, cursor) == ([], None)
    assert "after" not in h.remote.requests[0].url.params


async def test_wms_release_is_idempotent_and_reports_whether_new() -> None:
    h = Harness(
        answers(
            httpx.Response(202, json={"release_id": "fo-1", "wms_release_id": "WR-1"}),
            httpx.Response(200, json={"release_id": "fo-1", "wms_release_id": "WR-1"}),
        ),
        system="WMS",
    )
    wms = WmsClient(h.http)
    request = ReleaseRequest(
        "fo-1", "ord-1", "W1", {"country": "US"}, "UPS", "UPS_GROUND", (WmsLine("1", "BOLT", 5),)
    )
    first = await wms.release(request)
    again = await wms.release(request)
    assert (first.wms_release_id, first.created) == ("WR-1", True)
    assert (again.wms_release_id, again.created) == ("WR-1", False)
    assert json.loads(h.remote.requests[0].content)["lines"][0]["sku"] == "BOLT"


def test_release_rejected_for_data_reasons_is_data_quality() -> None:
    event = ReleaseRejected(
        event_id="e",
        type="RELEASE_REJECTED",
        release_id="fo",
        occurred_at=None,
        reason="UNKNOWN_ITEM",
    )
    assert event.error().category == "DATA_QUALITY"


async def test_wms_inventory_snapshot() -> None:
    body = {
        "snapshot_id": "S-1",
        "warehouse_id": "W1",
        "taken_at": "2025-03-01T02:00:00Z",
        "lines": [{"sku": "BOLT", "on_hand": 40}],
    }
    h = Harness(answers(httpx.Response(200, json=body)), system="WMS")
    snapshot = await WmsClient(h.http).inventory_snapshot("W1")
    assert snapshot.lines[0].on_hand == 40
    assert h.remote.requests[0].url.params["warehouse_id"] == "W1"


# --------------------------------------------------------------------------------------------
# Carrier
# --------------------------------------------------------------------------------------------


async def test_carrier_labels_503_then_success() -> None:
    labels = {
        "labels": [
            {"carton_id": "CT-1", "tracking_number": "1Z1", "label_url": "http://l/1"},
            {"carton_id": "CT-2", "tracking_number": "1Z2", "label_url": "http://l/2"},
        ]
    }
    h = Harness(
        answers(error(503, "LABEL_FAILURE"), httpx.Response(201, json=labels)), system="CARRIER"
    )
    request = LabelRequest(
        "shp-1", "UPS", "UPS_GROUND", {"country": "US"}, (LabelCarton("CT-1", 1200),)
    )
    batch = await CarrierClient(h.http).create_labels(request)
    assert batch.tracking_numbers == ("1Z1", "1Z2")
    assert batch.created
    assert len(h.remote.requests) == 2
    assert len(h.sleep.delays) == 1


async def test_carrier_tracking() -> None:
    body = {
        "tracking_number": "1Z1",
        "events": [
            {"code": "IN_TRANSIT", "occurred_at": "2025-03-02T10:00:00Z"},
            {"code": "PICKED_UP", "occurred_at": "2025-03-01T10:00:00Z"},
        ],
    }
    h = Harness(answers(httpx.Response(200, json=body)), system="CARRIER")
    tracking = await CarrierClient(h.http).tracking("1Z1")
    assert [e.code for e in tracking.events] == ["PICKED_UP", "IN_TRANSIT"]
    assert not tracking.delivered
    assert h.remote.requests[0].url.path == "/api/v1/tracking/1Z1"


# --------------------------------------------------------------------------------------------
# Settings and helpers
# --------------------------------------------------------------------------------------------


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWF_FULFILLMENT_ERP_URL", "http://erp.internal:9000")
    monkeypatch.setenv("DWF_FULFILLMENT_ERP_TOKEN", "tok-erp")
    monkeypatch.setenv("DWF_FULFILLMENT_ERP_REQUESTS_PER_SECOND", "2.5")
    monkeypatch.setenv("DWF_FULFILLMENT_RETRY_ATTEMPTS", "6")
    settings = ConnectorSettings()
    erp = settings.erp_config()
    assert (erp.system, erp.base_url, erp.token) == ("ERP", "http://erp.internal:9000", "tok-erp")
    assert erp.requests_per_second == 2.5
    assert erp.retry.attempts == 6
    assert "tok-erp" not in repr(erp)
    assert "tok-erp" not in repr(settings)
    assert settings.carrier_config().system == "CARRIER"


def test_parse_retry_after() -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_errors_map_to_domain_errors() -> None:
    from grpc import StatusCode

    kwargs: dict[str, Any] = {"system": "ERP", "code": "X"}
    assert RetryableError("m", retry_after=3, **kwargs).to_domain_error().code == (
        StatusCode.RESOURCE_EXHAUSTED
    )
    assert DependencyError("m", **kwargs).to_domain_error().code == StatusCode.UNAVAILABLE
    assert DataQualityError("m", field="lines[0].sku", **kwargs).to_domain_error().code == (
        StatusCode.INVALID_ARGUMENT
    )
    assert BusinessRuleError("m", **kwargs).to_domain_error().code == (
        StatusCode.FAILED_PRECONDITION
    )
