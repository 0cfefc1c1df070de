"""ERP connector: sales orders, shipments, invoices and credit memos (docs/sandboxes.md, ERP).

The ERP keeps at most one sales order per external reference (our order id), and so do its
shipments, invoices and credit memos. Booking a sales order is made idempotent here:

- ``409 DUPLICATE_EXTERNAL_REFERENCE`` returns the existing order instead of failing;
- after an attempt that may have taken effect without our hearing of it (read timeout,
  dropped connection, 5xx), the next attempt first LOOKS UP the reference and returns the
  order it finds rather than submitting a second time.

A sales order on CREDIT_HOLD is returned like any other (``on_credit_hold``); the workflow
decides, e.g. with :meth:`ErpSalesOrder.raise_for_credit_hold`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote

import httpx

from services.fulfillment.connectors.http import (
    Attempt,
    BusinessRuleError,
    DependencyError,
    ResilientClient,
    decimal,
    error_body,
    integer,
    objects,
    optional_text,
    text,
    timestamp,
)

log = logging.getLogger("dwf.fulfillment.connectors.erp")

SALES_ORDERS: Final = "/api/v1/sales-orders"
CREDIT_MEMOS: Final = "/api/v1/credit-memos"
DUPLICATE_EXTERNAL_REFERENCE: Final = "DUPLICATE_EXTERNAL_REFERENCE"


# --------------------------------------------------------------------------------------------
# What we send
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SalesOrderLine:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "unit_price": str(self.unit_price),
        }


@dataclass(frozen=True)
class SalesOrderRequest:
    external_reference: str  # dwf's order id
    customer_id: str
    currency: str
    ship_to: Mapping[str, Any]
    lines: tuple[SalesOrderLine, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "external_reference": self.external_reference,
            "customer_id": self.customer_id,
            "currency": self.currency,
            "ship_to": dict(self.ship_to),
            "lines": [line.to_json() for line in self.lines],
        }


@dataclass(frozen=True)
class QuantityLine:
    line_id: str
    sku: str  # the sales order line's item (as ordered)
    quantity: int
    shipped_sku: str = ""  # a substitute that went out instead, if any

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "line_id": self.line_id,
            "sku": self.sku,
            "quantity": self.quantity,
        }
        if self.shipped_sku and self.shipped_sku != self.sku:
            document["shipped_sku"] = self.shipped_sku
        return document


@dataclass(frozen=True)
class ShipmentPosting:
    external_reference: str  # dwf's shipment id
    lines: tuple[QuantityLine, ...]
    carrier_code: str
    tracking_numbers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "external_reference": self.external_reference,
            "lines": [line.to_json() for line in self.lines],
            "carrier_code": self.carrier_code,
            "tracking_numbers": list(self.tracking_numbers),
        }


@dataclass(frozen=True)
class InvoiceRequest:
    external_reference: str  # dwf's shipment id: one invoice per shipment
    lines: tuple[QuantityLine, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "external_reference": self.external_reference,
            "lines": [line.to_json() for line in self.lines],
        }


@dataclass(frozen=True)
class CreditMemoRequest:
    external_reference: str  # "<rma>/<receipt>"
    sales_order_number: str
    lines: tuple[QuantityLine, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "external_reference": self.external_reference,
            "sales_order_number": self.sales_order_number,
            "lines": [line.to_json() for line in self.lines],
        }


# --------------------------------------------------------------------------------------------
# What the ERP answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErpSalesOrderLine:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal | None = None


@dataclass(frozen=True)
class ErpSalesOrder:
    sales_order_number: str
    external_reference: str
    status: str  # OPEN | CREDIT_HOLD | CANCELED | CLOSED
    customer_id: str | None = None
    lines: tuple[ErpSalesOrderLine, ...] = ()
    created_at: datetime | None = None
    #: True only when this call's POST created it (201); False when it already existed
    #: (duplicate reference, or found by the look-up after an ambiguous failure) or was read.
    created: bool = field(default=False, compare=False)

    @property
    def on_credit_hold(self) -> bool:
        return self.status == "CREDIT_HOLD"

    @property
    def is_open(self) -> bool:
        return self.status == "OPEN"

    @property
    def is_canceled(self) -> bool:
        return self.status == "CANCELED"

    def raise_for_credit_hold(self, request_payload: Any = None) -> None:
        """Raise a BUSINESS_RULE ``CREDIT_HOLD`` error when the ERP put the order on hold."""
        if self.on_credit_hold:
            raise BusinessRuleError(
                f"sales order {self.sales_order_number} is on credit hold",
                system="ERP",
                code="CREDIT_HOLD",
                field="customer_id",
                request_payload=request_payload,
                operation=f"POST {SALES_ORDERS}",
            )


@dataclass(frozen=True)
class ErpShipment:
    shipment_reference: str
    external_reference: str | None = None
    created: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ErpInvoice:
    invoice_number: str
    amount: Decimal
    currency: str
    created: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ErpCreditMemo:
    credit_memo_number: str
    amount: Decimal
    currency: str
    created: bool = field(default=False, compare=False)


def parse_sales_order(data: Mapping[str, Any], *, created: bool = False) -> ErpSalesOrder:
    return ErpSalesOrder(
        sales_order_number=text(data, "sales_order_number"),
        external_reference=text(data, "external_reference"),
        status=text(data, "status"),
        customer_id=optional_text(data, "customer_id"),
        lines=tuple(
            ErpSalesOrderLine(
                line_id=str(line.get("line_id") or ""),
                sku=optional_text(line, "sku") or "",
                quantity=integer(line, "quantity"),
                unit_price=decimal(line, "unit_price") if "unit_price" in line else None,
            )
            for line in objects(data, "lines")
        ),
        created_at=timestamp(data, "created_at"),
        created=created,
    )


def _money(data: Mapping[str, Any]) -> tuple[Decimal, str]:
    return decimal(data, "amount"), text(data, "currency")


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class ErpClient:
    """Typed, idempotent calls to the ERP over a :class:`ResilientClient` (system "ERP")."""

    def __init__(self, http: ResilientClient) -> None:
        if http.system != "ERP":
            raise ValueError(f"an ERP client needs the ERP's HTTP client, not {http.system}'s")
        self.http = http

    async def aclose(self) -> None:
        await self.http.aclose()

    async def book_sales_order(self, order: SalesOrderRequest) -> ErpSalesOrder:
        """Book ``order`` exactly once per external reference and return the ERP's order
        (possibly on CREDIT_HOLD). Raises DATA_QUALITY (UNKNOWN_ITEM, UNKNOWN_CUSTOMER,
        INVALID_REQUEST), RETRYABLE or DEPENDENCY :class:`ConnectorError`s."""
        payload = order.to_json()
        reference = order.external_reference

        async def attempt(a: Attempt) -> ErpSalesOrder:
            if a.maybe_applied:
                found = await self._lookup(a, reference)
                if found is not None:
                    log.info(
                        "ERP sales order found by external reference after an ambiguous failure",
                        extra={
                            "external_reference": reference,
                            "sales_order": found.sales_order_number,
                        },
                    )
                    return found
            response = await a.send("POST", SALES_ORDERS, json=payload, accept=(409,))
            if response.status_code == 409:
                return await self._existing(a, response, reference)
            return self.http.decode(
                response, lambda _, body: parse_sales_order(body, created=True), attempt=a
            )

        return await self.http.run(
            attempt, operation=f"POST {SALES_ORDERS}", request_payload=payload
        )

    async def find_by_external_reference(self, external_reference: str) -> ErpSalesOrder | None:
        async def attempt(a: Attempt) -> ErpSalesOrder | None:
            return await self._lookup(a, external_reference)

        return await self.http.run(
            attempt,
            operation=f"GET {SALES_ORDERS}",
            request_payload={"external_reference": external_reference},
        )

    async def get_sales_order(self, sales_order_number: str) -> ErpSalesOrder | None:
        async def attempt(a: Attempt) -> ErpSalesOrder | None:
            return await self._get(a, sales_order_number)

        return await self.http.run(attempt, operation=f"GET {SALES_ORDERS}/{{number}}")

    async def cancel_sales_order(self, sales_order_number: str, reason: str) -> ErpSalesOrder:
        """Cancel; ``409 ALREADY_SHIPPED`` raises BUSINESS_RULE."""
        return await self.http.call(
            "POST",
            f"{_order_path(sales_order_number)}/cancel",
            lambda _, body: parse_sales_order(body),
            json={"reason": reason},
        )

    async def post_shipment(
        self, sales_order_number: str, shipment: ShipmentPosting
    ) -> ErpShipment:
        """Post a shipment (item fulfillment); the same external reference again returns the
        existing one (``created`` False)."""
        return await self.http.call(
            "POST",
            f"{_order_path(sales_order_number)}/shipments",
            lambda status, body: ErpShipment(
                shipment_reference=text(body, "shipment_reference"),
                external_reference=optional_text(body, "external_reference")
                or shipment.external_reference,
                created=status == 201,
            ),
            json=shipment.to_json(),
        )

    async def create_invoice(self, sales_order_number: str, invoice: InvoiceRequest) -> ErpInvoice:
        """Invoice a shipment; idempotent by the invoice's external reference."""
        return await self.http.call(
            "POST",
            f"{_order_path(sales_order_number)}/invoices",
            lambda status, body: ErpInvoice(
                text(body, "invoice_number"), *_money(body), created=status == 201
            ),
            json=invoice.to_json(),
        )

    async def create_credit_memo(self, memo: CreditMemoRequest) -> ErpCreditMemo:
        """Credit a received return; idempotent by the memo's external reference."""
        return await self.http.call(
            "POST",
            CREDIT_MEMOS,
            lambda status, body: ErpCreditMemo(
                text(body, "credit_memo_number"), *_money(body), created=status == 201
            ),
            json=memo.to_json(),
        )

    # -- single requests inside an attempt ------------------------------------------------

    async def _lookup(self, a: Attempt, external_reference: str) -> ErpSalesOrder | None:
        response = await a.send(
            "GET", SALES_ORDERS, params={"external_reference": external_reference}
        )
        orders = self.http.decode(
            response,
            lambda _, body: [parse_sales_order(item) for item in objects(body, "items")],
            attempt=a,
        )
        return next((o for o in orders if o.external_reference == external_reference), None)

    async def _get(self, a: Attempt, sales_order_number: str) -> ErpSalesOrder | None:
        response = await a.send("GET", _order_path(sales_order_number), accept=(404,))
        if response.status_code == 404:
            return None
        return self.http.decode(response, lambda _, body: parse_sales_order(body), attempt=a)

    async def _existing(
        self, a: Attempt, response: httpx.Response, external_reference: str
    ) -> ErpSalesOrder:
        """The order a 409 refers to: the existing one for a duplicate reference."""
        code, _, _ = error_body(response)
        if code != DUPLICATE_EXTERNAL_REFERENCE:
            raise self.http.refusal(response, attempts=a.number)
        number: object = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            number = body.get("sales_order_number")
        existing = (
            await self._get(a, number) if isinstance(number, str) and number else None
        ) or await self._lookup(a, external_reference)
        if existing is None:
            raise DependencyError(
                "the ERP reports a duplicate external reference but returns no such order",
                system="ERP",
                code="DUPLICATE_NOT_FOUND",
                status=409,
                attempts=a.number,
                operation=f"POST {SALES_ORDERS}",
            )
        log.info(
            "ERP sales order already existed for this external reference",
            extra={
                "external_reference": external_reference,
                "sales_order": existing.sales_order_number,
            },
        )
        return existing


def _order_path(sales_order_number: str) -> str:
    return f"{SALES_ORDERS}/{quote(sales_order_number, safe='')}"
