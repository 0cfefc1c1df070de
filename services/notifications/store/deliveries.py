"""SQL of the delivery engine: queue deliveries, claim them for sending, record outcomes,
dead-letter, replay.

Every (endpoint, ordering key) — an order, or the endpoint's availability feed — has one
``delivery_queue`` row. Claiming locks due queue rows with ``FOR UPDATE SKIP LOCKED`` and
leases each one's *head* (its open delivery with the lowest sequence), so any number of
replicas send in parallel across orders but never two deliveries of one order to one
endpoint at a time. The queue remembers the highest sequence delivered: an open delivery at
or below it is SUPERSEDED instead of sent, so a channel never sees an order go backwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.store.tables import alert, delivery, delivery_queue, endpoint

OPEN = ("PENDING", "RETRYING")
AVAILABILITY_KEY = "feed:availability"


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


def notify_channel(schema: str) -> str:
    return f"dwf_deliveries_{schema}"


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: str
    channel_id: str
    event_id: str
    event_type: str
    subject: str
    order_id: str
    ordering_key: str
    sequence: int
    content_type: str
    body: bytes
    summary: str
    envelope: bytes
    correlation_id: str = ""


@dataclass(frozen=True)
class DeadLettered:
    dead_letter_id: str
    delivery_id: str
    channel_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    order_id: str
    attempts: int
    last_http_status: int
    last_error: str
    dead_lettered_at: datetime


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    endpoint_id: str
    channel_id: str
    ordering_key: str
    sequence: int
    attempts: int  # including the one about to be made
    event_id: str
    event_type: str
    order_id: str
    correlation_id: str
    content_type: str
    body: bytes
    url: str
    secret: str
    kind: str
    lease_token: str


# --- queueing ---------------------------------------------------------------------------


async def enqueue(
    session: AsyncSession, items: Sequence[NewDelivery], *, disabled: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Insert deliveries (one per (endpoint, event) and per (endpoint, order, sequence):
    duplicates are ignored) and wake their queues. Deliveries to the ``disabled`` endpoints
    are created dead-lettered. Returns the ids of (queued, created dead-lettered)."""
    if not items:
        return [], []
    off = set(disabled)
    rows = [
        {
            "delivery_id": str(uuid.uuid4()),
            "endpoint_id": item.endpoint_id,
            "channel_id": item.channel_id,
            "event_id": item.event_id,
            "event_type": item.event_type,
            "subject": item.subject,
            "order_id": item.order_id,
            "ordering_key": item.ordering_key,
            "sequence": item.sequence,
            "state": "DEAD_LETTERED" if item.endpoint_id in off else "PENDING",
            "last_error": "endpoint disabled" if item.endpoint_id in off else "",
            "content_type": item.content_type,
            "body": item.body,
            "summary": item.summary,
            "envelope": item.envelope,
            "correlation_id": item.correlation_id,
        }
        for item in items
    ]
    inserted = (
        await session.execute(
            insert(delivery)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(
                delivery.c.delivery_id,
                delivery.c.endpoint_id,
                delivery.c.ordering_key,
                delivery.c.state,
            )
        )
    ).all()
    queued = [row for row in inserted if row.state == "PENDING"]
    keys = sorted({(row.endpoint_id, row.ordering_key) for row in queued})
    if keys:
        await wake_queues(session, keys)
    dead = [row.delivery_id for row in inserted if row.state == "DEAD_LETTERED"]
    return [row.delivery_id for row in queued], dead


_WAKE = text(
    """
    INSERT INTO delivery_queue (endpoint_id, ordering_key, due_at)
    SELECT e, k, now() FROM unnest(CAST(:eps AS text[]), CAST(:keys AS text[])) AS t(e, k)
    ON CONFLICT (endpoint_id, ordering_key) DO UPDATE SET due_at = now()
    """
)


async def wake_queues(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> None:
    """Make queues due now (the claimer works out what is really due). Keys sorted, so
    concurrent writers lock queue rows in one order."""
    ordered = sorted(set(keys))
    await session.execute(_WAKE, {"eps": [e for e, _ in ordered], "keys": [k for _, k in ordered]})


async def next_feed_sequence(session: AsyncSession, endpoint_id: str, key: str) -> int:
    """The next sequence of a feed dwf numbers itself (the availability feed)."""
    value = await session.scalar(
        insert(delivery_queue)
        .values(endpoint_id=endpoint_id, ordering_key=key, assigned_sequence=1)
        .on_conflict_do_update(
            index_elements=["endpoint_id", "ordering_key"],
            set_={"assigned_sequence": delivery_queue.c.assigned_sequence + 1},
        )
        .returning(delivery_queue.c.assigned_sequence)
    )
    return int(value or 1)


# --- claiming -----------------------------------------------------------------------------

_LOCK_DUE = text(
    """
    SELECT endpoint_id, ordering_key, delivered_sequence
    FROM delivery_queue
    WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY due_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_SUPERSEDE = text(
    """
    UPDATE delivery AS d SET state = 'SUPERSEDED', next_attempt_at = now()
    FROM unnest(CAST(:eps AS text[]), CAST(:keys AS text[]), CAST(:delivered AS bigint[]))
         AS q(endpoint_id, ordering_key, delivered)
    WHERE d.endpoint_id = q.endpoint_id AND d.ordering_key = q.ordering_key
      AND d.state IN ('PENDING', 'RETRYING') AND d.sequence > 0 AND d.sequence <= q.delivered
    """
)
_HEADS = text(
    """
    SELECT DISTINCT ON (d.endpoint_id, d.ordering_key)
           d.delivery_id, d.endpoint_id, d.ordering_key, d.channel_id, d.event_id,
           d.event_type, d.order_id, d.sequence, d.attempts, d.next_attempt_at,
           d.content_type, d.body, d.correlation_id,
           e.url, e.secret, e.kind, e.enabled, now() AS now
    FROM delivery AS d
    JOIN unnest(CAST(:eps AS text[]), CAST(:keys AS text[])) AS q(endpoint_id, ordering_key)
      ON d.endpoint_id = q.endpoint_id AND d.ordering_key = q.ordering_key
    JOIN endpoint AS e ON e.endpoint_id = d.endpoint_id
    WHERE d.state IN ('PENDING', 'RETRYING')
    ORDER BY d.endpoint_id, d.ordering_key, d.sequence, d.created_at
    """
)
_LEASE = text(
    """
    UPDATE delivery_queue AS q
    SET lease_token = t.token, lease_until = now() + make_interval(secs => :lease)
    FROM unnest(CAST(:eps AS text[]), CAST(:keys AS text[]), CAST(:tokens AS uuid[]))
         AS t(endpoint_id, ordering_key, token)
    WHERE q.endpoint_id = t.endpoint_id AND q.ordering_key = t.ordering_key
    """
)
_ATTEMPT = text(
    """
    UPDATE delivery SET attempts = attempts + 1, last_attempt_at = now()
    WHERE delivery_id = ANY(CAST(:ids AS uuid[]))
    """
)
_SET_DUE = text(
    """
    UPDATE delivery_queue AS q SET due_at = t.due
    FROM unnest(CAST(:eps AS text[]), CAST(:keys AS text[]), CAST(:dues AS timestamptz[]))
         AS t(endpoint_id, ordering_key, due)
    WHERE q.endpoint_id = t.endpoint_id AND q.ordering_key = t.ordering_key
    """
)


@dataclass
class ClaimResult:
    claimed: list[Claimed]
    dead: list[DeadLettered]
    locked: int  # queues looked at


async def claim(
    session: AsyncSession, *, limit: int, lease_seconds: float, max_attempts: int
) -> ClaimResult:
    queues = (await session.execute(_LOCK_DUE, {"limit": limit})).all()
    if not queues:
        return ClaimResult([], [], 0)
    eps = [q.endpoint_id for q in queues]
    keys = [q.ordering_key for q in queues]
    await session.execute(
        _SUPERSEDE,
        {"eps": eps, "keys": keys, "delivered": [q.delivered_sequence for q in queues]},
    )
    heads = (await session.execute(_HEADS, {"eps": eps, "keys": keys})).all()
    by_queue = {(h.endpoint_id, h.ordering_key): h for h in heads}
    send: list[Any] = []
    dead_ids: list[str] = []
    disabled_ids: list[str] = []
    due: dict[tuple[str, str], datetime | None] = {}
    for queue in queues:
        key = (queue.endpoint_id, queue.ordering_key)
        head = by_queue.get(key)
        if head is None:
            due[key] = None  # nothing open: idle until something is queued
        elif not head.enabled:
            disabled_ids.append(head.delivery_id)
            due[key] = head.now  # the rest of the queue follows on the next claim
        elif head.attempts >= max_attempts:  # its sender died during the last attempt
            dead_ids.append(head.delivery_id)
            due[key] = head.now
        elif head.next_attempt_at > head.now:
            due[key] = head.next_attempt_at  # backing off
        else:
            send.append(head)
    dead = await dead_letter(session, disabled_ids, "endpoint disabled")
    dead += await dead_letter(session, dead_ids, "attempt budget exhausted (sender lost)")
    if due:
        await session.execute(
            _SET_DUE,
            {
                "eps": [k[0] for k in due],
                "keys": [k[1] for k in due],
                "dues": list(due.values()),
            },
        )
    claimed: list[Claimed] = []
    if send:
        tokens = [str(uuid.uuid4()) for _ in send]
        await session.execute(
            _LEASE,
            {
                "eps": [h.endpoint_id for h in send],
                "keys": [h.ordering_key for h in send],
                "tokens": tokens,
                "lease": lease_seconds,
            },
        )
        await session.execute(_ATTEMPT, {"ids": [h.delivery_id for h in send]})
        claimed = [
            Claimed(
                delivery_id=str(h.delivery_id),
                endpoint_id=h.endpoint_id,
                channel_id=h.channel_id,
                ordering_key=h.ordering_key,
                sequence=h.sequence,
                attempts=h.attempts + 1,
                event_id=h.event_id,
                event_type=h.event_type,
                order_id=h.order_id,
                correlation_id=h.correlation_id,
                content_type=h.content_type,
                body=h.body,
                url=h.url,
                secret=h.secret,
                kind=h.kind,
                lease_token=token,
            )
            for h, token in zip(send, tokens, strict=True)
        ]
    return ClaimResult(claimed, dead, len(queues))


# --- outcomes -----------------------------------------------------------------------------


async def hold_lease(session: AsyncSession, item: Claimed) -> bool:
    """Lock the queue row; False if the lease was lost (expired and taken by another sender,
    who now owns the outcome)."""
    token = await session.scalar(
        select(delivery_queue.c.lease_token)
        .where(
            delivery_queue.c.endpoint_id == item.endpoint_id,
            delivery_queue.c.ordering_key == item.ordering_key,
        )
        .with_for_update()
    )
    return token is not None and str(token) == item.lease_token


_RELEASE = text(
    """
    UPDATE delivery_queue AS q
    SET lease_token = NULL, lease_until = NULL,
        due_at = (SELECT d.next_attempt_at FROM delivery AS d
                  WHERE d.endpoint_id = q.endpoint_id AND d.ordering_key = q.ordering_key
                    AND d.state IN ('PENDING', 'RETRYING')
                  ORDER BY d.sequence, d.created_at LIMIT 1)
    WHERE q.endpoint_id = :ep AND q.ordering_key = :key
    """
)


async def release(session: AsyncSession, item: Claimed) -> None:
    """End the lease; the queue is due when its next head is."""
    await session.execute(_RELEASE, {"ep": item.endpoint_id, "key": item.ordering_key})


async def mark_succeeded(session: AsyncSession, item: Claimed, http_status: int) -> datetime | None:
    delivered_at: datetime | None = await session.scalar(
        update(delivery)
        .where(delivery.c.delivery_id == item.delivery_id, delivery.c.state.in_(OPEN))
        .values(
            state="SUCCEEDED",
            delivered_at=func.now(),
            last_http_status=http_status,
            last_error="",
        )
        .returning(delivery.c.delivered_at)
    )
    await session.execute(
        update(delivery_queue)
        .where(
            delivery_queue.c.endpoint_id == item.endpoint_id,
            delivery_queue.c.ordering_key == item.ordering_key,
        )
        .values(
            delivered_sequence=func.greatest(delivery_queue.c.delivered_sequence, item.sequence)
        )
    )
    return delivered_at


async def mark_retrying(
    session: AsyncSession, item: Claimed, http_status: int, error: str, delay_seconds: float
) -> None:
    await session.execute(
        text(
            """
            UPDATE delivery SET state = 'RETRYING', last_http_status = :status,
                last_error = :error, next_attempt_at = now() + make_interval(secs => :delay)
            WHERE delivery_id = :id AND state IN ('PENDING', 'RETRYING')
            """
        ),
        {"id": item.delivery_id, "status": http_status, "error": error, "delay": delay_seconds},
    )


async def record_failure(
    session: AsyncSession, delivery_id: str, http_status: int, error: str
) -> None:
    await session.execute(
        update(delivery)
        .where(delivery.c.delivery_id == delivery_id)
        .values(last_http_status=http_status, last_error=error)
    )


_DEAD_LETTER = text(
    """
    WITH dead AS (
        UPDATE delivery
        SET state = 'DEAD_LETTERED', next_attempt_at = now(),
            last_error = CASE WHEN last_error = '' THEN :error ELSE last_error END
        WHERE delivery_id = ANY(CAST(:ids AS uuid[]))
          AND (state IN ('PENDING', 'RETRYING') OR (state = 'DEAD_LETTERED' AND :fresh))
        RETURNING delivery_id, channel_id, endpoint_id, event_id, event_type, subject,
                  order_id, attempts, last_http_status, last_error
    )
    INSERT INTO channel_dead_letter (dead_letter_id, delivery_id, channel_id, endpoint_id,
        event_id, event_type, subject, order_id, state, attempts, last_http_status, last_error)
    SELECT gen_random_uuid(), delivery_id, channel_id, endpoint_id, event_id, event_type,
           subject, order_id, 'PENDING', attempts, last_http_status, last_error
    FROM dead
    ORDER BY delivery_id
    RETURNING dead_letter_id, delivery_id, channel_id, endpoint_id, event_id, event_type,
              order_id, attempts, last_http_status, last_error, dead_lettered_at
    """
)


async def dead_letter(
    session: AsyncSession, delivery_ids: Sequence[str], error: str, *, fresh: bool = False
) -> list[DeadLettered]:
    """Give up open deliveries: each becomes DEAD_LETTERED with a PENDING dead letter.
    ``fresh``: also for deliveries created dead-lettered (no dead letter yet)."""
    if not delivery_ids:
        return []
    rows = (
        await session.execute(
            _DEAD_LETTER, {"ids": list(delivery_ids), "error": error, "fresh": fresh}
        )
    ).all()
    return [
        DeadLettered(
            dead_letter_id=str(r.dead_letter_id),
            delivery_id=str(r.delivery_id),
            channel_id=r.channel_id,
            endpoint_id=r.endpoint_id,
            event_id=r.event_id,
            event_type=r.event_type,
            order_id=r.order_id,
            attempts=r.attempts,
            last_http_status=r.last_http_status,
            last_error=r.last_error,
            dead_lettered_at=r.dead_lettered_at,
        )
        for r in rows
    ]


_BACKLOG_QUEUES = text(
    """
    SELECT ordering_key FROM delivery_queue
    WHERE endpoint_id = :ep AND (lease_until IS NULL OR lease_until < now())
    ORDER BY ordering_key
    FOR UPDATE SKIP LOCKED
    """
)
_BACKLOG = text(
    """
    SELECT delivery_id FROM delivery
    WHERE endpoint_id = :ep AND ordering_key = ANY(CAST(:keys AS text[]))
      AND state IN ('PENDING', 'RETRYING')
    """
)


async def dead_letter_backlog(
    session: AsyncSession, endpoint_id: str, error: str
) -> list[DeadLettered]:
    """A disabled endpoint accumulates nothing: its open deliveries become dead letters
    (replayable once it is enabled again). Queues with a delivery in flight are left to
    that sender, and to the next claim, which dead-letters what a disabled endpoint has."""
    keys = list((await session.execute(_BACKLOG_QUEUES, {"ep": endpoint_id})).scalars())
    if not keys:
        return []
    ids = [
        str(i)
        for i in (await session.execute(_BACKLOG, {"ep": endpoint_id, "keys": keys})).scalars()
    ]
    dead = await dead_letter(session, ids, error)
    await session.execute(
        update(delivery_queue)
        .where(delivery_queue.c.endpoint_id == endpoint_id, delivery_queue.c.ordering_key.in_(keys))
        .values(due_at=None)
    )
    return dead


async def disable_endpoint(
    session: AsyncSession, endpoint_id: str, reason: str, http_status: int, message: str
) -> tuple[str, datetime] | None:
    """Disable (if enabled) and write an alert. Returns (channel_id, disabled_at), or None if
    it was already disabled."""
    row = (
        await session.execute(
            update(endpoint)
            .where(endpoint.c.endpoint_id == endpoint_id, endpoint.c.enabled.is_(True))
            .values(
                enabled=False,
                disabled_reason=reason,
                disabled_at=func.now(),
                updated_at=func.now(),
            )
            .returning(endpoint.c.channel_id, endpoint.c.disabled_at)
        )
    ).first()
    if row is None:
        return None
    await session.execute(
        insert(alert).values(
            alert_id=str(uuid.uuid4()),
            kind="ENDPOINT_DISABLED",
            channel_id=row.channel_id,
            endpoint_id=endpoint_id,
            http_status=http_status,
            message=message,
        )
    )
    return row.channel_id, row.disabled_at
