"""Settings of the order gateway (``DWF_GATEWAY_*``; docs/order_gateway.md).

Kept next to the service rather than in the chassis' ServiceSettings: only this service
reads them.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DWF_GATEWAY_", extra="ignore", populate_by_name=True
    )

    inventory_target: str = Field(
        "127.0.0.1:50052",
        description="host:port of the inventory service (also read from DWF_INVENTORY_ADDR, "
        "which the local stack and the Helm chart set for every service).",
        validation_alias=AliasChoices("DWF_GATEWAY_INVENTORY_TARGET", "DWF_INVENTORY_ADDR"),
    )
    inventory_timeout_seconds: float = Field(
        5.0, gt=0, description="Deadline of each call to inventory (holds, acceptance)."
    )
    availability_fallback_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="Deadline of the inventory call for SKUs the read model has never seen, "
        "and of promise-date lookups; a late answer leaves the date unset.",
    )
    availability_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How long a replica reuses read-model rows of a SKU (0: read every call).",
    )
    master_data_ttl_seconds: float = Field(
        2.0, gt=0, description="How long a replica reuses its master-data snapshot."
    )
    credential_ttl_seconds: float = Field(
        5.0, gt=0, description="How long a replica trusts a verified API key without the DB."
    )
    replicas: int = Field(
        1,
        ge=1,
        description="Gateway replicas sharing a channel's rate limit: each takes 1/replicas.",
    )
    watch_poll_seconds: float = Field(
        1.0, gt=0, description="WatchOrder re-reads at least this often if no NOTIFY wakes it."
    )
