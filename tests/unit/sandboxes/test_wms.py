"""The WMS/3PL sandbox against docs/sandboxes.md ("WMS / 3PL"): the asynchronous simulation
is observed the way fulfillment sees it, by polling the event feed (with a deadline)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from stack.sandboxes import wms
from stack.sandboxes.common import running
from tests.integration.harness import eventually

TOKEN = "wms-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"ack_delay_ms": 1, "step_delay_ms": 1, "return_delay_ms": 1}
Event = dict[str, Any]


class Wms:
    """A client of one in-process WMS sandbox, with feed polling."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.cursor: str | None = None
        self.seen: list[Event] = []

    async def release(self, release_id: str = "fo-1", **extra: Any) -> httpx.Response:
        body = {
            "release_id": release_id,
            "order_id": "ord-1",
            "warehouse_id": "W1",
            "ship_to": {"name": "ACME"},
            "carrier_code": "UPS",
            "service_code": "UPS_GROUND",
            "lines": [
                {"line_id": "1", "sku": "BOLT", "quantity": 5},
                {"line_id": "2", "sku": "NUT", "quantity": 3},
            ],
        }
        return await self.client.post("/api/v1/releases", json=body | extra)

    async def events_until(
        self, done: Callable[[list[Event]], bool], timeout: float = 3.0
    ) -> list[Event]:
        """Every event read so far, once ``done`` holds for them."""

        async def read() -> tuple[list[Event]] | None:  # a tuple: an empty feed is an answer
            params = {"after": self.cursor} if self.cursor else {}
            page = (await self.client.get("/api/v1/events", params=params)).json()
            self.seen += page["events"]
            self.cursor = page["next_cursor"]
            return (list(self.seen),) if done(self.seen) else None

        (found,) = await eventually(read, timeout, "the feed to get there")
        return list(found)

    async def idle(self, timeout: float = 3.0) -> list[Event]:
        """All events, once no simulation is running any more."""

        async def settled() -> bool:
            return not self.app.state.wms.tasks

        await eventually(settled, timeout, "the simulations to finish")
        return await self.events_until(lambda _: True)

    async def releases(self) -> list[dict[str, Any]]:
        return list((await self.client.get("/_admin/releases")).json()["items"])


@contextlib.asynccontextmanager
async def sandbox(**behaviour: object) -> AsyncIterator[Wms]:
    app = wms.create_app(TOKEN, **(FAST | behaviour))
    transport = httpx.ASGITransport(app=app)
    async with (
        running(app),
        httpx.AsyncClient(transport=transport, base_url="http://wms", headers=AUTH) as client,
    ):
        yield Wms(app, client)


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def has(*kinds: str) -> Callable[[list[Event]], bool]:
    return lambda events: all(k in types(events) for k in kinds)


def shipped(events: list[Event]) -> Counter[str]:
    total: Counter[str] = Counter()
    for event in events:
        if event["type"] == "SHIPPED":
            for line in event["lines"]:
                total[line["line_id"]] += line["quantity"]
    return total


async def test_a_release_is_acknowledged_picked_packed_and_shipped() -> None:
    async with sandbox() as w:
        accepted = await w.release()
        assert accepted.status_code == 202
        wms_release_id = accepted.json()["wms_release_id"]
        assert wms_release_id.startswith("WR-")
        again = await w.release()
        assert (again.status_code, again.json()["wms_release_id"]) == (200, wms_release_id)
        assert len(await w.releases()) == 1

        events = await w.events_until(has("SHIPPED"))
        assert types(events) == ["RELEASE_ACKNOWLEDGED", "PICKED", "PACKED", "SHIPPED"]
        assert events[0]["wms_release_id"] == wms_release_id
        assert all(e["release_id"] == "fo-1" and e["occurred_at"].endswith("Z") for e in events)
        assert len({e["event_id"] for e in events}) == 4
        ship = events[-1]
        assert (ship["carrier_code"], ship["service_code"]) == ("UPS", "UPS_GROUND")
        assert shipped(events) == {"1": 5, "2": 3}
        assert ship["wms_shipment_id"].startswith("WS-")
        for carton in ship["cartons"]:
            assert carton["tracking_number"].startswith("1Z")
            assert carton["tracking_number"][2:].isdigit()
            assert carton["weight_grams"] > 0 and carton["lines"]
        assert (await w.releases())[0]["status"] == "SHIPPED"


async def test_rejected_and_never_acknowledged_releases() -> None:
    async with sandbox(reject_rate=1) as w:
        await w.release()
        events = await w.events_until(has("RELEASE_REJECTED"))
        assert events[0]["reason"] in ("INVENTORY_DISCREPANCY", "UNKNOWN_ITEM")
        assert events[0]["lines"]
        assert types(await w.idle()) == ["RELEASE_REJECTED"]
    async with sandbox(never_ack_rate=1) as w:
        await w.release()
        assert await w.idle() == []
        assert (await w.releases())[0]["status"] == "RECEIVED"


async def test_partial_shipments_split_the_quantities() -> None:
    async with sandbox(partial_shipment_rate=1) as w:
        await w.release()
        await w.release("fo-2", lines=[{"line_id": "1", "sku": "BOLT", "quantity": 5}])
        events = await w.idle()
        for release_id, quantities in (("fo-1", {"1": 5, "2": 3}), ("fo-2", {"1": 5})):
            mine = [e for e in events if e["release_id"] == release_id]
            shipments = [e for e in mine if e["type"] == "SHIPPED"]
            assert len({s["wms_shipment_id"] for s in shipments}) == 2
            assert shipped(mine) == quantities
        parts = [
            e["lines"][0]["quantity"]
            for e in events
            if e["release_id"] == "fo-2" and e["type"] == "SHIPPED"
        ]
        assert sorted(parts) == [2, 3]


async def test_short_picks_ship_less_and_say_so() -> None:
    async with sandbox(short_pick_rate=1, seed=5) as w:
        await w.release()
        events = await w.events_until(has("SHORT_PICKED"))
        assert types(events)[-2:] == ["SHIPPED", "SHORT_PICKED"]
        missing = Counter({line["line_id"]: line["quantity"] for line in events[-1]["lines"]})
        assert sum(missing.values()) >= 1
        assert shipped(events) + missing == Counter({"1": 5, "2": 3})


async def test_duplicates_repeat_the_event_id() -> None:
    async with sandbox(duplicate_rate=1) as w:
        await w.release()
        events = await w.idle()
        counts = Counter(e["event_id"] for e in events)
        assert len(counts) == 4 and set(counts.values()) == {2}
        first = {e["event_id"]: e for e in events}
        assert all(first[e["event_id"]] == e for e in events)


async def test_out_of_order_swaps_neighbours() -> None:
    async with sandbox(out_of_order_rate=1) as w:
        await w.release()
        events = await w.idle()
        assert types(events) == ["PICKED", "RELEASE_ACKNOWLEDGED", "SHIPPED", "PACKED"]
        assert events[1]["occurred_at"] <= events[0]["occurred_at"]


async def test_manual_shipments_with_auto_ship_off() -> None:
    async with sandbox(auto_ship=False) as w:
        await w.release()
        assert types(await w.idle()) == ["RELEASE_ACKNOWLEDGED"]
        first = await w.client.post(
            "/_admin/ship", json={"release_id": "fo-1", "lines": [{"line_id": "1", "quantity": 2}]}
        )
        assert first.status_code == 200
        assert first.json()["event"]["lines"] == [{"line_id": "1", "sku": "BOLT", "quantity": 2}]
        assert (await w.releases())[0]["status"] == "PARTIALLY_SHIPPED"
        too_many = await w.client.post(
            "/_admin/ship", json={"release_id": "fo-1", "lines": [{"line_id": "1", "quantity": 9}]}
        )
        assert too_many.json()["error"]["code"] == "QUANTITY_EXCEEDS_OPEN"
        rest = await w.client.post("/_admin/ship", json={"release_id": "fo-1"})
        assert rest.json()["event"]["lines"] == [
            {"line_id": "1", "sku": "BOLT", "quantity": 3},
            {"line_id": "2", "sku": "NUT", "quantity": 3},
        ]
        nothing = await w.client.post("/_admin/ship", json={"release_id": "fo-1"})
        assert nothing.status_code == 409
        events = await w.events_until(lambda e: types(e).count("SHIPPED") == 2)
        assert shipped(events) == {"1": 5, "2": 3}
        assert (await w.releases())[0]["status"] == "SHIPPED"


async def test_cancellations_are_answered_in_the_feed() -> None:
    async with sandbox(auto_ship=False) as w:
        await w.release("open")
        await w.release("done")
        await w.release("half")
        await w.idle()
        await w.client.post("/_admin/ship", json={"release_id": "done"})
        for release_id in ("open", "done"):
            answer = await w.client.post(f"/api/v1/releases/{release_id}/cancel", json={})
            assert answer.status_code == 202
        partial = {"lines": [{"line_id": "2", "quantity": 1}]}
        assert (
            await w.client.post("/api/v1/releases/half/cancel", json=partial)
        ).status_code == 202
        events = await w.events_until(has("CANCEL_ACCEPTED", "CANCEL_REFUSED"))
        events = await w.events_until(lambda e: types(e).count("CANCEL_ACCEPTED") == 2)
        outcome = {e["release_id"]: e for e in events if e["type"].startswith("CANCEL_")}
        assert outcome["open"]["type"] == "CANCEL_ACCEPTED"
        assert {line["line_id"]: line["quantity"] for line in outcome["open"]["lines"]} == {
            "1": 5,
            "2": 3,
        }
        assert (outcome["done"]["type"], outcome["done"]["reason"]) == (
            "CANCEL_REFUSED",
            "ALREADY_SHIPPED",
        )
        assert outcome["half"]["lines"] == [{"line_id": "2", "sku": "NUT", "quantity": 1}]
        statuses = {r["release_id"]: r["status"] for r in await w.releases()}
        assert statuses == {"open": "CANCELED", "done": "SHIPPED", "half": "ACKNOWLEDGED"}
        missing = await w.client.post("/api/v1/releases/nope/cancel", json={})
        assert missing.status_code == 404
        bad_line = await w.client.post(
            "/api/v1/releases/half/cancel", json={"lines": [{"line_id": "9"}]}
        )
        assert bad_line.json()["error"]["field"] == "lines[0].line_id"


async def test_cancel_refused_at_the_configured_rate() -> None:
    async with sandbox(auto_ship=False, cancel_refuse_rate=1) as w:
        await w.release()
        await w.client.post("/api/v1/releases/fo-1/cancel", json={})
        events = await w.events_until(has("CANCEL_REFUSED"))
        assert events[-1]["reason"] == "PICK_IN_PROGRESS"
        assert (await w.releases())[0]["status"] == "ACKNOWLEDGED"


async def test_a_cancel_before_shipping_stops_the_simulation() -> None:
    async with sandbox(ack_delay_ms=1, step_delay_ms=100) as w:
        await w.release()
        await w.events_until(has("PICKED"))
        await w.client.post("/api/v1/releases/fo-1/cancel", json={})
        events = await w.idle()
        assert "SHIPPED" not in types(events)
        assert "CANCEL_ACCEPTED" in types(events)


async def test_returns_are_received_and_restocked() -> None:
    async with sandbox() as w:
        body = {
            "rma_number": "RMA-1",
            "order_id": "ord-1",
            "warehouse_id": "W1",
            "lines": [{"line_id": "1", "sku": "BOLT", "quantity": 2}],
        }
        await w.client.post(
            "/_admin/inventory", json={"warehouse_id": "W1", "on_hand": {"BOLT": 10}}
        )
        assert (await w.client.post("/api/v1/returns", json=body)).status_code == 202
        assert (await w.client.post("/api/v1/returns", json=body)).status_code == 200
        events = await w.idle()
        assert types(events) == ["RETURN_RECEIVED"]
        received = events[0]
        assert received["rma_number"] == "RMA-1" and received["receipt_id"].startswith("RR-")
        assert received["lines"] == [
            {"line_id": "1", "sku": "BOLT", "quantity": 2, "disposition": "RESTOCK"}
        ]
        snapshot = await w.client.get("/api/v1/inventory-snapshot", params={"warehouse_id": "W1"})
        assert snapshot.json()["lines"] == [{"sku": "BOLT", "on_hand": 12}]


async def test_inventory_snapshot_follows_shipments() -> None:
    async with sandbox() as w:
        await w.client.post(
            "/_admin/inventory", json={"warehouse_id": "W1", "on_hand": {"BOLT": 40, "ZED": 1}}
        )
        await w.release()
        await w.events_until(has("SHIPPED"))
        snapshot = (
            await w.client.get("/api/v1/inventory-snapshot", params={"warehouse_id": "W1"})
        ).json()
        assert snapshot["snapshot_id"] and snapshot["taken_at"].endswith("Z")
        assert snapshot["warehouse_id"] == "W1"
        assert snapshot["lines"] == [
            {"sku": "BOLT", "on_hand": 35},
            {"sku": "NUT", "on_hand": wms.DEFAULT_ON_HAND - 3},
            {"sku": "ZED", "on_hand": 1},
        ]
        other = await w.client.get("/api/v1/inventory-snapshot", params={"warehouse_id": "W9"})
        assert other.json()["lines"] == []
        assert (await w.client.get("/api/v1/inventory-snapshot")).status_code == 422


async def test_feed_paging() -> None:
    async with sandbox(auto_ship=False) as w:
        empty = (await w.client.get("/api/v1/events")).json()
        assert empty["events"] == []
        start = empty["next_cursor"]
        for i in range(5):
            await w.release(f"fo-{i}")
        await w.idle()
        cursor, pages = start, []
        while True:
            page = (
                await w.client.get("/api/v1/events", params={"after": cursor, "limit": 2})
            ).json()
            if not page["events"]:
                assert page["next_cursor"] == cursor
                break
            assert int(page["next_cursor"]) > int(cursor)
            pages.append(page["events"])
            cursor = page["next_cursor"]
        assert [len(p) for p in pages] == [2, 2, 1]
        everything = (await w.client.get("/api/v1/events", params={"limit": 1000})).json()
        assert everything["events"] == [e for p in pages for e in p]
        assert everything["next_cursor"] == cursor
        for params in ({"limit": 0}, {"limit": "x"}, {"after": "abc"}):
            bad = await w.client.get("/api/v1/events", params=params)
            assert bad.status_code == 422


async def test_reset_stops_simulations_and_cursors_keep_growing() -> None:
    async with sandbox(ack_delay_ms=10_000) as w:
        await w.release()
        await w.client.post("/_admin/ship", json={"release_id": "fo-1"})
        before = await w.events_until(has("SHIPPED"))
        assert w.app.state.wms.tasks
        assert (await w.client.post("/_admin/reset")).json() == {"ok": True}
        assert not w.app.state.wms.tasks
        assert await w.releases() == []
        assert (await w.client.get("/_admin/behaviour")).json()["ack_delay_ms"] == 50
        old_cursor = w.cursor
        await w.client.post("/_admin/behaviour", json=FAST)
        await w.release("fo-2")
        after = await w.events_until(lambda e: len(e) > len(before) + 3)
        assert after[len(before)]["release_id"] == "fo-2"
        assert old_cursor is not None and w.cursor is not None and int(w.cursor) > int(old_cursor)


async def test_shutdown_cancels_simulations() -> None:
    async with sandbox(ack_delay_ms=10_000) as w:
        await w.release()
        tasks = set(w.app.state.wms.tasks)
        assert tasks
    assert all(task.cancelled() for task in tasks)


async def test_seeded_behaviour_is_reproducible() -> None:
    async def outcomes(seed: int) -> dict[str, str]:
        async with sandbox(seed=seed, reject_rate=0.5, auto_ship=False) as w:
            for i in range(12):
                await w.release(f"fo-{i}")
            return {e["release_id"]: e["type"] for e in await w.idle()}

    first = await outcomes(11)
    assert first == await outcomes(11)
    assert set(first.values()) == {"RELEASE_ACKNOWLEDGED", "RELEASE_REJECTED"}


async def test_auth_faults_and_validation() -> None:
    async with sandbox() as w:
        anonymous = await w.client.get("/api/v1/events", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        changed = await w.client.post("/_admin/behaviour", json={"rate_429": 1})
        assert changed.json()["rate_429"] == 1
        assert (await w.client.get("/_admin/faults")).json()["rate_429"] == 1
        limited = await w.release()
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        await w.client.post("/_admin/faults", json={"rate_429": 0})
        assert await w.releases() == []
        invalid = await w.release(lines=[{"line_id": "1", "sku": "BOLT", "quantity": -1}])
        assert invalid.status_code == 422
        assert invalid.json()["error"]["field"] == "lines[0].quantity"


@pytest.mark.parametrize("value", ["yes", "false"])
def test_boolean_behaviour_from_strings(value: str) -> None:
    app = wms.create_app(TOKEN, auto_ship=value)
    assert app.state.faults.settings.auto_ship is (value == "yes")
