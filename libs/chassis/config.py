"""Service configuration from environment variables (documented in docs/configuration.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ServiceName = Literal["order_gateway", "inventory", "fulfillment", "notifications"]

SERVICE_NAMES: tuple[ServiceName, ...] = (
    "order_gateway",
    "inventory",
    "fulfillment",
    "notifications",
)

DEFAULT_GRPC_PORTS: dict[str, int] = {
    "order_gateway": 50051,
    "inventory": 50052,
    "fulfillment": 50053,
    "notifications": 50054,
}


class ServiceSettings(BaseSettings):
    """Everything a service process reads from its environment (prefix ``DWF_``)."""

    model_config = SettingsConfigDict(env_prefix="DWF_", extra="ignore")

    service: ServiceName = Field(description="Which service this process runs.")
    grpc_host: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    grpc_port: int | None = Field(
        None, description="gRPC port; defaults to the service's documented port."
    )
    metrics_port: int = Field(0, description="Prometheus /metrics port; 0 disables it.")
    health_port: int = Field(
        0,
        description="Plaintext port serving only grpc.health.v1, for kubelet probes when the "
        "main port is TLS; 0 disables it.",
    )

    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/dwf",
        description="The service's own Postgres role (it can use only its own schema).",
    )
    db_schema: str | None = Field(
        None, description="Postgres schema; defaults to the service name."
    )
    db_pool_size: int = Field(10, ge=1)

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server(s), comma separated.")
    nats_user: str | None = None
    nats_password: str | None = None

    tls_cert_file: Path | None = Field(None, description="PEM certificate; enables TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key for tls_cert_file.")
    tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, peers must present certificates (mTLS)."
    )

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    drain_seconds: float = Field(
        3.0,
        ge=0,
        description="After SIGTERM: report NOT_SERVING this long, still serving, so load "
        "balancers and readiness probes stop routing here before the server stops.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="Then: how long in-flight calls may take to finish."
    )
    default_deadline_seconds: float = Field(
        30.0, gt=0, description="Longest a call may run when the client set no deadline."
    )

    outbox_poll_interval_seconds: float = Field(1.0, gt=0)
    outbox_batch_size: int = Field(100, ge=1)
    consumer_max_deliver: int = Field(5, ge=1, description="Attempts before a dead letter.")
    consumer_ack_wait_seconds: float = Field(30.0, gt=0)
    consumer_backoff_seconds: list[float] = Field(
        default_factory=lambda: [0.5, 2.0, 10.0, 30.0],
        description="Delay before redelivery after the Nth failed attempt (last one repeats).",
    )

    sweep_interval_seconds: float = Field(
        1.0, gt=0, description="inventory: how often expired holds are looked for."
    )
    availability_window_seconds: float = Field(
        0.5, gt=0, description="inventory: AvailabilityChanged events coalesce over this window."
    )
    dependency_retry_max_seconds: float = Field(
        5.0, gt=0, description="Cap of the backoff while waiting for Postgres/NATS at start-up."
    )

    def as_environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The ``DWF_*`` variables that make a child process read these settings; ``base``
        (e.g. os.environ) is kept minus any other ``DWF_*`` variable."""
        env = {k: v for k, v in (base or {}).items() if not k.startswith("DWF_")}
        for name, value in self.model_dump().items():
            if value is not None:
                env[f"DWF_{name.upper()}"] = (
                    json.dumps(value) if isinstance(value, list | dict) else str(value)
                )
        return env

    @property
    def schema_name(self) -> str:
        return self.db_schema or self.service

    @property
    def port(self) -> int:
        return self.grpc_port if self.grpc_port is not None else DEFAULT_GRPC_PORTS[self.service]

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None
