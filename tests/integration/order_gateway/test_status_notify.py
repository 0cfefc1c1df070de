"""The order_changed_notify trigger: a status change wakes WatchOrder on every replica at
commit; an order's first status wakes nobody."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from chassis import db
from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2 as pb
from services.order_gateway.store.orders import ORDER_CHANGED, add_status_change
from tests.conftest import Databases
from tests.integration.harness import new_id

S = common_pb2


async def test_a_status_change_notifies_at_commit_and_a_first_status_does_not(
    databases: Databases,
) -> None:
    engine = db.create_engine(
        databases.service_urls["order_gateway"], "order_gateway", application_name="test"
    )
    sessions = db.session_factory(engine)
    woken: asyncio.Queue[str] = asyncio.Queue()
    try:
        async with engine.connect() as listen:
            raw = await listen.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.add_listener(ORDER_CHANGED, lambda *args: woken.put_nowait(args[-1]))
            first, changed = new_id(), new_id()
            now = datetime.now(UTC)
            async with sessions.begin() as session:
                order = pb.Order(order_id=first, status=S.ORDER_STATUS_ACCEPTED, status_sequence=1)
                await add_status_change(session, order, S.ORDER_STATUS_UNSPECIFIED, now)
            async with sessions.begin() as session:
                order = pb.Order(order_id=changed, status=S.ORDER_STATUS_SHIPPED, status_sequence=2)
                await add_status_change(session, order, S.ORDER_STATUS_ACCEPTED, now)
            # Delivered in commit order: the first wake-up is the change, not the first status.
            assert await asyncio.wait_for(woken.get(), 15) == changed
            assert woken.empty()
    finally:
        await engine.dispose()
