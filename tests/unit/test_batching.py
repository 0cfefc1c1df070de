"""The chassis coalescer and id minting: batching, concurrent writers, failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from chassis.batching import Coalescer, SharedReads
from chassis.context import new_id

T = TypeVar("T")


async def test_requests_queued_together_run_as_one_batch_in_arrival_order() -> None:
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [item * 10 for item in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=8)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(5)))
    await coalescer.close()
    assert results == [0, 10, 20, 30, 40]
    assert [item for batch in batches for item in batch] == [0, 1, 2, 3, 4]
    assert len(batches) <= 2  # the first may start alone; the rest queued meanwhile
    assert max(len(batch) for batch in batches) >= 4


async def test_a_second_writer_runs_a_batch_while_the_first_waits() -> None:
    first_started, release_first = asyncio.Event(), asyncio.Event()

    async def run(items: Sequence[str]) -> list[str]:
        if "slow" in items:
            first_started.set()
            await release_first.wait()
        return [item.upper() for item in items]

    coalescer: Coalescer[str, str] = Coalescer(run, max_batch=1, writers=2)
    slow = asyncio.create_task(coalescer.submit("slow"))
    await first_started.wait()
    assert await coalescer.submit("fast") == "FAST"  # not stuck behind the slow batch
    assert not slow.done()
    release_first.set()
    assert await slow == "SLOW"
    await coalescer.close()


async def test_a_failed_batch_fails_each_of_its_callers_and_the_writer_goes_on() -> None:
    async def run(items: Sequence[int]) -> list[int | BaseException]:
        if 13 in items:
            raise RuntimeError("database gone")
        return [ValueError("odd") if item % 2 else item for item in items]

    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=1)
    with pytest.raises(RuntimeError, match="database gone"):
        await coalescer.submit(13)
    with pytest.raises(ValueError, match="odd"):
        await coalescer.submit(3)
    assert await coalescer.submit(4) == 4
    await coalescer.close()


def test_a_coalescer_needs_a_writer() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError):
        Coalescer(run, writers=0)


def test_new_ids_are_distinct_version_4_uuids_across_pool_refills() -> None:
    ids = [new_id() for _ in range(3000)]  # several 256-id draws of the random pool
    assert len(set(ids)) == len(ids)
    for value in ids[:300]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def joining(
    reads: SharedReads[str, T], key: str, load: Callable[[], Awaitable[T]], count: int
) -> list[asyncio.Task[T]]:
    """``count`` callers of ``reads.get``, returned once every one of them has joined a load
    (get registers its caller before its first await, right after the counter moves)."""
    joined = 0
    all_in = asyncio.Event()

    async def caller() -> T:
        nonlocal joined
        joined += 1
        if joined == count:
            all_in.set()
        return await reads.get(key, load)

    tasks = [asyncio.create_task(caller()) for _ in range(count)]
    await all_in.wait()
    return tasks


async def test_shared_reads_one_load_for_callers_that_arrive_together() -> None:
    reads: SharedReads[str, int] = SharedReads()
    loads = 0
    started, gate = asyncio.Event(), asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        started.set()
        await gate.wait()  # the others arrive while it runs
        return loads

    first = asyncio.create_task(reads.get("k", load))
    await started.wait()
    late = await joining(reads, "k", load, 10)
    gate.set()
    assert await first == 1
    # Everyone who came while load 1 ran shares load 2, which started after they arrived.
    assert await asyncio.gather(*late) == [2] * 10
    assert loads == 2


async def test_shared_reads_never_answer_from_a_load_that_started_earlier() -> None:
    reads: SharedReads[str, str] = SharedReads()
    gate, started = asyncio.Event(), asyncio.Event()
    value = "before the write"

    async def load() -> str:
        seen = value
        started.set()
        await gate.wait()
        return seen

    early = asyncio.create_task(reads.get("k", load))
    await started.wait()  # the first load has read its snapshot
    value = "after the write"  # a caller writes, then reads
    reader = asyncio.create_task(reads.get("k", load))
    gate.set()
    assert await early == "before the write"
    assert await reader == "after the write"


async def test_shared_reads_keys_are_separate_and_failures_reach_every_caller() -> None:
    reads: SharedReads[str, str] = SharedReads()

    async def fail() -> str:
        raise RuntimeError("db down")

    async def other() -> str:
        return "fine"

    results = await asyncio.gather(
        reads.get("a", fail), reads.get("a", fail), reads.get("b", other), return_exceptions=True
    )
    assert [type(r) for r in results[:2]] == [RuntimeError, RuntimeError]
    assert results[2] == "fine"


async def test_a_caller_giving_up_does_not_cancel_the_shared_load() -> None:
    reads: SharedReads[str, str] = SharedReads()
    started, gate = asyncio.Event(), asyncio.Event()

    async def load() -> str:
        started.set()
        await gate.wait()
        return "done"

    first = asyncio.create_task(reads.get("k", load))
    await started.wait()
    quitter, stayer = await joining(reads, "k", load, 2)  # both share the next load
    quitter.cancel()
    gate.set()
    assert await first == "done"
    assert await stayer == "done"
    with pytest.raises(asyncio.CancelledError):
        await quitter
