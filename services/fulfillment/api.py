"""gRPC API of the fulfillment service: the order's fulfillment view, operator
cancellations and returns, and the exception workbench.

Cancellations and returns go through the same durable steps as the gateway's requests
(services.fulfillment.workflow): the RPC records the request and answers at once; the
outcome follows as events (OrderCanceled, ReturnAuthorized…).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from chassis.errors import PreconditionViolation as Violation
from chassis.pagination import encode_page_token, page_after
from chassis.protos import ts
from chassis.server import Runtime
from chassis.validation import Violations
from dwf.common.v1 import common_pb2 as S
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.fulfillment.v1 import fulfillment_pb2_grpc
from dwf.order.v1 import events_pb2 as order_events
from services.fulfillment import domain
from services.fulfillment.engine import Task, TaskEngine
from services.fulfillment.store import workflow as store
from services.fulfillment.store.tables import (
    exception_record,
    invoice,
    order_workflow,
    shipment,
    workflow_task,
)
from services.fulfillment.workflow import Workflow, derived_id

MAX_PAGE = 500
DEFAULT_PAGE = 50
STATE_NAMES = {
    fpb.EXCEPTION_STATE_OPEN: "OPEN",
    fpb.EXCEPTION_STATE_RETRYING: "RETRYING",
    fpb.EXCEPTION_STATE_RESOLVED: "RESOLVED",
}
CATEGORY_NAMES = {
    value: name.removeprefix("EXCEPTION_CATEGORY_")
    for name, value in fpb.ExceptionCategory.items()
    if value
}


class FulfillmentService(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    def __init__(self, runtime: Runtime, engine: TaskEngine, workflow: Workflow) -> None:
        self.runtime = runtime
        self.engine = engine
        self.workflow = workflow

    async def _order(self, session: AsyncSession, order_id: str) -> store.OrderRow:
        row = await store.load_order(session, order_id)
        if row is None:
            raise NotFound(f"order {order_id!r} not found", "ORDER_NOT_FOUND")
        return row

    async def CancelOrder(
        self, request: fpb.CancelOrderRequest, context: Any
    ) -> fpb.CancelOrderResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.order_id), "order_id", "required")
        v.check(0 < len(request.reason_code) <= 64, "reason_code", "required, at most 64 chars")
        v.check(len(request.note) <= 1000, "note", "at most 1000 characters")
        for i, line in enumerate(request.lines):
            v.check(bool(line.line_id), f"lines[{i}].line_id", "required")
            v.check(line.quantity >= 0, f"lines[{i}].quantity", "must be >= 0")
        v.raise_if_any()

        async def work(session: AsyncSession) -> fpb.CancelOrderResponse:
            row = await self._order(session, request.order_id)
            unknown = [sel.line_id for sel in request.lines if sel.line_id not in row.lines]
            if unknown:
                raise InvalidArgument(
                    [FieldViolation("lines", f"no line {lid!r}") for lid in unknown]
                )
            asked = {sel.line_id: sel.quantity for sel in request.lines}
            pending, refused = [], []
            for line_id, state in sorted(row.lines.items()):
                if asked and line_id not in asked:
                    continue
                want = asked.get(line_id) or state.open
                if state.open > 0:
                    pending.append(S.LineSelection(line_id=line_id, quantity=min(want, state.open)))
                if want > state.open and state.shipped > 0:
                    refused.append(
                        S.LineSelection(
                            line_id=line_id, quantity=min(want - state.open, state.shipped)
                        )
                    )
            cancellation_id = request.cancellation_id or derived_id(request.request_id, "cancel")
            if not pending:
                return fpb.CancelOrderResponse(
                    outcome=fpb.CANCELLATION_OUTCOME_REJECTED,
                    cancellation_id=cancellation_id,
                    refused=refused,
                )
            await self.workflow.on_cancel_requested(
                session,
                order_events.OrderCancelRequested(
                    order_id=request.order_id,
                    cancellation_id=cancellation_id,
                    lines=request.lines,
                    reason_code=request.reason_code,
                    note=request.note,
                    requested_at=ts(datetime.now(UTC)),
                ),
                "",
            )
            return fpb.CancelOrderResponse(
                outcome=fpb.CANCELLATION_OUTCOME_PENDING,
                cancellation_id=cancellation_id,
                pending=pending,
                refused=refused,
            )

        return await self.runtime.once("CancelOrder", request, fpb.CancelOrderResponse, work)

    async def CreateReturn(
        self, request: fpb.CreateReturnRequest, context: Any
    ) -> fpb.CreateReturnResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.order_id), "order_id", "required")
        v.check(1 <= len(request.lines) <= 1000, "lines", "1 to 1000 lines")
        for i, line in enumerate(request.lines):
            v.check(bool(line.line_id), f"lines[{i}].line_id", "required")
            v.check(line.quantity > 0, f"lines[{i}].quantity", "must be > 0")
            v.check(bool(line.reason_code), f"lines[{i}].reason_code", "required")
        v.raise_if_any()

        async def work(session: AsyncSession) -> fpb.CreateReturnResponse:
            row = await self._order(session, request.order_id)
            v = Violations()
            for i, line in enumerate(request.lines):
                state = row.lines.get(line.line_id)
                if v.check(state is not None, f"lines[{i}].line_id", "no such line"):
                    assert state is not None
                    v.check(
                        line.quantity <= state.shipped - state.returned,
                        f"lines[{i}].quantity",
                        f"at most {state.shipped - state.returned} shipped and not returned",
                    )
            v.raise_if_any()
            return_request_id = request.return_request_id or derived_id(
                request.request_id, "return"
            )
            await self.workflow.on_return_requested(
                session,
                order_events.ReturnRequested(
                    order_id=request.order_id,
                    return_request_id=return_request_id,
                    lines=request.lines,
                    requested_at=ts(datetime.now(UTC)),
                ),
                "",
            )
            rma = await self.workflow._rma(session, derived_id(return_request_id, "rma"))
            assert rma is not None
            return fpb.CreateReturnResponse(return_authorization=rma)

        return await self.runtime.once("CreateReturn", request, fpb.CreateReturnResponse, work)

    async def ResolveException(
        self, request: fpb.ResolveExceptionRequest, context: Any
    ) -> fpb.ResolveExceptionResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.exception_id), "exception_id", "required")
        v.check(
            request.action in (fpb.EXCEPTION_ACTION_CANCEL, fpb.EXCEPTION_ACTION_OVERRIDE),
            "action",
            "CANCEL or OVERRIDE",
        )
        v.check(0 < len(request.note) <= 1000, "note", "required, at most 1000 characters")
        v.raise_if_any()

        async def work(session: AsyncSession) -> fpb.ResolveExceptionResponse:
            record, task_key = await _open_exception(session, request.exception_id, "resolved")
            if request.action not in record.safe_actions:
                raise FailedPrecondition(
                    "that action is not safe for this exception",
                    "ACTION_NOT_SAFE",
                    [Violation("SAFE_ACTIONS", record.exception_id, "action not listed")],
                )
            kind, _, subject = task_key.partition(":")
            task = Task(task_key, record.order_id, kind, subject, record.attempts, "")
            if request.action == fpb.EXCEPTION_ACTION_OVERRIDE:
                if kind != "BOOK_ERP" or not request.external_reference:
                    raise FailedPrecondition(
                        "OVERRIDE needs the ERP order booked by hand (external_reference)",
                        "OVERRIDE_NOT_SUPPORTED",
                        [Violation("STAGE", record.exception_id, f"step {kind}")],
                    )
                await self.workflow.booked(
                    session,
                    task,
                    request.external_reference,
                    f"booked by hand in the ERP as {request.external_reference}",
                )
            else:
                await self.workflow.on_cancel_requested(
                    session,
                    order_events.OrderCancelRequested(
                        order_id=record.order_id,
                        cancellation_id=derived_id(request.request_id, "cancel"),
                        reason_code="EXCEPTION_CANCELED",
                        note=request.note,
                        requested_at=ts(datetime.now(UTC)),
                    ),
                    "",
                )
            await session.execute(
                update(workflow_task)
                .where(workflow_task.c.task_key == task_key)
                .values(state="DONE", lease_id=None, leased_until=None)
            )
            action = (
                domain.Action.OVERRIDE
                if request.action == fpb.EXCEPTION_ACTION_OVERRIDE
                else domain.Action.CANCEL
            )
            resolved = await self.engine.resolve_open_exception(
                session, task, action, request.note, actor="operator"
            )
            assert resolved is not None
            if request.external_reference:
                resolved.resolution.external_reference = request.external_reference
            return fpb.ResolveExceptionResponse(exception=resolved)

        return await self.runtime.once(
            "ResolveException", request, fpb.ResolveExceptionResponse, work
        )

    async def GetOrderFulfillment(
        self, request: fpb.GetOrderFulfillmentRequest, context: Any
    ) -> fpb.GetOrderFulfillmentResponse:
        v = Violations()
        v.check(bool(request.order_id), "order_id", "required")
        v.raise_if_any()
        async with self.runtime.reads.connect() as connection:
            row = await store.load_order(connection, request.order_id)
            if row is None:
                raise NotFound(f"order {request.order_id!r} not found", "ORDER_NOT_FOUND")
            orders = await store.fulfillment_orders_of(connection, request.order_id)
            shipments = await store.documents_of(
                connection, shipment, request.order_id, fpb.Shipment
            )
            invoices = await store.documents_of(connection, invoice, request.order_id, fpb.Invoice)
            exceptions = await store.list_exceptions(
                connection, order_id=request.order_id, limit=MAX_PAGE
            )
            timeline = await store.timeline_of(connection, request.order_id)
        return fpb.GetOrderFulfillmentResponse(
            fulfillment=fpb.OrderFulfillment(
                order_id=request.order_id,
                channel_id=row.channel_id,
                erp_order_number=row.erp_order_number,
                status=row.status,  # type: ignore[arg-type]
                fulfillment_orders=[store.fulfillment_order_proto(fo) for fo in orders],
                shipments=shipments,
                invoices=invoices,
                exceptions=[fpb.ExceptionRecord.FromString(e.document) for e in exceptions],
                timeline=timeline,
            )
        )

    async def ListExceptions(
        self, request: fpb.ListExceptionsRequest, context: Any
    ) -> fpb.ListExceptionsResponse:
        v = Violations()
        v.check(request.page_size >= 0, "page_size", "must be >= 0")
        states = [STATE_NAMES[s] for s in request.states if s in STATE_NAMES] or [
            "OPEN",
            "RETRYING",
        ]
        categories = [CATEGORY_NAMES[c] for c in request.categories if c in CATEGORY_NAMES]
        filters = [sorted(states), sorted(categories), request.order_id, list(request.channel_ids)]
        after = page_after(v, request.page_token, filters)
        v.raise_if_any()
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        async with self.runtime.reads.connect() as connection:
            rows = await store.list_exceptions(
                connection,
                order_id=request.order_id,
                states=states,
                categories=categories,
                after=after,
                limit=size + 1,
            )
        records = [fpb.ExceptionRecord.FromString(r.document) for r in rows]
        if request.channel_ids:
            records = [r for r in records if r.channel_id in request.channel_ids]
        if request.stages:
            records = [r for r in records if r.stage in request.stages]
        if request.HasField("last_seen_after"):
            floor = request.last_seen_after.ToDatetime(tzinfo=UTC)
            records = [r for r in records if r.last_seen_at.ToDatetime(tzinfo=UTC) >= floor]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = encode_page_token(filters, last.last_seen_at, last.exception_id)
            records = records[:size]
        return fpb.ListExceptionsResponse(exceptions=records, next_page_token=token)

    async def RetryException(
        self, request: fpb.RetryExceptionRequest, context: Any
    ) -> fpb.RetryExceptionResponse:
        v = Violations()
        v.request_id(request.request_id)
        v.check(bool(request.exception_id), "exception_id", "required")
        v.check(len(request.note) <= 1000, "note", "at most 1000 characters")
        v.raise_if_any()

        async def work(session: AsyncSession) -> fpb.RetryExceptionResponse:
            record, task_key = await _open_exception(session, request.exception_id, "retried")
            fixing = request.HasField("fix")
            wanted = (
                fpb.EXCEPTION_ACTION_FIX_DATA_AND_RETRY if fixing else fpb.EXCEPTION_ACTION_RETRY
            )
            allowed = set(record.safe_actions)
            # Data fixed elsewhere (e.g. in the ERP's item master) needs no fix here.
            if wanted not in allowed and fpb.EXCEPTION_ACTION_FIX_DATA_AND_RETRY not in allowed:
                raise FailedPrecondition(
                    "retrying is not a safe action for this exception",
                    "ACTION_NOT_SAFE",
                    [Violation("SAFE_ACTIONS", record.exception_id, "no RETRY")],
                )
            if fixing:
                await self._apply_fix(session, record.order_id, request.fix)
            now = datetime.now(UTC)
            record.state = fpb.EXCEPTION_STATE_RETRYING
            await session.execute(
                update(exception_record)
                .where(exception_record.c.exception_id == record.exception_id)
                .values(state="RETRYING", document=record.SerializeToString(), last_seen_at=now)
            )
            await session.execute(
                update(workflow_task)
                .where(workflow_task.c.task_key == task_key)
                .values(state="PENDING", due_at=now, lease_id=None, leased_until=None)
            )
            await store.add_timeline(
                session,
                record.order_id,
                record.stage,
                f"operator retried exception {record.exception_id}: {request.note}",
            )
            return fpb.RetryExceptionResponse(exception=record)

        return await self.runtime.once("RetryException", request, fpb.RetryExceptionResponse, work)

    async def _apply_fix(self, session: AsyncSession, order_id: str, fix: fpb.ExceptionFix) -> None:
        row = await store.load_order(session, order_id, for_update=True)
        if row is None:
            raise NotFound(f"order {order_id!r} not found", "ORDER_NOT_FOUND")
        order = row.order
        if fix.HasField("ship_to"):
            order.ship_to.CopyFrom(fix.ship_to)
        if fix.customer_id:
            order.customer.customer_id = fix.customer_id
        known = {line.line_id for line in order.lines}
        unknown = [lid for lid in fix.line_skus if lid not in known]
        if unknown:
            raise InvalidArgument(
                [FieldViolation(f"fix.line_skus[{lid}]", "no such line") for lid in unknown]
            )
        for line in order.lines:
            if line.line_id in fix.line_skus:
                line.sku = fix.line_skus[line.line_id]
        await session.execute(
            update(order_workflow)
            .where(order_workflow.c.order_id == order_id)
            .values(document=order.SerializeToString(), updated_at=datetime.now(UTC))
        )


async def _open_exception(
    session: AsyncSession, exception_id: str, verb: str
) -> tuple[fpb.ExceptionRecord, str]:
    """The exception (locked) and its step's task key; it must exist and be OPEN."""
    found = await store.load_exception(session, exception_id, for_update=True)
    if found is None:
        raise NotFound(f"exception {exception_id!r} not found", "EXCEPTION_NOT_FOUND")
    record, task_key = found
    if record.state != fpb.EXCEPTION_STATE_OPEN:
        raise FailedPrecondition(
            f"only an OPEN exception can be {verb}",
            "EXCEPTION_NOT_OPEN",
            [Violation("EXCEPTION_STATE", record.exception_id, "not OPEN")],
        )
    return record, task_key
