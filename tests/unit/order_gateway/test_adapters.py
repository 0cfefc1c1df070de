"""Channel adapters of the order gateway: each sample payload maps to the expected canonical
request, malformed variants name the exact channel path and code, and no input ever makes an
adapter raise. X12: the 855 written for an 850 re-parses and carries consistent envelopes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwf.common.v1 import common_pb2
from services.order_gateway.adapters import (
    AdaptedOrder,
    LineAck,
    LinePaths,
    X12Context,
    adapt,
    build_855,
)
from services.order_gateway.adapters.common import decimal_of, money, service_level
from services.order_gateway.adapters.x12 import ISA_LENGTH, parse_interchange

SAMPLES = Path(__file__).parent / "samples"
SHOPIFY = common_pb2.CHANNEL_FORMAT_SHOPIFY_JSON
AMAZON = common_pb2.CHANNEL_FORMAT_AMAZON_JSON
B2B = common_pb2.CHANNEL_FORMAT_B2B_PORTAL_JSON
X12 = common_pb2.CHANNEL_FORMAT_X12_850
ALL_FORMATS = (SHOPIFY, AMAZON, B2B, X12)
SAMPLE_OF = {
    SHOPIFY: "shopify_order.json",
    AMAZON: "amazon_order.json",
    B2B: "b2b_portal_order.json",
    X12: "x12_850.txt",
}
NOW = datetime(2024, 3, 5, 8, 30, tzinfo=UTC)

Json = dict[str, Any]


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_json(name: str) -> Json:
    data: Json = json.loads(sample(name))
    return data


def adapt_json(fmt: common_pb2.ChannelFormat.ValueType, data: Json) -> AdaptedOrder:
    return adapt(fmt, json.dumps(data).encode())


def found(result: AdaptedOrder) -> set[tuple[str, str]]:
    return {(issue.field_path, issue.code) for issue in result.issues}


def amount(value: common_pb2.Money) -> tuple[str, int, int]:
    return (value.currency_code, value.units, value.nanos)


def ymd(value: common_pb2.Date) -> date:
    return date(value.year, value.month, value.day)


def seconds(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


# --- Shopify -------------------------------------------------------------------------------


def test_shopify_sample_maps_to_canonical_request() -> None:
    result = adapt(SHOPIFY, sample("shopify_order.json"))

    assert result.issues == []
    assert result.channel_order_id == "5724038512867"
    order = result.order
    assert order is not None
    assert order.request_id == ""
    assert order.channel.channel_id == ""
    assert order.channel.channel_order_id == "5724038512867"
    assert order.channel.format == SHOPIFY
    assert [(line.line_id, line.sku, line.channel_sku) for line in order.lines] == [
        ("13623485759715", "", "TSHIRT-BLK-M"),
        ("13623485792483", "", "MUG-12OZ-WHT"),
        ("13623485825251", "", "STICKER-PACK"),
    ]
    assert [(line.quantity.value, line.quantity.unit_of_measure) for line in order.lines] == [
        (2, ""),
        (1, ""),
        (3, ""),
    ]
    assert [amount(line.unit_price) for line in order.lines] == [
        ("USD", 19, 950_000_000),
        ("USD", 12, 750_000_000),
        ("USD", 3, 500_000_000),
    ]
    assert [amount(line.tax) for line in order.lines] == [
        ("USD", 2, 490_000_000),
        ("USD", 0, 670_000_000),
        ("USD", 0, 660_000_000),
    ]
    assert not order.lines[0].HasField("discount")
    assert amount(order.lines[1].discount) == ("USD", 2, 0)
    assert order.customer.channel_customer_id == "7012345678901"
    assert order.customer.name == "Jane Doe"
    assert order.customer.email == "jane.doe@example.com"
    assert order.customer.phone == "+13125550142"
    ship_to = order.ship_to
    assert (ship_to.name, ship_to.company) == ("Jane Doe", "Northwind Studio")
    assert list(ship_to.lines) == ["233 S Wacker Dr", "Suite 4400"]
    assert (ship_to.locality, ship_to.administrative_area, ship_to.postal_code) == (
        "Chicago",
        "IL",
        "60606",
    )
    assert ship_to.region_code == "US"
    assert list(order.bill_to.lines) == ["1418 W Belmont Ave"]
    assert order.placed_at.seconds == seconds("2024-03-04T09:15:22-05:00")
    assert order.shipping_method == "STANDARD"
    assert amount(order.shipping_charge) == ("USD", 7, 990_000_000)
    assert amount(order.total) == ("USD", 72, 960_000_000)
    assert order.payment_reference == "b1946ac92492d2347c6235b4d2611184"
    assert order.purchase_order_number == ""
    assert order.attributes["shopify.name"] == "#1001"
    assert order.attributes["shopify.order_number"] == "1001"
    assert order.attributes["shopify.payment_gateways"] == "shopify_payments"
    assert "shopify.taxes_included" not in order.attributes
    assert result.line_paths["13623485792483"] == LinePaths(
        sku="line_items[1].sku", unit="line_items[1].quantity"
    )
    assert result.x12 is None


def test_shopify_accepts_the_bare_order_object() -> None:
    wrapped = adapt(SHOPIFY, sample("shopify_order.json"))
    bare = adapt_json(SHOPIFY, sample_json("shopify_order.json")["order"])
    assert bare.issues == []
    assert bare.order == wrapped.order
    assert bare.line_paths == wrapped.line_paths


def test_shopify_prefers_a_successful_transaction_authorization() -> None:
    data = sample_json("shopify_order.json")
    data["order"]["transactions"] = [
        {"kind": "authorization", "status": "failure", "authorization": "declined-1"},
        {"kind": "authorization", "status": "success", "authorization": "ch_3OqAbC2eZvKYlo2C"},
    ]
    result = adapt_json(SHOPIFY, data)
    assert result.order is not None
    assert result.order.payment_reference == "ch_3OqAbC2eZvKYlo2C"


def _set(path: str, value: Any) -> Callable[[Json], None]:
    """A mutation setting (or, for value ..., deleting) a dotted path; ints index arrays."""

    def mutate(data: Json) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        index: Any = int(last) if last.isdigit() else last
        if value is Ellipsis:
            del node[index]
        else:
            node[index] = value

    return mutate


SHOPIFY_CASES = [
    ("order.financial_status", "pending", "financial_status", "ORDER_NOT_PAID"),
    ("order.financial_status", "refunded", "financial_status", "ORDER_NOT_PAID"),
    ("order.cancelled_at", "2024-03-04T10:00:00-05:00", "cancelled_at", "ORDER_CANCELED"),
    ("order.currency", "XYZ", "currency", "UNSUPPORTED_CURRENCY"),
    ("order.currency", ..., "currency", "MISSING_FIELD"),
    ("order.created_at", "yesterday", "created_at", "INVALID_DATE"),
    ("order.shipping_address", ..., "shipping_address", "MISSING_SHIP_TO"),
    ("order.shipping_address.address1", "", None, None),  # address2 alone still ships
    (
        "order.shipping_address.country_code",
        None,
        "shipping_address.country_code",
        "MISSING_SHIP_TO",
    ),
    (
        "order.shipping_address.country_code",
        "United States",
        "shipping_address.country_code",
        "INVALID_ADDRESS",
    ),
    ("order.line_items.1.quantity", 0, "line_items[1].quantity", "INVALID_QUANTITY"),
    ("order.line_items.1.quantity", -2, "line_items[1].quantity", "INVALID_QUANTITY"),
    ("order.line_items.1.quantity", 1.5, "line_items[1].quantity", "INVALID_QUANTITY"),
    ("order.line_items.1.quantity", "two", "line_items[1].quantity", "INVALID_QUANTITY"),
    ("order.line_items.1.quantity", ..., "line_items[1].quantity", "MISSING_FIELD"),
    ("order.line_items.2.sku", ..., "line_items[2].sku", "MISSING_FIELD"),
    ("order.line_items.2.sku", {"x": 1}, "line_items[2].sku", "INVALID_FIELD"),
    ("order.line_items.0.price", "19,95", "line_items[0].price", "INVALID_PRICE"),
    ("order.line_items.0.price", "-1.00", "line_items[0].price", "INVALID_PRICE"),
    ("order.line_items.0.price", "0.0000000001", "line_items[0].price", "INVALID_PRICE"),
    ("order.line_items.0.price", ..., "line_items[0].price", "MISSING_FIELD"),
    ("order.line_items.1.id", 13623485759715, "line_items[1].id", "DUPLICATE_LINE_ID"),
    ("order.line_items", [], "line_items", "NO_LINES"),
    ("order.line_items.0", "not an object", "line_items[0]", "INVALID_FIELD"),
]


@pytest.mark.parametrize(("path", "value", "issue_path", "code"), SHOPIFY_CASES)
def test_shopify_issue(path: str, value: Any, issue_path: str | None, code: str | None) -> None:
    data = sample_json("shopify_order.json")
    _set(path, value)(data)
    result = adapt_json(SHOPIFY, data)
    if code is None:
        assert result.issues == []
    else:
        assert (issue_path, code) in found(result), result.issues
    # The id was readable, so the best-effort order is still there (the gateway rejects).
    assert result.order is not None
    assert result.channel_order_id == "5724038512867"


def test_shopify_address_without_street_lines_is_missing_ship_to() -> None:
    data = sample_json("shopify_order.json")
    data["order"]["shipping_address"]["address1"] = ""
    data["order"]["shipping_address"]["address2"] = None
    result = adapt_json(SHOPIFY, data)
    assert found(result) == {("shipping_address.address1", "MISSING_SHIP_TO")}


def test_shopify_quantity_in_non_ascii_digits_is_invalid() -> None:
    data = sample_json("shopify_order.json")
    data["order"]["line_items"][0]["quantity"] = "\u0663"  # ARABIC-INDIC DIGIT THREE
    assert ("line_items[0].quantity", "INVALID_QUANTITY") in found(adapt_json(SHOPIFY, data))


def test_shopify_keeps_taxes_included_for_the_erp() -> None:
    data = sample_json("shopify_order.json")
    data["order"]["taxes_included"] = True
    result = adapt_json(SHOPIFY, data)
    assert result.order is not None
    assert result.order.attributes["shopify.taxes_included"] == "true"


def test_shopify_reports_several_issues_at_once() -> None:
    data = sample_json("shopify_order.json")
    data["order"]["line_items"][0]["quantity"] = 0
    data["order"]["line_items"][2]["sku"] = ""
    data["order"]["financial_status"] = "pending"
    assert found(adapt_json(SHOPIFY, data)) == {
        ("line_items[0].quantity", "INVALID_QUANTITY"),
        ("line_items[2].sku", "MISSING_FIELD"),
        ("financial_status", "ORDER_NOT_PAID"),
    }


def test_shopify_missing_order_id_gives_no_order() -> None:
    data = sample_json("shopify_order.json")
    del data["order"]["id"]
    result = adapt_json(SHOPIFY, data)
    assert ("id", "MISSING_FIELD") in found(result)
    assert result.order is None
    assert result.channel_order_id == ""


# --- Amazon --------------------------------------------------------------------------------


def test_amazon_sample_maps_to_canonical_request() -> None:
    result = adapt(AMAZON, sample("amazon_order.json"))

    assert result.issues == []
    order = result.order
    assert order is not None
    assert order.channel.channel_order_id == "114-3941689-8772232"
    assert order.channel.format == AMAZON
    assert order.request_id == "" and order.channel.channel_id == ""
    assert [(line.line_id, line.channel_sku, line.sku) for line in order.lines] == [
        ("68828574383266", "AZ-TSHIRT-BLK-M", ""),
        ("68828574383267", "AZ-MUG-12OZ", ""),
    ]
    assert [(line.quantity.value, line.quantity.unit_of_measure) for line in order.lines] == [
        (3, ""),
        (1, ""),
    ]
    # ItemPrice is for the whole quantity: 38.85 / 3 = 12.95 per unit.
    assert amount(order.lines[0].unit_price) == ("USD", 12, 950_000_000)
    assert amount(order.lines[1].unit_price) == ("USD", 14, 990_000_000)
    assert amount(order.lines[0].tax) == ("USD", 3, 110_000_000)
    assert not order.lines[0].HasField("discount")
    assert amount(order.lines[1].discount) == ("USD", 1, 500_000_000)
    assert order.shipping_method == "EXPEDITED"
    assert amount(order.shipping_charge) == ("USD", 4, 990_000_000)
    assert amount(order.total) == ("USD", 61, 640_000_000)
    assert order.payment_reference == "114-3941689-8772232"
    assert order.placed_at.seconds == seconds("2024-03-04T15:42:10+00:00")
    assert order.customer.channel_customer_id == ""
    assert order.customer.email == "7yq1x2kz0w3r5tb@marketplace.amazon.com"
    assert order.customer.name == "John Smith"
    assert list(order.ship_to.lines) == ["410 Terry Ave N", "Apt 12"]
    assert (order.ship_to.locality, order.ship_to.administrative_area) == ("Seattle", "WA")
    assert (order.ship_to.postal_code, order.ship_to.region_code) == ("98109-5210", "US")
    assert order.ship_to.phone == "+12065550177"
    assert order.attributes["amazon.asin.68828574383266"] == "B07XJ8C8F5"
    assert order.attributes["amazon.is_prime"] == "true"
    assert order.attributes["amazon.latest_ship_date"] == "2024-03-06T06:59:59Z"
    assert order.attributes["amazon.marketplace_id"] == "ATVPDKIKX0DER"
    assert result.line_paths["68828574383267"] == LinePaths(
        sku="OrderItems[1].SellerSKU", unit="OrderItems[1].QuantityOrdered"
    )


def test_amazon_unit_price_of_a_non_terminating_division_is_rounded_to_the_nano() -> None:
    data = sample_json("amazon_order.json")
    data["OrderItems"][0]["ItemPrice"]["Amount"] = "10.00"
    result = adapt_json(AMAZON, data)
    assert result.order is not None
    assert amount(result.order.lines[0].unit_price) == ("USD", 3, 333_333_333)


def test_amazon_accepts_the_sp_api_payload_envelope() -> None:
    result = adapt_json(AMAZON, {"payload": sample_json("amazon_order.json")})
    assert result.issues == []
    assert result.order == adapt(AMAZON, sample("amazon_order.json")).order


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("Standard", "STANDARD"),
        ("Expedited", "EXPEDITED"),
        ("SecondDay", "EXPEDITED"),
        ("NextDay", "NEXT_DAY"),
        ("SameDay", "NEXT_DAY"),
        ("SomethingNew", "STANDARD"),
    ],
)
def test_amazon_service_level_category(category: str, expected: str) -> None:
    data = sample_json("amazon_order.json")
    data["ShipmentServiceLevelCategory"] = category
    data["ShipServiceLevel"] = "Std US D2D Dom"
    result = adapt_json(AMAZON, data)
    assert result.order is not None
    assert result.order.shipping_method == expected


AMAZON_CASES = [
    ("OrderStatus", "Pending", "OrderStatus", "ORDER_NOT_PAYABLE"),
    ("OrderStatus", "Canceled", "OrderStatus", "ORDER_NOT_PAYABLE"),
    ("FulfillmentChannel", "AFN", "FulfillmentChannel", "NOT_MERCHANT_FULFILLED"),
    ("OrderTotal.CurrencyCode", "ZZZ", "OrderTotal.CurrencyCode", "UNSUPPORTED_CURRENCY"),
    (
        "OrderItems.0.ItemPrice.CurrencyCode",
        "EUR",
        "OrderItems[0].ItemPrice.CurrencyCode",
        "CURRENCY_MISMATCH",
    ),
    ("OrderItems.0.ItemPrice", ..., "OrderItems[0].ItemPrice", "MISSING_FIELD"),
    ("OrderItems.0.ItemPrice.Amount", "abc", "OrderItems[0].ItemPrice.Amount", "INVALID_PRICE"),
    ("OrderItems.1.QuantityOrdered", 0, "OrderItems[1].QuantityOrdered", "INVALID_QUANTITY"),
    ("OrderItems.1.QuantityOrdered", 2.5, "OrderItems[1].QuantityOrdered", "INVALID_QUANTITY"),
    ("OrderItems.1.SellerSKU", "", "OrderItems[1].SellerSKU", "MISSING_FIELD"),
    ("PurchaseDate", "2024-13-01T00:00:00Z", "PurchaseDate", "INVALID_DATE"),
    (
        "ShippingAddress",
        {"Name": "John Smith", "City": "Seattle", "CountryCode": "US"},  # no restricted token
        "ShippingAddress.AddressLine1",
        "MISSING_SHIP_TO",
    ),
    ("ShippingAddress.AddressLine2", ..., None, None),
    ("ShippingAddress.CountryCode", ..., "ShippingAddress.CountryCode", "MISSING_SHIP_TO"),
    ("ShippingAddress", ..., "ShippingAddress", "MISSING_SHIP_TO"),
    ("OrderItems", [], "OrderItems", "NO_LINES"),
]


@pytest.mark.parametrize(("path", "value", "issue_path", "code"), AMAZON_CASES)
def test_amazon_issue(path: str, value: Any, issue_path: str | None, code: str | None) -> None:
    data = sample_json("amazon_order.json")
    _set(path, value)(data)
    result = adapt_json(AMAZON, data)
    if code is None:
        assert result.issues == []
    else:
        assert (issue_path, code) in found(result), result.issues
    assert result.order is not None


def test_amazon_pending_sample_reports_every_problem() -> None:
    result = adapt(AMAZON, sample("amazon_order_pending.json"))
    assert result.channel_order_id == "902-1845936-5435065"
    assert {
        ("OrderStatus", "ORDER_NOT_PAYABLE"),
        ("ShippingAddress.AddressLine1", "MISSING_SHIP_TO"),
        ("OrderItems[0].QuantityOrdered", "INVALID_QUANTITY"),
        ("OrderItems[0].ItemPrice", "MISSING_FIELD"),
    } <= found(result)


def test_amazon_missing_order_id_gives_no_order() -> None:
    data = sample_json("amazon_order.json")
    data["AmazonOrderId"] = ""
    result = adapt_json(AMAZON, data)
    assert ("AmazonOrderId", "MISSING_FIELD") in found(result)
    assert result.order is None


# --- B2B portal ----------------------------------------------------------------------------


def test_b2b_sample_maps_to_canonical_request() -> None:
    result = adapt(B2B, sample("b2b_portal_order.json"))

    assert result.issues == []
    order = result.order
    assert order is not None
    assert order.channel.channel_order_id == "WEB-2024-000731"
    assert order.channel.format == B2B
    assert order.purchase_order_number == "PO-88213"
    assert order.customer.channel_customer_id == "ACCT-10045"
    assert order.customer.customer_id == ""
    assert order.customer.name == "Acme Hardware Co."
    assert (order.customer.email, order.customer.phone) == (
        "mlopez@acmehardware.example",
        "+13125550199",
    )
    assert [
        (line.line_id, line.channel_sku, line.quantity.value, line.quantity.unit_of_measure)
        for line in order.lines
    ] == [("1", "AH-1002", 10, "CS"), ("2", "AH-2210", 24, "EA"), ("3", "AH-3100", 5, "BX")]
    assert [amount(line.unit_price) for line in order.lines] == [
        ("USD", 48, 600_000_000),
        ("USD", 3, 125_000_000),
        ("USD", 12, 0),  # a JSON number, parsed as Decimal
    ]
    assert [ymd(line.requested_ship_date) for line in order.lines] == [
        date(2024, 3, 11),
        date(2024, 3, 15),  # line-level override
        date(2024, 3, 11),
    ]
    assert [line.substitution_allowed for line in order.lines] == [False, True, False]
    assert (order.ship_to.name, order.ship_to.company) == (
        "Receiving - Dock 4",
        "Acme Hardware Central DC",
    )
    assert list(order.ship_to.lines) == ["1200 Industrial Pkwy", "Dock 4"]
    assert (order.ship_to.locality, order.ship_to.postal_code, order.ship_to.region_code) == (
        "Joliet",
        "60431",
        "US",
    )
    assert order.bill_to.company == "Acme Hardware Co. - Accounts Payable"
    assert order.placed_at.seconds == seconds("2024-03-04T14:22:05-06:00")
    assert order.shipping_method == "STANDARD"
    assert amount(order.shipping_charge) == ("USD", 0, 0)
    assert amount(order.total) == ("USD", 621, 0)
    assert order.attributes["b2b.payment_terms"] == "NET30"
    assert order.attributes["b2b.ship_via"] == "UPS Ground"
    assert order.attributes["b2b.ship_to_location"] == "DC-04"
    assert order.attributes["b2b.customer_item.1"] == "ACME-771002"
    assert result.line_paths["2"] == LinePaths(sku="lines[1].itemNumber", unit="lines[1].uom")


B2B_CASES = [
    ("poNumber", ..., "poNumber", "MISSING_FIELD"),
    ("account.accountNumber", "", "account.accountNumber", "MISSING_FIELD"),
    ("account", ..., "account", "MISSING_FIELD"),
    ("currency", "usdollar", "currency", "UNSUPPORTED_CURRENCY"),
    ("requestedShipDate", "03/11/2024", "requestedShipDate", "INVALID_DATE"),
    ("lines.1.requestedShipDate", "2024-02-30", "lines[1].requestedShipDate", "INVALID_DATE"),
    ("orderDate", "2024-03-04 lunchtime", "orderDate", "INVALID_DATE"),
    ("lines.0.uom", ..., "lines[0].uom", "MISSING_FIELD"),
    ("lines.0.quantity", 2.5, "lines[0].quantity", "INVALID_QUANTITY"),
    ("lines.0.quantity", -10, "lines[0].quantity", "INVALID_QUANTITY"),
    ("lines.0.quantity", "0", "lines[0].quantity", "INVALID_QUANTITY"),
    ("lines.2.contractPrice", ..., "lines[2].contractPrice", "MISSING_FIELD"),
    ("lines.2.contractPrice", "twelve", "lines[2].contractPrice", "INVALID_PRICE"),
    ("lines.2.itemNumber", "  ", "lines[2].itemNumber", "MISSING_FIELD"),
    ("lines.2.lineNumber", 1, "lines[2].lineNumber", "DUPLICATE_LINE_ID"),
    ("shipTo.addressLines", [], "shipTo.addressLines", "MISSING_SHIP_TO"),
    ("shipTo.addressLines", "1200 Industrial Pkwy", "shipTo.addressLines", "INVALID_FIELD"),
    ("shipTo.addressLines.0", "x" * 101, "shipTo.addressLines[0]", "FIELD_TOO_LONG"),
    ("shipTo.country", "", "shipTo.country", "MISSING_SHIP_TO"),
    ("shipTo", ..., "shipTo", "MISSING_SHIP_TO"),
    ("lines", [], "lines", "NO_LINES"),
]


@pytest.mark.parametrize(("path", "value", "issue_path", "code"), B2B_CASES)
def test_b2b_issue(path: str, value: Any, issue_path: str, code: str) -> None:
    data = sample_json("b2b_portal_order.json")
    _set(path, value)(data)
    result = adapt_json(B2B, data)
    assert (issue_path, code) in found(result), result.issues
    assert result.order is not None


def test_b2b_missing_order_number_gives_no_order() -> None:
    data = sample_json("b2b_portal_order.json")
    del data["orderNumber"]
    result = adapt_json(B2B, data)
    assert found(result) == {("orderNumber", "MISSING_FIELD")}
    assert result.order is None


def test_b2b_country_is_normalised() -> None:
    data = sample_json("b2b_portal_order.json")
    data["shipTo"]["country"] = "usa"
    result = adapt_json(B2B, data)
    assert result.issues == []
    assert result.order is not None and result.order.ship_to.region_code == "US"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("UPS Ground", "STANDARD"),
        ("FedEx Priority Overnight", "NEXT_DAY"),
        ("UPS Next Day Air Saver", "NEXT_DAY"),
        ("UPS 2nd Day Air", "EXPEDITED"),
        ("FedEx 2Day", "EXPEDITED"),
        ("Express Saver", "EXPEDITED"),
        ("LTL - customer routing", "STANDARD"),
        ("", "STANDARD"),
    ],
)
def test_service_level_keywords(text: str, expected: str) -> None:
    assert service_level(text) == expected


# --- X12 850 -------------------------------------------------------------------------------


def x12_segments() -> list[str]:
    text = sample("x12_850.txt").decode()
    return [segment.strip("\r\n") for segment in text.split("~") if segment.strip()]


def x12_payload(segments: list[str], *, recount: bool = True) -> bytes:
    """The interchange of ``segments``; ``recount`` keeps SE01 right after edits."""
    segments = list(segments)
    if recount:
        st = next(i for i, seg in enumerate(segments) if seg.startswith("ST*"))
        se = next(i for i, seg in enumerate(segments) if seg.startswith("SE*"))
        segments[se] = f"SE*{se - st + 1}*{segments[se].split('*')[2]}"
    return "".join(f"{segment}~\n" for segment in segments).encode()


def x12_edit(old: str, new: str | None, *, recount: bool = True, count: int = 1) -> AdaptedOrder:
    """Replace (or, with None, drop) the segment(s) equal to ``old``."""
    segments = x12_segments()
    assert old in segments, old
    edited: list[str] = []
    for segment in segments:
        if segment == old and count:
            count -= 1
            if new is not None:
                edited.extend(new.split("~"))
        else:
            edited.append(segment)
    return adapt(X12, x12_payload(edited, recount=recount))


def test_x12_sample_maps_to_canonical_request() -> None:
    result = adapt(X12, sample("x12_850.txt"))

    assert result.issues == []
    assert result.channel_order_id == "4500012345"
    order = result.order
    assert order is not None
    assert order.channel.channel_order_id == "4500012345"
    assert order.channel.format == X12
    assert order.request_id == "" and order.channel.channel_id == ""
    assert order.purchase_order_number == "4500012345"
    assert order.placed_at.seconds == seconds("2024-03-04T00:00:00+00:00")
    # BP (buyer part) wins, else VP even when it is not the first pair.
    assert [(line.line_id, line.channel_sku, line.sku) for line in order.lines] == [
        ("1", "ACME-771002", ""),
        ("2", "AH-2210", ""),
        ("3", "AH-3100", ""),
    ]
    assert [(line.quantity.value, line.quantity.unit_of_measure) for line in order.lines] == [
        (10, "CA"),
        (24, "EA"),
        (5, "BX"),
    ]
    assert [amount(line.unit_price) for line in order.lines] == [
        ("USD", 48, 600_000_000),
        ("USD", 3, 125_000_000),
        ("USD", 12, 0),
    ]
    assert [ymd(line.requested_ship_date) for line in order.lines] == [
        date(2024, 3, 11),
        date(2024, 3, 15),  # the DTM*010 inside PO1 loop 2
        date(2024, 3, 11),
    ]
    assert order.customer.channel_customer_id == "0613344550000"
    assert order.customer.name == "ACME HARDWARE CO"
    assert order.customer.phone == "3125550199"
    assert order.customer.email == "MLOPEZ@ACMEHARDWARE.EXAMPLE"
    ship_to = order.ship_to
    assert (ship_to.company, ship_to.name) == ("ACME HARDWARE CENTRAL DC", "RECEIVING DOCK 4")
    assert list(ship_to.lines) == ["1200 INDUSTRIAL PKWY", "DOCK 4"]
    assert (ship_to.locality, ship_to.administrative_area, ship_to.postal_code) == (
        "JOLIET",
        "IL",
        "60431",
    )
    assert (ship_to.region_code, ship_to.phone) == ("US", "8155550123")
    assert list(order.bill_to.lines) == ["PO BOX 8800"]
    assert order.shipping_method == "STANDARD"
    assert amount(order.total) == ("USD", 621, 0)
    assert {key: order.attributes[key] for key in order.attributes if key.startswith("x12.")} == {
        "x12.isa13": "000000905",
        "x12.gs06": "905",
        "x12.st02": "0001",
        "x12.sender_qualifier": "ZZ",
        "x12.sender_id": "ACMEHARDWARE",
        "x12.receiver_qualifier": "ZZ",
        "x12.receiver_id": "DWFDIST",
        "x12.gs02": "ACMEHARDWARE",
        "x12.gs03": "DWFDIST",
        "x12.version": "004010",
        "x12.usage_indicator": "P",
        "x12.beg02": "SA",
        "x12.ref.DP": "042",
        "x12.ref.IA": "V-77810",
        "x12.ship_to.qualifier": "92",
        "x12.ship_to.id": "0004",
        "x12.td5.routing": "UPS GROUND",
    }
    assert result.line_paths == {
        "1": LinePaths(sku="PO1[1].PO107", unit="PO1[1].PO103"),
        "2": LinePaths(sku="PO1[2].PO107", unit="PO1[2].PO103"),
        "3": LinePaths(sku="PO1[3].PO109", unit="PO1[3].PO103"),
    }


def test_x12_context_keeps_what_the_855_needs() -> None:
    ctx = adapt(X12, sample("x12_850.txt")).x12
    assert ctx is not None
    assert (ctx.element_separator, ctx.sub_element_separator, ctx.segment_terminator) == (
        "*",
        ">",
        "~",
    )
    assert ctx.line_break == "\n"
    assert (ctx.sender_qualifier, ctx.sender_id) == ("ZZ", "ACMEHARDWARE")
    assert (ctx.receiver_qualifier, ctx.receiver_id) == ("ZZ", "DWFDIST")
    assert (ctx.interchange_control_number, ctx.group_control_number) == ("000000905", "905")
    assert ctx.transaction_control_number == "0001"
    assert (ctx.group_sender_id, ctx.group_receiver_id) == ("ACMEHARDWARE", "DWFDIST")
    assert (ctx.version, ctx.group_version, ctx.usage_indicator) == ("00401", "004010", "P")
    assert (ctx.po_number, ctx.po_date) == ("4500012345", date(2024, 3, 4))
    assert [(line.line_id, line.quantity, line.unit, line.unit_price) for line in ctx.lines] == [
        ("1", "10", "CA", "48.60"),
        ("2", "24", "EA", "3.125"),
        ("3", "5", "BX", "12.00"),
    ]
    assert ctx.lines[2].product_ids == (("UP", "012345678912"), ("VP", "AH-3100"))


def test_x12_layout_variants_map_the_same() -> None:
    text = sample("x12_850.txt").decode()
    expected = adapt(X12, sample("x12_850.txt")).order
    one_line = text.replace("~\n", "~")
    crlf = text.replace("~\n", "~\r\n")
    # Other separators, with the newline itself as segment terminator.
    newline_terminated = text.replace("*", "|").replace("~\n", "\n").replace(">", "^")
    for variant in (one_line, crlf, newline_terminated, "\n\n" + text):
        result = adapt(X12, variant.encode())
        assert result.issues == [], variant[:120]
        assert result.order == expected
    ctx = adapt(X12, newline_terminated.encode()).x12
    assert ctx is not None
    assert (ctx.element_separator, ctx.segment_terminator, ctx.line_break) == ("|", "\n", "")


X12_CASES: list[tuple[str, str | None, bool, str, str]] = [
    ("CTT*3*39", "CTT*4*39", True, "CTT.CTT01", "LINE_COUNT_MISMATCH"),
    ("CTT*3*39", "CTT*3*40", True, "CTT.CTT02", "HASH_TOTAL_MISMATCH"),
    ("SE*30*0001", "SE*29*0001", False, "SE.SE01", "SEGMENT_COUNT_MISMATCH"),
    ("SE*30*0001", "SE*30*0002", False, "SE.SE02", "CONTROL_NUMBER_MISMATCH"),
    ("GE*1*905", "GE*1*906", True, "GE.GE02", "CONTROL_NUMBER_MISMATCH"),
    ("GE*1*905", "GE*2*905", True, "GE.GE01", "TRANSACTION_COUNT_MISMATCH"),
    ("IEA*1*000000905", "IEA*1*000000906", True, "IEA.IEA02", "CONTROL_NUMBER_MISMATCH"),
    ("IEA*1*000000905", "IEA*3*000000905", True, "IEA.IEA01", "GROUP_COUNT_MISMATCH"),
    ("IEA*1*000000905", None, True, "IEA", "MISSING_SEGMENT"),
    (
        "BEG*00*SA*4500012345**20240304",
        "BEG*00*SA*4500012345**20240231",
        True,
        "BEG.BEG05",
        "INVALID_DATE",
    ),
    (
        "BEG*00*SA*4500012345**20240304",
        "BEG*01*SA*4500012345**20240304",
        True,
        "BEG.BEG01",
        "UNSUPPORTED_PURPOSE",
    ),
    (
        "BEG*00*SA*4500012345**20240304",
        "BEG*00*ZZ*4500012345**20240304",
        True,
        "BEG.BEG02",
        "UNSUPPORTED_ORDER_TYPE",
    ),
    ("CUR*BY*USD", "CUR*BY*XYZ", True, "CUR.CUR02", "UNSUPPORTED_CURRENCY"),
    ("DTM*010*20240311", "DTM*010*2024031", True, "DTM[010].DTM02", "INVALID_DATE"),
    ("DTM*010*20240315", "DTM*010*20241315", True, "PO1[2].DTM[010].DTM02", "INVALID_DATE"),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*2*0*EA*3.125*PE*VP*AH-2210",
        True,
        "PO1[2].PO102",
        "INVALID_QUANTITY",
    ),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*2*-24*EA*3.125*PE*VP*AH-2210",
        True,
        "PO1[2].PO102",
        "INVALID_QUANTITY",
    ),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*2*2.5*EA*3.125*PE*VP*AH-2210",
        True,
        "PO1[2].PO102",
        "INVALID_QUANTITY",
    ),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*2**EA*3.125*PE*VP*AH-2210",
        True,
        "PO1[2].PO102",
        "MISSING_FIELD",
    ),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*2*24**3.125*PE*VP*AH-2210",
        True,
        "PO1[2].PO103",
        "MISSING_FIELD",
    ),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*2*24*EA*3,12*PE*VP*AH-2210",
        True,
        "PO1[2].PO104",
        "INVALID_PRICE",
    ),
    ("PO1*2*24*EA*3.125*PE*VP*AH-2210", "PO1*2*24*EA*3.125", True, "PO1[2].PO107", "MISSING_FIELD"),
    (
        "PO1*2*24*EA*3.125*PE*VP*AH-2210",
        "PO1*1*24*EA*3.125*PE*VP*AH-2210",
        True,
        "PO1[2].PO101",
        "DUPLICATE_LINE_ID",
    ),
    ("PO4*12", "SDQ*EA*92*0004*10", True, "PO1[1].SDQ", "UNSUPPORTED_SEGMENT"),
    ("N3*1200 INDUSTRIAL PKWY*DOCK 4", None, True, "N1[ST].N3", "MISSING_SHIP_TO"),
    ("N4*JOLIET*IL*60431*US", None, True, "N1[ST].N4", "MISSING_SHIP_TO"),
    ("N4*JOLIET*IL*60431*US", "N4*JOLIET*IL*60431*U5", True, "N1[ST].N4.N404", "INVALID_ADDRESS"),
    (
        "N1*ST*ACME HARDWARE CENTRAL DC*92*0004",
        "N1*ZZ*ACME HARDWARE CENTRAL DC*92*0004",
        True,
        "N1[ST]",
        "MISSING_SHIP_TO",
    ),
    (
        "N1*BT*ACME HARDWARE CO*92*0001",
        "N1*ST*ACME HARDWARE CO*92*0001",
        True,
        "N1[ST]",
        "DUPLICATE_SEGMENT",
    ),
    (
        "GS*PO*ACMEHARDWARE*DWFDIST*20240304*1422*905*X*004010",
        "GS*IN*ACMEHARDWARE*DWFDIST*20240304*1422*905*X*004010",
        True,
        "GS.GS01",
        "UNSUPPORTED_TRANSACTION",
    ),
]


@pytest.mark.parametrize(("old", "new", "recount", "issue_path", "code"), X12_CASES)
def test_x12_issue(old: str, new: str | None, recount: bool, issue_path: str, code: str) -> None:
    result = x12_edit(old, new, recount=recount)
    assert (issue_path, code) in found(result), result.issues
    assert result.order is not None
    assert result.x12 is not None


def test_x12_truncated_after_the_lines_reports_each_missing_trailer() -> None:
    segments = x12_segments()
    result = adapt(X12, x12_payload(segments[:-3], recount=False))
    assert {("SE", "MISSING_SEGMENT"), ("GE", "MISSING_SEGMENT"), ("IEA", "MISSING_SEGMENT")} <= (
        found(result)
    )
    assert result.order is not None and len(result.order.lines) == 3


def test_x12_missing_po_number_gives_no_order_but_a_context_for_the_reject() -> None:
    result = x12_edit("BEG*00*SA*4500012345**20240304", "BEG*00*SA***20240304")
    assert ("BEG.BEG03", "MISSING_FIELD") in found(result)
    assert result.order is None
    assert result.channel_order_id == ""
    assert result.x12 is not None
    reject = build_855(result.x12, None, accepted=False, control_number=7, now=NOW)
    bak = next(seg for seg in parse_interchange(reject).segments if seg[0] == "BAK")
    assert bak[1:3] == ("00", "RJ")


def test_x12_other_transaction_sets_are_refused() -> None:
    result = x12_edit("ST*850*0001", "ST*860*0001")
    assert ("ST.ST01", "UNSUPPORTED_TRANSACTION") in found(result)
    assert result.order is None
    assert result.x12 is not None


def test_x12_defaults_currency_country_and_customer() -> None:
    segments = [
        seg
        for seg in x12_segments()
        if not seg.startswith(("CUR*", "N1*BY*")) and seg != "PER*BD*MARIA LOPEZ*TE*3125550199"
    ]
    segments = ["N4*JOLIET*IL*60431" if seg == "N4*JOLIET*IL*60431*US" else seg for seg in segments]
    result = adapt(X12, x12_payload(segments))
    assert result.issues == []
    order = result.order
    assert order is not None
    assert order.lines[0].unit_price.currency_code == "USD"
    assert order.ship_to.region_code == "US"
    assert order.customer.channel_customer_id == "ACMEHARDWARE"  # the ISA sender


def test_x12_line_level_ship_to_is_unsupported() -> None:
    result = x12_edit("PO4*12", "N1*ST*ACME STORE 12*92*0012")
    assert ("PO1[1].N1[ST]", "UNSUPPORTED_SEGMENT") in found(result)


def test_x12_two_transaction_sets_are_refused() -> None:
    segments = x12_segments()
    st, se = segments.index("ST*850*0001"), segments.index("SE*30*0001")
    doubled = segments[: se + 1] + segments[st : se + 1] + segments[se + 1 :]
    result = adapt(X12, x12_payload(doubled, recount=False))
    assert {("ST[2]", "MULTIPLE_TRANSACTIONS"), ("GE.GE01", "TRANSACTION_COUNT_MISMATCH")} <= (
        found(result)
    )


@pytest.mark.parametrize(
    ("td5", "expected"),
    [
        ("TD5*O*2*UPSN*A*UPS NEXT DAY AIR", "NEXT_DAY"),
        ("TD5*O*2*FDEG*M*FEDEX GROUND*******SE", "EXPEDITED"),
        ("TD5*O*2*UPSN*A********ND", "NEXT_DAY"),
        ("TD5*O*2*RDWY*M*LTL", "STANDARD"),
    ],
)
def test_x12_shipping_method_from_td5(td5: str, expected: str) -> None:
    result = x12_edit("TD5*O*2*UPSN*M*UPS GROUND", td5)
    assert result.order is not None
    assert result.order.shipping_method == expected


def test_x12_product_id_without_bp_or_vp_uses_the_first_pair() -> None:
    result = x12_edit("PO1*2*24*EA*3.125*PE*VP*AH-2210", "PO1*2*24*EA*3.125*PE*UP*0123*EN*4006")
    assert result.order is not None
    assert result.order.lines[1].channel_sku == "0123"
    assert result.line_paths["2"].sku == "PO1[2].PO107"


@pytest.mark.parametrize(
    "payload",
    [
        sample("x12_850_truncated_isa.txt"),
        b"",
        b"GS*PO*A*B~",
        sample("shopify_order.json"),
        # ISA06 not padded to 15 characters: not the fixed-width layout.
        sample("x12_850.txt").replace(b"ACMEHARDWARE   ", b"ACMEHARDWARE"),
        b"\xff\xfe" + sample("x12_850.txt"),
    ],
)
def test_x12_unreadable_interchange(payload: bytes) -> None:
    result = adapt(X12, payload)
    assert [issue.code for issue in result.issues] == ["UNPARSEABLE_PAYLOAD"]
    assert result.issues[0].field_path == ""
    assert result.order is None
    assert result.x12 is None


# --- X12 855 -------------------------------------------------------------------------------


def sample_context() -> X12Context:
    ctx = adapt(X12, sample("x12_850.txt")).x12
    assert ctx is not None
    return ctx


def segments_of(document: str) -> list[tuple[str, ...]]:
    return list(parse_interchange(document).segments)


def test_855_with_line_acknowledgements() -> None:
    acks = [
        LineAck("1", "IA", 10, "CA"),
        LineAck("2", "IB", 24, "EA", scheduled_date=date(2024, 3, 22)),
        LineAck("3", "IR", 0, "BX"),
    ]
    document = build_855(sample_context(), acks, accepted=True, control_number=42, now=NOW)

    assert document.index("~") + 1 == ISA_LENGTH  # the ISA is exactly 106 characters
    segments = segments_of(document)
    ids = [seg[0] for seg in segments]
    assert ids == ["ISA", "GS", "ST", "BAK"] + ["PO1", "ACK"] * 3 + ["CTT", "SE", "GE", "IEA"]
    isa, gs, st, bak = segments[:4]
    # Sender and receiver swapped with respect to the 850.
    assert (isa[5], isa[6], isa[7], isa[8]) == ("ZZ", "DWFDIST".ljust(15), "ZZ", "ACMEHARDWARE   ")
    assert (isa[9], isa[10], isa[12], isa[13], isa[15], isa[16]) == (
        "240305",
        "0830",
        "00401",
        "000000042",
        "P",
        ">",
    )
    assert gs[1:] == ("PR", "DWFDIST", "ACMEHARDWARE", "20240305", "0830", "42", "X", "004010")
    assert st[1] == "855"
    assert bak[1:5] == ("00", "AC", "4500012345", "20240304")
    assert segments[4] == (
        "PO1",
        "1",
        "10",
        "CA",
        "48.60",
        "PE",
        "BP",
        "ACME-771002",
        "VP",
        "AH-1002",
        "UP",
        "012345678905",
    )
    assert segments[5] == ("ACK", "IA", "10", "CA")
    assert segments[7] == ("ACK", "IB", "24", "EA", "068", "20240322")
    assert segments[9] == ("ACK", "IR", "0", "BX")
    assert segments[10] == ("CTT", "3")
    se = segments[11]
    assert se == ("SE", str(ids.index("SE") - ids.index("ST") + 1), st[2])
    assert segments[12] == ("GE", "1", "42")
    assert segments[13] == ("IEA", "1", "000000042")
    assert document.endswith("IEA*1*000000042~\n")  # the 850's line breaks are mirrored

    # The envelope passes the same trailer checks an incoming interchange gets (the rest of
    # the reader's issues are about it not being an 850).
    reread = adapt(X12, document.encode())
    envelope = [i for i in reread.issues if i.field_path.startswith(("SE", "GE", "IEA"))]
    assert envelope == []
    assert ("ST.ST01", "UNSUPPORTED_TRANSACTION") in found(reread)


def test_855_acknowledgement_type() -> None:
    ctx = sample_context()

    def bak02(acks: list[LineAck] | None, accepted: bool) -> str:
        document = build_855(ctx, acks, accepted=accepted, control_number=1, now=NOW)
        return next(seg for seg in segments_of(document) if seg[0] == "BAK")[2]

    as_ordered = [LineAck("1", "IA", 10, "CA"), LineAck("2", "IA", 24, "EA")]
    assert bak02(as_ordered, True) == "AD"
    assert bak02([LineAck("1", "IA", 8, "CA")], True) == "AC"
    assert bak02([LineAck("1", "IC", 10, "CA")], True) == "AC"
    assert bak02(None, True) == "AK"
    assert bak02(None, False) == "RJ"
    assert bak02([LineAck("1", "IR", 0, "CA")], False) == "RD"


def test_855_reject_has_no_lines_and_a_correct_count() -> None:
    document = build_855(
        sample_context(),
        None,
        accepted=False,
        control_number=999_999_999,
        now=NOW,
        seller_order_number="SO-1",
    )
    segments = segments_of(document)
    assert [seg[0] for seg in segments] == ["ISA", "GS", "ST", "BAK", "SE", "GE", "IEA"]
    assert segments[3] == ("BAK", "00", "RJ", "4500012345", "20240304", "", "", "", "SO-1")
    assert segments[4][1] == "3"
    assert segments[0][13] == "999999999"
    assert len(document.split("~")[0]) + 1 == ISA_LENGTH


def test_855_uses_the_850_separators() -> None:
    text = sample("x12_850.txt").decode()
    variant = text.replace("*", "|").replace("~\n", "\n").replace(">", "^")
    ctx = adapt(X12, variant.encode()).x12
    assert ctx is not None
    document = build_855(
        ctx, [LineAck("2", "IA", 24, "EA")], accepted=True, control_number=5, now=NOW
    )
    assert document.startswith("ISA|00|")
    assert document.split("\n")[0][-1] == "^"
    assert [seg[0] for seg in segments_of(document)][3:6] == ["BAK", "PO1", "ACK"]


@pytest.mark.parametrize(
    ("acks", "control_number", "seller"),
    [
        ([LineAck("9", "IA", 1, "EA")], 1, ""),
        ([LineAck("1", "XX", 1, "EA")], 1, ""),
        ([LineAck("1", "IA", -1, "EA")], 1, ""),
        (None, 0, ""),
        (None, 1_000_000_000, ""),
        (None, 1, "SO*1"),
    ],
)
def test_855_refuses_inconsistent_input(
    acks: list[LineAck] | None, control_number: int, seller: str
) -> None:
    with pytest.raises(ValueError):
        build_855(
            sample_context(),
            acks,
            accepted=True,
            control_number=control_number,
            now=NOW,
            seller_order_number=seller,
        )


# --- dispatch, unparseable payloads, properties --------------------------------------------


@pytest.mark.parametrize(
    "fmt", [common_pb2.CHANNEL_FORMAT_CANONICAL, common_pb2.CHANNEL_FORMAT_UNSPECIFIED]
)
def test_adapt_refuses_non_channel_formats(fmt: common_pb2.ChannelFormat.ValueType) -> None:
    with pytest.raises(ValueError):
        adapt(fmt, b"{}")


@pytest.mark.parametrize("fmt", [SHOPIFY, AMAZON, B2B])
@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{not json",
        b"[1, 2, 3]",
        b'"order"',
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b'{"a": 1e99999999999999999999}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_json_formats_refuse_unparseable_payloads(
    fmt: common_pb2.ChannelFormat.ValueType, payload: bytes
) -> None:
    result = adapt(fmt, payload)
    assert [issue.code for issue in result.issues] == ["UNPARSEABLE_PAYLOAD"]
    assert result.order is None
    assert result.channel_order_id == ""


def test_truncated_shopify_sample_is_unparseable() -> None:
    result = adapt(SHOPIFY, sample("shopify_order_truncated.json"))
    assert [issue.code for issue in result.issues] == ["UNPARSEABLE_PAYLOAD"]


def test_issue_converts_to_the_api_message() -> None:
    issue = adapt(X12, x12_payload(x12_segments()[:-1], recount=False)).issues[0]
    message = issue.to_proto()
    assert (message.field_path, message.code, message.message) == (
        "IEA",
        "MISSING_SEGMENT",
        issue.message,
    )


@given(
    st.decimals(
        min_value=Decimal(-(2**63) + 1),
        max_value=Decimal(2**63 - 1),
        places=9,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_money_round_trips_exactly(value: Decimal) -> None:
    converted = money(value, "USD")
    assert decimal_of(converted) == value
    assert (
        converted.units == 0
        or converted.nanos == 0
        or (converted.units > 0) == (converted.nanos > 0)
    )
    assert -999_999_999 <= converted.nanos <= 999_999_999


def test_money_refuses_sub_nano_and_out_of_range_amounts() -> None:
    for value in (Decimal("0.0000000001"), Decimal(2**63), Decimal("1e40")):
        with pytest.raises(ValueError):
            money(value, "USD")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(ALL_FORMATS), payload=st.binary(max_size=400))
def test_random_bytes_never_raise(fmt: common_pb2.ChannelFormat.ValueType, payload: bytes) -> None:
    result = adapt(fmt, payload)
    assert isinstance(result, AdaptedOrder)
    assert result.issues  # random bytes are never a valid order


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [prefix] + [p for k, v in node.items() for p in _leaf_paths(v, (*prefix, k))]
    if isinstance(node, list):
        return [prefix] + [p for i, v in enumerate(node) for p in _leaf_paths(v, (*prefix, i))]
    return [prefix]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from((SHOPIFY, AMAZON, B2B)), data=st.data())
def test_json_samples_with_a_field_replaced_never_raise(
    fmt: common_pb2.ChannelFormat.ValueType, data: st.DataObject
) -> None:
    document = sample_json(SAMPLE_OF[fmt])
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _leaf_paths(document) if p]
        path = data.draw(st.sampled_from(paths))
        node: Any = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = data.draw(json_values)
    result = adapt_json(fmt, copy.deepcopy(document))
    assert isinstance(result, AdaptedOrder)
    if result.order is not None:
        assert result.order.channel.channel_order_id == result.channel_order_id


x12_noise = st.text(alphabet="*~>|^\n0123456789.-ABCDEFGHIJ EA", max_size=10)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_x12_sample_with_elements_replaced_never_raises(data: st.DataObject) -> None:
    segments = [segment.split("*") for segment in x12_segments()]
    for _ in range(data.draw(st.integers(1, 4))):
        segment = data.draw(st.sampled_from(segments[1:]))  # keep the ISA readable
        index = data.draw(st.integers(0, len(segment)))
        if index == len(segment):
            segment.append(data.draw(x12_noise))
        else:
            segment[index] = data.draw(x12_noise)
    if data.draw(st.booleans()):
        del segments[data.draw(st.integers(1, len(segments) - 1))]
    payload = "".join("*".join(segment) + "~\n" for segment in segments).encode()
    result = adapt(X12, payload)
    assert result.x12 is not None
    # Whatever the 850 held, a reject 855 can be written and read back.
    reject = build_855(result.x12, None, accepted=False, control_number=3, now=NOW)
    assert [seg[0] for seg in parse_interchange(reject).segments][-3:] == ["SE", "GE", "IEA"]
