from __future__ import annotations

import pytest

from chassis.config import DEFAULT_GRPC_PORTS, ServiceSettings
from chassis.errors import FailedPrecondition, PreconditionViolation
from chassis.events import STREAMS, dlq_subject, snake_case, subject_for
from dwf.events.v1 import envelope_pb2


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("ReservationCreated", "reservation_created"),
        ("ErpOrderBooked", "erp_order_booked"),
        ("X12Acknowledged", "x12_acknowledged"),
        ("DLQEntry", "dlq_entry"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


def test_subject_carries_producer_event_and_version() -> None:
    assert subject_for("inventory", "dwf.inventory.v1.ReservationCreated") == (
        "dwf.inventory.reservation_created.v1"
    )
    assert subject_for("order_gateway", "dwf.order.v2.OrderAccepted") == (
        "dwf.order_gateway.order_accepted.v2"
    )
    with pytest.raises(ValueError, match="no version"):
        subject_for("inventory", "google.protobuf.StringValue")


def test_every_service_has_a_stream_covering_its_subjects() -> None:
    assert STREAMS["fulfillment"].name == "DWF_FULFILLMENT"
    assert STREAMS["fulfillment"].subjects == ("dwf.fulfillment.>",)
    assert dlq_subject("notifications", "status_feed") == "dwf.dlq.notifications.status_feed"


def test_envelope_has_the_documented_fields() -> None:
    fields = [f.name for f in envelope_pb2.EventEnvelope.DESCRIPTOR.fields]
    assert fields[:10] == [
        "id",
        "type",
        "occurred_at",
        "producer",
        "correlation_id",
        "causation_id",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "payload",
    ]


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWF_SERVICE", "inventory")
    monkeypatch.setenv("DWF_CONSUMER_MAX_DELIVER", "7")
    settings = ServiceSettings()  # type: ignore[call-arg]
    assert settings.port == DEFAULT_GRPC_PORTS["inventory"] == 50052
    assert settings.schema_name == "inventory"
    assert settings.consumer_max_deliver == 7
    assert not settings.tls_enabled


def test_settings_refuse_unknown_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWF_SERVICE", "billing")
    with pytest.raises(ValueError, match="service"):
        ServiceSettings()  # type: ignore[call-arg]


def test_precondition_failure_details() -> None:
    status = FailedPrecondition(
        "short",
        "INSUFFICIENT_STOCK",
        [PreconditionViolation("STOCK", "sku/ABC", "only 3 available")],
    ).to_status()
    assert status.code == 9
    assert [d.type_url.rsplit(".", 1)[-1] for d in status.details] == [
        "ErrorInfo",
        "PreconditionFailure",
    ]


def test_settings_round_trip_through_a_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ServiceSettings(
        service="notifications",
        grpc_port=61000,
        consumer_backoff_seconds=[0.1, 1.0],
        nats_user="notifications",
    )
    env = original.as_environment({"PATH": "/bin", "DWF_STALE": "x"})
    assert env["PATH"] == "/bin" and "DWF_STALE" not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ServiceSettings() == original  # type: ignore[call-arg]
