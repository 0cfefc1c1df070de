"""Settings of the fulfillment workflow (``DWF_FULFILLMENT_*``; docs/fulfillment.md).

The connectors' own settings (URLs, tokens, timeouts, retries, breaker, ERP quota) are in
services.fulfillment.connectors.settings under the same prefix.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkflowSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DWF_FULFILLMENT_", extra="ignore", populate_by_name=True
    )

    inventory_target: str = Field(
        "127.0.0.1:50052",
        description="host:port of inventory (also read from DWF_INVENTORY_ADDR).",
        validation_alias=AliasChoices("DWF_FULFILLMENT_INVENTORY_TARGET", "DWF_INVENTORY_ADDR"),
    )
    task_lease_seconds: float = Field(
        60.0, gt=0, description="How long a replica owns a claimed step before another may."
    )
    task_poll_seconds: float = Field(0.5, gt=0, description="Idle poll of the task engine.")
    task_concurrency: int = Field(16, ge=1, description="Steps run at once per replica.")
    step_backoff_base_seconds: float = Field(
        1.0, gt=0, description="Backoff of a failed step after its first failure (doubles)."
    )
    step_backoff_max_seconds: float = Field(60.0, gt=0, description="Largest step backoff.")
    ack_sla_seconds: float = Field(
        300.0, gt=0, description="How long a WMS may take to acknowledge a release."
    )
    max_release_attempts: int = Field(
        3, ge=1, description="Sends of a release without acknowledgement before an exception."
    )
    max_resourcing: int = Field(
        3,
        ge=0,
        description="Rejected releases per order that are re-sourced automatically (the "
        "lines go to another warehouse); past it a rejection becomes an exception.",
    )
    wms_poll_seconds: float = Field(0.5, gt=0, description="How often the WMS feed is read.")
