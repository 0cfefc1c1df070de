"""Result types and pure parsing helpers shared by the channel adapters.

An adapter turns one raw channel payload into a canonical ``AcceptOrderRequest`` plus every
problem it found, each named by its path in the *channel's* document so a trading partner can
fix what it sent. Adapters do no I/O and never raise on bad input: a problem is an ``Issue``.

Contract of ``AdaptedOrder.order``: None when the payload could not be read at all
(UNPARSEABLE_PAYLOAD), carries no channel order id (MISSING_FIELD) or, for X12, is not an 850
transaction set; otherwise the best-effort mapping *even when issues were found*, so that the
gateway can add its own issues (e.g. UNKNOWN_SKU) and report everything in one answer. The
gateway rejects whenever ``issues`` is non-empty: a best-effort order is never accepted as is.

Money is parsed with ``decimal.Decimal`` only (JSON numbers included), never ``float``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from dwf.common.v1 import common_pb2
from dwf.order.v1 import order_gateway_pb2

if TYPE_CHECKING:
    from services.order_gateway.adapters.x12 import X12Context

MAX_LINES = 1000
MAX_LINE_ID = 64
MAX_CHANNEL_ORDER_ID = 128
MAX_ADDRESS_LINE = 100
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 1024

STANDARD = "STANDARD"
EXPEDITED = "EXPEDITED"
NEXT_DAY = "NEXT_DAY"

# ISO 4217 active codes: anything else is UNSUPPORTED_CURRENCY rather than a typo the ERP
# would reject much later.
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES
    KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
    MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB
    RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
    TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    ZWL"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())

# Three-letter country codes seen in EDI and portal payloads for the usual trading areas.
_ALPHA3 = {"USA": "US", "CAN": "CA", "MEX": "MX", "GBR": "GB", "DEU": "DE", "FRA": "FR"}

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_NANO = Decimal("1e-9")
# Wide enough for int64 units plus nine decimals; traps make overflow an exception.
_DEC = Context(prec=60, rounding=ROUND_HALF_EVEN)
_INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, Timestamp's lower bound
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True)
class Issue:
    """A problem of a channel payload, named by its path in the channel's own document."""

    field_path: str  # e.g. "line_items[2].sku", "PO1[3].PO107"; "" for the whole document
    code: str  # UPPER_SNAKE, e.g. "MISSING_SHIP_TO"
    message: str

    def to_proto(self) -> order_gateway_pb2.ValidationIssue:
        return order_gateway_pb2.ValidationIssue(
            field_path=self.field_path, code=self.code, message=self.message
        )


@dataclass(frozen=True)
class LinePaths:
    """Where a line's SKU and unit came from, so the gateway's own line issues (UNKNOWN_SKU,
    UOM_MISMATCH) can name the channel's field."""

    sku: str
    unit: str  # the unit-of-measure field, or the quantity field when the format has none


@dataclass
class AdaptedOrder:
    """What an adapter made of one payload: the canonical request (see the module docstring
    for when it is None) and every issue found."""

    order: order_gateway_pb2.AcceptOrderRequest | None
    issues: list[Issue]
    channel_order_id: str  # "" if it could not be read
    line_paths: dict[str, LinePaths] = field(default_factory=dict)  # by line_id
    x12: X12Context | None = None  # only for X12 850 with a readable ISA


def unparseable(message: str) -> AdaptedOrder:
    """The answer for a payload that is not a document of the format at all."""
    return AdaptedOrder(None, [Issue("", "UNPARSEABLE_PAYLOAD", message)], "", {})


# --- numbers and money ---------------------------------------------------------------------


def parse_decimal(text: str) -> Decimal | None:
    """A plain decimal number ("12.75", "-3", ".5"); no exponents, NaN or thousands marks."""
    text = text.strip()
    if len(text) > 40 or not _NUMBER.fullmatch(text):
        return None
    return Decimal(text)


def json_decimal(value: object) -> Decimal | None:
    """A JSON number or numeric string as an exact Decimal (JSON floats are parsed as Decimal
    by ``load_json_object``); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number: Decimal | None = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        number = parse_decimal(value)
    else:
        return None
    # Absurd magnitudes ("1e999999") would overflow arithmetic later: not an amount at all.
    if number is None or not number.is_finite() or number.adjusted() > 30:
        return None
    return number


def money(amount: Decimal, currency: str, *, exact: bool = True) -> common_pb2.Money:
    """Decimal -> Money (units + nanos with the same sign). ``exact`` refuses amounts with more
    than nine decimals instead of rounding them (half-even). Raises ValueError when the amount
    does not fit."""
    if not amount.is_finite() or amount.adjusted() > 18:
        raise ValueError(f"amount {amount} out of range")
    try:
        quantized = amount.quantize(_NANO, context=_DEC)
    except InvalidOperation as exc:  # pragma: no cover - guarded by the range check above
        raise ValueError(f"amount {amount} out of range") from exc
    if exact and quantized != amount:
        raise ValueError(f"amount {amount} has more than 9 decimal places")
    units = int(quantized)
    if abs(units) > _INT64_MAX:
        raise ValueError(f"amount {amount} out of range")
    nanos = int((quantized - units).scaleb(9, context=_DEC))
    return common_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def decimal_of(value: common_pb2.Money) -> Decimal:
    """Money -> exact Decimal (the inverse of ``money``)."""
    return Decimal(value.units) + Decimal(value.nanos).scaleb(-9)


def divide_exact(total: Decimal, quantity: int) -> Decimal:
    """``total / quantity`` to 28 significant digits; ``money(..., exact=False)`` then rounds
    a non-terminating quotient (e.g. 10.00 / 3) to the nano."""
    return _DEC.divide(total, Decimal(quantity))


def sum_amounts(amounts: Iterable[Decimal | None]) -> Decimal | None:
    """Sum of the readable amounts; None when none was readable."""
    present = [amount for amount in amounts if amount is not None]
    return sum(present, Decimal(0)) if present else None


def quantity_of(value: Decimal) -> int | None:
    """A whole, positive, int64 quantity, or None."""
    if not value.is_finite() or value != value.to_integral_value() or value <= 0:
        return None
    if value.adjusted() > 18 or int(value) > _INT64_MAX:
        return None
    return int(value)


def valid_currency(code: str) -> bool:
    return code in ISO_4217


# --- dates ---------------------------------------------------------------------------------


def proto_date(value: date) -> common_pb2.Date:
    return common_pb2.Date(year=value.year, month=value.month, day=value.day)


def parse_iso_date(text: str) -> date | None:
    """Strict "YYYY-MM-DD"."""
    text = text.strip()
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_ccyymmdd(text: str) -> date | None:
    """X12 DT (CCYYMMDD)."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def timestamp_of(value: datetime) -> Timestamp | None:
    """A datetime as a Timestamp; naive values are taken as UTC. None outside Timestamp's
    range (year 1..9999 in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        return None
    return Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def parse_timestamp(text: str) -> Timestamp | None:
    """An ISO 8601 date-time as channels send it ("2024-03-04T09:15:22-05:00", "...Z").
    Without an offset it is taken as UTC."""
    text = text.strip()
    if not 10 <= len(text) <= 40:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return timestamp_of(value)


# --- addresses, shipping, attributes -------------------------------------------------------


def country_code(text: str) -> str:
    """Upper-cased ISO 3166-1 alpha-2 code; a few alpha-3 codes are mapped."""
    code = text.strip().upper()
    return _ALPHA3.get(code, code)


def check_ship_to(
    address: common_pb2.PostalAddress | None,
    issues: list[Issue],
    *,
    path: str,
    line_path: str,
    country_path: str,
    hint: str = "",
) -> None:
    """Ship-to rules of the canonical order: an address with a first line, a recipient
    (name or company) and an ISO country code."""
    suffix = f" ({hint})" if hint else ""
    if address is None:
        issues.append(Issue(path, "MISSING_SHIP_TO", f"the order has no ship-to address{suffix}"))
        return
    if not address.lines:
        issues.append(Issue(line_path, "MISSING_SHIP_TO", f"ship-to has no street line{suffix}"))
    if not address.region_code:
        issues.append(Issue(country_path, "MISSING_SHIP_TO", "ship-to has no country code"))
    elif not re.fullmatch(r"[A-Z]{2}", address.region_code):
        issues.append(
            Issue(
                country_path,
                "INVALID_ADDRESS",
                f"country {address.region_code!r} is not an ISO 3166-1 alpha-2 code",
            )
        )
    if not address.name and not address.company:
        issues.append(Issue(path, "MISSING_SHIP_TO", "ship-to names neither a person nor company"))


def address_lines(issues: list[Issue], *pairs: tuple[str, str]) -> list[str]:
    """Non-empty street lines (at most 4); a line over 100 characters is an issue."""
    lines: list[str] = []
    for path, text in pairs:
        text = text.strip()
        if not text:
            continue
        if len(text) > MAX_ADDRESS_LINE:
            issues.append(
                Issue(path, "FIELD_TOO_LONG", f"address line longer than {MAX_ADDRESS_LINE}")
            )
        lines.append(text)
    return lines[:4]


_NEXT_DAY_WORDS = re.compile(
    r"\b(next ?day|overnight|one day|1 ?day|same ?day|priority overnight|nda)\b"
)
_EXPEDITED_WORDS = re.compile(
    r"\b(express|expedited|2 ?day|two ?day|second ?day|2nd ?day|3 ?day|three ?day|priority)\b"
)


def service_level(*hints: str) -> str:
    """A carrier/service text ("UPS Next Day Air", "FedEx 2Day", "Standard Shipping") as a
    canonical service level; unrecognised texts are STANDARD."""
    text = re.sub(r"[^a-z0-9]+", " ", " ".join(hints).lower())
    if _NEXT_DAY_WORDS.search(text):
        return NEXT_DAY
    if _EXPEDITED_WORDS.search(text):
        return EXPEDITED
    return STANDARD


def set_attribute(attributes: MutableMapping[str, str], key: str, value: str) -> None:
    """Store a channel attribute within the contract's limits: empty values are dropped,
    values cut at 1024 characters, over-long (payload-derived) keys skipped."""
    if not value or len(key) > MAX_ATTRIBUTE_KEY:
        return
    attributes[key] = value[:MAX_ATTRIBUTE_VALUE]


class LineRegistry:
    """Line ids of one order: unique, at most 64 characters, with their channel paths."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        self.paths: dict[str, LinePaths] = {}

    def add(self, line_id: str, id_path: str, paths: LinePaths) -> None:
        if len(line_id) > MAX_LINE_ID:
            self.issues.append(
                Issue(id_path, "FIELD_TOO_LONG", f"line id longer than {MAX_LINE_ID}")
            )
        if line_id in self.paths:
            self.issues.append(
                Issue(id_path, "DUPLICATE_LINE_ID", f"line id {line_id!r} is used twice")
            )
            return
        self.paths[line_id] = paths

    def check_count(self, count: int, path: str) -> None:
        if count == 0:
            self.issues.append(Issue(path, "NO_LINES", "the order has no lines"))
        elif count > MAX_LINES:
            self.issues.append(
                Issue(path, "TOO_MANY_LINES", f"{count} lines; at most {MAX_LINES} per order")
            )


def check_channel_order_id(value: str, path: str, issues: list[Issue]) -> bool:
    """True when the channel order id is usable (present); too long is an issue too."""
    if not value:
        issues.append(Issue(path, "MISSING_FIELD", "the channel order id is required"))
        return False
    if len(value) > MAX_CHANNEL_ORDER_ID:
        issues.append(Issue(path, "FIELD_TOO_LONG", f"order id longer than {MAX_CHANNEL_ORDER_ID}"))
    return True


# --- JSON documents ------------------------------------------------------------------------


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def load_json_object(payload: bytes) -> dict[str, object] | str:
    """The payload's top-level JSON object, or a message saying why it is not one. Floats are
    read as Decimal; NaN/Infinity are refused."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"payload is not valid UTF-8: {exc.reason} at byte {exc.start}"
    try:
        data = json.loads(
            text.removeprefix("\ufeff"), parse_float=Decimal, parse_constant=_reject_constant
        )
    except RecursionError:
        return "payload nests too deeply"
    except ArithmeticError:  # decimal.InvalidOperation: a number beyond Decimal's exponents
        return "payload holds a number out of range"
    except ValueError as exc:
        return f"payload is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return "payload is not a JSON object"
    return data


class JsonObject:
    """One object of a JSON channel payload with its path; typed reads that record an Issue
    for every missing or malformed field instead of raising."""

    __slots__ = ("data", "issues", "path")

    def __init__(self, data: Mapping[str, object], path: str, issues: list[Issue]) -> None:
        self.data = data
        self.path = path
        self.issues = issues

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def issue(self, key: str, code: str, message: str) -> None:
        self.issues.append(Issue(self.at(key), code, message))

    def has(self, key: str) -> bool:
        return self.data.get(key) not in (None, "")

    def text(self, key: str, *, required: bool = False) -> str:
        """A string (or integer, e.g. Shopify's numeric ids) field, stripped."""
        value = self.data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value).strip()
        elif value is None:
            text = ""
        else:
            self.issue(key, "INVALID_FIELD", f"{self.at(key)} must be a string")
            return ""
        if not text and required:
            self.issue(key, "MISSING_FIELD", f"{self.at(key)} is required")
        return text

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        self.issue(key, "INVALID_FIELD", f"{self.at(key)} must be true or false")
        return False

    def obj(self, key: str) -> JsonObject | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.issue(key, "INVALID_FIELD", f"{self.at(key)} must be an object")
            return None
        return JsonObject(value, self.at(key), self.issues)

    def objects(self, key: str) -> list[JsonObject]:
        """An array of objects; a non-object element is an issue and skipped."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.issue(key, "INVALID_FIELD", f"{self.at(key)} must be an array")
            return []
        out: list[JsonObject] = []
        for index, item in enumerate(value):
            path = f"{self.at(key)}[{index}]"
            if isinstance(item, dict):
                out.append(JsonObject(item, path, self.issues))
            else:
                self.issues.append(Issue(path, "INVALID_FIELD", f"{path} must be an object"))
        return out

    def strings(self, key: str) -> list[str]:
        value = self.data.get(key)
        if not isinstance(value, list):
            return []
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]

    def amount(
        self, key: str, *, code: str = "INVALID_AMOUNT", required: bool = False
    ) -> Decimal | None:
        """A non-negative decimal amount (string or JSON number)."""
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                self.issue(key, "MISSING_FIELD", f"{self.at(key)} is required")
            return None
        amount = json_decimal(value)
        if amount is None:
            self.issue(key, code, f"{self.at(key)} is not a decimal amount: {value!r:.40}")
            return None
        if amount < 0:
            self.issue(key, code, f"{self.at(key)} must not be negative")
            return None
        return amount

    def money(
        self, key: str, currency: str, *, code: str = "INVALID_AMOUNT", required: bool = False
    ) -> common_pb2.Money | None:
        amount = self.amount(key, code=code, required=required)
        return None if amount is None else self.to_money(key, amount, currency, code)

    def to_money(
        self, key: str, amount: Decimal, currency: str, code: str = "INVALID_AMOUNT"
    ) -> common_pb2.Money | None:
        try:
            return money(amount, currency)
        except ValueError as exc:
            self.issue(key, code, str(exc))
            return None

    def quantity(self, key: str) -> int:
        """A whole quantity > 0; 0 after recording MISSING_FIELD or INVALID_QUANTITY."""
        value = self.data.get(key)
        if value is None or value == "":
            self.issue(key, "MISSING_FIELD", f"{self.at(key)} is required")
            return 0
        number = json_decimal(value)
        result = None if number is None else quantity_of(number)
        if result is None:
            self.issue(
                key, "INVALID_QUANTITY", f"{self.at(key)} must be a whole number > 0: {value!r:.40}"
            )
            return 0
        return result

    def date(self, key: str) -> common_pb2.Date | None:
        """An optional "YYYY-MM-DD" field."""
        text = self.text(key)
        if not text:
            return None
        parsed = parse_iso_date(text)
        if parsed is None:
            self.issue(
                key, "INVALID_DATE", f"{self.at(key)} is not a YYYY-MM-DD date: {text!r:.40}"
            )
            return None
        return proto_date(parsed)

    def timestamp(self, key: str) -> Timestamp | None:
        """An optional ISO 8601 date-time field."""
        text = self.text(key)
        if not text:
            return None
        parsed = parse_timestamp(text)
        if parsed is None:
            self.issue(key, "INVALID_DATE", f"{self.at(key)} is not an ISO 8601 time: {text!r:.40}")
        return parsed

    def currency(self, key: str, *, required: bool = True) -> str:
        """An ISO 4217 code; "" after recording an issue."""
        code = self.text(key, required=required).upper()
        if code and not valid_currency(code):
            self.issue(key, "UNSUPPORTED_CURRENCY", f"currency {code!r:.10} is not ISO 4217")
            return ""
        return code
