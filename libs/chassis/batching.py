"""Coalescing: callers wait while a writer task turns everything that queued up meanwhile
into a single transaction. Under load a batch grows to ``max_batch`` items; an idle writer
takes the first item at once, so a lone request pays no added latency. With several writers
one batch's database round trips overlap the next one's, so a writer waiting on the
database does not leave the queue waiting too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("dwf.batching")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Returns one outcome per item, in order: a result, or the exception that item raises.
BatchFunction = Callable[[Sequence[ItemT]], Awaitable[Sequence["ResultT | BaseException"]]]


class Coalescer(Generic[ItemT, ResultT]):
    def __init__(
        self, run: BatchFunction[ItemT, ResultT], max_batch: int = 256, writers: int = 1
    ) -> None:
        if writers < 1:
            raise ValueError("a coalescer needs at least one writer")
        self.run = run
        self.max_batch = max_batch
        self.writers = writers
        self._queue: asyncio.Queue[tuple[ItemT, asyncio.Future[ResultT]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, item: ItemT) -> ResultT:
        if len(self._tasks) < self.writers or any(task.done() for task in self._tasks):
            self._tasks = [task for task in self._tasks if not task.done()]
            self._tasks += [
                asyncio.create_task(self._write_forever())
                for _ in range(self.writers - len(self._tasks))
            ]
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if not live:
                continue
            try:
                outcomes = await self.run([item for item, _ in live])
            except Exception as exc:  # the whole transaction failed: every caller learns it
                log.exception("batch of %d failed", len(live))
                outcomes = [exc] * len(live)
            for (_, future), outcome in zip(live, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


ValueT = TypeVar("ValueT")


class ExpiringValue(Generic[ValueT]):
    """A value loaded on demand and reused for ``ttl_seconds`` (e.g. master data on a hot
    read path); concurrent callers share one load."""

    def __init__(self, load: Callable[[], Awaitable[ValueT]], ttl_seconds: float) -> None:
        self.load = load
        self.ttl = ttl_seconds
        self._value: ValueT | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """The next ``get`` loads again (e.g. after a miss that a fresh load may answer)."""
        self._loaded_at = float("-inf")

    async def get(self) -> ValueT:
        loop = asyncio.get_running_loop()
        if self._value is not None and loop.time() - self._loaded_at < self.ttl:
            return self._value
        async with self._lock:
            if self._value is None or loop.time() - self._loaded_at >= self.ttl:
                self._value = await self.load()
                self._loaded_at = loop.time()
            return self._value


KeyT = TypeVar("KeyT", bound=Hashable)


class SharedReads(Generic[KeyT, ValueT]):
    """Identical concurrent reads share one load, without ever answering from a snapshot
    older than the caller: a caller joins the *next* load of its key, one that starts after
    it arrived, never one already running (which might predate the caller's own write). So
    N identical callers cost at most two loads, and each waits at most two loads' time.
    The shared value is handed to every caller: treat it as read-only."""

    def __init__(self) -> None:
        self._running: dict[KeyT, asyncio.Task[ValueT]] = {}
        self._next: dict[KeyT, asyncio.Task[ValueT]] = {}

    async def get(self, key: KeyT, load: Callable[[], Awaitable[ValueT]]) -> ValueT:
        running = self._running.get(key)
        if running is None:
            task = asyncio.ensure_future(self._load(key, load))
            self._running[key] = task
        else:
            task = self._next.get(key) or self._follow(key, running, load)
        # One caller giving up (deadline, cancel) must not cancel the others' load.
        return await asyncio.shield(task)

    def _follow(
        self, key: KeyT, running: asyncio.Task[ValueT], load: Callable[[], Awaitable[ValueT]]
    ) -> asyncio.Task[ValueT]:
        async def after() -> ValueT:
            await asyncio.wait([running])
            if self._next.get(key) is follower:
                del self._next[key]
            self._running[key] = follower
            return await self._load(key, load)

        follower = asyncio.ensure_future(after())
        self._next[key] = follower
        return follower

    async def _load(self, key: KeyT, load: Callable[[], Awaitable[ValueT]]) -> ValueT:
        try:
            return await load()
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]
