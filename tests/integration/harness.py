"""Small async helpers for integration tests: settings for a service against the session's
servers, and awaiting a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from chassis.config import ServiceSettings
from dwf.events.v1 import envelope_pb2
from tests.conftest import Databases, NatsServer


def settings_for(
    service: str, databases: Databases, nats: NatsServer, **overrides: Any
) -> ServiceSettings:
    user, password = nats.service_credentials(service)
    values: dict[str, Any] = {
        "service": service,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "database_url": databases.service_urls[service],
        "nats_url": nats.url,
        "nats_user": user,
        "nats_password": password,
        "log_format": "text",
        "shutdown_grace_seconds": 5.0,
        "drain_seconds": 0.0,
        "outbox_poll_interval_seconds": 0.2,
        "dependency_retry_max_seconds": 0.5,
    }
    values.update(overrides)
    return ServiceSettings(**values)


async def eventually(
    condition: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Await until ``condition()`` returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)  # poll interval of the wait, not a synchronisation


def service_env(settings: ServiceSettings) -> dict[str, str]:
    """The environment that makes ``python -m services.<name>`` read these settings."""
    import os

    return settings.as_environment(dict(os.environ))


def now_ts() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def new_id() -> str:
    return str(uuid.uuid4())


def envelope_for(
    producer: str,
    aggregate_type: str,
    aggregate_id: str,
    sequence: int,
    payload: Any,
    event_id: str | None = None,
) -> envelope_pb2.EventEnvelope:
    """An event as a producer's relay would publish it (tests play the producer)."""
    envelope = envelope_pb2.EventEnvelope(
        id=event_id or new_id(),
        type=str(payload.DESCRIPTOR.full_name),
        occurred_at=now_ts(),
        producer=producer,
        correlation_id=new_id(),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        sequence=sequence,
    )
    envelope.payload.Pack(payload)
    return envelope
