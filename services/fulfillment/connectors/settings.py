"""Settings of fulfillment's connectors to the ERP, WMS/3PL and carrier (``DWF_FULFILLMENT_*``).

The contracts are in docs/sandboxes.md. Defaults suit the local stack's sandboxes; in
production the URLs and tokens come from the environment (tokens from a Secret). Timeouts,
retries and breaker apply to each system alike; the rate limits are per system.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.fulfillment.connectors.http import (
    BreakerPolicy,
    RetryPolicy,
    System,
    SystemConfig,
)


class ConnectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DWF_FULFILLMENT_", extra="ignore")

    erp_url: str = Field("http://127.0.0.1:8091", description="ERP API base URL.")
    erp_token: SecretStr = Field(
        SecretStr("dev-erp-token"), description="Bearer token for the ERP."
    )
    wms_url: str = Field("http://127.0.0.1:8092", description="WMS/3PL API base URL.")
    wms_token: SecretStr = Field(
        SecretStr("dev-wms-token"), description="Bearer token for the WMS."
    )
    carrier_url: str = Field("http://127.0.0.1:8093", description="Carrier API base URL.")
    carrier_token: SecretStr = Field(
        SecretStr("dev-carrier-token"), description="Bearer token for the carrier."
    )

    connect_timeout_seconds: float = Field(3.0, gt=0, description="TCP/TLS connect timeout.")
    read_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest wait for (each chunk of) an answer."
    )
    write_timeout_seconds: float = Field(10.0, gt=0, description="Longest wait to send.")
    pool_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait for a free pooled connection."
    )
    max_connections: int = Field(20, ge=1, description="Connection pool size per system.")

    retry_attempts: int = Field(
        4, ge=1, description="Attempts per call (1 = no retry) on timeouts, 5xx, 429."
    )
    retry_backoff_initial_seconds: float = Field(
        0.2, gt=0, description="Backoff cap after the first failure; doubles per attempt."
    )
    retry_backoff_max_seconds: float = Field(
        5.0, gt=0, description="Largest backoff cap (the delay is uniform in [0, cap])."
    )
    retry_after_max_seconds: float = Field(
        30.0,
        ge=0,
        description="A Retry-After up to this long is waited for; a longer one ends the call "
        "at once as RETRYABLE with retry_after set.",
    )

    breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive timeouts/connection errors/5xx that open a breaker."
    )
    breaker_reset_seconds: float = Field(
        30.0, gt=0, description="How long an open breaker fails fast before one probe."
    )

    erp_requests_per_second: float = Field(
        10.0, gt=0, description="The ERP quota: requests are spaced 1/rate apart, retries too."
    )
    wms_requests_per_second: float = Field(50.0, gt=0, description="WMS request rate cap.")
    carrier_requests_per_second: float = Field(20.0, gt=0, description="Carrier request rate cap.")

    def _config(self, system: System, url: str, token: SecretStr, rate: float) -> SystemConfig:
        return SystemConfig(
            system=system,
            base_url=url,
            token=token.get_secret_value(),
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            write_timeout_seconds=self.write_timeout_seconds,
            pool_timeout_seconds=self.pool_timeout_seconds,
            max_connections=self.max_connections,
            requests_per_second=rate,
            retry=RetryPolicy(
                attempts=self.retry_attempts,
                backoff_initial_seconds=self.retry_backoff_initial_seconds,
                backoff_max_seconds=self.retry_backoff_max_seconds,
                retry_after_max_seconds=self.retry_after_max_seconds,
            ),
            breaker=BreakerPolicy(
                failure_threshold=self.breaker_failure_threshold,
                reset_seconds=self.breaker_reset_seconds,
            ),
        )

    def erp_config(self) -> SystemConfig:
        return self._config("ERP", self.erp_url, self.erp_token, self.erp_requests_per_second)

    def wms_config(self) -> SystemConfig:
        return self._config("WMS", self.wms_url, self.wms_token, self.wms_requests_per_second)

    def carrier_config(self) -> SystemConfig:
        return self._config(
            "CARRIER", self.carrier_url, self.carrier_token, self.carrier_requests_per_second
        )
