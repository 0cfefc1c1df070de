"""OpenTelemetry set-up from the standard ``OTEL_*`` variables, and W3C context over NATS.

``OTEL_TRACES_EXPORTER`` selects ``otlp`` (with ``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console``
or ``none`` (the default, so a laptop run prints no spans). ``OTEL_SERVICE_NAME`` overrides the
service name in the resource.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

_configured = False
_exporting = False


def spans_exported() -> bool:
    """True once tracing was configured with somewhere for spans to go."""
    return _exporting


def configure_tracing(service: str, *extra_processors: SpanProcessor) -> TracerProvider:
    """Install the process-wide tracer provider once; later calls return the same one."""
    global _configured, _exporting
    provider = trace.get_tracer_provider()
    if _configured and isinstance(provider, TracerProvider):
        for processor in extra_processors:
            provider.add_span_processor(processor)
        _exporting = _exporting or bool(extra_processors)
        return provider
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    sampler = None
    if exporter_name == "none" and not extra_processors and "OTEL_TRACES_SAMPLER" not in os.environ:
        # Nothing exports our own root spans, so don't record them (hot paths pay for every
        # recorded span); a caller's sampled trace is still recorded and propagated.
        sampler = ParentBased(root=ALWAYS_OFF)
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _configured = True
    _exporting = exporter_name in ("otlp", "console") or bool(extra_processors)
    return provider


def inject_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (traceparent/tracestate) into message headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


tracer = trace.get_tracer("dwf.chassis")
