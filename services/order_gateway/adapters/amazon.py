"""Amazon-like marketplace order (SP-API getOrder + getOrderItems, combined) -> canonical order.

The document is the SP-API Order object with the getOrderItems ``OrderItems`` array added,
bare or inside the API's {"payload": ...} envelope. Issue paths are relative to the Order
object: "OrderItems[1].QuantityOrdered", "ShippingAddress.AddressLine1".

Mapping choices:
- channel_order_id = AmazonOrderId, also used as payment_reference: Amazon collects the
  payment and its settlement reports are keyed by the order id.
- ItemPrice is the price of the whole quantity, so unit price = Amount / QuantityOrdered:
  exact when representable, else rounded half-even to the nano (10.00 / 3). ItemTax and
  PromotionDiscount are line totals already.
- shipping_charge = sum of ShippingPrice - ShippingDiscount over the items.
- Pending / PendingAvailability (not paid yet) and Canceled orders are refused with
  ORDER_NOT_PAYABLE; FulfillmentChannel AFN (fulfilled by Amazon) with
  NOT_MERCHANT_FULFILLED, since there is nothing for dwf to ship.
- A ShippingAddress without address lines is what SP-API returns without a restricted data
  token; it is MISSING_SHIP_TO like any other missing address.
- Amazon exposes no stable buyer id: channel_customer_id stays empty and the gateway uses the
  channel's customer account. BuyerInfo.PurchaseOrderNumber (Amazon Business) is kept.

See ``common`` for when ``AdaptedOrder.order`` is None.
"""

from __future__ import annotations

from decimal import Decimal

from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2
from services.order_gateway.adapters.common import (
    EXPEDITED,
    NEXT_DAY,
    STANDARD,
    AdaptedOrder,
    Issue,
    JsonObject,
    LinePaths,
    LineRegistry,
    address_lines,
    check_channel_order_id,
    check_ship_to,
    country_code,
    divide_exact,
    load_json_object,
    money,
    service_level,
    set_attribute,
    sum_amounts,
    unparseable,
    valid_currency,
)

NOT_PAYABLE_STATUSES = frozenset({"pending", "pendingavailability", "canceled", "cancelled"})
SERVICE_LEVELS = {
    "standard": STANDARD,
    "freeeconomy": STANDARD,
    "scheduled": STANDARD,
    "expedited": EXPEDITED,
    "secondday": EXPEDITED,
    "priority": EXPEDITED,
    "nextday": NEXT_DAY,
    "sameday": NEXT_DAY,
}


def adapt_amazon(payload: bytes) -> AdaptedOrder:
    """Map one Amazon order document (with its OrderItems)."""
    root = load_json_object(payload)
    if isinstance(root, str):
        return unparseable(root)
    data = root
    if "AmazonOrderId" not in root and "payload" in root:
        wrapped = root["payload"]
        if not isinstance(wrapped, dict):
            return unparseable('"payload" is not a JSON object')
        data = wrapped

    issues: list[Issue] = []
    doc = JsonObject(data, "", issues)
    order_id = doc.text("AmazonOrderId")
    usable = check_channel_order_id(order_id, "AmazonOrderId", issues)

    status = doc.text("OrderStatus")
    if status.lower() in NOT_PAYABLE_STATUSES:
        doc.issue("OrderStatus", "ORDER_NOT_PAYABLE", f"an order in status {status} is not payable")
    fulfillment_channel = doc.text("FulfillmentChannel")
    if fulfillment_channel.upper() == "AFN":
        doc.issue(
            "FulfillmentChannel",
            "NOT_MERCHANT_FULFILLED",
            "the order is fulfilled by Amazon (AFN), not by the merchant",
        )

    items = doc.objects("OrderItems")
    order_total = doc.obj("OrderTotal")
    currency = _currency(doc, order_total, items)

    request = order_gateway_pb2.AcceptOrderRequest()
    request.channel.channel_order_id = order_id
    request.channel.format = common_pb2.CHANNEL_FORMAT_AMAZON_JSON
    request.payment_reference = order_id

    buyer = doc.obj("BuyerInfo")
    buyer_email = buyer.text("BuyerEmail") if buyer else ""
    ship_to = _address(doc.obj("ShippingAddress"), issues, buyer_email)
    check_ship_to(
        ship_to,
        issues,
        path="ShippingAddress",
        line_path="ShippingAddress.AddressLine1",
        country_path="ShippingAddress.CountryCode",
        hint="SP-API returns the address only with a restricted data token",
    )
    if ship_to is not None:
        request.ship_to.CopyFrom(ship_to)
    request.customer.email = buyer_email
    request.customer.name = (buyer.text("BuyerName") if buyer else "") or (
        ship_to.name if ship_to else ""
    )
    request.customer.phone = ship_to.phone if ship_to else ""
    if buyer is not None:
        request.purchase_order_number = buyer.text("PurchaseOrderNumber")

    placed_at = doc.timestamp("PurchaseDate")
    if placed_at is not None:
        request.placed_at.CopyFrom(placed_at)

    category = doc.text("ShipmentServiceLevelCategory")
    ship_service_level = doc.text("ShipServiceLevel")
    request.shipping_method = SERVICE_LEVELS.get(category.lower()) or service_level(
        category, ship_service_level
    )

    registry = LineRegistry(issues)
    registry.check_count(len(items), "OrderItems")
    shipping: list[Decimal | None] = []
    for position, item in enumerate(items, start=1):
        _add_line(request, item, position, currency, registry)
        charged = _amount(item, "ShippingPrice", currency)
        discount = _amount(item, "ShippingDiscount", currency)
        if charged is not None:
            shipping.append(charged - (discount or 0))
        set_attribute(
            request.attributes, f"amazon.asin.{request.lines[-1].line_id}", item.text("ASIN")
        )
    shipping_total = sum_amounts(shipping)
    if shipping_total is not None:
        charge = doc.to_money("OrderItems", shipping_total, currency)
        if charge is not None:
            request.shipping_charge.CopyFrom(charge)
    if order_total is not None:
        total = order_total.money("Amount", currency)
        if total is not None:
            request.total.CopyFrom(total)

    attributes = request.attributes
    set_attribute(attributes, "amazon.order_status", status)
    set_attribute(attributes, "amazon.fulfillment_channel", fulfillment_channel)
    set_attribute(attributes, "amazon.marketplace_id", doc.text("MarketplaceId"))
    set_attribute(attributes, "amazon.sales_channel", doc.text("SalesChannel"))
    set_attribute(attributes, "amazon.ship_service_level", ship_service_level)
    set_attribute(attributes, "amazon.earliest_ship_date", doc.text("EarliestShipDate"))
    set_attribute(attributes, "amazon.latest_ship_date", doc.text("LatestShipDate"))
    if doc.flag("IsPrime"):
        set_attribute(attributes, "amazon.is_prime", "true")
    if doc.flag("IsBusinessOrder"):
        set_attribute(attributes, "amazon.is_business_order", "true")

    return AdaptedOrder(request if usable else None, issues, order_id, registry.paths)


def _currency(doc: JsonObject, order_total: JsonObject | None, items: list[JsonObject]) -> str:
    """The order currency: OrderTotal's, else the first item price's (Pending orders have no
    OrderTotal)."""
    if order_total is not None and order_total.has("CurrencyCode"):
        return order_total.currency("CurrencyCode")
    for item in items:
        price = item.data.get("ItemPrice")
        code = price.get("CurrencyCode") if isinstance(price, dict) else None
        if isinstance(code, str) and code.strip():
            code = code.strip().upper()
            if valid_currency(code):
                return code
            item.issue(
                "ItemPrice.CurrencyCode", "UNSUPPORTED_CURRENCY", f"{code!r:.10} is not ISO 4217"
            )
            return ""
    doc.issue("OrderTotal.CurrencyCode", "MISSING_FIELD", "the order currency is not given")
    return ""


def _amount(
    parent: JsonObject,
    key: str,
    currency: str,
    *,
    code: str = "INVALID_AMOUNT",
    required: bool = False,
) -> Decimal | None:
    """The Amount of an SP-API Money object {"CurrencyCode", "Amount"} in the order currency."""
    obj = parent.obj(key)
    if obj is None:
        if required:
            parent.issue(key, "MISSING_FIELD", f"{parent.at(key)} is required")
        return None
    item_currency = obj.text("CurrencyCode").upper()
    if item_currency and currency and item_currency != currency:
        obj.issue(
            "CurrencyCode",
            "CURRENCY_MISMATCH",
            f"{item_currency!r:.10} differs from the order currency {currency}",
        )
    return obj.amount("Amount", code=code, required=required)


def _add_line(
    request: order_gateway_pb2.AcceptOrderRequest,
    item: JsonObject,
    position: int,
    currency: str,
    registry: LineRegistry,
) -> None:
    line_id = item.text("OrderItemId") or str(position)
    line = request.lines.add(line_id=line_id, channel_sku=item.text("SellerSKU", required=True))
    quantity = item.quantity("QuantityOrdered")
    line.quantity.value = quantity

    price_total = _amount(item, "ItemPrice", currency, code="INVALID_PRICE", required=True)
    if price_total is not None:
        unit_price = divide_exact(price_total, quantity) if quantity else price_total
        try:
            line.unit_price.CopyFrom(money(unit_price, currency, exact=False))
        except ValueError as exc:
            item.issue("ItemPrice.Amount", "INVALID_PRICE", str(exc))
    tax = _amount(item, "ItemTax", currency)
    if tax is not None:
        tax_money = item.to_money("ItemTax.Amount", tax, currency)
        if tax_money is not None:
            line.tax.CopyFrom(tax_money)
    discount = _amount(item, "PromotionDiscount", currency)
    if discount:
        discount_money = item.to_money("PromotionDiscount.Amount", discount, currency)
        if discount_money is not None:
            line.discount.CopyFrom(discount_money)

    registry.add(
        line_id,
        item.at("OrderItemId"),
        LinePaths(sku=item.at("SellerSKU"), unit=item.at("QuantityOrdered")),
    )


def _address(
    obj: JsonObject | None, issues: list[Issue], email: str
) -> common_pb2.PostalAddress | None:
    if obj is None:
        return None
    return common_pb2.PostalAddress(
        name=obj.text("Name"),
        company=obj.text("CompanyName"),
        lines=address_lines(
            issues,
            *(
                (obj.at(key), obj.text(key))
                for key in ("AddressLine1", "AddressLine2", "AddressLine3")
            ),
        ),
        locality=obj.text("City"),
        administrative_area=obj.text("StateOrRegion"),
        postal_code=obj.text("PostalCode"),
        region_code=country_code(obj.text("CountryCode")),
        phone=obj.text("Phone"),
        email=email,
    )
