"""Event handlers and background loops of the notifications service.

* ``notifications_order_status`` consumes the gateway's channel-facing status feed
  (``dwf.order.v1.OrderStatusChanged``) and, in the consumer's transaction (so the inbox makes
  it exactly-once), queues one delivery per matching endpoint of the order's channel, already
  mapped into the endpoint's vocabulary.
* ``notifications_availability`` consumes ``dwf.inventory.v1.AvailabilityChanged`` into a
  per-endpoint, per-SKU pending table (latest numbers win, stale entries are skipped by their
  per-(warehouse, sku) sequence); the availability flusher turns it into at most one delivery
  per endpoint per interval, and only when the previous one is done (so a slow channel gets
  coalesced updates instead of a backlog).
* The delivery worker (``delivery.Deliverer``) sends what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.bus import ConsumerSpec
from chassis.events import STREAMS, subject_for
from chassis.server import Runtime, Worker
from dwf.common.v1 import common_pb2
from dwf.events.v1 import envelope_pb2
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.order.v1 import events_pb2 as order_events
from services.notifications import domain
from services.notifications.delivery import Deliverer, record_dead_letters
from services.notifications.settings import NotifySettings
from services.notifications.store import deliveries as store
from services.notifications.store.tables import availability_pending, endpoint

log = logging.getLogger("dwf.notifications")

ORDER_STATUS_DURABLE = "notifications_order_status"
AVAILABILITY_DURABLE = "notifications_availability"
FLUSH_BATCH = 5000

EventHandler = Callable[[AsyncSession, envelope_pb2.EventEnvelope], Awaitable[None]]


def status_name(value: int) -> str:
    if value == common_pb2.ORDER_STATUS_UNSPECIFIED:
        return ""
    try:
        return common_pb2.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return ""  # an unknown (newer) value is UNSPECIFIED to us


def _when(stamp: object, present: bool) -> datetime | None:
    if not present:
        return None
    return stamp.ToDatetime(UTC)  # type: ignore[attr-defined, no-any-return]


def status_change(event: order_events.OrderStatusChanged) -> domain.StatusChange:
    return domain.StatusChange(
        order_id=event.order_id,
        channel_id=event.channel.channel_id,
        channel_order_id=event.channel.channel_order_id,
        status=status_name(event.status),
        previous_status=status_name(event.previous_status),
        lifecycle_status=status_name(event.lifecycle_status),
        status_sequence=event.status_sequence,
        changed_at=_when(event.changed_at, event.HasField("changed_at")),
        reason=event.reason,
        lines=[
            domain.LineFacts(
                line_id=line.line_id,
                sku=line.sku,
                channel_sku=line.channel_sku,
                ordered=line.quantities.ordered or line.base_quantity or line.quantity.value,
                shipped=line.quantities.shipped,
                canceled=line.quantities.canceled,
                returned=line.quantities.returned,
                backordered=line.quantities.backordered,
                backorder_eta=_when(line.backorder_eta, line.HasField("backorder_eta")),
            )
            for line in event.lines
        ],
        tracking=[
            domain.TrackingFacts(
                shipment_id=t.shipment_id,
                carrier_code=t.carrier_code,
                service_code=t.service_code,
                tracking_number=t.tracking_number,
                tracking_url=t.tracking_url,
                shipped_at=_when(t.shipped_at, t.HasField("shipped_at")),
            )
            for t in event.tracking
        ],
        customer_name=event.customer.name,
        customer_email=event.customer.email,
    )


def rule(row: object) -> domain.EndpointRule:
    return domain.EndpointRule(
        endpoint_id=row.endpoint_id,  # type: ignore[attr-defined]
        channel_id=row.channel_id,  # type: ignore[attr-defined]
        event_types=list(row.event_types),  # type: ignore[attr-defined]
        statuses=list(row.statuses),  # type: ignore[attr-defined]
        vocabulary=row.vocabulary,  # type: ignore[attr-defined]
        enabled=row.enabled,  # type: ignore[attr-defined]
    )


async def on_order_status_changed(
    runtime: Runtime, session: AsyncSession, envelope: envelope_pb2.EventEnvelope
) -> None:
    event = order_events.OrderStatusChanged()
    if not envelope.payload.Unpack(event):
        raise ValueError(f"payload is {envelope.payload.type_url}, not OrderStatusChanged")
    change = status_change(event)
    if not change.channel_id or not change.order_id:
        log.warning("OrderStatusChanged %s has no channel or order id; ignored", envelope.id)
        return
    rows = (
        await session.execute(select(endpoint).where(endpoint.c.channel_id == change.channel_id))
    ).all()
    occurred = _when(envelope.occurred_at, envelope.HasField("occurred_at"))
    ref = domain.DeliveryRef(envelope.id, change.status_sequence, change.changed_at or occurred)
    items: list[store.NewDelivery] = []
    disabled: list[str] = []
    for row in rows:
        wanted = rule(row)
        if not wanted.wants_status(change):
            continue
        if row.kind == "EMAIL":
            document = domain.render_email(change, ref, domain.mailto_address(row.url) or "")
        else:
            document = domain.render_status(wanted.vocabulary, change, ref)
        if document is None:
            continue
        if not wanted.enabled:
            disabled.append(wanted.endpoint_id)
        items.append(
            store.NewDelivery(
                endpoint_id=wanted.endpoint_id,
                channel_id=change.channel_id,
                event_id=envelope.id,
                event_type=envelope.type,
                subject=subject_for(envelope.producer or "order_gateway", envelope.type),
                order_id=change.order_id,
                ordering_key=store.order_key(change.order_id),
                sequence=change.status_sequence,
                content_type=document.content_type,
                body=document.body,
                summary=document.summary,
                envelope=envelope.SerializeToString(),
                correlation_id=envelope.correlation_id,
            )
        )
    _, dead_ids = await store.enqueue(session, items, disabled=disabled)
    dead = await store.dead_letter(session, dead_ids, "endpoint disabled", fresh=True)
    await record_dead_letters(runtime, session, dead)


_GATE = text(
    """
    INSERT INTO availability_seen (warehouse_id, sku, last_sequence)
    SELECT :warehouse, sku, :sequence FROM unnest(CAST(:skus AS text[])) AS t(sku)
    ON CONFLICT (warehouse_id, sku) DO UPDATE SET last_sequence = excluded.last_sequence
    WHERE availability_seen.last_sequence < excluded.last_sequence
    RETURNING sku
    """
)


async def on_availability_changed(
    runtime: Runtime, session: AsyncSession, envelope: envelope_pb2.EventEnvelope
) -> None:
    event = inventory_events.AvailabilityChanged()
    if not envelope.payload.Unpack(event):
        raise ValueError(f"payload is {envelope.payload.type_url}, not AvailabilityChanged")
    subscribers = [
        rule(row)
        for row in (
            await session.execute(
                select(endpoint)
                .where(
                    endpoint.c.enabled.is_(True),
                    endpoint.c.event_types.contains([domain.AVAILABILITY_CHANGED]),
                )
                .order_by(endpoint.c.endpoint_id)
            )
        ).all()
    ]
    warehouse = event.warehouse_id or envelope.aggregate_id
    skus = sorted({entry.sku for entry in event.entries})
    fresh = set(
        (
            await session.execute(
                _GATE, {"warehouse": warehouse, "sequence": envelope.sequence, "skus": skus}
            )
        ).scalars()
    )
    if not subscribers:
        return
    rows: dict[tuple[str, str, str], dict[str, object]] = {}
    for sub in subscribers:
        for entry in event.entries:
            if entry.sku in fresh:
                rows[(sub.endpoint_id, entry.sku, warehouse)] = {
                    "endpoint_id": sub.endpoint_id,
                    "sku": entry.sku,
                    "warehouse_id": warehouse,
                    "available": max(entry.available, 0),
                    "on_hand": entry.on_hand,
                    "incoming": entry.incoming,
                }
        for total in event.channel_totals:
            if total.channel_id == sub.channel_id:
                rows[(sub.endpoint_id, total.sku, "")] = {
                    "endpoint_id": sub.endpoint_id,
                    "sku": total.sku,
                    "warehouse_id": "",
                    "available": max(total.available, 0),
                    "on_hand": 0,
                    "incoming": 0,
                }
    if not rows:
        return
    statement = insert(availability_pending).values([rows[key] for key in sorted(rows)])
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["endpoint_id", "sku", "warehouse_id"],
            set_={
                "available": statement.excluded.available,
                "on_hand": statement.excluded.on_hand,
                "incoming": statement.excluded.incoming,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )


_TAKE_PENDING = text(
    """
    SELECT p.endpoint_id, p.sku, p.warehouse_id, p.available, p.on_hand, p.incoming
    FROM availability_pending AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM delivery AS d
        WHERE d.endpoint_id = p.endpoint_id AND d.ordering_key = :key
          AND d.state IN ('PENDING', 'RETRYING'))
    ORDER BY p.endpoint_id, p.sku, p.warehouse_id
    LIMIT :limit
    FOR UPDATE OF p SKIP LOCKED
    """
)
_DROP_PENDING = text(
    """
    DELETE FROM availability_pending AS p
    USING unnest(CAST(:eps AS text[]), CAST(:skus AS text[]), CAST(:whs AS text[]))
          AS t(endpoint_id, sku, warehouse_id)
    WHERE p.endpoint_id = t.endpoint_id AND p.sku = t.sku AND p.warehouse_id = t.warehouse_id
    """
)


async def flush_availability_once(runtime: Runtime) -> int:
    """One interval: each endpoint's pending SKUs become one delivery. Returns the SKUs sent."""
    async with runtime.sessions.begin() as session:
        rows = (
            await session.execute(
                _TAKE_PENDING, {"key": store.AVAILABILITY_KEY, "limit": FLUSH_BATCH}
            )
        ).all()
        if not rows:
            return 0
        await session.execute(
            _DROP_PENDING,
            {
                "eps": [r.endpoint_id for r in rows],
                "skus": [r.sku for r in rows],
                "whs": [r.warehouse_id for r in rows],
            },
        )
        by_endpoint: dict[str, list[domain.StockFacts]] = {}
        for r in rows:
            by_endpoint.setdefault(r.endpoint_id, []).append(
                domain.StockFacts(r.sku, r.warehouse_id, r.available, r.on_hand, r.incoming)
            )
        endpoints = {
            row.endpoint_id: row
            for row in (
                await session.execute(
                    select(endpoint).where(endpoint.c.endpoint_id.in_(list(by_endpoint)))
                )
            ).all()
        }
        items: list[store.NewDelivery] = []
        now = datetime.now(UTC)
        for endpoint_id in sorted(by_endpoint):
            row = endpoints.get(endpoint_id)
            if row is None or not row.enabled:
                continue  # stale stock levels are not worth keeping for a disabled endpoint
            sequence = await store.next_feed_sequence(session, endpoint_id, store.AVAILABILITY_KEY)
            feed_id = str(uuid.uuid4())
            document = domain.render_availability(
                row.vocabulary, by_endpoint[endpoint_id], domain.DeliveryRef(feed_id, sequence, now)
            )
            if document is None:
                continue
            items.append(
                store.NewDelivery(
                    endpoint_id=endpoint_id,
                    channel_id=row.channel_id,
                    event_id=feed_id,
                    event_type=domain.AVAILABILITY_CHANGED,
                    subject=subject_for("inventory", domain.AVAILABILITY_CHANGED),
                    order_id="",
                    ordering_key=store.AVAILABILITY_KEY,
                    sequence=sequence,
                    content_type=document.content_type,
                    body=document.body,
                    summary=document.summary,
                    envelope=b"",
                )
            )
        await store.enqueue(session, items)
    return len(rows)


async def flush_availability(runtime: Runtime, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            sent = await flush_availability_once(runtime)
        except Exception:
            log.exception("availability flush failed; retrying")
            sent = 0
        if sent < FLUSH_BATCH:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def handlers(runtime: Runtime) -> dict[str, EventHandler]:
    """Handler per durable consumer name (also used to replay consumption dead letters)."""
    return {
        ORDER_STATUS_DURABLE: partial(on_order_status_changed, runtime),
        AVAILABILITY_DURABLE: partial(on_availability_changed, runtime),
    }


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    by_name = handlers(runtime)
    return (
        ConsumerSpec(
            durable=ORDER_STATUS_DURABLE,
            stream=STREAMS["order_gateway"].name,
            subjects=[subject_for("order_gateway", domain.ORDER_STATUS_CHANGED)],
            handler=by_name[ORDER_STATUS_DURABLE],
        ),
        ConsumerSpec(
            durable=AVAILABILITY_DURABLE,
            stream=STREAMS["inventory"].name,
            subjects=[subject_for("inventory", domain.AVAILABILITY_CHANGED)],
            handler=by_name[AVAILABILITY_DURABLE],
        ),
    )


def workers(runtime: Runtime, settings: NotifySettings, deliverer: Deliverer) -> Sequence[Worker]:
    return (
        ("delivery worker", deliverer.run),
        (
            "availability flusher",
            lambda stop: flush_availability(runtime, settings.availability_interval_seconds, stop),
        ),
    )
