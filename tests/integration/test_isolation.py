"""Each service reaches only what it owns: its Postgres schema and its NATS subjects."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from chassis import db
from chassis.config import SERVICE_NAMES
from stack.natsd import EmbeddedNats
from tests.conftest import Databases

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_role_is_denied_every_other_schema(databases: Databases, service: str) -> None:
    engine = db.create_engine(databases.service_urls[service], service, application_name="t")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_schema()")) == service
            assert await conn.scalar(text("SELECT count(*) FROM outbox")) is not None
        for other in SERVICE_NAMES:
            if other == service:
                continue
            with pytest.raises(ProgrammingError, match=f"permission denied for schema {other}"):
                async with engine.connect() as conn:
                    await conn.execute(text(f"SELECT * FROM {other}.outbox"))
        with pytest.raises(ProgrammingError, match="permission denied for schema public"):
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE public.sneaky (x int)"))
        with pytest.raises(ProgrammingError, match="permission denied for database"):
            async with engine.begin() as conn:
                await conn.execute(text("CREATE SCHEMA sneaky"))
    finally:
        await engine.dispose()


async def _until_subscribed(client: NatsClient, subscription: Any) -> None:
    """Prove the server has the subscription: a message we send ourselves comes back.
    (A flush alone is not enough: nats-py 2.16 can answer it with an earlier PONG.)"""
    for _ in range(50):
        await client.publish("dwf.inventory.subscription_probe", b"probe")
        try:
            await subscription.next_msg(timeout=0.1)
            return
        except nats.errors.TimeoutError:
            continue
    raise AssertionError("subscription never became active")


async def test_nats_user_may_publish_only_its_own_subjects(scratch_dir: Path) -> None:
    server = EmbeddedNats(scratch_dir / f"nats-perm-{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(server.start)
    errors: list[str] = []
    violation = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))
        violation.set()

    creds = server.credentials["inventory"]
    client: NatsClient = await nats.connect(
        server.url,
        user=creds.user,
        password=creds.password,
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        watcher_creds = server.credentials["dwf_admin"]
        watcher: NatsClient = await nats.connect(
            server.url, user=watcher_creds.user, password=watcher_creds.password
        )
        own = await watcher.subscribe("dwf.inventory.>")
        await _until_subscribed(watcher, own)
        await client.publish("dwf.inventory.stock_changed.v1", b"ok")
        await client.flush()
        received = await own.next_msg(timeout=5)
        while received.data == b"probe":  # late copies of the readiness probe
            received = await own.next_msg(timeout=5)
        assert received.data == b"ok"

        await client.publish("dwf.order_gateway.order_accepted.v1", b"forged")
        await client.flush()
        await asyncio.wait_for(violation.wait(), 5)
        assert any("permissions violation" in e.lower() for e in errors), errors
        await watcher.close()
    finally:
        await client.close()
        await asyncio.to_thread(server.stop)
