"""request_id idempotency (AIP-155) from libs/chassis, on real Postgres."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import wrappers_pb2
from sqlalchemy import text

from chassis import db
from chassis.errors import AlreadyExists, InvalidArgument
from chassis.idempotency import run_once
from tests.conftest import Databases

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(databases: Databases):  # type: ignore[no-untyped-def]
    engine = db.create_engine(
        databases.service_urls["inventory"], "inventory", application_name="t", pool_size=25
    )
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS test_counter (request_id text)"))
    yield engine
    await engine.dispose()


async def _call(engine, request_id: str, payload: str) -> wrappers_pb2.StringValue:  # type: ignore[no-untyped-def]
    sessions = db.session_factory(engine)
    request = wrappers_pb2.StringValue(value=payload)

    async def work() -> wrappers_pb2.StringValue:
        await session.execute(text("INSERT INTO test_counter VALUES (:r)"), {"r": request_id})
        return wrappers_pb2.StringValue(value=f"done {payload} {uuid.uuid4()}")

    async with sessions.begin() as session:
        return await run_once(
            session,
            method="Test/Do",
            request_id=request_id,
            request=request,
            response_type=wrappers_pb2.StringValue,
            work=work,
        )


async def _effects(engine, request_id: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT count(*) FROM test_counter WHERE request_id = :r"), {"r": request_id}
            )
        )


async def test_twenty_concurrent_retries_do_the_work_once(engine) -> None:  # type: ignore[no-untyped-def]
    request_id = str(uuid.uuid4())
    answers = await asyncio.gather(*(_call(engine, request_id, "a") for _ in range(20)))
    assert len({answer.value for answer in answers}) == 1
    assert await _effects(engine, request_id) == 1


async def test_same_request_id_with_other_payload_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    request_id = str(uuid.uuid4())
    await _call(engine, request_id, "a")
    with pytest.raises(AlreadyExists) as refused:
        await _call(engine, request_id, "b")
    assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert await _effects(engine, request_id) == 1


async def test_missing_or_malformed_request_id_is_invalid_and_writes_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    for bad in ("", "not-a-uuid"):
        with pytest.raises(InvalidArgument) as invalid:
            await _call(engine, bad, "a")
        assert invalid.value.violations[0].field == "request_id"
        assert await _effects(engine, bad) == 0
