"""Server interceptors every service gets: correlation id, logging, metrics, deadline, errors.

They are one wrapper applied in a fixed order (cheaper on the checkout hot path than four
layers): correlation id → access log + metrics → deadline → error mapping. OpenTelemetry's own
interceptor sits outside it so logs carry the trace id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import propagate
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from chassis.context import CORRELATION_ID_HEADER, correlation_id_var, new_id
from chassis.errors import DomainError, status_for

log = logging.getLogger("dwf.grpc")

RPC_HANDLED = Counter(
    "dwf_grpc_server_handled_total", "RPCs completed, by method and code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "dwf_grpc_server_handling_seconds",
    "RPC handling time",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

Behavior = Callable[..., Any]


_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


def _correlation_from(metadata: Any) -> str:
    for key, value in metadata:
        if key == CORRELATION_ID_HEADER and value:
            return str(value)
    return new_id()


def _is_dependency_down(exc: BaseException) -> bool:
    """Lost or refused database connections: retryable, not a bug."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | ConnectionError)


class _MethodMetrics:
    """A method's labelled metric children, looked up once instead of on every call."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.seconds = RPC_SECONDS.labels(method)
        self._ok = RPC_HANDLED.labels(method, "OK")

    def handled(self, code: grpc.StatusCode) -> Any:
        return (
            self._ok if code is grpc.StatusCode.OK else RPC_HANDLED.labels(self.method, code.name)
        )


class ChassisInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, domain: str, default_deadline_seconds: float, *, propagate_only: bool = False
    ) -> None:
        self.domain = domain
        self.default_deadline = default_deadline_seconds
        self.propagate_only = propagate_only
        # Wrapped handlers are built once per method, not on every call (hot path).
        self._wrapped: dict[tuple[str, int], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        key = (method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrap(handler, method)
            self._wrapped[key] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        quiet = method.startswith(_QUIET_PREFIXES)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method, quiet),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary(self, behavior: Behavior, method: str, quiet: bool) -> Behavior:
        metrics = _MethodMetrics(method)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._begin(context)
            code = grpc.StatusCode.OK
            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= self.default_deadline:
                    # gRPC cancels the call at the client's deadline itself.
                    return await behavior(request, context)
                async with asyncio.timeout(self.default_deadline):
                    return await behavior(request, context)
            except BaseException as exc:
                code = self._code_of(exc, context)
                await self._abort(exc, code, context, method)
                raise
            finally:
                self._end(metrics, code, started, quiet)

        return wrapped

    def _wrap_stream(self, behavior: Behavior, method: str, quiet: bool) -> Behavior:
        # Streams (WatchOrder) may live for hours: only the client's own deadline applies.
        metrics = _MethodMetrics(method)

        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = self._begin(context)
            code = grpc.StatusCode.OK
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                code = self._code_of(exc, context)
                await self._abort(exc, code, context, method)
                raise
            finally:
                self._end(metrics, code, started, quiet)

        return wrapped

    def _begin(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        metadata = context.invocation_metadata() or ()
        correlation_id = _correlation_from(metadata)
        correlation_id_var.set(correlation_id)
        if self.propagate_only:
            carrier = {k: str(v) for k, v in metadata if k in _TRACE_HEADERS}
            if carrier:  # the call's task context: attaching here scopes it to this call
                otel_context.attach(propagate.extract(carrier))
        context.set_trailing_metadata(((CORRELATION_ID_HEADER, correlation_id),))
        return time.perf_counter()

    def _end(
        self, metrics: _MethodMetrics, code: grpc.StatusCode, started: float, quiet: bool
    ) -> None:
        elapsed = time.perf_counter() - started
        method = metrics.method
        metrics.handled(code).inc()
        metrics.seconds.observe(elapsed)
        if code is grpc.StatusCode.OK:
            if not quiet:
                log.debug("rpc %s OK in %.2f ms", method, elapsed * 1000)
        elif code is grpc.StatusCode.INTERNAL:
            log.error("rpc %s INTERNAL in %.2f ms", method, elapsed * 1000)
        else:
            log.info("rpc %s %s in %.2f ms", method, code.name, elapsed * 1000)

    @staticmethod
    def _code_of(
        exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]
    ) -> grpc.StatusCode:
        if isinstance(exc, DomainError):
            return exc.code
        if isinstance(exc, NotImplementedError):
            return grpc.StatusCode.UNIMPLEMENTED
        if isinstance(exc, TimeoutError):
            return grpc.StatusCode.DEADLINE_EXCEEDED
        if _is_dependency_down(exc):
            return grpc.StatusCode.UNAVAILABLE
        if isinstance(exc, grpc.aio.AbortError):
            return context.code() or grpc.StatusCode.UNKNOWN
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.INTERNAL

    async def _abort(
        self,
        exc: BaseException,
        code: grpc.StatusCode,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> None:
        """Abort the call with a rich status for ``exc``; returns only for foreign errors."""
        if isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError | GeneratorExit):
            return
        if isinstance(exc, DomainError):
            status = exc.to_status(domain=self.domain)
        elif code is grpc.StatusCode.UNIMPLEMENTED:
            status = status_for(
                code, f"{method} is not implemented yet", "UNIMPLEMENTED", self.domain
            )
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            status = status_for(code, "deadline exceeded", "DEADLINE_EXCEEDED", self.domain)
        elif code is grpc.StatusCode.UNAVAILABLE:
            log.warning("dependency unavailable in %s: %s", method, exc)
            status = status_for(
                code, "a dependency is unavailable; retry", "DEPENDENCY_UNAVAILABLE", self.domain
            )
        else:
            log.exception("unhandled error in %s", method, exc_info=exc)
            status = status_for(code, "internal error", "INTERNAL", self.domain)
        grpc_status = rpc_status.to_status(status)
        # Keep the correlation id next to the status details in the trailers.
        trailers = (
            *grpc_status.trailing_metadata,
            (CORRELATION_ID_HEADER, correlation_id_var.get() or ""),
        )
        await context.abort(code, grpc_status.details, trailers)
