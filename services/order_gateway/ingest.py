"""IngestChannelOrder: a raw channel payload → the canonical order → the same acceptance as
AcceptOrder.

A refused payload (unparseable, invalid, unknown alias or unit) answers INVALID_ARGUMENT with
BadRequest field violations naming paths in the channel's payload, plus an
IngestChannelOrderResponse detail carrying the issues and, for X12, the 855 reject to send
back. The raw payload is kept in an ingest exception record for operators and
ChannelOrderRejected is published; no order is written.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from chassis.errors import FailedPrecondition, FieldViolation, InvalidArgument
from chassis.outbox import PendingEvent
from chassis.protos import ts
from chassis.validation import Violations
from dwf.common.v1 import common_pb2
from dwf.order.v1 import events_pb2
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway.adapters import adapt
from services.order_gateway.adapters import x12 as x12_adapter
from services.order_gateway.adapters.common import AdaptedOrder
from services.order_gateway.api import OrderGatewayService, channel_of
from services.order_gateway.auth import require_channel
from services.order_gateway.domain import MasterData, Principal
from services.order_gateway.store import orders as store

S = common_pb2
MAX_PAYLOAD = 4 * 1024 * 1024
FORMATS = {
    S.CHANNEL_FORMAT_SHOPIFY_JSON: "SHOPIFY_JSON",
    S.CHANNEL_FORMAT_AMAZON_JSON: "AMAZON_JSON",
    S.CHANNEL_FORMAT_B2B_PORTAL_JSON: "B2B_PORTAL_JSON",
    S.CHANNEL_FORMAT_X12_850: "X12_850",
}


def control_number(*parts: str) -> int:
    """A stable interchange control number for the answer to one request (a retry gets the
    same document)."""
    return zlib.crc32("\x1f".join(parts).encode()) % 1_000_000_000 or 1


def acknowledgement(
    adapted: AdaptedOrder, request_id: str, order: pb.Order | None, accepted: bool
) -> str:
    """The X12 855 for an 850: per-line accept/backorder when accepted, a reject otherwise."""
    if adapted.x12 is None:
        return ""
    acks = None
    if order is not None and accepted:
        acks = []
        for line in order.lines:
            short = line.quantities.ordered - line.quantities.reserved
            acks.append(
                x12_adapter.LineAck(
                    line_id=line.line_id,
                    status="IA" if short <= 0 else "IB",
                    quantity=line.quantity.value,
                    unit=_channel_unit(adapted, line.line_id),
                    scheduled_date=line.backorder_eta.ToDatetime(tzinfo=UTC).date()
                    if short > 0 and line.HasField("backorder_eta")
                    else None,
                )
            )
    document: str = x12_adapter.build_855(
        adapted.x12,
        acks,
        accepted=accepted,
        control_number=control_number(request_id, adapted.channel_order_id),
        now=datetime.now(UTC),
    )
    return document


def _channel_unit(adapted: AdaptedOrder, line_id: str) -> str:
    if adapted.order is None:
        return "EA"
    for line in adapted.order.lines:
        if line.line_id == line_id:
            return line.quantity.unit_of_measure or "EA"
    return "EA"


async def ingest(
    service: OrderGatewayService,
    principal: Principal,
    master: MasterData,
    request: pb.IngestChannelOrderRequest,
) -> pb.IngestChannelOrderResponse:
    v = Violations()
    v.request_id(request.request_id)
    v.check(bool(request.channel_id), "channel_id", "required")
    v.check(request.format in FORMATS, "format", "a channel payload format (not CANONICAL)")
    v.check(0 < len(request.payload) <= MAX_PAYLOAD, "payload", "required, at most 4 MiB")
    v.check(len(request.hold_id) <= 64, "hold_id", "at most 64 characters")
    v.raise_if_any()
    require_channel(principal, request.channel_id)
    channel_of(master, request.channel_id)
    adapted = adapt(request.format, request.payload)
    if adapted.issues or adapted.order is None:
        issues = [
            pb.ValidationIssue(field_path=i.field_path, code=i.code, message=i.message)
            for i in adapted.issues
        ]
        if not issues:
            issues = [pb.ValidationIssue(code="UNPARSEABLE_PAYLOAD", message="no order found")]
        await reject(service, request, adapted, issues)
    assert adapted.order is not None
    canonical = pb.AcceptOrderRequest()
    canonical.CopyFrom(adapted.order)
    canonical.request_id = request.request_id
    canonical.channel.channel_id = request.channel_id
    canonical.hold_id = request.hold_id
    paths: dict[int, dict[str, str]] = {}
    for i, line in enumerate(canonical.lines):
        found = adapted.line_paths.get(line.line_id)
        if found is not None:
            paths[i] = {"sku": found.sku, "unit": found.unit}
    try:
        prepared = await service.prepare(principal, master, canonical, request.format, paths)
    except InvalidArgument as exc:
        issues = [
            pb.ValidationIssue(field_path=f.field, code=exc.reason, message=f.description)
            for f in exc.violations
        ]
        await reject(service, request, adapted, issues)
        raise  # unreachable: reject raises

    async def work(session: AsyncSession) -> pb.IngestChannelOrderResponse:
        accepted = await service.accept(session, prepared)
        return pb.IngestChannelOrderResponse(
            order=accepted.order,
            existing_order=accepted.existing_order,
            acknowledgement_document=acknowledgement(
                adapted, request.request_id, accepted.order, accepted=True
            ),
        )

    try:
        return await service.runtime.once(
            "IngestChannelOrder", request, pb.IngestChannelOrderResponse, work
        )
    except FailedPrecondition as exc:
        # Refused for stock by channel policy: the trading partner still gets its 855.
        exc.attachments.append(
            pb.IngestChannelOrderResponse(
                acknowledgement_document=acknowledgement(
                    adapted, request.request_id, None, accepted=False
                ),
                issues=[pb.ValidationIssue(code=exc.reason, message=exc.message)],
            )
        )
        raise


async def reject(
    service: OrderGatewayService,
    request: pb.IngestChannelOrderRequest,
    adapted: AdaptedOrder,
    issues: list[pb.ValidationIssue],
) -> None:
    """Keep the payload for operators, tell the channel's operations contact, and refuse."""
    digest = hashlib.sha256(request.payload).hexdigest()
    ack = acknowledgement(adapted, request.request_id, None, accepted=False)
    now = datetime.now(UTC)
    aggregate = (
        f"{request.channel_id}:{adapted.channel_order_id}"
        if adapted.channel_order_id
        else f"{request.channel_id}:request:{request.request_id}"
    )
    async with service.runtime.sessions.begin() as session:
        first = await store.record_ingest_exception(
            session,
            request_id=request.request_id,
            channel_id=request.channel_id,
            fmt=FORMATS[request.format],
            channel_order_id=adapted.channel_order_id,
            payload=request.payload,
            payload_sha256=digest,
            issues=[
                {"field_path": i.field_path, "code": i.code, "message": i.message} for i in issues
            ],
        )
        if first:
            await service.runtime.events.record_many(
                session,
                [
                    PendingEvent(
                        "channel_order",
                        aggregate,
                        events_pb2.ChannelOrderRejected(
                            channel=common_pb2.ChannelReference(
                                channel_id=request.channel_id,
                                channel_order_id=adapted.channel_order_id,
                                format=request.format,
                            ),
                            request_id=request.request_id,
                            issues=issues,
                            received_at=ts(now),
                            acknowledgement_document=ack,
                            payload_sha256=digest,
                        ),
                    )
                ],
            )
    error = InvalidArgument(
        [FieldViolation(i.field_path or "payload", f"{i.code}: {i.message}") for i in issues],
        reason="CHANNEL_ORDER_REJECTED",
    )
    error.attachments.append(
        pb.IngestChannelOrderResponse(issues=issues, acknowledgement_document=ack)
    )
    raise error
