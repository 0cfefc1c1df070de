"""Settings of the notifications delivery engine (``DWF_NOTIFY_*``; docs/notifications.md).

Kept next to the service rather than in the chassis' ServiceSettings: only this service reads
them. Tests build them directly with short backoffs.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.notifications.domain import RetryPolicy


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DWF_NOTIFY_", extra="ignore")

    concurrency: int = Field(32, ge=1, description="Deliveries in flight per replica.")
    timeout_seconds: float = Field(10.0, gt=0, description="Whole HTTP request timeout.")
    max_attempts: int = Field(8, ge=1, description="Attempts before a dead letter.")
    backoff_initial_seconds: float = Field(
        1.0, gt=0, description="Backoff cap after the first failure (doubles per attempt)."
    )
    backoff_max_seconds: float = Field(300.0, gt=0, description="Largest backoff.")
    retry_after_max_seconds: float = Field(
        3600.0, gt=0, description="A Retry-After longer than this is cut to it."
    )
    poll_interval_seconds: float = Field(
        0.5, gt=0, description="Idle poll of the delivery worker when no NOTIFY wakes it."
    )
    availability_interval_seconds: float = Field(
        5.0, gt=0, description="Availability feed: each SKU at most once per endpoint per interval."
    )
    allow_http: bool = Field(
        False,
        description="Accept http:// endpoint URLs (local stack and tests); https only otherwise.",
    )
    user_agent: str = "dwf-notifications/1"
    smtp_host: str = Field("127.0.0.1", description="SMTP server for EMAIL endpoints.")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = Field("dwf <notifications@dwf.local>", description="From header.")
    smtp_starttls: bool = Field(False, description="Upgrade with STARTTLS before sending.")
    smtp_user: str | None = None
    smtp_password: str | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial_backoff_seconds=self.backoff_initial_seconds,
            max_backoff_seconds=self.backoff_max_seconds,
            max_retry_after_seconds=self.retry_after_max_seconds,
        )
