"""Wakes WatchOrder streams when an order's status changes, on whichever replica applied it.

The history row of a status change fires a trigger that runs ``pg_notify`` at commit
(store.add_status_change, migration 0005); one LISTEN connection per replica fans the
notifications out to the local watchers. The history table stays the source of truth: a
watcher re-reads it after each wake-up, and also every ``watch_poll_seconds`` in case a
notification was missed (e.g. while reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from services.order_gateway.store.orders import ORDER_CHANGED

log = logging.getLogger("dwf.order_gateway.feed")


class Wake:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait_for_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class OrderChangeFeed:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._watchers: dict[str, set[Wake]] = {}

    @contextlib.asynccontextmanager
    async def watch(self, order_id: str) -> AsyncIterator[Wake]:
        wake = Wake()
        self._watchers.setdefault(order_id, set()).add(wake)
        try:
            yield wake
        finally:
            watchers = self._watchers.get(order_id, set())
            watchers.discard(wake)
            if not watchers:
                self._watchers.pop(order_id, None)

    def _on_notify(self, _connection: object, _pid: int, _channel: str, order_id: str) -> None:
        for wake in self._watchers.get(order_id, ()):
            wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.add_listener(ORDER_CHANGED, self._on_notify)
            try:
                await stop.wait()
            finally:
                await driver.remove_listener(ORDER_CHANGED, self._on_notify)
