"""Idempotent mutating RPCs (AIP-155), shared by every service.

The key row, the state change, the outgoing events and the stored answer commit together, so
a retry sees either nothing (and does the work) or the finished answer. Concurrent retries
queue on the key's unique index: Postgres makes the second insert wait for the first
transaction, then it reads the stored answer.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.errors import AlreadyExists, FieldViolation, InvalidArgument
from chassis.schema import idempotency_key

ResponseT = TypeVar("ResponseT", bound=Message)


def request_id_violation(request_id: str, field: str = "request_id") -> FieldViolation | None:
    if not request_id:
        return FieldViolation(field, "required: a UUID chosen by the caller, reused on retry")
    try:
        uuid.UUID(request_id)
    except ValueError:
        return FieldViolation(field, "must be a UUID")
    return None


def fingerprint(request: Message) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


async def run_once(
    session: AsyncSession,
    *,
    method: str,
    request_id: str,
    request: Message,
    response_type: type[ResponseT],
    work: Callable[[], Awaitable[ResponseT]],
) -> ResponseT:
    """Run ``work`` once per (method, request_id) inside the caller's transaction."""
    violation = request_id_violation(request_id)
    if violation is not None:
        raise InvalidArgument([violation])
    request_fingerprint = fingerprint(request)
    claimed = await session.scalar(
        insert(idempotency_key)
        .values(method=method, request_id=request_id, fingerprint=request_fingerprint)
        .on_conflict_do_nothing()
        .returning(idempotency_key.c.request_id)
    )
    if claimed is None:
        stored = (
            await session.execute(
                select(idempotency_key.c.fingerprint, idempotency_key.c.response).where(
                    idempotency_key.c.method == method,
                    idempotency_key.c.request_id == request_id,
                )
            )
        ).one()
        if stored.fingerprint != request_fingerprint:
            raise AlreadyExists(
                "request_id was already used for a different request",
                reason="REQUEST_ID_REUSED",
                request_id=request_id,
                method=method,
            )
        return response_type.FromString(stored.response)
    response = await work()
    await session.execute(
        update(idempotency_key)
        .where(idempotency_key.c.method == method, idempotency_key.c.request_id == request_id)
        .values(response=response.SerializeToString(deterministic=True))
    )
    return response
