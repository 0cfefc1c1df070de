"""Shopify-like storefront order (REST Admin API ``order`` object) -> canonical order.

Issue paths are relative to the order object, so they are the same with or without the
``{"order": ...}`` wrapper that the Admin API and webhooks use: "line_items[0].sku",
"shipping_address.country_code".

Mapping choices:
- channel_order_id = str(id); the display name ("#1001") is kept as attribute shopify.name.
- Prices are in the shop currency (``currency``). With ``taxes_included`` the unit price
  includes tax; that flag is kept as attribute shopify.taxes_included for the ERP mapping.
- Line discount = total_discount (else the sum of discount_allocations); line tax = the sum of
  tax_lines, set whenever tax_lines are present.
- payment_reference = the authorization of the first successful authorization/sale in an
  embedded ``transactions`` array, else the checkout_token that payment records carry.
- Only financial_status paid / partially_paid / authorized is accepted (ORDER_NOT_PAID) and a
  cancelled order (cancelled_at set) is refused (ORDER_CANCELED).

See ``common`` for when ``AdaptedOrder.order`` is None.
"""

from __future__ import annotations

from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2
from services.order_gateway.adapters.common import (
    AdaptedOrder,
    Issue,
    JsonObject,
    LinePaths,
    LineRegistry,
    address_lines,
    check_channel_order_id,
    check_ship_to,
    country_code,
    load_json_object,
    service_level,
    set_attribute,
    sum_amounts,
    unparseable,
)

PAYABLE_STATUSES = frozenset({"paid", "partially_paid", "authorized"})


def adapt_shopify(payload: bytes) -> AdaptedOrder:
    """Map one Shopify order document (wrapped in {"order": ...} or bare)."""
    root = load_json_object(payload)
    if isinstance(root, str):
        return unparseable(root)
    data = root
    if "line_items" not in root and "order" in root:
        wrapped = root["order"]
        if not isinstance(wrapped, dict):
            return unparseable('"order" is not a JSON object')
        data = wrapped

    issues: list[Issue] = []
    doc = JsonObject(data, "", issues)
    order_id = doc.text("id")
    usable = check_channel_order_id(order_id, "id", issues)
    currency = doc.currency("currency")

    status = doc.text("financial_status")
    if status.lower() not in PAYABLE_STATUSES:
        doc.issue(
            "financial_status",
            "ORDER_NOT_PAID",
            f"financial_status {status!r:.40} is not one of {sorted(PAYABLE_STATUSES)}",
        )
    if doc.has("cancelled_at"):
        doc.issue("cancelled_at", "ORDER_CANCELED", "the order was cancelled in the store")

    request = order_gateway_pb2.AcceptOrderRequest()
    request.channel.channel_order_id = order_id
    request.channel.format = common_pb2.CHANNEL_FORMAT_SHOPIFY_JSON

    email = doc.text("email") or doc.text("contact_email")
    ship_to = _address(doc.obj("shipping_address"), issues, email)
    check_ship_to(
        ship_to,
        issues,
        path="shipping_address",
        line_path="shipping_address.address1",
        country_path="shipping_address.country_code",
    )
    if ship_to is not None:
        request.ship_to.CopyFrom(ship_to)
    bill_to = _address(doc.obj("billing_address"), issues, email)
    if bill_to is not None:
        request.bill_to.CopyFrom(bill_to)

    customer = doc.obj("customer")
    if customer is not None:
        request.customer.channel_customer_id = customer.text("id")
        request.customer.name = " ".join(
            part for part in (customer.text("first_name"), customer.text("last_name")) if part
        )
        email = email or customer.text("email")
        request.customer.phone = customer.text("phone")
    request.customer.name = request.customer.name or (ship_to.name if ship_to else "")
    request.customer.email = email
    request.customer.phone = (
        doc.text("phone") or request.customer.phone or (ship_to.phone if ship_to else "")
    )

    placed_key = "created_at" if doc.has("created_at") else "processed_at"
    placed_at = doc.timestamp(placed_key)
    if placed_at is not None:
        request.placed_at.CopyFrom(placed_at)

    registry = LineRegistry(issues)
    items = doc.objects("line_items")
    registry.check_count(len(items), "line_items")
    for position, item in enumerate(items, start=1):
        _add_line(request, item, position, currency, registry)

    shipping_lines = doc.objects("shipping_lines")
    if shipping_lines:
        code = shipping_lines[0].text("code")
        request.shipping_method = service_level(code, shipping_lines[0].text("title"))
        set_attribute(request.attributes, "shopify.shipping_code", code)
        charge = sum_amounts(
            [
                line.amount("discounted_price" if line.has("discounted_price") else "price")
                for line in shipping_lines
            ]
        )
        if charge is not None:
            shipping = doc.to_money("shipping_lines", charge, currency)
            if shipping is not None:
                request.shipping_charge.CopyFrom(shipping)
    else:
        request.shipping_method = service_level()
    total = doc.money("total_price", currency)
    if total is not None:
        request.total.CopyFrom(total)
    request.payment_reference = _payment_reference(doc)

    attributes = request.attributes
    set_attribute(attributes, "shopify.name", doc.text("name"))
    set_attribute(attributes, "shopify.order_number", doc.text("order_number"))
    set_attribute(attributes, "shopify.financial_status", status)
    set_attribute(
        attributes, "shopify.payment_gateways", ",".join(doc.strings("payment_gateway_names"))
    )
    set_attribute(attributes, "shopify.presentment_currency", doc.text("presentment_currency"))
    set_attribute(attributes, "shopify.source_name", doc.text("source_name"))
    set_attribute(attributes, "shopify.tags", doc.text("tags"))
    set_attribute(attributes, "shopify.note", doc.text("note"))
    if doc.flag("taxes_included"):
        set_attribute(attributes, "shopify.taxes_included", "true")
    if doc.flag("test"):
        set_attribute(attributes, "shopify.test", "true")

    return AdaptedOrder(request if usable else None, issues, order_id, registry.paths)


def _add_line(
    request: order_gateway_pb2.AcceptOrderRequest,
    item: JsonObject,
    position: int,
    currency: str,
    registry: LineRegistry,
) -> None:
    line_id = item.text("id") or str(position)
    line = request.lines.add(line_id=line_id, channel_sku=item.text("sku", required=True))
    line.quantity.value = item.quantity("quantity")
    price = item.money("price", currency, code="INVALID_PRICE", required=True)
    if price is not None:
        line.unit_price.CopyFrom(price)

    if item.has("total_discount"):
        discount = item.amount("total_discount")
    else:
        discount = sum_amounts(
            [entry.amount("amount") for entry in item.objects("discount_allocations")]
        )
    if discount:
        discount_money = item.to_money("total_discount", discount, currency)
        if discount_money is not None:
            line.discount.CopyFrom(discount_money)

    tax_lines = item.objects("tax_lines")
    if tax_lines:
        tax = sum_amounts([tax_line.amount("price") for tax_line in tax_lines])
        tax_money = None if tax is None else item.to_money("tax_lines", tax, currency)
        if tax_money is not None:
            line.tax.CopyFrom(tax_money)

    registry.add(line_id, item.at("id"), LinePaths(sku=item.at("sku"), unit=item.at("quantity")))


def _address(
    obj: JsonObject | None, issues: list[Issue], email: str
) -> common_pb2.PostalAddress | None:
    if obj is None:
        return None
    name = obj.text("name") or " ".join(
        part for part in (obj.text("first_name"), obj.text("last_name")) if part
    )
    return common_pb2.PostalAddress(
        name=name,
        company=obj.text("company"),
        lines=address_lines(
            issues,
            (obj.at("address1"), obj.text("address1")),
            (obj.at("address2"), obj.text("address2")),
        ),
        locality=obj.text("city"),
        administrative_area=obj.text("province_code"),
        postal_code=obj.text("zip"),
        region_code=country_code(obj.text("country_code")),
        phone=obj.text("phone"),
        email=email,
    )


def _payment_reference(doc: JsonObject) -> str:
    for transaction in doc.objects("transactions"):
        kind = transaction.text("kind").lower()
        if kind in ("authorization", "sale") and transaction.text("status").lower() == "success":
            reference = transaction.text("authorization")
            if reference:
                return reference
    return doc.text("checkout_token") or doc.text("token")
