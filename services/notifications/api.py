"""gRPC API of the notifications service: proto ↔ domain translation, validation, and the
transaction script of each RPC.

Validation happens before any transaction, so a refused request writes nothing. Mutating RPCs
run through ``Runtime.once`` (request_id idempotency, one transaction with their outbox
events).
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import (
    Integer,
    LargeBinary,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from chassis.pagination import encode_page_token, filters_of, page_after
from chassis.protos import ts
from chassis.schema import dead_letter, inbox
from chassis.server import Runtime
from chassis.validation import Violations
from dwf.common.v1 import common_pb2
from dwf.events.v1 import envelope_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from dwf.notifications.v1 import notifications_pb2_grpc
from services.notifications import domain
from services.notifications.delivery import DISABLE_REASONS, disable_endpoint
from services.notifications.settings import NotifySettings
from services.notifications.store import deliveries as store
from services.notifications.store.tables import (
    channel_dead_letter,
    consumption_replay,
    delivery,
    delivery_queue,
    endpoint,
)

KINDS = {
    pb.ENDPOINT_KIND_WEBHOOK: "WEBHOOK",
    pb.ENDPOINT_KIND_EMAIL: "EMAIL",
    pb.ENDPOINT_KIND_MARKETPLACE_API: "MARKETPLACE_API",
    pb.ENDPOINT_KIND_EDI: "EDI",
}
KIND_ENUM = {name: value for value, name in KINDS.items()}
DELIVERY_STATES = {
    pb.DELIVERY_STATE_PENDING: "PENDING",
    pb.DELIVERY_STATE_RETRYING: "RETRYING",
    pb.DELIVERY_STATE_SUCCEEDED: "SUCCEEDED",
    pb.DELIVERY_STATE_DEAD_LETTERED: "DEAD_LETTERED",
    pb.DELIVERY_STATE_SUPERSEDED: "SUPERSEDED",
}
DELIVERY_STATE_ENUM = {name: value for value, name in DELIVERY_STATES.items()}
DL_KINDS = {
    pb.DEAD_LETTER_KIND_CHANNEL_DELIVERY: "CHANNEL_DELIVERY",
    pb.DEAD_LETTER_KIND_EVENT_CONSUMPTION: "EVENT_CONSUMPTION",
}
DL_KIND_ENUM = {name: value for value, name in DL_KINDS.items()}
DL_STATES = {pb.DEAD_LETTER_STATE_PENDING: "PENDING", pb.DEAD_LETTER_STATE_REPLAYED: "REPLAYED"}
DL_STATE_ENUM = {name: value for value, name in DL_STATES.items()}
STATUS_NAMES = {
    value: name.removeprefix("ORDER_STATUS_")
    for name, value in common_pb2.OrderStatus.items()
    if value != common_pb2.ORDER_STATUS_UNSPECIFIED
}
STATUS_ENUM = {name: value for value, name in STATUS_NAMES.items()}
CONSUMPTION_PREFIX = "consumption-"
DEFAULT_PAGE, MAX_PAGE = 50, 500
DEFAULT_REPLAY, MAX_REPLAY = 1000, 10000
MAX_CHANNEL_ID = 128


# --- conversions ----------------------------------------------------------------------------


def endpoint_proto(row: Any) -> pb.ChannelEndpoint:
    return pb.ChannelEndpoint(
        endpoint_id=row.endpoint_id,
        channel_id=row.channel_id,
        kind=KIND_ENUM.get(row.kind, pb.ENDPOINT_KIND_UNSPECIFIED),
        url=row.url,
        has_secret=bool(row.secret),
        event_types=list(row.event_types),
        statuses=[STATUS_ENUM[s] for s in row.statuses if s in STATUS_ENUM],
        vocabulary=row.vocabulary,
        enabled=row.enabled,
        disabled_reason=DISABLE_REASONS.get(row.disabled_reason, pb.DISABLE_REASON_UNSPECIFIED),
        disabled_at=ts(row.disabled_at),
        created_at=ts(row.created_at),
        updated_at=ts(row.updated_at),
    )


def delivery_proto(row: Any) -> pb.Delivery:
    return pb.Delivery(
        delivery_id=str(row.delivery_id),
        channel_id=row.channel_id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        order_id=row.order_id,
        status_sequence=row.sequence if row.order_id else 0,
        state=DELIVERY_STATE_ENUM[row.state],
        attempts=row.attempts,
        last_http_status=row.last_http_status,
        last_error=row.last_error,
        created_at=ts(row.created_at),
        last_attempt_at=ts(row.last_attempt_at),
        next_attempt_at=ts(row.next_attempt_at) if row.state == "RETRYING" else None,
        delivered_at=ts(row.delivered_at) if row.state == "SUCCEEDED" else None,
    )


def dead_letter_proto(row: Any) -> pb.DeadLetter:
    return pb.DeadLetter(
        dead_letter_id=row.id,
        kind=DL_KIND_ENUM[row.kind],
        state=DL_STATE_ENUM[row.state],
        event_id=row.event_id,
        event_type=row.event_type,
        subject=row.subject,
        consumer=row.consumer,
        channel_id=row.channel_id,
        endpoint_id=row.endpoint_id,
        delivery_id=row.delivery_id,
        order_id=row.order_id,
        attempts=row.attempts,
        last_http_status=row.last_http_status,
        last_error=row.last_error,
        dead_lettered_at=ts(row.dead_lettered_at),
        replayed_at=ts(row.replayed_at),
        replay_count=row.replay_count,
        envelope=row.envelope,
    )


# --- paging (AIP-158) -----------------------------------------------------------------------


def page_size(v: Violations, value: int) -> int:
    v.check(value >= 0, "page_size", "must be >= 0")
    return min(value or DEFAULT_PAGE, MAX_PAGE)


# --- validation -----------------------------------------------------------------------------


def check_endpoint(
    v: Violations, e: pb.ChannelEndpoint, settings: NotifySettings, field: str = "endpoint"
) -> None:
    v.check(
        domain.ENDPOINT_ID.fullmatch(e.endpoint_id) is not None,
        f"{field}.endpoint_id",
        "required: 1 to 64 characters of [a-z0-9._-]",
    )
    v.check(
        0 < len(e.channel_id) <= MAX_CHANNEL_ID,
        f"{field}.channel_id",
        f"required, at most {MAX_CHANNEL_ID} characters",
    )
    kind = KINDS.get(e.kind)
    v.check(kind is not None, f"{field}.kind", "required: WEBHOOK, EMAIL, MARKETPLACE_API or EDI")
    check_url(v, kind, e.url, settings, f"{field}.url")
    if e.secret:
        v.check(
            len(e.secret) >= domain.MIN_SECRET_LENGTH,
            f"{field}.secret",
            f"at least {domain.MIN_SECRET_LENGTH} characters of high entropy",
        )
    seen: set[str] = set()
    for i, event_type in enumerate(e.event_types):
        v.check(
            event_type in domain.SUPPORTED_EVENT_TYPES,
            f"{field}.event_types[{i}]",
            f"unsupported; one of {', '.join(domain.SUPPORTED_EVENT_TYPES)}",
        )
        v.check(event_type not in seen, f"{field}.event_types[{i}]", "duplicate")
        seen.add(event_type)
    for i, status in enumerate(e.statuses):
        v.check(status in STATUS_NAMES, f"{field}.statuses[{i}]", "unknown or unspecified status")
    if kind == "EMAIL":
        v.check(
            domain.AVAILABILITY_CHANGED not in e.event_types,
            f"{field}.event_types",
            "stock levels are not sent by email",
        )
    v.check(
        e.vocabulary in domain.VOCABULARIES,
        f"{field}.vocabulary",
        f"required: one of {', '.join(domain.VOCABULARIES)}",
    )


def check_url(
    v: Violations, kind: str | None, url: str, settings: NotifySettings, field: str
) -> None:
    if not v.check(bool(url), field, "required"):
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        v.add(field, "not a URL")
        return
    if kind == "EMAIL":
        v.check(
            domain.mailto_address(url) is not None,
            field,
            'must be "mailto:<address>", or "mailto:" for the order\'s customer',
        )
        return
    if kind == "EDI" and parts.scheme == "sftp":
        v.add(field, "sftp transport is not supported yet: use an AS2 (https) URL")
        return
    schemes = ("https", "http") if settings.allow_http else ("https",)
    v.check(
        parts.scheme in schemes and bool(parts.hostname),
        field,
        "must be an https URL" if not settings.allow_http else "must be an http(s) URL",
    )


def check_filter(v: Violations, f: pb.DeadLetterFilter, field: str = "filter") -> None:
    v.check(
        f.kind == pb.DEAD_LETTER_KIND_UNSPECIFIED or f.kind in DL_KINDS,
        f"{field}.kind",
        "unknown kind",
    )
    v.check(
        f.state == pb.DEAD_LETTER_STATE_UNSPECIFIED or f.state in DL_STATES,
        f"{field}.state",
        "unknown state",
    )


# --- dead letters: one view over channel deliveries and failed event consumption -----------


def dead_letter_view() -> Any:
    channel = (
        select(
            cast(channel_dead_letter.c.dead_letter_id, Text).label("id"),
            literal("CHANNEL_DELIVERY").label("kind"),
            channel_dead_letter.c.state,
            channel_dead_letter.c.event_id,
            channel_dead_letter.c.event_type,
            channel_dead_letter.c.subject,
            literal("").label("consumer"),
            channel_dead_letter.c.channel_id,
            channel_dead_letter.c.endpoint_id,
            cast(channel_dead_letter.c.delivery_id, Text).label("delivery_id"),
            channel_dead_letter.c.order_id,
            channel_dead_letter.c.attempts,
            channel_dead_letter.c.last_http_status,
            channel_dead_letter.c.last_error,
            channel_dead_letter.c.dead_lettered_at,
            channel_dead_letter.c.replayed_at,
            channel_dead_letter.c.replay_count,
            delivery.c.envelope,
        )
        .select_from(channel_dead_letter)
        .join(delivery, delivery.c.delivery_id == channel_dead_letter.c.delivery_id)
    )
    consumption = (
        select(
            (literal(CONSUMPTION_PREFIX) + cast(dead_letter.c.id, Text)).label("id"),
            literal("EVENT_CONSUMPTION").label("kind"),
            case(
                (consumption_replay.c.dead_letter_id.is_(None), "PENDING"), else_="REPLAYED"
            ).label("state"),
            dead_letter.c.event_id,
            dead_letter.c.event_type,
            dead_letter.c.subject,
            dead_letter.c.consumer,
            literal("").label("channel_id"),
            literal("").label("endpoint_id"),
            literal("").label("delivery_id"),
            literal("").label("order_id"),
            dead_letter.c.deliveries.label("attempts"),
            cast(literal(0), Integer).label("last_http_status"),
            dead_letter.c.error.label("last_error"),
            dead_letter.c.dead_lettered_at,
            consumption_replay.c.replayed_at,
            func.coalesce(consumption_replay.c.replay_count, 0).label("replay_count"),
            cast(dead_letter.c.body, LargeBinary).label("envelope"),
        )
        .select_from(dead_letter)
        .outerjoin(consumption_replay, consumption_replay.c.dead_letter_id == dead_letter.c.id)
    )
    return union_all(channel, consumption).subquery("dl")


def filter_conditions(view: Any, f: pb.DeadLetterFilter) -> list[Any]:
    conditions: list[Any] = []
    if f.kind in DL_KINDS:
        conditions.append(view.c.kind == DL_KINDS[f.kind])
    if f.state in DL_STATES:
        conditions.append(view.c.state == DL_STATES[f.state])
    if f.channel_id:
        conditions.append(view.c.channel_id == f.channel_id)
    if f.endpoint_id:
        conditions.append(view.c.endpoint_id == f.endpoint_id)
    if f.event_types:
        conditions.append(view.c.event_type.in_(list(f.event_types)))
    if f.order_id:
        conditions.append(view.c.order_id == f.order_id)
    if f.HasField("dead_lettered_after"):
        conditions.append(view.c.dead_lettered_at >= f.dead_lettered_after.ToDatetime(UTC))
    if f.HasField("dead_lettered_before"):
        conditions.append(view.c.dead_lettered_at < f.dead_lettered_before.ToDatetime(UTC))
    return conditions


class NotificationService(notifications_pb2_grpc.NotificationServiceServicer):
    def __init__(
        self, runtime: Runtime, settings: NotifySettings, handlers: dict[str, Any] | None = None
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        # Consumer handlers by durable name, to replay failed event consumption.
        self.handlers = handlers or {}

    # --- endpoints --------------------------------------------------------------------------

    async def UpsertChannelEndpoint(
        self, request: pb.UpsertChannelEndpointRequest, context: Any
    ) -> pb.UpsertChannelEndpointResponse:
        v = Violations()
        v.request_id(request.request_id)
        if v.check(request.HasField("endpoint"), "endpoint", "required"):
            check_endpoint(v, request.endpoint, self.settings)
        v.raise_if_any()
        e = request.endpoint

        async def work(session: AsyncSession) -> pb.UpsertChannelEndpointResponse:
            kind = KINDS[e.kind]
            existing = (
                await session.execute(
                    select(endpoint)
                    .where(endpoint.c.endpoint_id == e.endpoint_id)
                    .with_for_update()
                )
            ).first()
            secret = e.secret or (existing.secret if existing is not None else "")
            if kind == "WEBHOOK" and not secret:
                raise InvalidArgument(
                    [FieldViolation("endpoint.secret", "required for a new WEBHOOK endpoint")]
                )
            values = {
                "channel_id": e.channel_id,
                "kind": kind,
                "url": e.url,
                "secret": secret,
                "event_types": list(e.event_types),
                "statuses": [STATUS_NAMES[s] for s in e.statuses],
                "vocabulary": e.vocabulary,
                "enabled": e.enabled,
                "updated_at": func.now(),
            }
            if existing is None:
                row = (
                    await session.execute(
                        insert(endpoint)
                        .values(
                            endpoint_id=e.endpoint_id,
                            disabled_reason="" if e.enabled else "OPERATOR",
                            disabled_at=None if e.enabled else func.now(),
                            **values,
                        )
                        .returning(*endpoint.c)
                    )
                ).one()
                return pb.UpsertChannelEndpointResponse(endpoint=endpoint_proto(row), created=True)
            if existing.enabled and not e.enabled:
                values["enabled"] = True  # disabled below, with its alert and backlog
            elif e.enabled:
                values.update(disabled_reason="", disabled_at=None)
            await session.execute(
                update(endpoint).where(endpoint.c.endpoint_id == e.endpoint_id).values(**values)
            )
            if existing.enabled and not e.enabled:
                await disable_endpoint(
                    self.runtime, session, e.endpoint_id, reason="OPERATOR", error="operator"
                )
            query = select(endpoint).where(endpoint.c.endpoint_id == e.endpoint_id)
            row = (await session.execute(query)).one()
            return pb.UpsertChannelEndpointResponse(endpoint=endpoint_proto(row), created=False)

        return await self.runtime.once(
            "UpsertChannelEndpoint", request, pb.UpsertChannelEndpointResponse, work
        )

    # --- deliveries -------------------------------------------------------------------------

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Any
    ) -> pb.ListDeliveriesResponse:
        v = Violations()
        limit = page_size(v, request.page_size)
        states = []
        for i, state in enumerate(request.states):
            if v.check(state in DELIVERY_STATES, f"states[{i}]", "unknown or unspecified state"):
                states.append(DELIVERY_STATES[state])
        fingerprint = filters_of(request)
        after = page_after(v, request.page_token, fingerprint)
        v.raise_if_any()
        delivery_key = cast(delivery.c.delivery_id, Text)
        query = select(delivery).order_by(delivery.c.created_at.desc(), delivery_key.desc())
        if request.channel_id:
            query = query.where(delivery.c.channel_id == request.channel_id)
        if request.endpoint_id:
            query = query.where(delivery.c.endpoint_id == request.endpoint_id)
        if request.order_id:
            query = query.where(delivery.c.order_id == request.order_id)
        if request.event_id:
            query = query.where(delivery.c.event_id == request.event_id)
        if states:
            query = query.where(delivery.c.state.in_(states))
        if request.HasField("created_after"):
            query = query.where(delivery.c.created_at >= request.created_after.ToDatetime(UTC))
        if after is not None:
            query = query.where(
                tuple_(delivery.c.created_at, delivery_key)
                < tuple_(literal(after[0]), literal(after[1]))
            )
        async with self.runtime.reads.connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        page, more = rows[:limit], len(rows) > limit
        token = (
            encode_page_token(fingerprint, page[-1].created_at, str(page[-1].delivery_id))
            if more
            else ""
        )
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_proto(r) for r in page], next_page_token=token
        )

    # --- dead letters -----------------------------------------------------------------------

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Any
    ) -> pb.ListDeadLettersResponse:
        v = Violations()
        limit = page_size(v, request.page_size)
        check_filter(v, request.filter)
        fingerprint = filters_of(request)
        after = page_after(v, request.page_token, fingerprint)
        v.raise_if_any()
        view = dead_letter_view()
        conditions = filter_conditions(view, request.filter)
        if after is not None:
            conditions.append(
                tuple_(view.c.dead_lettered_at, view.c.id)
                < tuple_(literal(after[0]), literal(after[1]))
            )
        query = (
            select(view)
            .where(and_(True, *conditions))
            .order_by(view.c.dead_lettered_at.desc(), view.c.id.desc())
            .limit(limit + 1)
        )
        async with self.runtime.reads.connect() as conn:
            rows = (await conn.execute(query)).all()
        page, more = rows[:limit], len(rows) > limit
        token = (
            encode_page_token(fingerprint, page[-1].dead_lettered_at, page[-1].id) if more else ""
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[dead_letter_proto(r) for r in page], next_page_token=token
        )

    async def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context: Any
    ) -> pb.ReplayDeadLetterResponse:
        v = Violations()
        v.request_id(request.request_id)
        target = request.WhichOneof("target")
        v.check(target is not None, "target", "required: dead_letter_id or filter")
        if target == "dead_letter_id":
            v.check(bool(request.dead_letter_id), "dead_letter_id", "required")
        if target == "filter":
            check_filter(v, request.filter)
            v.check(0 <= request.max_count <= MAX_REPLAY, "max_count", f"must be 0..{MAX_REPLAY}")
        v.raise_if_any()

        async def work(session: AsyncSession) -> pb.ReplayDeadLetterResponse:
            response = pb.ReplayDeadLetterResponse()
            if target == "dead_letter_id":
                await self._replay(session, request.dead_letter_id, response, single=True)
                return response
            limit = request.max_count or DEFAULT_REPLAY
            view = dead_letter_view()
            conditions = filter_conditions(view, request.filter)
            conditions.append(view.c.state == "PENDING")
            ids = list(
                (
                    await session.execute(
                        select(view.c.id)
                        .where(and_(True, *conditions))
                        .order_by(view.c.dead_lettered_at, view.c.id)
                        .limit(limit + 1)
                    )
                ).scalars()
            )
            response.truncated = len(ids) > limit
            for dead_letter_id in ids[:limit]:
                await self._replay(session, dead_letter_id, response, single=False)
            return response

        return await self.runtime.once(
            "ReplayDeadLetter", request, pb.ReplayDeadLetterResponse, work
        )

    async def _replay(
        self,
        session: AsyncSession,
        dead_letter_id: str,
        response: pb.ReplayDeadLetterResponse,
        *,
        single: bool,
    ) -> None:
        if dead_letter_id.startswith(CONSUMPTION_PREFIX):
            reason = await self._replay_consumption(session, dead_letter_id, single)
        else:
            reason = await self._replay_delivery(session, dead_letter_id, single)
        if reason:
            skipped = pb.SkippedDeadLetter(dead_letter_id=dead_letter_id, reason=reason)
            response.skipped.append(skipped)
        else:
            response.replayed_dead_letter_ids.append(dead_letter_id)

    async def _replay_delivery(
        self, session: AsyncSession, dead_letter_id: str, single: bool
    ) -> str:
        """Queue the dead-lettered delivery again (a fresh retry cycle). Returns a skip
        reason, or "" when replayed. The dead letter's row lock and PENDING state make a
        second replay find it REPLAYED: the delivery is queued exactly once."""
        try:
            uuid.UUID(dead_letter_id)
        except ValueError:
            raise NotFound("no such dead letter", dead_letter_id=dead_letter_id) from None
        row = (
            await session.execute(
                select(
                    channel_dead_letter.c.state,
                    channel_dead_letter.c.delivery_id,
                    delivery.c.endpoint_id,
                    delivery.c.ordering_key,
                    delivery.c.sequence,
                    endpoint.c.enabled,
                    endpoint.c.endpoint_id.label("endpoint_exists"),
                )
                .select_from(channel_dead_letter)
                .join(delivery, delivery.c.delivery_id == channel_dead_letter.c.delivery_id)
                .outerjoin(endpoint, endpoint.c.endpoint_id == delivery.c.endpoint_id)
                .where(channel_dead_letter.c.dead_letter_id == dead_letter_id)
                .with_for_update(of=channel_dead_letter)
            )
        ).first()
        if row is None:
            raise NotFound("no such dead letter", dead_letter_id=dead_letter_id)
        if row.state != "PENDING":
            if single:
                raise already_replayed(dead_letter_id)
            return "ALREADY_REPLAYED"
        if row.endpoint_exists is None:
            return "ENDPOINT_DELETED"
        if not row.enabled:
            return "ENDPOINT_DISABLED"
        # Queue row first (the engine's lock order: queue, then its deliveries).
        delivered = await session.scalar(
            select(delivery_queue.c.delivered_sequence)
            .where(
                delivery_queue.c.endpoint_id == row.endpoint_id,
                delivery_queue.c.ordering_key == row.ordering_key,
            )
            .with_for_update()
        )
        if row.sequence > 0 and delivered is not None and row.sequence <= delivered:
            return "SUPERSEDED"
        await session.execute(
            update(delivery)
            .where(delivery.c.delivery_id == row.delivery_id, delivery.c.state == "DEAD_LETTERED")
            .values(state="PENDING", attempts=0, next_attempt_at=func.now(), last_error="")
        )
        await session.execute(
            update(channel_dead_letter)
            .where(channel_dead_letter.c.dead_letter_id == dead_letter_id)
            .values(
                state="REPLAYED",
                replayed_at=func.now(),
                replay_count=channel_dead_letter.c.replay_count + 1,
            )
        )
        await store.wake_queues(session, [(row.endpoint_id, row.ordering_key)])
        await session.execute(
            text("SELECT pg_notify(:channel, '')"),
            {"channel": store.notify_channel(self.runtime.settings.schema_name)},
        )
        return ""

    async def _replay_consumption(
        self, session: AsyncSession, dead_letter_id: str, single: bool
    ) -> str:
        """Apply a dead-lettered event again, through the inbox (once per consumer)."""
        number = dead_letter_id.removeprefix(CONSUMPTION_PREFIX)
        if not number.isdigit():
            raise NotFound("no such dead letter", dead_letter_id=dead_letter_id)
        row = (
            await session.execute(
                select(
                    dead_letter.c.consumer,
                    dead_letter.c.body,
                    consumption_replay.c.dead_letter_id.label("replayed"),
                )
                .select_from(dead_letter)
                .outerjoin(
                    consumption_replay, consumption_replay.c.dead_letter_id == dead_letter.c.id
                )
                .where(dead_letter.c.id == int(number))
                .with_for_update(of=dead_letter)
            )
        ).first()
        if row is None:
            raise NotFound("no such dead letter", dead_letter_id=dead_letter_id)
        if row.replayed is not None:
            if single:
                raise already_replayed(dead_letter_id)
            return "ALREADY_REPLAYED"
        handler = self.handlers.get(row.consumer)
        if handler is None:
            return "UNKNOWN_CONSUMER"
        try:
            envelope = envelope_pb2.EventEnvelope.FromString(row.body)
            uuid.UUID(envelope.id)
        except Exception:
            return "UNDECODABLE"
        try:
            async with session.begin_nested():
                first = await session.scalar(
                    insert(inbox)
                    .values(consumer=row.consumer, event_id=envelope.id, event_type=envelope.type)
                    .on_conflict_do_nothing()
                    .returning(inbox.c.event_id)
                )
                if first is not None:
                    await handler(session, envelope)
        except Exception as exc:
            return domain.excerpt(f"HANDLER_FAILED: {exc!r}", 200)
        await session.execute(
            insert(consumption_replay)
            .values(dead_letter_id=int(number), replayed_at=func.now(), replay_count=1)
            .on_conflict_do_update(
                index_elements=["dead_letter_id"],
                set_={
                    "replayed_at": func.now(),
                    "replay_count": consumption_replay.c.replay_count + 1,
                },
            )
        )
        await session.execute(
            text("SELECT pg_notify(:channel, '')"),
            {"channel": store.notify_channel(self.runtime.settings.schema_name)},
        )
        return ""


def already_replayed(dead_letter_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        "the dead letter was already replayed",
        "ALREADY_REPLAYED",
        metadata={"dead_letter_id": dead_letter_id},
    )
