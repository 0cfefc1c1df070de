"""Fulfillment's connectors to the ERP, the WMS/3PL and the carrier (docs/sandboxes.md).

Each system gets one :class:`ResilientClient` (timeouts, bearer token, retries with backoff
and full jitter, Retry-After, a circuit breaker, a rate limiter) and a typed client on top.
Every failure is a :class:`ConnectorError` with a ``category`` from the brief: RETRYABLE,
DEPENDENCY, DATA_QUALITY or BUSINESS_RULE.

    connectors = Connectors.from_settings(ConnectorSettings())
    order = await connectors.erp.book_sales_order(request)
    ...
    await connectors.aclose()
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from services.fulfillment.connectors.carrier import (
    CarrierClient,
    Label,
    LabelBatch,
    LabelCarton,
    LabelRequest,
    Tracking,
    TrackingEvent,
)
from services.fulfillment.connectors.erp import (
    CreditMemoRequest,
    ErpClient,
    ErpCreditMemo,
    ErpInvoice,
    ErpSalesOrder,
    ErpSalesOrderLine,
    ErpShipment,
    InvoiceRequest,
    QuantityLine,
    SalesOrderLine,
    SalesOrderRequest,
    ShipmentPosting,
)
from services.fulfillment.connectors.http import (
    Attempt,
    BreakerPolicy,
    BusinessRuleError,
    Category,
    CircuitBreaker,
    CircuitOpenError,
    Clock,
    ConnectorError,
    DataQualityError,
    DependencyError,
    ResilientClient,
    RetryableError,
    RetryPolicy,
    Sleep,
    System,
    SystemConfig,
)
from services.fulfillment.connectors.settings import ConnectorSettings
from services.fulfillment.connectors.wms import (
    CancelAccepted,
    CancelLine,
    CancelRefused,
    Carton,
    EventLine,
    InventorySnapshot,
    Packed,
    Picked,
    ReleaseAcknowledged,
    ReleaseRejected,
    ReleaseRequest,
    ReturnLine,
    ReturnReceived,
    ReturnRequest,
    Shipped,
    ShortPicked,
    SnapshotLine,
    UnknownWmsEvent,
    WmsClient,
    WmsEvent,
    WmsLine,
    WmsRelease,
)


@dataclass
class Connectors:
    """The three clients of one fulfillment process."""

    erp: ErpClient
    wms: WmsClient
    carrier: CarrierClient

    @classmethod
    def from_settings(
        cls,
        settings: ConnectorSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> Connectors:
        def http(config: SystemConfig) -> ResilientClient:
            return ResilientClient(config, transport=transport, sleep=sleep, clock=clock)

        return cls(
            erp=ErpClient(http(settings.erp_config())),
            wms=WmsClient(http(settings.wms_config())),
            carrier=CarrierClient(http(settings.carrier_config())),
        )

    async def aclose(self) -> None:
        await asyncio.gather(self.erp.aclose(), self.wms.aclose(), self.carrier.aclose())


__all__ = [
    "Attempt",
    "BreakerPolicy",
    "BusinessRuleError",
    "CancelAccepted",
    "CancelLine",
    "CancelRefused",
    "CarrierClient",
    "Carton",
    "Category",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConnectorError",
    "ConnectorSettings",
    "Connectors",
    "CreditMemoRequest",
    "DataQualityError",
    "DependencyError",
    "ErpClient",
    "ErpCreditMemo",
    "ErpInvoice",
    "ErpSalesOrder",
    "ErpSalesOrderLine",
    "ErpShipment",
    "EventLine",
    "InventorySnapshot",
    "InvoiceRequest",
    "Label",
    "LabelBatch",
    "LabelCarton",
    "LabelRequest",
    "Packed",
    "Picked",
    "QuantityLine",
    "ReleaseAcknowledged",
    "ReleaseRejected",
    "ReleaseRequest",
    "ResilientClient",
    "RetryPolicy",
    "RetryableError",
    "ReturnLine",
    "ReturnReceived",
    "ReturnRequest",
    "SalesOrderLine",
    "SalesOrderRequest",
    "ShipmentPosting",
    "Shipped",
    "ShortPicked",
    "Sleep",
    "SnapshotLine",
    "System",
    "SystemConfig",
    "Tracking",
    "TrackingEvent",
    "UnknownWmsEvent",
    "WmsClient",
    "WmsEvent",
    "WmsLine",
    "WmsRelease",
]
