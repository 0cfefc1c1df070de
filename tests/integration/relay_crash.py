"""Runs one outbox relay batch and SIGKILLs itself right after the first publish is
acknowledged by the stream, before the relay can mark the event sent."""

from __future__ import annotations

import asyncio
import os
import signal

from chassis import bus, db
from chassis.config import ServiceSettings
from chassis.outbox import OutboxRelay


async def main() -> None:
    settings = ServiceSettings()  # type: ignore[call-arg]  # from DWF_* env
    engine = db.engine_for(settings)
    client = await bus.connect(
        settings.nats_url,
        name="relay-crash",
        user=settings.nats_user or None,
        password=settings.nats_password or None,
    )

    async def die(event_id: str) -> None:
        print(f"published {event_id}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    relay = OutboxRelay(engine, client.jetstream(), settings.schema_name, after_publish=die)
    await relay.relay_batch()


asyncio.run(main())
