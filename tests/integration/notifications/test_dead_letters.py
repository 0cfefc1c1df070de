"""Dead letters: listed with filters and paging, replayed exactly once (one by id, or many by
filter), whatever the retries of the operator's calls."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dwf.common.v1 import common_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from tests.integration.harness import eventually
from tests.integration.notifications.conftest import Notifications, new_id

pytestmark = pytest.mark.integration

ACCEPTED = common_pb2.ORDER_STATUS_ACCEPTED
SHIPPED = common_pb2.ORDER_STATUS_SHIPPED


async def _exhaust(n: Notifications, hook: str, orders: int = 1) -> list[pb.DeadLetter]:
    """Deliveries that fail every attempt (max_attempts = 4) and end as dead letters."""
    await n.endpoint(hook)
    n.sandbox.fail(hook, 500, times=None)
    for _ in range(orders):
        await n.status(new_id(), hook, ACCEPTED, 1)
    deliveries = await n.settled(hook, orders)
    assert all(d.state == pb.DELIVERY_STATE_DEAD_LETTERED and d.attempts == 4 for d in deliveries)
    assert len(n.sandbox.received(hook)) == 4 * orders
    answer = await n.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(filter=pb.DeadLetterFilter(endpoint_id=hook))
    )
    return list(answer.dead_letters)


def replay_one(dead_letter_id: str, request_id: str | None = None) -> pb.ReplayDeadLetterRequest:
    return pb.ReplayDeadLetterRequest(
        request_id=request_id or new_id(), dead_letter_id=dead_letter_id
    )


async def test_replay_delivers_exactly_once(notifications: Notifications) -> None:
    n = notifications
    hook = f"replay-{new_id()[:8]}"
    (letter,) = await _exhaust(n, hook)
    assert "gave up after 4 attempts" in letter.last_error
    n.sandbox.recover(hook)
    request = replay_one(letter.dead_letter_id)
    # The same call retried, and two operators replaying the same dead letter at once.
    results = await asyncio.gather(
        n.stub.ReplayDeadLetter(request),
        n.stub.ReplayDeadLetter(request),
        n.stub.ReplayDeadLetter(replay_one(letter.dead_letter_id)),
        return_exceptions=True,
    )
    answers = [r for r in results if isinstance(r, pb.ReplayDeadLetterResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(answers) + len(refused) == 3
    assert {tuple(a.replayed_dead_letter_ids) for a in answers} == {(letter.dead_letter_id,)}
    for error in refused:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ALREADY_REPLAYED" in (error.debug_error_string() or "") or error.details()
    (stored,) = await n.settled(hook, 1)
    assert stored.state == pb.DELIVERY_STATE_SUCCEEDED and stored.attempts == 1
    assert len(n.sandbox.accepted(hook)) == 1
    # Replayed once more afterwards: refused, nothing sent.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await n.stub.ReplayDeadLetter(replay_one(letter.dead_letter_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (after,) = (
        await n.stub.ListDeadLetters(
            pb.ListDeadLettersRequest(filter=pb.DeadLetterFilter(endpoint_id=hook))
        )
    ).dead_letters
    assert after.state == pb.DEAD_LETTER_STATE_REPLAYED and after.replay_count == 1
    assert after.HasField("replayed_at")
    assert len(n.sandbox.accepted(hook)) == 1


async def test_replay_by_filter_is_bounded_and_idempotent(notifications: Notifications) -> None:
    n = notifications
    hook = f"bulk-{new_id()[:8]}"
    letters = await _exhaust(n, hook, orders=3)
    n.sandbox.recover(hook)
    only_this_hook = pb.DeadLetterFilter(
        endpoint_id=hook, kind=pb.DEAD_LETTER_KIND_CHANNEL_DELIVERY
    )
    first = await n.stub.ReplayDeadLetter(
        pb.ReplayDeadLetterRequest(request_id=new_id(), filter=only_this_hook, max_count=2)
    )
    oldest_first = sorted(letters, key=lambda d: d.dead_lettered_at.ToDatetime())
    assert list(first.replayed_dead_letter_ids) == [d.dead_letter_id for d in oldest_first[:2]]
    assert first.truncated
    rest = pb.ReplayDeadLetterRequest(request_id=new_id(), filter=only_this_hook)
    second = await n.stub.ReplayDeadLetter(rest)
    assert list(second.replayed_dead_letter_ids) == [oldest_first[2].dead_letter_id]
    assert not second.truncated
    assert await n.stub.ReplayDeadLetter(rest) == second  # a retry answers the same
    nothing = await n.stub.ReplayDeadLetter(
        pb.ReplayDeadLetterRequest(request_id=new_id(), filter=only_this_hook)
    )
    assert list(nothing.replayed_dead_letter_ids) == []
    deliveries = await n.settled(hook, 3)
    assert {d.state for d in deliveries} == {pb.DELIVERY_STATE_SUCCEEDED}
    assert len(n.sandbox.accepted(hook)) == 3


async def test_replay_skips_what_must_not_be_sent(notifications: Notifications) -> None:
    n = notifications
    hook = f"skip-{new_id()[:8]}"
    await n.endpoint(hook)
    n.sandbox.fail(hook, 400, times=1)
    order = new_id()
    await n.status(order, hook, ACCEPTED, 1)
    await n.settled(hook, 1)
    await n.status(order, hook, SHIPPED, 2)  # delivered: the dead ACCEPTED is now stale
    await n.settled(hook, 2)
    (letter,) = (
        await n.stub.ListDeadLetters(
            pb.ListDeadLettersRequest(filter=pb.DeadLetterFilter(endpoint_id=hook))
        )
    ).dead_letters
    answer = await n.stub.ReplayDeadLetter(replay_one(letter.dead_letter_id))
    assert list(answer.skipped) == [
        pb.SkippedDeadLetter(dead_letter_id=letter.dead_letter_id, reason="SUPERSEDED")
    ]
    assert [r.sequence for r in n.sandbox.accepted(hook)] == [2]
    # A disabled endpoint's dead letters wait for it to be enabled again.
    off = f"off-{new_id()[:8]}"
    await n.endpoint(off, enabled=False)
    await n.status(new_id(), off, ACCEPTED, 1)
    await n.settled(off, 1)
    (parked,) = (
        await n.stub.ListDeadLetters(
            pb.ListDeadLettersRequest(filter=pb.DeadLetterFilter(endpoint_id=off))
        )
    ).dead_letters
    answer = await n.stub.ReplayDeadLetter(replay_one(parked.dead_letter_id))
    assert [s.reason for s in answer.skipped] == ["ENDPOINT_DISABLED"]
    await n.endpoint(off, enabled=True)
    answer = await n.stub.ReplayDeadLetter(replay_one(parked.dead_letter_id))
    assert list(answer.replayed_dead_letter_ids) == [parked.dead_letter_id]
    (sent,) = await n.settled(off, 1)
    assert sent.state == pb.DELIVERY_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await n.stub.ReplayDeadLetter(replay_one(new_id()))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_deliveries_pages_newest_first(notifications: Notifications) -> None:
    n = notifications
    hook = f"pages-{new_id()[:8]}"
    await n.endpoint(hook)
    orders = [new_id() for _ in range(5)]
    for order in orders:
        await n.status(order, hook, ACCEPTED, 1)
    await n.settled(hook, 5)
    seen: list[pb.Delivery] = []
    token = ""
    while True:
        page = await n.stub.ListDeliveries(
            pb.ListDeliveriesRequest(endpoint_id=hook, page_size=2, page_token=token)
        )
        assert len(page.deliveries) <= 2
        seen.extend(page.deliveries)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 and len({d.delivery_id for d in seen}) == 5
    stamps = [d.created_at.ToDatetime() for d in seen]
    assert stamps == sorted(stamps, reverse=True)
    one = await n.stub.ListDeliveries(
        pb.ListDeliveriesRequest(
            order_id=orders[2], states=[pb.DELIVERY_STATE_SUCCEEDED], channel_id=hook
        )
    )
    assert [d.order_id for d in one.deliveries] == [orders[2]]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await n.stub.ListDeliveries(
            pb.ListDeliveriesRequest(endpoint_id="other", page_size=2, page_token=token or "x")
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_event_that_cannot_be_consumed_is_listed_and_replayable(
    notifications: Notifications,
) -> None:
    """A poison event on the consumer's subject: retried, moved to the DLQ by the chassis,
    listed here as EVENT_CONSUMPTION; a replay runs the handler again through the inbox."""
    from dwf.inventory.v1 import events_pb2 as inventory_events
    from tests.integration.notifications.conftest import envelope_for

    n = notifications
    poison = envelope_for("order_gateway", "order", new_id(), 1, inventory_events.DriftReconciled())
    await n.publish("dwf.order_gateway.order_status_changed.v1", poison)

    async def listed() -> list[pb.DeadLetter]:
        answer = await n.stub.ListDeadLetters(
            pb.ListDeadLettersRequest(
                filter=pb.DeadLetterFilter(kind=pb.DEAD_LETTER_KIND_EVENT_CONSUMPTION)
            )
        )
        return [d for d in answer.dead_letters if d.event_id == poison.id]

    (letter,) = await eventually(listed, what="the consumption dead letter")
    assert letter.consumer == "notifications_order_status"
    assert letter.state == pb.DEAD_LETTER_STATE_PENDING and letter.attempts == 2
    assert letter.envelope == poison.SerializeToString()
    answer = await n.stub.ReplayDeadLetter(replay_one(letter.dead_letter_id))
    (skipped,) = answer.skipped
    assert skipped.reason.startswith("HANDLER_FAILED")  # still poison: nothing changed
    (still,) = await listed()
    assert still.state == pb.DEAD_LETTER_STATE_PENDING
