"""B2B portal order JSON -> canonical order.

The portal's order document (camelCase, as its REST API and webhooks send it)::

    {"orderNumber": "WEB-2024-000731",          # portal order id -> channel_order_id
     "poNumber": "PO-88213",                    # customer's PO, required
     "orderDate": "2024-03-04T14:22:05-06:00",
     "account": {"accountNumber": "ACCT-10045", "name": "Acme Hardware Co.",
                 "buyer": {"name": ..., "email": ..., "phone": ...}},
     "requestedShipDate": "2024-03-11",         # default for every line
     "currency": "USD",
     "shipTo": {"locationCode": "DC-04", "attention": ..., "company": ...,
                "addressLines": [...], "city": ..., "state": ..., "postalCode": ...,
                "country": "US", "phone": ...},
     "billTo": {... same shape ...},
     "lines": [{"lineNumber": 1, "itemNumber": "AH-1002", "customerItemNumber": "...",
                "description": "...", "uom": "CS", "quantity": 10, "contractPrice": "48.60",
                "requestedShipDate": "2024-03-15", "substitutionAllowed": false}],
     "shipVia": "UPS Ground", "freightTerms": "PREPAID", "freightCharge": "0.00",
     "paymentTerms": "NET30", "paymentReference": "...", "orderTotal": "...", "notes": "..."}

Mapping choices: the account number is the channel customer id (required: an ERP customer
must exist for a B2B order); ``uom`` is required because a contract price is per unit and
guessing EA for a case price would be off by the case size; a line-level requestedShipDate
overrides the order's. Issue paths follow the document: "lines[0].quantity", "shipTo.country".

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
    unparseable,
)


def adapt_b2b_portal(payload: bytes) -> AdaptedOrder:
    """Map one B2B portal order document."""
    root = load_json_object(payload)
    if isinstance(root, str):
        return unparseable(root)

    issues: list[Issue] = []
    doc = JsonObject(root, "", issues)
    order_id = doc.text("orderNumber")
    usable = check_channel_order_id(order_id, "orderNumber", issues)
    currency = doc.currency("currency")

    request = order_gateway_pb2.AcceptOrderRequest()
    request.channel.channel_order_id = order_id
    request.channel.format = common_pb2.CHANNEL_FORMAT_B2B_PORTAL_JSON
    request.purchase_order_number = doc.text("poNumber", required=True)

    account = doc.obj("account")
    if account is None:
        doc.issue("account", "MISSING_FIELD", "account is required")
    else:
        request.customer.channel_customer_id = account.text("accountNumber", required=True)
        request.customer.name = account.text("name")
        buyer = account.obj("buyer")
        if buyer is not None:
            request.customer.email = buyer.text("email")
            request.customer.phone = buyer.text("phone")

    ship_to_doc = doc.obj("shipTo")
    ship_to = _address(ship_to_doc, issues)
    check_ship_to(
        ship_to,
        issues,
        path="shipTo",
        line_path="shipTo.addressLines",
        country_path="shipTo.country",
    )
    if ship_to is not None:
        request.ship_to.CopyFrom(ship_to)
    bill_to = _address(doc.obj("billTo"), issues)
    if bill_to is not None:
        request.bill_to.CopyFrom(bill_to)

    placed_at = doc.timestamp("orderDate")
    if placed_at is not None:
        request.placed_at.CopyFrom(placed_at)
    order_ship_date = doc.date("requestedShipDate")

    registry = LineRegistry(issues)
    lines = doc.objects("lines")
    registry.check_count(len(lines), "lines")
    for position, item in enumerate(lines, start=1):
        line_id = item.text("lineNumber") or str(position)
        line = request.lines.add(
            line_id=line_id, channel_sku=item.text("itemNumber", required=True)
        )
        line.quantity.value = item.quantity("quantity")
        line.quantity.unit_of_measure = item.text("uom", required=True)
        price = item.money("contractPrice", currency, code="INVALID_PRICE", required=True)
        if price is not None:
            line.unit_price.CopyFrom(price)
        ship_date = item.date("requestedShipDate") if item.has("requestedShipDate") else None
        if ship_date is None:
            ship_date = order_ship_date
        if ship_date is not None:
            line.requested_ship_date.CopyFrom(ship_date)
        line.substitution_allowed = item.flag("substitutionAllowed")
        set_attribute(
            request.attributes, f"b2b.customer_item.{line_id}", item.text("customerItemNumber")
        )
        registry.add(
            line_id,
            item.at("lineNumber"),
            LinePaths(sku=item.at("itemNumber"), unit=item.at("uom")),
        )

    ship_via = doc.text("shipVia")
    request.shipping_method = service_level(ship_via)
    freight = doc.money("freightCharge", currency)
    if freight is not None:
        request.shipping_charge.CopyFrom(freight)
    total = doc.money("orderTotal", currency)
    if total is not None:
        request.total.CopyFrom(total)
    request.payment_reference = doc.text("paymentReference")

    attributes = request.attributes
    set_attribute(attributes, "b2b.ship_via", ship_via)
    set_attribute(attributes, "b2b.freight_terms", doc.text("freightTerms"))
    set_attribute(attributes, "b2b.payment_terms", doc.text("paymentTerms"))
    set_attribute(attributes, "b2b.notes", doc.text("notes"))
    if ship_to_doc is not None:
        set_attribute(attributes, "b2b.ship_to_location", ship_to_doc.text("locationCode"))

    return AdaptedOrder(request if usable else None, issues, order_id, registry.paths)


def _address(obj: JsonObject | None, issues: list[Issue]) -> common_pb2.PostalAddress | None:
    if obj is None:
        return None
    raw_lines = obj.data.get("addressLines")
    if raw_lines is not None and not isinstance(raw_lines, list):
        obj.issue("addressLines", "INVALID_FIELD", f"{obj.at('addressLines')} must be an array")
        raw_lines = None
    pairs: list[tuple[str, str]] = []
    for index, text in enumerate(raw_lines or []):
        path = f"{obj.at('addressLines')}[{index}]"
        if isinstance(text, str):
            pairs.append((path, text))
        else:
            issues.append(Issue(path, "INVALID_FIELD", f"{path} must be a string"))
    return common_pb2.PostalAddress(
        name=obj.text("attention"),
        company=obj.text("company"),
        lines=address_lines(issues, *pairs),
        locality=obj.text("city"),
        administrative_area=obj.text("state"),
        postal_code=obj.text("postalCode"),
        region_code=country_code(obj.text("country")),
        phone=obj.text("phone"),
        email=obj.text("email"),
    )
