"""Event naming (subjects, streams) and the envelope every event travels in (docs/events.md)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from google.protobuf.message import Message

from chassis.config import SERVICE_NAMES

SUBJECT_ROOT = "dwf"
DLQ_STREAM = "DWF_DLQ"
DLQ_SUBJECT_PREFIX = f"{SUBJECT_ROOT}.dlq"

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EVENT_TYPE = "dwf-event-type"
HEADER_CORRELATION_ID = "dwf-correlation-id"
HEADER_DLQ_ERROR = "dwf-dlq-error"
HEADER_DLQ_SUBJECT = "dwf-dlq-original-subject"
HEADER_DLQ_DELIVERIES = "dwf-dlq-deliveries"

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def event_type(payload: Message) -> str:
    """The payload's full proto name, e.g. ``dwf.inventory.v1.ReservationCreated``."""
    return str(payload.DESCRIPTOR.full_name)


@functools.lru_cache(maxsize=1024)  # a handful of event types, asked once per event
def subject_for(producer: str, type_name: str) -> str:
    """``dwf.inventory.v1.ReservationCreated`` → ``dwf.<producer>.reservation_created.v1``."""
    package, _, message = type_name.rpartition(".")
    version = package.rpartition(".")[2]
    if not re.fullmatch(r"v\d+", version):
        raise ValueError(f"event type {type_name!r} has no version in its package")
    return f"{SUBJECT_ROOT}.{producer}.{snake_case(message)}.{version}"


def dlq_subject(consumer_service: str, durable: str) -> str:
    return f"{DLQ_SUBJECT_PREFIX}.{consumer_service}.{durable}"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]


def stream_for(producer: str) -> StreamSpec:
    return StreamSpec(f"DWF_{producer.upper()}", (f"{SUBJECT_ROOT}.{producer}.>",))


DLQ = StreamSpec(DLQ_STREAM, (f"{DLQ_SUBJECT_PREFIX}.>",))
STREAMS: dict[str, StreamSpec] = {name: stream_for(name) for name in SERVICE_NAMES}
