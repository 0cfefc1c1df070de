"""Coalescing: callers wait while one writer task turns everything that queued up meanwhile
into a single transaction. Under load a batch grows to ``max_batch`` items; an idle writer
takes the first item at once, so a lone request pays no added latency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("dwf.batching")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Returns one outcome per item, in order: a result, or the exception that item raises.
BatchFunction = Callable[[Sequence[ItemT]], Awaitable[Sequence["ResultT | BaseException"]]]


class Coalescer(Generic[ItemT, ResultT]):
    def __init__(self, run: BatchFunction[ItemT, ResultT], max_batch: int = 256) -> None:
        self.run = run
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[ItemT, asyncio.Future[ResultT]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever())
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
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


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
