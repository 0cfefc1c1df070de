"""Client channels between services: TLS/mTLS when configured, tracing, correlation id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from chassis.config import ServiceSettings
from chassis.context import CORRELATION_ID_HEADER, correlation_id_var


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
