"""The durable task engine on its own (real Postgres, a database of its own so that no other
test's steps are claimed): how it is woken, and when a completion resolves an exception."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from chassis import db
from chassis.migrations import upgrade
from chassis.server import Runtime
from services.fulfillment import domain
from services.fulfillment.engine import StepFailure, Task, TaskEngine, schedule
from services.fulfillment.store.tables import exception_record
from stack.provision import provision
from tests.conftest import Databases, NatsServer
from tests.integration.harness import eventually, settings_for

# Longer than any test waits: a step that runs was woken by a NOTIFY, not by the poll.
POLL_SECONDS = 600.0
WAIT_SECONDS = 15.0


@pytest.fixture
async def runtime(postgres_admin_url: str, nats_server: NatsServer) -> AsyncIterator[Runtime]:
    name = f"dwf_engine_{uuid.uuid4().hex[:8]}"
    urls = await provision(postgres_admin_url, name, role_prefix=f"dwfe{uuid.uuid4().hex[:6]}_")
    engine = db.create_engine(urls["fulfillment"], "fulfillment", application_name="migrate")
    try:
        await upgrade(engine, "fulfillment", "fulfillment")
    finally:
        await engine.dispose()
    databases = Databases(postgres_admin_url, name, urls)
    runtime = Runtime(settings_for("fulfillment", databases, nats_server))
    yield runtime
    await runtime.close()


async def add_step(runtime: Runtime, kind: str, subject: str, *, again: bool = False) -> None:
    async with runtime.sessions.begin() as session:
        await schedule(session, f"O-{subject}", kind, subject, again_when_done=again)


@contextlib.asynccontextmanager
async def running(engine: TaskEngine) -> AsyncIterator[None]:
    stop = asyncio.Event()
    loop = asyncio.create_task(engine.run(stop))
    try:
        yield
    finally:
        stop.set()
        await loop


def finishing_engine(runtime: Runtime, concurrency: int) -> tuple[TaskEngine, asyncio.Queue[Task]]:
    """An engine whose STEP completes at once and reports every task it ran."""
    engine = TaskEngine(runtime, poll_seconds=POLL_SECONDS, concurrency=concurrency)
    ran: asyncio.Queue[Task] = asyncio.Queue()

    async def step(task: Task) -> None:
        await engine.finish(task)
        ran.put_nowait(task)

    engine.register({"STEP": step})
    return engine, ran


async def next_run(ran: asyncio.Queue[Task]) -> Task:
    return await asyncio.wait_for(ran.get(), WAIT_SECONDS)


async def test_a_committed_step_wakes_the_engine_without_its_poll(runtime: Runtime) -> None:
    engine, ran = finishing_engine(runtime, concurrency=4)
    async with running(engine):
        for subject in ("a", "b"):
            await add_step(runtime, "STEP", subject)
            assert (await next_run(ran)).subject_id == subject


async def test_a_full_claim_comes_back_for_the_steps_it_left(runtime: Runtime) -> None:
    # One slot, three due steps: the first claim is full, so each finished step frees a
    # slot that is refilled at once, without a NOTIFY or the poll.
    engine, ran = finishing_engine(runtime, concurrency=1)
    for subject in ("a", "b", "c"):
        await add_step(runtime, "STEP", subject)
    async with running(engine):
        done = [(await next_run(ran)).subject_id for _ in range(3)]
    assert sorted(done) == ["a", "b", "c"]


async def exception_states(runtime: Runtime, task_key: str) -> list[str]:
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(exception_record.c.state).where(exception_record.c.task_key == task_key)
        )
        return list(rows)


async def test_an_exception_of_a_done_step_is_resolved_when_the_step_next_succeeds(
    runtime: Runtime,
) -> None:
    """An exception recorded after a step's own commit (re-sourcing that found no warehouse)
    names a step that never failed; the step's next success must still resolve it."""
    engine, ran = finishing_engine(runtime, concurrency=1)
    await add_step(runtime, "STEP", "x")
    assert await engine.run_once() == 1
    first = await next_run(ran)
    assert first.failed_before is False
    async with runtime.sessions.begin() as session:
        await engine.record_exception(
            session,
            first,
            StepFailure(domain.Category.BUSINESS_RULE, "DWF", "NO_WAREHOUSE_LEFT", "none left"),
            datetime.now(UTC),
            None,
        )
    assert await exception_states(runtime, first.task_key) == ["OPEN"]

    await add_step(runtime, "STEP", "x", again=True)
    assert await engine.run_once() == 1
    assert (await next_run(ran)).failed_before is True
    assert await exception_states(runtime, first.task_key) == ["RESOLVED"]


async def test_a_step_that_fails_then_succeeds_resolves_its_exception(runtime: Runtime) -> None:
    engine = TaskEngine(runtime, poll_seconds=POLL_SECONDS, backoff_base_seconds=0.0)
    attempts: list[Task] = []

    async def flaky(task: Task) -> None:
        attempts.append(task)
        if len(attempts) < 3:  # the exception is recorded from the second failure on
            raise StepFailure(domain.Category.RETRYABLE, "ERP", "HTTP_503", "unavailable")
        await engine.finish(task)

    engine.register({"STEP": flaky})
    await add_step(runtime, "STEP", "y")
    for _ in range(3):
        assert await eventually(engine.run_once, what="the step due again") == 1
    assert [t.failed_before for t in attempts] == [False, True, True]
    assert await exception_states(runtime, attempts[0].task_key) == ["RESOLVED"]
