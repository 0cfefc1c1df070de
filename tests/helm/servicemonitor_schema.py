"""A strict JSON schema (draft 7) for the ServiceMonitor our chart renders.

Written for this project: it covers only the monitoring.coreos.com/v1 ServiceMonitor fields
templates/servicemonitor.yaml emits, and closes every object (additionalProperties false), so
a misspelled or misplaced field fails the tests the way strict field validation would fail it
on the API server. Field names and formats follow the Prometheus Operator API reference;
extend the schema when the template starts using another field.
"""

from __future__ import annotations

from typing import Any

# Prometheus duration, e.g. 30s, 1m30s, 500ms (the operator's `Duration` type).
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_DURATION_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": _DURATION}
# Kubernetes label value (may be empty) and qualified name (optional DNS prefix).
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_LABELS: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": _QUALIFIED_NAME, "maxLength": 316},
    "additionalProperties": {"type": "string", "pattern": _LABEL_VALUE, "maxLength": 63},
}

SERVICEMONITOR_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "ServiceMonitor (monitoring.coreos.com/v1) as rendered by the dwf chart",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": _DNS_SUBDOMAIN, "maxLength": 253},
                "namespace": {"type": "string", "pattern": _DNS_LABEL, "maxLength": 63},
                "labels": _LABELS,
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {**_LABELS, "minProperties": 1}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "pattern": _DNS_LABEL, "maxLength": 63},
                        },
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            # The Service port's name (our Services name it "metrics").
                            "port": {"type": "string", "pattern": _DNS_LABEL, "maxLength": 15},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION_SCHEMA,
                            "scrapeTimeout": _DURATION_SCHEMA,
                        },
                    },
                },
            },
        },
    },
}
