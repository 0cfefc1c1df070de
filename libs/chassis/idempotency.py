"""Idempotent mutating RPCs (AIP-155), shared by every service.

The key row, the state change, the outgoing events and the stored answer commit together, so
a retry sees either nothing (and does the work) or the finished answer. Concurrent retries
queue on the key's unique index: Postgres makes the second insert wait for the first
transaction, then it reads the stored answer.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import delete, select, text, update
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
            raise reused(request_id, method)
        return response_type.FromString(stored.response)
    response = await work()
    await session.execute(
        update(idempotency_key)
        .where(idempotency_key.c.method == method, idempotency_key.c.request_id == request_id)
        .values(response=response.SerializeToString(deterministic=True))
    )
    return response


# --- the same contract for a coalesced batch of requests (one transaction) -------------
# Fixed-shape statements over arrays: compiled once, whatever the batch size.

_CLAIM_MANY = text(
    """
    INSERT INTO idempotency_key (method, request_id, fingerprint)
    SELECT :method, i, f FROM unnest(CAST(:ids AS text[]), CAST(:prints AS text[])) AS t(i, f)
    ON CONFLICT DO NOTHING
    RETURNING request_id
    """
)
_STORE_MANY = text(
    """
    UPDATE idempotency_key AS k SET response = t.payload
    FROM unnest(CAST(:ids AS text[]), CAST(:payloads AS bytea[])) AS t(request_id, payload)
    WHERE k.method = :method AND k.request_id = t.request_id
    """
)


async def claim_many(
    session: AsyncSession, method: str, requests: Sequence[Message]
) -> tuple[set[str], dict[str, tuple[str, bytes | None]]]:
    """Claim each request's (method, request_id) in one statement. Returns the ids claimed
    now, and for the others their stored (fingerprint, response). A claim held by another
    transaction makes this wait until it commits, as in :func:`run_once`."""
    rows = [
        {
            "method": method,
            "request_id": request.request_id,  # type: ignore[attr-defined]
            "fingerprint": fingerprint(request),
        }
        for request in requests
    ]
    unique = {row["request_id"]: row for row in rows}
    if not unique:
        return set(), {}
    ordered = sorted(unique.values(), key=lambda row: row["request_id"])
    claimed = set(
        (
            await session.execute(
                _CLAIM_MANY,
                {
                    "method": method,
                    "ids": [row["request_id"] for row in ordered],
                    "prints": [row["fingerprint"] for row in ordered],
                },
            )
        ).scalars()
    )
    others = sorted(set(unique) - claimed)
    stored: dict[str, tuple[str, bytes | None]] = {}
    if others:
        for row in await session.execute(
            select(
                idempotency_key.c.request_id,
                idempotency_key.c.fingerprint,
                idempotency_key.c.response,
            ).where(idempotency_key.c.method == method, idempotency_key.c.request_id.in_(others))
        ):
            stored[row.request_id] = (row.fingerprint, row.response)
    return claimed, stored


async def store_many(session: AsyncSession, method: str, responses: Mapping[str, Message]) -> None:
    if not responses:
        return
    ids = list(responses)
    await session.execute(
        _STORE_MANY,
        {
            "method": method,
            "ids": ids,
            "payloads": [responses[i].SerializeToString(deterministic=True) for i in ids],
        },
    )


async def unclaim_many(session: AsyncSession, method: str, request_ids: Sequence[str]) -> None:
    """Failed requests leave no key behind, so a corrected retry can run."""
    if request_ids:
        await session.execute(
            delete(idempotency_key).where(
                idempotency_key.c.method == method,
                idempotency_key.c.request_id.in_(list(request_ids)),
            )
        )


def reused(request_id: str, method: str) -> AlreadyExists:
    return AlreadyExists(
        "request_id was already used for a different request",
        reason="REQUEST_ID_REUSED",
        request_id=request_id,
        method=method,
    )
