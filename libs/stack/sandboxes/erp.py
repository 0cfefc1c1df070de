"""ERP sandbox: NetSuite/Dynamics-like sales orders, shipments, invoices and credit memos.

At most one sales order per ``external_reference`` (our order id); shipments, invoices and
credit memos are idempotent by their external references too. Master data decides what is
refused: unknown items and customers (422) and customers on credit hold (the order is booked
with status ``CREDIT_HOLD``). See docs/sandboxes.md, "ERP".

    python -m stack.sandboxes.erp --port 8091 --token T     # env: DWF_ERP_RATE_429=0.3 ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stack.sandboxes.common import (
    ApiError,
    Body,
    FaultInjector,
    Faults,
    Numbers,
    admin_routes,
    api,
    apply_settings,
    invalid,
    make_app,
    money,
    not_found,
    parse_non_negative,
    parse_rate,
    parse_texts,
    read_object,
    rfc3339,
    run_cli,
    setting,
    setting_names,
    settings_json,
    unique_line_ids,
)


@dataclass
class ErpFaults(Faults):
    rate_timeout_after_commit: float = setting(0.0, parse_rate)
    hang_seconds: float = setting(30.0, parse_non_negative)

    def commit_timeout(self) -> tuple[float, float]:
        return self.rate_timeout_after_commit, self.hang_seconds


@dataclass
class MasterData:
    """By default every item and customer is known and none is on credit hold."""

    unknown_items: tuple[str, ...] = setting((), parse_texts)
    unknown_customers: tuple[str, ...] = setting((), parse_texts)
    credit_hold_customers: tuple[str, ...] = setting((), parse_texts)


@dataclass
class OrderLine:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    shipped: int = 0
    invoiced: int = 0
    credited: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "unit_price": str(self.unit_price),
            "quantity_shipped": self.shipped,
            "quantity_invoiced": self.invoiced,
            "quantity_credited": self.credited,
        }


@dataclass
class SalesOrder:
    number: str
    external_reference: str
    customer_id: str
    currency: str
    ship_to: dict[str, Any]
    lines: list[OrderLine]
    status: str
    created_at: str
    cancel_reason: str | None = None
    shipments: list[str] = field(default_factory=list)

    def line(self, line_id: str) -> OrderLine | None:
        return next((line for line in self.lines if line.line_id == line_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "sales_order_number": self.number,
            "external_reference": self.external_reference,
            "customer_id": self.customer_id,
            "currency": self.currency,
            "ship_to": self.ship_to,
            "status": self.status,
            "lines": [line.to_json() for line in self.lines],
            "created_at": self.created_at,
            "cancel_reason": self.cancel_reason,
            "shipments": list(self.shipments),
        }


@dataclass
class Posting:
    """A shipment, invoice or credit memo: the JSON answered, kept for idempotent repeats."""

    sales_order_number: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Requested:
    """One requested line of a shipment, invoice or credit memo, checked against the order."""

    line: OrderLine
    quantity: int
    body: Body


class Erp:
    def __init__(self, master: MasterData) -> None:
        self.master = master
        self.numbers = Numbers()
        self.orders: dict[str, SalesOrder] = {}  # by number
        self.by_reference: dict[str, str] = {}  # external reference → number
        self.postings: dict[str, dict[str, Posting]] = {}  # kind → external reference → …

    async def reset(self) -> None:
        self.master = MasterData()
        self.orders.clear()
        self.by_reference.clear()
        self.postings.clear()

    # --- sales orders ------------------------------------------------------------------------

    async def create_sales_order(self, request: Request) -> Response:
        body = await read_object(request)
        reference = body.text("external_reference")
        customer = body.text("customer_id")
        currency = body.text("currency", default="USD")
        ship_to = body.mapping("ship_to")
        line_bodies = body.objects("lines")
        unique_line_ids(line_bodies)
        lines = [
            OrderLine(b.text("line_id"), b.text("sku"), b.quantity(), b.amount("unit_price"))
            for b in line_bodies
        ]
        existing = self.by_reference.get(reference)
        if existing is not None:
            raise ApiError(
                409,
                "DUPLICATE_EXTERNAL_REFERENCE",
                f"sales order {existing} already has external reference {reference!r}",
                field="external_reference",
                extra={"sales_order_number": existing},
            )
        self._check_master_data(customer, line_bodies)
        status = "CREDIT_HOLD" if customer in self.master.credit_hold_customers else "OPEN"
        order = SalesOrder(
            self.numbers.next("SO"),
            reference,
            customer,
            currency,
            ship_to,
            lines,
            status,
            rfc3339(),
        )
        self.orders[order.number] = order
        self.by_reference[reference] = order.number
        return JSONResponse(order.to_json(), 201)

    def _check_master_data(self, customer: str, lines: list[Body]) -> None:
        if customer in self.master.unknown_customers:
            raise ApiError(
                422, "UNKNOWN_CUSTOMER", f"no customer {customer!r}", field="customer_id"
            )
        for line in lines:
            sku = line.text("sku")
            if sku in self.master.unknown_items:
                raise ApiError(422, "UNKNOWN_ITEM", f"no item {sku!r}", field=line.where("sku"))

    async def find_sales_orders(self, request: Request) -> Response:
        reference = request.query_params.get("external_reference")
        if not reference:
            raise invalid("external_reference", "the query parameter is required")
        number = self.by_reference.get(reference)
        items = [self.orders[number].to_json()] if number is not None else []
        return JSONResponse({"items": items})

    async def get_sales_order(self, request: Request) -> Response:
        return JSONResponse(self._order(request.path_params["number"]).to_json())

    async def cancel_sales_order(self, request: Request) -> Response:
        order = self._order(request.path_params["number"])
        body = await read_object(request, allow_empty=True)
        reason = body.optional_text("reason")
        if order.shipments:
            raise ApiError(
                409, "ALREADY_SHIPPED", f"sales order {order.number} has posted shipments"
            )
        if order.status != "CANCELED":
            order.status = "CANCELED"
            order.cancel_reason = reason
        return JSONResponse(order.to_json())

    def _order(self, number: str) -> SalesOrder:
        order = self.orders.get(number)
        if order is None:
            raise not_found("SALES_ORDER_NOT_FOUND", f"no sales order {number!r}")
        return order

    # --- shipments, invoices, credit memos ------------------------------------------------

    async def post_shipment(self, request: Request) -> Response:
        order = self._order(request.path_params["number"])
        body = await read_object(request)
        reference = body.text("external_reference")
        repeat = self._repeat("shipment", reference, order.number)
        if repeat is not None:
            return repeat
        self._check_fulfillable(order)
        carrier = body.optional_text("carrier_code")
        tracking = body.texts("tracking_numbers")
        requested = self._requested(
            order, body, "QUANTITY_EXCEEDS_OPEN", lambda line: line.quantity - line.shipped
        )
        for item in requested:
            item.line.shipped += item.quantity
        number = self.numbers.next("IF")
        order.shipments.append(number)
        document = {
            "shipment_reference": number,
            "external_reference": reference,
            "sales_order_number": order.number,
            "carrier_code": carrier,
            "tracking_numbers": tracking,
            "lines": _quantities(requested),
            "created_at": rfc3339(),
        }
        return self._posted("shipment", reference, order.number, document)

    async def post_invoice(self, request: Request) -> Response:
        order = self._order(request.path_params["number"])
        body = await read_object(request)
        reference = body.text("external_reference")
        repeat = self._repeat("invoice", reference, order.number)
        if repeat is not None:
            return repeat
        self._check_fulfillable(order)
        requested = self._requested(
            order, body, "QUANTITY_EXCEEDS_SHIPPED", lambda line: line.shipped - line.invoiced
        )
        for item in requested:
            item.line.invoiced += item.quantity
        if all(line.invoiced >= line.quantity for line in order.lines):
            order.status = "CLOSED"
        document = {
            "invoice_number": self.numbers.next("INV"),
            "external_reference": reference,
            "sales_order_number": order.number,
            "amount": _amount(requested),
            "currency": order.currency,
            "lines": _quantities(requested),
            "created_at": rfc3339(),
        }
        return self._posted("invoice", reference, order.number, document)

    async def post_credit_memo(self, request: Request) -> Response:
        body = await read_object(request)
        reference = body.text("external_reference")
        number = body.text("sales_order_number")
        order = self.orders.get(number)
        if order is None:
            raise ApiError(
                422,
                "UNKNOWN_SALES_ORDER",
                f"no sales order {number!r}",
                field="sales_order_number",
            )
        repeat = self._repeat("credit_memo", reference, order.number)
        if repeat is not None:
            return repeat
        requested = self._requested(
            order, body, "QUANTITY_EXCEEDS_INVOICED", lambda line: line.invoiced - line.credited
        )
        for item in requested:
            item.line.credited += item.quantity
        document = {
            "credit_memo_number": self.numbers.next("CM"),
            "external_reference": reference,
            "sales_order_number": order.number,
            "amount": _amount(requested),
            "currency": order.currency,
            "lines": _quantities(requested),
            "created_at": rfc3339(),
        }
        return self._posted("credit_memo", reference, order.number, document)

    def _repeat(self, kind: str, reference: str, number: str) -> Response | None:
        """The stored answer for a repeated external reference (200), or None if it is new."""
        posting = self.postings.get(kind, {}).get(reference)
        if posting is None:
            return None
        if posting.sales_order_number != number:
            raise ApiError(
                409,
                "DUPLICATE_EXTERNAL_REFERENCE",
                f"external reference {reference!r} was used on {posting.sales_order_number}",
                field="external_reference",
                extra={"sales_order_number": posting.sales_order_number},
            )
        return JSONResponse(posting.document, 200)

    def _posted(self, kind: str, reference: str, number: str, document: dict[str, Any]) -> Response:
        self.postings.setdefault(kind, {})[reference] = Posting(number, document)
        return JSONResponse(document, 201)

    @staticmethod
    def _check_fulfillable(order: SalesOrder) -> None:
        if order.status == "CANCELED":
            raise ApiError(409, "ALREADY_CANCELED", f"sales order {order.number} is canceled")
        if order.status == "CREDIT_HOLD":
            raise ApiError(409, "CREDIT_HOLD", f"sales order {order.number} is on credit hold")

    @staticmethod
    def _requested(
        order: SalesOrder, body: Body, exceeded: str, available: Callable[[OrderLine], int]
    ) -> list[Requested]:
        """The body's lines against the order's; ``available(line)`` is how much may still be
        posted on a line (``exceeded`` is the code when a request asks for more)."""
        requested: list[Requested] = []
        asked: dict[str, int] = {}
        for item in body.objects("lines"):
            line_id = item.text("line_id")
            line = order.line(line_id)
            if line is None:
                raise ApiError(
                    422, "UNKNOWN_LINE", f"no line {line_id!r}", field=item.where("line_id")
                )
            sku = item.optional_text("sku")
            if sku is not None and sku != line.sku:
                raise invalid(item.where("sku"), f"line {line_id!r} is {line.sku!r}, not {sku!r}")
            quantity = item.quantity()
            asked[line_id] = asked.get(line_id, 0) + quantity
            if asked[line_id] > available(line):
                raise ApiError(
                    422,
                    exceeded,
                    f"line {line_id!r}: {asked[line_id]} requested, {available(line)} available",
                    field=item.where("quantity"),
                )
            requested.append(Requested(line, quantity, item))
        return requested

    # --- admin -------------------------------------------------------------------------------

    async def read_master_data(self, request: Request) -> Response:
        return JSONResponse(settings_json(self.master))

    async def write_master_data(self, request: Request) -> Response:
        body = await read_object(request)
        try:
            self.master = apply_settings(self.master, body.data)
        except ValueError as exc:
            raise ApiError(422, "INVALID_REQUEST", str(exc)) from None
        return JSONResponse(settings_json(self.master))

    async def list_sales_orders(self, request: Request) -> Response:
        return JSONResponse({"items": [order.to_json() for order in self.orders.values()]})

    async def release_credit_hold(self, request: Request) -> Response:
        body = await read_object(request)
        order = self._order(body.text("sales_order_number"))
        if order.status == "CREDIT_HOLD":
            order.status = "OPEN"
        return JSONResponse(order.to_json())


def _quantities(requested: Iterable[Requested]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for r in requested:
        line = {"line_id": r.line.line_id, "sku": r.line.sku, "quantity": r.quantity}
        shipped_sku = r.body.optional_text("shipped_sku")
        if shipped_sku and shipped_sku != r.line.sku:
            line["shipped_sku"] = shipped_sku  # a substitute went out on this line
        lines.append(line)
    return lines


def _amount(requested: Iterable[Requested]) -> str:
    return money(sum((r.line.unit_price * r.quantity for r in requested), Decimal(0)))


def create_app(
    token: str,
    *,
    unknown_items: Iterable[str] = (),
    unknown_customers: Iterable[str] = (),
    credit_hold_customers: Iterable[str] = (),
    **faults: object,
) -> Starlette:
    """The ERP sandbox; ``faults`` are :class:`ErpFaults` fields (``rate_429=0.3`` ...)."""
    master = apply_settings(
        MasterData(),
        {
            "unknown_items": unknown_items,
            "unknown_customers": unknown_customers,
            "credit_hold_customers": credit_hold_customers,
        },
    )
    erp = Erp(master)
    injector = FaultInjector(apply_settings(ErpFaults(), faults))
    orders = "/api/v1/sales-orders"
    routes: list[BaseRoute] = [
        api(orders, erp.create_sales_order, ["POST"], token, injector),
        api(orders, erp.find_sales_orders, ["GET"], token, injector),
        api(orders + "/{number}", erp.get_sales_order, ["GET"], token, injector),
        api(orders + "/{number}/cancel", erp.cancel_sales_order, ["POST"], token, injector),
        api(orders + "/{number}/shipments", erp.post_shipment, ["POST"], token, injector),
        api(orders + "/{number}/invoices", erp.post_invoice, ["POST"], token, injector),
        api("/api/v1/credit-memos", erp.post_credit_memo, ["POST"], token, injector),
        *admin_routes(injector, erp.reset),
        Route("/_admin/master-data", erp.read_master_data, methods=["GET"]),
        Route("/_admin/master-data", erp.write_master_data, methods=["POST"]),
        Route("/_admin/sales-orders", erp.list_sales_orders, methods=["GET"]),
        Route("/_admin/release-credit-hold", erp.release_credit_hold, methods=["POST"]),
    ]
    app = make_app(routes)
    app.state.erp = erp
    app.state.faults = injector
    return app


def main(argv: list[str] | None = None) -> None:
    run_cli(
        "erp",
        "dwf ERP sandbox (sales orders, shipments, invoices, credit memos)",
        create_app,
        [*setting_names(ErpFaults), *setting_names(MasterData)],
        argv,
    )


if __name__ == "__main__":
    main()
