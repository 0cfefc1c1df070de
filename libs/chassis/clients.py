"""Client channels between services: TLS/mTLS when configured, tracing, correlation id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from chassis.config import ServiceSettings
from chassis.context import CORRELATION_ID_HEADER, correlation_id_var
from chassis.errors import DomainError, RemoteError, Unavailable


class CorrelationIdClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Carries the current correlation id to the next service."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        correlation_id = correlation_id_var.get()
        if correlation_id:
            metadata = list(client_call_details.metadata or [])
            if not any(key == CORRELATION_ID_HEADER for key, _ in metadata):
                metadata.append((CORRELATION_ID_HEADER, correlation_id))
            client_call_details = client_call_details._replace(  # type: ignore[attr-defined]
                metadata=grpc.aio.Metadata(*metadata)
            )
        return await continuation(client_call_details, request)


def _read(path: object) -> bytes | None:
    return None if path is None else open(str(path), "rb").read()


def open_channel(target: str, settings: ServiceSettings | None = None) -> grpc.aio.Channel:
    interceptors = [*aio_client_interceptors(), CorrelationIdClientInterceptor()]
    if settings is not None and settings.tls_enabled:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(settings.tls_ca_file),
            private_key=_read(settings.tls_key_file),
            certificate_chain=_read(settings.tls_cert_file),
        )
        return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, interceptors=interceptors)


# A dependency that cannot answer now: our caller should retry (UNAVAILABLE), not give up.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


def remote_error(error: grpc.aio.AioRpcError, dependency: str) -> DomainError:
    """What to answer our caller when a call to ``dependency`` failed: transient failures
    become UNAVAILABLE (DEPENDENCY_UNAVAILABLE); a refusal keeps its code and rich details."""
    code = error.code()
    if code in _TRANSIENT:
        return Unavailable(f"{dependency} is unavailable: {error.details()}", dependency=dependency)
    status = _rich_status(error) or status_pb2.Status(
        code=code.value[0], message=error.details() or ""
    )
    return RemoteError(code, status)


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call, or "" when it carries none."""
    status = _rich_status(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
