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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.errors import AlreadyExists, FieldViolation, InvalidArgument
from chassis.schema import idempotency_key
from chassis.statements import insert_row, select_where, update_where, where_params

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
    key = {"method": method, "request_id": request_id}
    claimed = await session.scalar(_CLAIM_KEY, {**key, "fingerprint": request_fingerprint})
    if claimed is None:
        stored = (await session.execute(_STORED_ANSWER, where_params(**key))).one()
        if stored.fingerprint != request_fingerprint:
            raise reused(request_id, method)
        return response_type.FromString(stored.response)
    response = await work()
    await session.execute(
        _STORE_ANSWER,
        {"response": response.SerializeToString(deterministic=True), **where_params(**key)},
    )
    return response


_KEY = ("method", "request_id")
_CLAIM_KEY = insert_row(
    idempotency_key,
    frozenset((*_KEY, "fingerprint")),
    on_conflict="nothing",
    returning="request_id",
)
_STORED_ANSWER = select_where(idempotency_key, _KEY, columns=("fingerprint", "response"))
_STORE_ANSWER = update_where(idempotency_key, _KEY, frozenset(("response",)))


# --- the same contract for a coalesced batch of requests (one transaction) -------------
# A batch writes each key once, with its answer, at the end: claiming first and storing the
# answer later cost a second write of every key, the largest statement of a Reserve batch.
# Concurrent duplicates still queue as in run_once, on a transaction-scoped advisory lock
# per key (memory only, no row written), taken in key order so batches never deadlock.
# Fixed-shape statements over arrays: compiled once, whatever the batch size.

_LOCK_KEYS = text(
    """
    SELECT count(pg_advisory_xact_lock(k)) FROM (
        SELECT DISTINCT hashtextextended(:method || ':' || i, 0) AS k
        FROM unnest(CAST(:ids AS text[])) AS t(i)
        ORDER BY k
    ) AS keys
    """
)
_ANSWERED = text(
    """
    SELECT request_id, fingerprint, response FROM idempotency_key
    WHERE method = :method AND request_id = ANY(CAST(:ids AS text[]))
    """
)
_RECORD_ANSWERS = text(
    """
    INSERT INTO idempotency_key (method, request_id, fingerprint, response)
    SELECT :method, i, f, r
    FROM unnest(CAST(:ids AS text[]), CAST(:prints AS text[]), CAST(:payloads AS bytea[]))
         AS t(i, f, r)
    ON CONFLICT DO NOTHING
    RETURNING request_id
    """
)


class ConcurrentDuplicate(Exception):
    """A key was committed by a transaction that did not hold its lock (a writer outside
    this protocol): roll the batch back and run it again, to answer from the store."""


async def answered_many(
    session: AsyncSession, method: str, request_ids: Sequence[str]
) -> dict[str, tuple[str, bytes | None]]:
    """Lock the request ids for this transaction (waiting for any other transaction
    working on one of them to end), then return the stored (fingerprint, answer) of each
    id already answered. Look up each id through this once per transaction: its lookup
    must follow the lock, in a statement of its own, to see what the holder committed."""
    unique = sorted(set(request_ids))
    if not unique:
        return {}
    await session.execute(_LOCK_KEYS, {"method": method, "ids": unique})
    rows = await session.execute(_ANSWERED, {"method": method, "ids": unique})
    return {row.request_id: (row.fingerprint, row.response) for row in rows}


async def record_answers(
    session: AsyncSession,
    method: str,
    requests: Mapping[str, Message],
    responses: Mapping[str, Message],
) -> None:
    """Write each answered request's key, fingerprint and answer, in request id order (two
    batches sharing ids wait for each other instead of deadlocking). Requests that failed
    are left out, so a corrected retry can run. Raises :class:`ConcurrentDuplicate` if a
    key was committed meanwhile by another transaction."""
    ids = sorted(responses)
    if not ids:
        return
    written = set(
        (
            await session.execute(
                _RECORD_ANSWERS,
                {
                    "method": method,
                    "ids": ids,
                    "prints": [fingerprint(requests[i]) for i in ids],
                    "payloads": [responses[i].SerializeToString(deterministic=True) for i in ids],
                },
            )
        ).scalars()
    )
    if len(written) != len(ids):
        raise ConcurrentDuplicate(sorted(set(ids) - written))


def reused(request_id: str, method: str) -> AlreadyExists:
    return AlreadyExists(
        "request_id was already used for a different request",
        reason="REQUEST_ID_REUSED",
        request_id=request_id,
        method=method,
    )
