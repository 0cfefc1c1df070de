"""The durable task engine of the order workflow.

Every step of an order's workflow (book in the ERP, allocate, release, post a shipment,
invoice…) and every timer (acknowledgement SLA, retry schedule) is a row of
``workflow_task``. Any replica claims due tasks under a lease (``FOR UPDATE SKIP LOCKED``),
runs the step's external call outside any transaction, then completes it in ONE transaction
with its effects (state, outbox events, next tasks) — only if it still holds the lease. A
process killed mid-step loses its lease; another replica runs the step again, and the
external call is idempotent (our external reference / request ids), so nothing happens twice.

A failure is classified (services.fulfillment.domain.Category): retryable and dependency
failures are rescheduled with exponential backoff and jitter, and recorded as an exception
in state RETRYING from the second attempt on; data-quality and business-rule failures park
the task and open an exception with its safe actions, until an operator retries, fixes or
resolves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.outbox import PendingEvent
from chassis.protos import ts
from chassis.server import Runtime
from chassis.statements import where_params
from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import events_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from services.fulfillment import domain
from services.fulfillment.store.tables import exception_record, order_workflow, workflow_task

log = logging.getLogger("dwf.fulfillment.engine")
TASKS_CHANNEL = "fulfillment_tasks"

STAGES = {
    "BOOK_ERP": fpb.WORKFLOW_STAGE_ERP_BOOKING,
    "ALLOCATE": fpb.WORKFLOW_STAGE_ALLOCATION,
    "RELEASE": fpb.WORKFLOW_STAGE_RELEASE,
    "ACK_CHECK": fpb.WORKFLOW_STAGE_RELEASE,
    "STOCK_SHIPMENT": fpb.WORKFLOW_STAGE_SHIPPING,
    "POST_SHIPMENT": fpb.WORKFLOW_STAGE_SHIPMENT_POSTING,
    "INVOICE": fpb.WORKFLOW_STAGE_INVOICING,
}
SYSTEMS = {
    "ERP": fpb.EXTERNAL_SYSTEM_ERP,
    "WMS": fpb.EXTERNAL_SYSTEM_WMS,
    "CARRIER": fpb.EXTERNAL_SYSTEM_CARRIER,
    "DWF": fpb.EXTERNAL_SYSTEM_DWF,
}
CATEGORIES = {
    domain.Category.RETRYABLE: fpb.EXCEPTION_CATEGORY_RETRYABLE,
    domain.Category.DEPENDENCY: fpb.EXCEPTION_CATEGORY_DEPENDENCY,
    domain.Category.DATA_QUALITY: fpb.EXCEPTION_CATEGORY_DATA_QUALITY,
    domain.Category.BUSINESS_RULE: fpb.EXCEPTION_CATEGORY_BUSINESS_RULE,
}
ACTIONS = {
    domain.Action.RETRY: fpb.EXCEPTION_ACTION_RETRY,
    domain.Action.FIX_DATA_AND_RETRY: fpb.EXCEPTION_ACTION_FIX_DATA_AND_RETRY,
    domain.Action.CANCEL: fpb.EXCEPTION_ACTION_CANCEL,
    domain.Action.OVERRIDE: fpb.EXCEPTION_ACTION_OVERRIDE,
}


@dataclass(frozen=True)
class Task:
    task_key: str
    order_id: str
    kind: str
    subject_id: str
    attempts: int
    lease_id: str
    # The step failed before (or an exception names it): its completion looks for an
    # open exception to resolve. A step that never failed skips that lookup.
    failed_before: bool = True


@dataclass
class StepFailure(Exception):
    """A classified failure of a step (connector errors are translated into this)."""

    category: domain.Category
    system: str
    code: str
    message: str
    payload: bytes = b""
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.system} {self.code}: {self.message}"


class LeaseLost(RuntimeError):
    """Another replica took the task over (ours ran past its lease): drop our result."""


def task_key(kind: str, subject_id: str) -> str:
    return f"{kind}:{subject_id}"


async def schedule(
    session: AsyncSession,
    order_id: str,
    kind: str,
    subject_id: str,
    due_at: datetime | None = None,
    *,
    rearm: bool = False,
    again_when_done: bool = False,
) -> None:
    """Add a step once (by task key); ``rearm`` makes an existing one due again (timers);
    ``again_when_done`` only a finished one (a step that is pending or running picks up the
    new work itself, and its lease stays valid)."""
    now = datetime.now(UTC)
    statement = _SCHEDULE_REARM if rearm else _SCHEDULE_AGAIN if again_when_done else _SCHEDULE_ONCE
    await session.execute(
        statement,
        {
            "task_key": task_key(kind, subject_id),
            "order_id": order_id,
            "kind": kind,
            "subject_id": subject_id,
            "due_at": due_at or now,
            "now": now,
        },
    )
    # The workflow_task_notify trigger wakes every replica's engine at commit.


# Scheduling runs several times per order step: its statements are built once.
_NEW_TASK = insert(workflow_task).values(
    {c: bindparam(c) for c in ("task_key", "order_id", "kind", "subject_id", "due_at")}
)
_SCHEDULE_ONCE = _NEW_TASK.on_conflict_do_nothing()
_DUE_AGAIN = {
    "state": "PENDING",
    "due_at": _NEW_TASK.excluded.due_at,
    "attempts": 0,
    "lease_id": None,
    "leased_until": None,
    "updated_at": bindparam("now"),
}
_SCHEDULE_REARM = _NEW_TASK.on_conflict_do_update(index_elements=["task_key"], set_=_DUE_AGAIN)
_SCHEDULE_AGAIN = _NEW_TASK.on_conflict_do_update(
    index_elements=["task_key"], set_=_DUE_AGAIN, where=workflow_task.c.state == "DONE"
)
_COMPLETE_TASK = (
    update(workflow_task)
    .where(
        workflow_task.c.task_key == bindparam("where_task_key"),
        workflow_task.c.lease_id == bindparam("where_lease_id"),
        workflow_task.c.state == "PENDING",
    )
    .values(state="DONE", lease_id=None, leased_until=None, updated_at=bindparam("now"))
    .returning(workflow_task.c.task_key)
)
# A claim leases due steps nobody holds (or whose holder's lease ran out) and tells each
# whether it failed before.
_CLAIM_DUE = text(
    """
    UPDATE workflow_task AS t
    SET lease_id = gen_random_uuid(),
        leased_until = now() + make_interval(secs => :lease),
        attempts = t.attempts + 1,
        updated_at = now()
    FROM (
        SELECT task_key FROM workflow_task
        WHERE state = 'PENDING' AND due_at <= now()
          AND (leased_until IS NULL OR leased_until < now())
        ORDER BY due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS due
    WHERE t.task_key = due.task_key
    RETURNING t.task_key, t.order_id, t.kind, t.subject_id, t.attempts, t.lease_id,
              t.last_error <> '' AS failed_before
    """
)
# An exception names its task: the task's completion then looks for it (Task.failed_before).
_MARK_TASK_FAILED = (
    update(workflow_task)
    .where(
        workflow_task.c.task_key == bindparam("where_task_key"), workflow_task.c.last_error == ""
    )
    .values(last_error=bindparam("last_error"))
)
_UNRESOLVED_EXCEPTION_OF_TASK = (
    select(exception_record.c.document)
    .where(
        exception_record.c.task_key == bindparam("task_key"),
        exception_record.c.state != "RESOLVED",
    )
    .with_for_update()
)


StepHandler = Callable[[Task], Awaitable[None]]


class TaskEngine:
    def __init__(
        self,
        runtime: Runtime,
        *,
        lease_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        concurrency: int = 16,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
    ) -> None:
        self.runtime = runtime
        self.handlers: dict[str, StepHandler] = {}
        self.lease = lease_seconds
        self.poll = poll_seconds
        self.concurrency = concurrency
        self.backoff_base = backoff_base_seconds
        self.backoff_max = backoff_max_seconds
        self._wake = asyncio.Event()
        # Whether a claim could find something: a NOTIFY (a step became due), a full claim
        # (more may be waiting) or the poll interval (timers) says so. An empty claim after
        # every finished step cost a transaction per step on every replica.
        self._maybe_due = True

    def register(self, handlers: Mapping[str, StepHandler]) -> None:
        self.handlers.update(handlers)

    # --- claiming and running -------------------------------------------------------------

    async def claim(self, limit: int) -> list[Task]:
        async with self.runtime.sessions.begin() as session:
            rows = (await session.execute(_CLAIM_DUE, {"lease": self.lease, "limit": limit})).all()
        return [
            Task(
                r.task_key,
                r.order_id,
                r.kind,
                r.subject_id,
                r.attempts,
                str(r.lease_id),
                r.failed_before,
            )
            for r in rows
        ]

    async def run_once(self) -> int:
        tasks = await self.claim(self.concurrency)
        if tasks:
            await asyncio.gather(*(self.execute(task) for task in tasks))
        return len(tasks)

    async def execute(self, task: Task) -> None:
        handler = self.handlers.get(task.kind)
        try:
            if handler is None:
                raise StepFailure(
                    domain.Category.BUSINESS_RULE, "DWF", "UNKNOWN_STEP", f"no step {task.kind}"
                )
            await handler(task)
        except LeaseLost:
            log.warning("lease of %s lost; another replica runs it", task.task_key)
        except StepFailure as failure:
            await self.fail(task, failure)
        except Exception as exc:  # a bug or an unforeseen failure: retried, and visible
            log.exception("step %s failed unexpectedly", task.task_key)
            await self.fail(
                task,
                StepFailure(domain.Category.RETRYABLE, "DWF", "UNEXPECTED", repr(exc)[:1000]),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up to ``concurrency`` steps running: a free slot is refilled at once, so one
        slow step (an ERP call timing out) does not hold up the others."""
        running: set[asyncio.Task[None]] = set()
        async with self.runtime.engine.connect() as listen:
            raw = await listen.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.add_listener(TASKS_CHANNEL, self._notified)
            stopping = asyncio.create_task(stop.wait())
            stopping.add_done_callback(lambda _: self._wake.set())  # no wait for the poll
            try:
                while not stop.is_set():
                    self._wake.clear()
                    free = self.concurrency - len(running)
                    if free > 0 and self._maybe_due:
                        # Cleared before the claim: a NOTIFY during it sets it again.
                        self._maybe_due = False
                        claimed: list[Task] = []
                        try:
                            claimed = await self.claim(free)
                        except Exception:
                            log.exception("claiming tasks failed; retrying")
                            self._maybe_due = True
                        if len(claimed) == free:  # a full claim: more may be waiting
                            self._maybe_due = True
                        for task in claimed:
                            job = asyncio.create_task(self.execute(task))
                            running.add(job)
                            job.add_done_callback(self._finished(running))
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    except TimeoutError:  # timers and retries come due without a NOTIFY
                        self._maybe_due = True
                if running:
                    await asyncio.wait(running, timeout=self.lease)
            finally:
                stopping.cancel()
                await driver.remove_listener(TASKS_CHANNEL, self._notified)

    def _finished(self, running: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(job: asyncio.Task[None]) -> None:
            running.discard(job)
            if self._maybe_due:  # a slot is free for steps the last claim left waiting
                self._wake.set()

        return done

    def _notified(self, *_: object) -> None:
        self._maybe_due = True
        self._wake.set()

    # --- completing -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def completing(self, task: Task) -> AsyncIterator[AsyncSession]:
        """The transaction that applies a step's effects and marks it done, if the lease is
        still ours; an exception opened for the step is resolved with it."""
        async with self.runtime.sessions.begin() as session:
            done = await session.scalar(
                _COMPLETE_TASK,
                {
                    **where_params(task_key=task.task_key, lease_id=task.lease_id),
                    "now": datetime.now(UTC),
                },
            )
            if done is None:
                raise LeaseLost(task.task_key)
            yield session
            if task.failed_before:
                await self.resolve_open_exception(session, task, domain.Action.RETRY, "succeeded")

    async def finish(self, task: Task) -> None:
        """Complete a step that has no effects of its own."""
        async with self.completing(task):
            pass

    # --- failing --------------------------------------------------------------------------

    async def fail(self, task: Task, failure: StepFailure) -> None:
        now = datetime.now(UTC)
        automatic = domain.retried_automatically(failure.category)
        delay = domain.backoff_seconds(task.attempts, self.backoff_base, self.backoff_max)
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        next_at = now + timedelta(seconds=delay) if automatic else None
        async with self.runtime.sessions.begin() as session:
            owned = await session.scalar(
                update(workflow_task)
                .where(
                    workflow_task.c.task_key == task.task_key,
                    workflow_task.c.lease_id == task.lease_id,
                )
                .values(
                    state="PENDING" if automatic else "PARKED",
                    due_at=next_at or now,
                    lease_id=None,
                    leased_until=None,
                    last_error=str(failure)[:2000],
                    updated_at=now,
                )
                .returning(workflow_task.c.task_key)
            )
            if owned is None:
                return
            if automatic and task.attempts < 2:
                log.info("step %s failed (%s); retry in %.1fs", task.task_key, failure, delay)
                return
            await self.record_exception(session, task, failure, now, next_at)
        log.warning("step %s failed (%s): exception recorded", task.task_key, failure)

    async def record_exception(
        self,
        session: AsyncSession,
        task: Task,
        failure: StepFailure,
        now: datetime,
        next_retry_at: datetime | None,
    ) -> None:
        row = (
            await session.execute(_UNRESOLVED_EXCEPTION_OF_TASK, {"task_key": task.task_key})
        ).one_or_none()
        automatic = domain.retried_automatically(failure.category)
        record = fpb.ExceptionRecord.FromString(row.document) if row else fpb.ExceptionRecord()
        first = row is None
        if first:
            record.exception_id = str(uuid.uuid4())
            record.order_id = task.order_id
            record.first_seen_at.FromDatetime(now)
            record.subject_id = task.subject_id
            channel_id = await session.scalar(
                select(order_workflow.c.channel_id).where(
                    order_workflow.c.order_id == task.order_id
                )
            )
            record.channel_id = channel_id or ""
        record.stage = STAGES.get(task.kind, fpb.WORKFLOW_STAGE_UNSPECIFIED)
        record.category = CATEGORIES[failure.category]
        record.state = fpb.EXCEPTION_STATE_RETRYING if automatic else fpb.EXCEPTION_STATE_OPEN
        record.target_system = SYSTEMS.get(failure.system, fpb.EXTERNAL_SYSTEM_UNSPECIFIED)
        record.error_code = failure.code
        record.error_message = failure.message[:2000]
        record.payload = failure.payload[:65536]
        record.payload_content_type = "application/json" if failure.payload else ""
        record.attempts = task.attempts
        record.last_seen_at.FromDatetime(now)
        if next_retry_at is not None:
            record.next_retry_at.FromDatetime(next_retry_at)
        else:
            record.ClearField("next_retry_at")
        del record.safe_actions[:]
        record.safe_actions.extend(ACTIONS[a] for a in domain.SAFE_ACTIONS[failure.category])
        values = {
            "exception_id": record.exception_id,
            "order_id": record.order_id,
            "channel_id": record.channel_id,
            "task_key": task.task_key,
            "state": fpb.ExceptionState.Name(record.state).removeprefix("EXCEPTION_STATE_"),
            "category": failure.category.value,
            "last_seen_at": now,
            "document": record.SerializeToString(),
        }
        await session.execute(
            insert(exception_record)
            .values(**values)
            .on_conflict_do_update(index_elements=["exception_id"], set_=values)
        )
        await session.execute(
            _MARK_TASK_FAILED,
            {**where_params(task_key=task.task_key), "last_error": str(failure)[:2000]},
        )
        # Announced when opened or when it changes category; repeats only update the record.
        if first or not automatic:
            events: list[PendingEvent] = [
                PendingEvent("order", task.order_id, events_pb2.ExceptionRaised(exception=record))
            ]
            if not automatic:
                events.append(
                    await self.status_event(
                        session,
                        task.order_id,
                        common_pb2.ORDER_STATUS_EXCEPTION,
                        f"{failure.system} {failure.code}: {failure.message}"[:500],
                        record.exception_id,
                    )
                )
            await self.runtime.events.record_many(session, events)

    async def resolve_open_exception(
        self, session: AsyncSession, task: Task, action: domain.Action, note: str, actor: str = ""
    ) -> fpb.ExceptionRecord | None:
        row = (
            await session.execute(_UNRESOLVED_EXCEPTION_OF_TASK, {"task_key": task.task_key})
        ).one_or_none()
        if row is None:
            return None
        record = fpb.ExceptionRecord.FromString(row.document)
        was_open = record.state == fpb.EXCEPTION_STATE_OPEN
        record.state = fpb.EXCEPTION_STATE_RESOLVED
        record.ClearField("next_retry_at")
        record.resolution.CopyFrom(
            fpb.ExceptionResolution(
                action=ACTIONS[action], actor=actor, note=note, resolved_at=ts(datetime.now(UTC))
            )
        )
        await session.execute(
            update(exception_record)
            .where(exception_record.c.exception_id == record.exception_id)
            .values(state="RESOLVED", document=record.SerializeToString())
        )
        events: list[PendingEvent] = [
            PendingEvent("order", task.order_id, events_pb2.ExceptionResolved(exception=record))
        ]
        if was_open:  # the EXCEPTION overlay goes away
            status = await session.scalar(
                select(order_workflow.c.status).where(order_workflow.c.order_id == task.order_id)
            )
            events.append(await self.status_event(session, task.order_id, int(status or 0), "", ""))
        await self.runtime.events.record_many(session, events)
        return record

    async def status_event(
        self, session: AsyncSession, order_id: str, status: int, reason: str, exception_id: str
    ) -> PendingEvent:
        """fulfillment.OrderStatusChanged: an overlay (EXCEPTION) over the lifecycle status
        kept in order_workflow, or a lifecycle change itself."""
        lifecycle = await session.scalar(
            select(order_workflow.c.status).where(order_workflow.c.order_id == order_id)
        )
        lifecycle = int(lifecycle or 0)
        return PendingEvent(
            "order",
            order_id,
            events_pb2.OrderStatusChanged(
                order_id=order_id,
                previous_status=lifecycle,  # type: ignore[arg-type]
                status=status,  # type: ignore[arg-type]
                lifecycle_status=lifecycle,  # type: ignore[arg-type]
                reason=reason,
                exception_id=exception_id,
                changed_at=ts(datetime.now(UTC)),
            ),
        )
