"""The delivery engine against a real receiver: signed, ordered per order, retried with
backoff, dead-lettered without storms, 410 disables, duplicates suppressed."""

from __future__ import annotations

import time

import pytest

from dwf.common.v1 import common_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from services.notifications import domain
from tests.integration.harness import eventually
from tests.integration.notifications.conftest import SECRET, Notifications, new_id, start_second

pytestmark = pytest.mark.integration

ACCEPTED = common_pb2.ORDER_STATUS_ACCEPTED
RELEASED = common_pb2.ORDER_STATUS_RELEASED
PARTIALLY_SHIPPED = common_pb2.ORDER_STATUS_PARTIALLY_SHIPPED
SHIPPED = common_pb2.ORDER_STATUS_SHIPPED
SUCCEEDED = pb.DELIVERY_STATE_SUCCEEDED


async def test_a_status_change_arrives_signed_and_mapped(notifications: Notifications) -> None:
    n = notifications
    hook = f"shop-{new_id()[:8]}"
    await n.endpoint(hook, vocabulary="shopify")
    order = new_id()
    envelope = await n.status(order, hook, PARTIALLY_SHIPPED, 4, shipped=1, tracking=["1Z9"])

    (got,) = await eventually(lambda: _accepted(n, hook, 1), what="the delivery")
    assert got.signature_valid is True
    assert domain.verify_signature(
        [SECRET], got.body, got.headers["dwf-signature"], int(time.time())
    )
    assert not domain.verify_signature(
        [SECRET], got.body + b" ", got.headers["dwf-signature"], int(time.time())
    )
    assert got.headers["dwf-event-id"] == envelope.id
    assert got.headers["dwf-order-id"] == order
    assert got.headers["dwf-sequence"] == "4"
    body = got.json()
    assert body["fulfillment_status"] == "partial"
    assert body["line_items"][0] == {
        "id": "1",
        "sku": "shop-sku-1",
        "quantity": 2,
        "fulfilled_quantity": 1,
        "cancelled_quantity": 0,
        "fulfillable_quantity": 1,
        "backorder_eta": None,
    }
    assert body["fulfillments"][0]["tracking_number"] == "1Z9"

    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_SUCCEEDED
    assert stored.delivery_id == got.headers["dwf-delivery-id"]
    assert (stored.event_id, stored.order_id, stored.status_sequence) == (envelope.id, order, 4)
    assert stored.attempts == 1 and stored.last_http_status == 200


async def _accepted(n: Notifications, hook: str, count: int) -> list[object] | None:
    got = n.sandbox.accepted(hook)
    return got if len(got) >= count else None  # type: ignore[return-value]


async def test_statuses_of_many_orders_arrive_in_order_with_two_replicas(
    notifications: Notifications,
) -> None:
    """Parallel across orders, one at a time per order, never backwards, even with a second
    replica consuming and claiming from the same queues and a receiver that takes its time.

    The two replicas' consumers share the durable, so one order's events may be handled out
    of order; a status that turns up after a newer one went out is SUPERSEDED, never sent."""
    n = notifications
    hook = f"busy-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.configure(hook, latency=0.01)
    second = await start_second(n)
    orders = [new_id() for _ in range(20)]
    statuses = [ACCEPTED, RELEASED, PARTIALLY_SHIPPED, SHIPPED]
    try:
        for sequence, status in enumerate(statuses, start=1):
            for order in orders:
                await n.status(order, hook, status, sequence)
        # Generous: the consumers first work through every status change the earlier tests'
        # orders published (the stream is shared by the session).
        deliveries = await n.settled(hook, len(orders) * len(statuses), timeout=60)
    finally:
        await second.stop()
    per_order: dict[str, list[int]] = {}
    for r in n.sandbox.accepted(hook):
        per_order.setdefault(r.order_id, []).append(r.sequence)
    assert set(per_order) == set(orders)
    for sequences in per_order.values():
        assert sequences == sorted(set(sequences)) and sequences[-1] == 4
    sent = {(d.order_id, d.status_sequence) for d in deliveries if d.state == SUCCEEDED}
    assert sent == {(order, s) for order, seqs in per_order.items() for s in seqs}
    assert {d.state for d in deliveries} <= {SUCCEEDED, pb.DELIVERY_STATE_SUPERSEDED}
    hook_state = n.sandbox.hook(hook)
    assert hook_state.max_in_flight_per_order == 1
    assert hook_state.max_in_flight > 1  # orders in parallel
    assert hook_state.regressions == []


async def test_5xx_is_retried_until_the_channel_recovers(notifications: Notifications) -> None:
    n = notifications
    hook = f"flaky-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.fail(hook, 503, times=2)
    envelope = await n.status(new_id(), hook, ACCEPTED, 1)
    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_SUCCEEDED and stored.attempts == 3
    got = n.sandbox.received(hook)
    assert [r.status for r in got] == [503, 503, 200]
    assert {r.event_id for r in got} == {envelope.id}
    assert [r.headers["dwf-attempt"] for r in got] == ["1", "2", "3"]
    assert len({r.headers["dwf-delivery-id"] for r in got}) == 1


async def test_a_timeout_is_retried(notifications: Notifications) -> None:
    n = notifications
    hook = f"slow-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.hang(hook, 2.0)  # the sender gives up after 1 s
    await n.status(new_id(), hook, ACCEPTED, 1)
    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_SUCCEEDED and stored.attempts == 2
    assert len(n.sandbox.accepted(hook)) == 2  # the hung one was answered 200, too late


async def test_429_waits_for_retry_after(notifications: Notifications) -> None:
    n = notifications
    hook = f"limited-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.fail(hook, 429, times=1, retry_after="1")
    await n.status(new_id(), hook, ACCEPTED, 1)
    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_SUCCEEDED
    first, second = n.sandbox.received(hook)
    assert first.status == 429 and second.ok
    assert second.received_at - first.received_at >= 0.9  # backoff alone would be < 0.2 s


async def test_a_4xx_is_dead_lettered_at_once(notifications: Notifications) -> None:
    n = notifications
    hook = f"strict-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.fail(hook, 422, times=None)
    order = new_id()
    envelope = await n.status(order, hook, ACCEPTED, 1)
    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_DEAD_LETTERED
    assert stored.attempts == 1 and stored.last_http_status == 422
    assert len(n.sandbox.received(hook)) == 1  # terminal: no retry can follow
    letters = await n.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(filter=pb.DeadLetterFilter(endpoint_id=hook))
    )
    (letter,) = letters.dead_letters
    assert letter.kind == pb.DEAD_LETTER_KIND_CHANNEL_DELIVERY
    assert letter.state == pb.DEAD_LETTER_STATE_PENDING
    assert (letter.event_id, letter.order_id, letter.delivery_id) == (
        envelope.id,
        order,
        stored.delivery_id,
    )
    assert letter.last_http_status == 422 and "HTTP 422" in letter.last_error
    assert letter.envelope == envelope.SerializeToString()
    # The order is not blocked behind its dead letter: the next status goes out.
    n.sandbox.recover(hook)
    await n.status(order, hook, RELEASED, 2)
    await n.settled(hook, 2)
    assert [r.sequence for r in n.sandbox.accepted(hook)] == [2]


async def test_410_disables_the_endpoint_and_raises_an_alert(notifications: Notifications) -> None:
    from sqlalchemy import select

    from chassis.schema import outbox
    from services.notifications.store.tables import alert, endpoint

    n = notifications
    hook = f"gone-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.fail(hook, 410, times=None)
    await n.status(new_id(), hook, ACCEPTED, 1)
    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_DEAD_LETTERED and stored.last_http_status == 410
    async with n.app.runtime.sessions() as session:
        row = (await session.execute(select(endpoint).where(endpoint.c.endpoint_id == hook))).one()
        alerts = (await session.execute(select(alert).where(alert.c.endpoint_id == hook))).all()
        events = (
            await session.execute(select(outbox.c.event_type).where(outbox.c.aggregate_id == hook))
        ).scalars()
        assert set(events) == {
            "dwf.notifications.v1.DeliveryDeadLettered",
            "dwf.notifications.v1.EndpointDisabled",
        }
    assert (row.enabled, row.disabled_reason) == (False, "GONE")
    assert [(a.kind, a.http_status) for a in alerts] == [("ENDPOINT_DISABLED", 410)]
    # A disabled endpoint accumulates nothing: later events become dead letters, unsent.
    await n.status(new_id(), hook, ACCEPTED, 1)
    deliveries = await n.settled(hook, 2)
    assert all(d.state == pb.DELIVERY_STATE_DEAD_LETTERED for d in deliveries)
    assert len(n.sandbox.received(hook)) == 1


async def test_duplicate_events_make_one_delivery(notifications: Notifications) -> None:
    n = notifications
    hook = f"dup-{new_id()[:8]}"
    await n.endpoint(hook)
    order = new_id()
    envelope = await n.status(order, hook, ACCEPTED, 1)
    # The same event again past the broker's dedupe (a republish after the window)...
    await n.publish(
        "dwf.order_gateway.order_status_changed.v1", envelope, msg_id=f"again-{envelope.id}"
    )
    # ...and another event carrying the same status_sequence of the same order.
    await n.status(order, hook, ACCEPTED, 1)
    await n.status(order, hook, RELEASED, 2)  # a marker that everything before was handled
    await n.settled(hook, 2)
    got = n.sandbox.accepted(hook)
    assert [r.sequence for r in got] == [1, 2]
    assert got[0].event_id == envelope.id
    assert len(await n.deliveries(endpoint_id=hook)) == 2


async def test_a_receiver_never_sees_a_status_regress(notifications: Notifications) -> None:
    n = notifications
    hook = f"mono-{new_id()[:8]}"
    await n.endpoint(hook)
    late = new_id()
    await n.status(late, hook, SHIPPED, 3)
    await n.settled(hook, 1)
    await n.status(late, hook, ACCEPTED, 1)  # arrives after a newer one was delivered
    await n.status(late, hook, RELEASED, 2)
    deliveries = await n.settled(hook, 3)
    states = {d.status_sequence: d.state for d in deliveries}
    assert states == {
        3: pb.DELIVERY_STATE_SUCCEEDED,
        1: pb.DELIVERY_STATE_SUPERSEDED,
        2: pb.DELIVERY_STATE_SUPERSEDED,
    }
    # Out of order while queued behind a failing attempt: sent in sequence order.
    queued = new_id()
    n.sandbox.fail(hook, 503, times=1)
    await n.status(queued, hook, SHIPPED, 4)
    await eventually(lambda: _any_received(n, hook, queued), what="first attempt")
    await n.status(queued, hook, RELEASED, 2)
    await n.status(queued, hook, PARTIALLY_SHIPPED, 3)
    await n.settled(hook, 6)
    accepted = [r.sequence for r in n.sandbox.accepted(hook) if r.order_id == queued]
    assert accepted == sorted(accepted) and accepted[-1] == 4
    assert n.sandbox.hook(hook).regressions == []


async def _any_received(n: Notifications, hook: str, order: str) -> bool:
    return any(r.order_id == order for r in n.sandbox.received(hook))


async def test_status_filter_and_disabled_endpoints(notifications: Notifications) -> None:
    n = notifications
    channel = f"chan-{new_id()[:8]}"
    shipped_only = f"{channel}-shipped"
    off = f"{channel}-off"
    await n.endpoint(shipped_only, channel_id=channel, statuses=[SHIPPED])
    await n.endpoint(off, channel_id=channel, enabled=False)
    order = new_id()
    await n.status(order, channel, ACCEPTED, 1)
    await n.status(order, channel, SHIPPED, 2)
    (sent,) = await n.settled(shipped_only, 1)
    assert sent.status_sequence == 2
    parked = await n.settled(off, 2)
    assert {d.state for d in parked} == {pb.DELIVERY_STATE_DEAD_LETTERED}
    assert n.sandbox.received(off) == []
