"""The chassis interceptor on a real in-process grpc.aio server (no database needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from chassis.errors import FieldViolation, InvalidArgument, ResourceExhausted
from chassis.interceptors import ChassisInterceptor

SERVICE = "dwf.test.v1.Probe"


async def ok(request: bytes, context: Any) -> bytes:
    return request


async def invalid(request: bytes, context: Any) -> bytes:
    raise InvalidArgument([FieldViolation("lines[0].quantity", "must be > 0")])


async def throttled(request: bytes, context: Any) -> bytes:
    raise ResourceExhausted("slow down", retry_after_seconds=1.5)


async def bug(request: bytes, context: Any) -> bytes:
    raise KeyError("oops")


async def not_yet(request: bytes, context: Any) -> bytes:
    raise NotImplementedError


async def forever(request: bytes, context: Any) -> bytes:
    await asyncio.Event().wait()
    return b""


async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"1"
    yield b"2"
    raise InvalidArgument([FieldViolation("order_id", "unknown")])


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ChassisInterceptor("dwf.test", 0.3)])
    unary = grpc.unary_unary_rpc_method_handler
    handlers = {
        name: unary(fn)
        for name, fn in {
            "Ok": ok,
            "Invalid": invalid,
            "Throttled": throttled,
            "Bug": bug,
            "NotYet": not_yet,
            "Forever": forever,
        }.items()
    }
    handlers["Stream"] = grpc.unary_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


async def _fail(channel: grpc.aio.Channel, method: str, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await channel.unary_unary(f"/{SERVICE}/{method}")(b"x", **kwargs)
    return failure.value


def _details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


async def test_correlation_id_is_echoed(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Ok")(b"hi", metadata=(("x-correlation-id", "c-1"),))
    assert await call == b"hi"
    assert dict(await call.trailing_metadata())["x-correlation-id"] == "c-1"


async def test_correlation_id_is_generated_when_absent(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Ok")(b"hi")
    await call
    generated = dict(await call.trailing_metadata())["x-correlation-id"]
    assert len(generated) == 36


async def test_invalid_argument_carries_bad_request_and_error_info(
    channel: grpc.aio.Channel,
) -> None:
    error = await _fail(channel, "Invalid", metadata=(("x-correlation-id", "c-2"),))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = _details(error)
    assert details["ErrorInfo"].domain == "dwf.test"
    assert details["BadRequest"].field_violations[0].field == "lines[0].quantity"
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == "c-2"


async def test_resource_exhausted_carries_retry_info(channel: grpc.aio.Channel) -> None:
    error = await _fail(channel, "Throttled")
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _details(error)["RetryInfo"].retry_delay.ToMilliseconds() == 1500


async def test_unexpected_exception_is_internal_without_leaking(channel: grpc.aio.Channel) -> None:
    error = await _fail(channel, "Bug")
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "oops" not in (error.details() or "")
    assert _details(error)["ErrorInfo"].reason == "INTERNAL"


async def test_not_implemented_is_unimplemented(channel: grpc.aio.Channel) -> None:
    error = await _fail(channel, "NotYet")
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert _details(error)["ErrorInfo"].reason == "UNIMPLEMENTED"


async def test_server_side_default_deadline(channel: grpc.aio.Channel) -> None:
    error = await _fail(channel, "Forever")  # no client deadline: the 0.3 s default applies
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_deadline_is_honoured(channel: grpc.aio.Channel) -> None:
    error = await _fail(channel, "Forever", timeout=0.1)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_stream_error_after_messages_is_mapped(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(f"/{SERVICE}/Stream")(b"")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for message in call:
            received.append(message)
    assert received == [b"1", b"2"]
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_without_exported_tracing_the_callers_trace_context_still_flows() -> None:
    """propagate_only: no OTel interceptor, yet handlers (and so outbox headers) continue the
    caller's W3C trace."""
    from opentelemetry import trace

    seen: list[str] = []

    async def current_trace(request: bytes, context: Any) -> bytes:
        span_context = trace.get_current_span().get_span_context()
        seen.append(format(span_context.trace_id, "032x"))
        return b""

    server = grpc.aio.server(interceptors=[ChassisInterceptor("dwf.test", 5, propagate_only=True)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Trace": grpc.unary_unary_rpc_method_handler(current_trace)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.unary_unary(f"/{SERVICE}/Trace")(
            b"", metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)
        )
    await server.stop(0)
    assert seen == [trace_id]
