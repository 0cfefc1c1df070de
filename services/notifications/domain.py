"""Pure domain core of the notifications service: no I/O, unit- and property-tested.

* Vocabularies: the canonical order status (``dwf.order.v1.OrderStatusChanged``) and stock
  levels (``dwf.inventory.v1.AvailabilityChanged``) mapped into what a channel understands:
  Shopify-like fulfillment/financial status, Amazon-like order status, X12 855/856/846 text
  documents, or the canonical names (B2B portals).
* Signing: ``dwf-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">``.
* Outcome of an attempt: success, retry (with exponential backoff + full jitter, honouring
  Retry-After), dead letter (non-retryable 4xx, attempts exhausted) or gone (410).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from tenacity import RetryCallState, wait_random_exponential

ORDER_STATUS_CHANGED = "dwf.order.v1.OrderStatusChanged"
AVAILABILITY_CHANGED = "dwf.inventory.v1.AvailabilityChanged"
SUPPORTED_EVENT_TYPES = (ORDER_STATUS_CHANGED, AVAILABILITY_CHANGED)
DEFAULT_EVENT_TYPES = (ORDER_STATUS_CHANGED,)

SHOPIFY, AMAZON, X12, B2B_PORTAL, CANONICAL = "shopify", "amazon", "x12", "b2b_portal", "canonical"
VOCABULARIES = (SHOPIFY, AMAZON, X12, B2B_PORTAL, CANONICAL)

ENDPOINT_ID = re.compile(r"[a-z0-9._-]{1,64}")
MIN_SECRET_LENGTH = 32

# Canonical status names (dwf.common.v1.OrderStatus without the prefix).
ACCEPTED = "ACCEPTED"
ERP_BOOKED = "ERP_BOOKED"
ALLOCATED = "ALLOCATED"
BACKORDERED = "BACKORDERED"
RELEASED = "RELEASED"
PARTIALLY_SHIPPED = "PARTIALLY_SHIPPED"
SHIPPED = "SHIPPED"
INVOICED = "INVOICED"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
RETURNED = "RETURNED"
ON_HOLD = "ON_HOLD"
EXCEPTION = "EXCEPTION"
OVERLAYS = (ON_HOLD, EXCEPTION)
NOT_SHIPPED = (ACCEPTED, ERP_BOOKED, ALLOCATED, BACKORDERED, RELEASED)
FULLY_SHIPPED = (SHIPPED, INVOICED, COMPLETED)


# --- the canonical facts a channel document is built from -------------------------------


@dataclass(frozen=True)
class LineFacts:
    line_id: str
    sku: str
    channel_sku: str
    ordered: int
    shipped: int = 0
    canceled: int = 0
    returned: int = 0
    backordered: int = 0
    backorder_eta: datetime | None = None
    unit_of_measure: str = "EA"

    @property
    def channel_item(self) -> str:
        return self.channel_sku or self.sku


@dataclass(frozen=True)
class TrackingFacts:
    shipment_id: str
    carrier_code: str
    service_code: str
    tracking_number: str
    tracking_url: str = ""
    shipped_at: datetime | None = None


@dataclass(frozen=True)
class StatusChange:
    """What ``dwf.order.v1.OrderStatusChanged`` says, in plain values."""

    order_id: str
    channel_id: str
    channel_order_id: str
    status: str
    previous_status: str
    lifecycle_status: str
    status_sequence: int
    changed_at: datetime | None
    reason: str = ""
    lines: Sequence[LineFacts] = ()
    tracking: Sequence[TrackingFacts] = ()
    customer_name: str = ""
    customer_email: str = ""

    @property
    def effective_status(self) -> str:
        """The lifecycle status underneath an ON_HOLD/EXCEPTION overlay."""
        if self.status in OVERLAYS:
            return self.lifecycle_status if self.lifecycle_status not in ("", *OVERLAYS) else ""
        return self.status


@dataclass(frozen=True)
class StockFacts:
    """One SKU's availability: per warehouse, or a channel total (warehouse_id empty)."""

    sku: str
    warehouse_id: str
    available: int
    on_hand: int = 0
    incoming: int = 0


@dataclass(frozen=True)
class Document:
    """A rendered channel document: the body to POST and its media type."""

    body: bytes
    content_type: str
    summary: str  # the mapped status / document kind, e.g. "fulfilled", "856"


@dataclass(frozen=True)
class DeliveryRef:
    """Identifiers a document carries (the receiver's dedupe keys)."""

    event_id: str
    sequence: int
    occurred_at: datetime | None = None


# --- vocabularies -------------------------------------------------------------------------


def shopify_fulfillment_status(status: str) -> str:
    if status == PARTIALLY_SHIPPED:
        return "partial"
    if status in (*FULLY_SHIPPED, RETURNED):
        return "fulfilled"
    return "unfulfilled"


def shopify_financial_status(status: str) -> str:
    if status in (INVOICED, COMPLETED):
        return "paid"
    if status == RETURNED:
        return "refunded"
    if status == CANCELED:
        return "voided"
    return "authorized"


def amazon_order_status(status: str) -> str:
    if status == PARTIALLY_SHIPPED:
        return "PartiallyShipped"
    if status in (*FULLY_SHIPPED, RETURNED):
        return "Shipped"
    if status == CANCELED:
        return "Canceled"
    return "Unshipped"


def x12_document_kind(status: str) -> str | None:
    """Which X12 transaction set tells an EDI partner about this status (None: nothing)."""
    if status in (ACCEPTED, CANCELED):
        return "855"
    if status in (PARTIALLY_SHIPPED, SHIPPED):
        return "856"
    return None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def render_status(vocabulary: str, change: StatusChange, ref: DeliveryRef) -> Document | None:
    """The channel document for a status change, or None if the vocabulary has nothing to say
    about it (e.g. X12 partners hear only 855 and 856; an overlay without a lifecycle status
    underneath)."""
    status = change.effective_status
    if not status:
        return None
    on_hold = change.status in OVERLAYS
    if vocabulary == SHOPIFY:
        fulfillment = shopify_fulfillment_status(status)
        doc: dict[str, Any] = {
            "topic": "orders/updated",
            "event_id": ref.event_id,
            "sequence": ref.sequence,
            "order_id": change.channel_order_id,
            "dwf_order_id": change.order_id,
            "fulfillment_status": fulfillment,
            "financial_status": shopify_financial_status(status),
            "cancelled": status == CANCELED,
            "on_hold": on_hold,
            "note": change.reason,
            "updated_at": _iso(change.changed_at),
            "line_items": [
                {
                    "id": line.line_id,
                    "sku": line.channel_item,
                    "quantity": line.ordered,
                    "fulfilled_quantity": line.shipped,
                    "cancelled_quantity": line.canceled,
                    "fulfillable_quantity": max(line.ordered - line.shipped - line.canceled, 0),
                    "backorder_eta": _iso(line.backorder_eta),
                }
                for line in change.lines
            ],
            "fulfillments": [
                {
                    "id": t.shipment_id,
                    "tracking_company": t.carrier_code,
                    "tracking_number": t.tracking_number,
                    "tracking_url": t.tracking_url,
                    "shipped_at": _iso(t.shipped_at),
                }
                for t in change.tracking
            ],
        }
        return Document(_json(doc), "application/json", fulfillment)
    if vocabulary == AMAZON:
        mapped = amazon_order_status(status)
        doc = {
            "NotificationType": "ORDER_STATUS_CHANGE",
            "EventId": ref.event_id,
            "Sequence": ref.sequence,
            "AmazonOrderId": change.channel_order_id,
            "SellerOrderId": change.order_id,
            "OrderStatus": mapped,
            "IsOnHold": on_hold,
            "LastUpdateDate": _iso(change.changed_at),
            "OrderItems": [
                {
                    "OrderItemId": line.line_id,
                    "SellerSKU": line.channel_item,
                    "QuantityOrdered": line.ordered,
                    "QuantityShipped": line.shipped,
                    "QuantityCanceled": line.canceled,
                }
                for line in change.lines
            ],
            "PackageTracking": [
                {
                    "CarrierCode": t.carrier_code,
                    "ShippingMethod": t.service_code,
                    "TrackingNumber": t.tracking_number,
                    "ShipDate": _iso(t.shipped_at),
                }
                for t in change.tracking
            ],
        }
        return Document(_json(doc), "application/json", mapped)
    if vocabulary == X12:
        if on_hold:
            return None  # a hold is internal to dwf; EDI partners hear only documents
        kind = x12_document_kind(status)
        if kind == "855":
            return Document(render_855(change, ref).encode(), "application/edi-x12", "855")
        if kind == "856":
            return Document(render_856(change, ref).encode(), "application/edi-x12", "856")
        return None
    # b2b_portal and canonical: dwf's own names.
    doc = {
        "type": "order.status_changed",
        "event_id": ref.event_id,
        "sequence": ref.sequence,
        "order_id": change.order_id,
        "channel_order_id": change.channel_order_id,
        "status": change.status,
        "previous_status": change.previous_status,
        "lifecycle_status": change.lifecycle_status or change.status,
        "reason": change.reason,
        "changed_at": _iso(change.changed_at),
        "lines": [
            {
                "line_id": line.line_id,
                "sku": line.sku,
                "channel_sku": line.channel_sku,
                "ordered": line.ordered,
                "shipped": line.shipped,
                "canceled": line.canceled,
                "returned": line.returned,
                "backordered": line.backordered,
                "backorder_eta": _iso(line.backorder_eta),
            }
            for line in change.lines
        ],
        "tracking": [
            {
                "shipment_id": t.shipment_id,
                "carrier_code": t.carrier_code,
                "service_code": t.service_code,
                "tracking_number": t.tracking_number,
                "tracking_url": t.tracking_url,
                "shipped_at": _iso(t.shipped_at),
            }
            for t in change.tracking
        ],
    }
    return Document(_json(doc), "application/json", change.status)


def render_availability(
    vocabulary: str, levels: Sequence[StockFacts], ref: DeliveryRef
) -> Document | None:
    """One coalesced availability update (each SKU once, latest numbers)."""
    if not levels:
        return None
    ordered = sorted(levels, key=lambda s: (s.sku, s.warehouse_id))
    if vocabulary == SHOPIFY:
        doc: dict[str, Any] = {
            "topic": "inventory_levels/update",
            "event_id": ref.event_id,
            "sequence": ref.sequence,
            "inventory_levels": [
                {"sku": s.sku, "location_id": s.warehouse_id or None, "available": s.available}
                for s in ordered
            ],
        }
        return Document(_json(doc), "application/json", "inventory_levels")
    if vocabulary == AMAZON:
        doc = {
            "MessageType": "Inventory",
            "EventId": ref.event_id,
            "Sequence": ref.sequence,
            "Messages": [
                {
                    "SKU": s.sku,
                    "FulfillmentCenterId": s.warehouse_id or None,
                    "Quantity": s.available,
                }
                for s in ordered
            ],
        }
        return Document(_json(doc), "application/json", "Inventory")
    if vocabulary == X12:
        return Document(render_846(ordered, ref).encode(), "application/edi-x12", "846")
    doc = {
        "type": "inventory.availability_changed",
        "event_id": ref.event_id,
        "sequence": ref.sequence,
        "levels": [
            {
                "sku": s.sku,
                "warehouse_id": s.warehouse_id,
                "available": s.available,
                "on_hand": s.on_hand,
                "incoming": s.incoming,
            }
            for s in ordered
        ],
    }
    return Document(_json(doc), "application/json", "availability")


# --- email -------------------------------------------------------------------------------

EMAIL_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")


def mailto_address(url: str) -> str | None:
    """The fixed recipient of a ``mailto:`` URL; "" for a bare ``mailto:`` (the order's
    customer); None if it is not a usable mailto URL."""
    if not url.startswith("mailto:"):
        return None
    address = url.removeprefix("mailto:").split("?", 1)[0]
    if not address:
        return ""
    return address if EMAIL_ADDRESS.fullmatch(address) else None


def email_subject(change: StatusChange, status: str) -> str:
    order = change.channel_order_id or change.order_id
    if status == SHIPPED:
        return f"Your order {order} has shipped"
    if status == PARTIALLY_SHIPPED:
        return f"Part of your order {order} has shipped"
    if status == CANCELED:
        return f"Your order {order} was canceled"
    if status == BACKORDERED:
        return f"Part of your order {order} is backordered"
    return f"Your order {order}: {status.replace('_', ' ').lower()}"


def render_email(change: StatusChange, ref: DeliveryRef, recipient: str) -> Document | None:
    """A customer (or operations) email about a status change; None without a recipient.
    The sender adds From, Message-ID and the dwf headers when it sends."""
    status = change.effective_status
    to = recipient or change.customer_email
    if not status or not to or EMAIL_ADDRESS.fullmatch(to) is None:
        return None
    greeting = f"Hello {change.customer_name}," if change.customer_name else "Hello,"
    lines = [greeting, "", email_subject(change, status) + "."]
    if status in (SHIPPED, PARTIALLY_SHIPPED) and change.tracking:
        lines += ["", "Tracking:"]
        for t in change.tracking:
            where = f" {t.tracking_url}" if t.tracking_url else ""
            service = f" ({t.service_code})" if t.service_code else ""
            lines.append(f"  {t.carrier_code}{service} {t.tracking_number}{where}")
    shown = [line for line in change.lines if line.ordered]
    if shown:
        lines += ["", "Items:"]
        for line in shown:
            detail = f"{line.shipped} of {line.ordered} shipped"
            if line.backordered and line.backorder_eta:
                detail += f", {line.backordered} expected {line.backorder_eta:%Y-%m-%d}"
            lines.append(f"  {line.channel_item}: {detail}")
    if change.reason:
        lines += ["", change.reason]
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = email_subject(change, status)
    if change.changed_at is not None:
        message["Date"] = format_datetime(change.changed_at)
    message.set_content("\n".join(lines) + "\n")
    return Document(bytes(message), "message/rfc822", status)


# --- X12 --------------------------------------------------------------------------------

X12_SENDER = "DWF"
_X12_UNSAFE = re.compile(r"[~*^:\r\n]")


def _x12(value: str, limit: int = 80) -> str:
    """An element value without separators."""
    return _X12_UNSAFE.sub(" ", value)[:limit]


def _control_number(ref: DeliveryRef) -> int:
    """A deterministic 9-digit interchange control number for this document."""
    digest = hashlib.sha256(f"{ref.event_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 1_000_000_000


def _envelope(
    kind: str, functional_id: str, body: Sequence[str], ref: DeliveryRef, receiver: str
) -> str:
    when = ref.occurred_at or datetime(1970, 1, 1, tzinfo=UTC)
    control = _control_number(ref)
    isa = (
        f"ISA*00*{'':10}*00*{'':10}*ZZ*{_x12(X12_SENDER, 15):<15}*ZZ*{_x12(receiver, 15):<15}"
        f"*{when:%y%m%d}*{when:%H%M}*U*00401*{control:09d}*0*P*>"
    )
    gs = (
        f"GS*{functional_id}*{X12_SENDER}*{_x12(receiver, 15)}*{when:%Y%m%d}*{when:%H%M}"
        f"*{control}*X*004010"
    )
    st = f"ST*{kind}*0001"
    segments = [st, *body]
    se = f"SE*{len(segments) + 1}*0001"
    return "~\n".join([isa, gs, *segments, se, f"GE*1*{control}", f"IEA*1*{control:09d}"]) + "~\n"


def render_855(change: StatusChange, ref: DeliveryRef) -> str:
    """Purchase order acknowledgement: accepted (per line: accepted or backordered), or
    rejected when the order was canceled."""
    canceled = change.effective_status == CANCELED
    when = change.changed_at or datetime(1970, 1, 1, tzinfo=UTC)
    body = [f"BAK*00*{'RD' if canceled else 'AC'}*{_x12(change.channel_order_id)}*{when:%Y%m%d}"]
    body.append(f"REF*VN*{_x12(change.order_id)}")
    for index, line in enumerate(change.lines, start=1):
        item = _x12(line.channel_item, 48)
        body.append(f"PO1*{_x12(line.line_id, 20) or index}*{line.ordered}*EA***BP*{item}")
        if canceled:
            body.append(f"ACK*IR*{line.ordered}*EA")
        else:
            if line.ordered - line.backordered > 0:
                body.append(f"ACK*IA*{line.ordered - line.backordered}*EA")
            if line.backordered > 0:
                eta = f"*068*{line.backorder_eta:%Y%m%d}" if line.backorder_eta else ""
                body.append(f"ACK*IB*{line.backordered}*EA{eta}")
    body.append(f"CTT*{len(change.lines)}")
    return _envelope("855", "PR", body, ref, change.channel_id)


def render_856(change: StatusChange, ref: DeliveryRef) -> str:
    """Ship notice: cumulative shipped quantity per line, with every tracking number."""
    when = change.changed_at or datetime(1970, 1, 1, tzinfo=UTC)
    body = [
        f"BSN*00*{_x12(change.order_id, 22)}-{change.status_sequence}*{when:%Y%m%d}*{when:%H%M}",
        "HL*1**S",
    ]
    for t in change.tracking:
        body.append(f"TD5**2*{_x12(t.carrier_code, 10)}***{_x12(t.service_code, 35)}")
        body.append(f"REF*CN*{_x12(t.tracking_number, 30)}")
    body.append("HL*2*1*O")
    body.append(f"PRF*{_x12(change.channel_order_id, 22)}")
    shipped = [line for line in change.lines if line.shipped > 0]
    for index, line in enumerate(shipped, start=3):
        body.append(f"HL*{index}*2*I")
        body.append(f"LIN*{_x12(line.line_id, 20)}*BP*{_x12(line.channel_item, 48)}")
        body.append(f"SN1**{line.shipped}*EA**{line.ordered}*EA")
    body.append(f"CTT*{len(shipped) + 2}")
    return _envelope("856", "SH", body, ref, change.channel_id)


def render_846(levels: Sequence[StockFacts], ref: DeliveryRef) -> str:
    """Inventory inquiry/advice: quantity available per SKU (and warehouse)."""
    when = ref.occurred_at or datetime(1970, 1, 1, tzinfo=UTC)
    body = [f"BIA*00*DD*{ref.sequence}*{when:%Y%m%d}"]
    for level in levels:
        body.append(f"LIN**BP*{_x12(level.sku, 48)}")
        if level.warehouse_id:
            body.append(f"N1*WH**92*{_x12(level.warehouse_id, 20)}")
        body.append(f"QTY*33*{max(level.available, 0)}*EA")
    body.append(f"CTT*{len(levels)}")
    return _envelope("846", "IB", body, ref, "PARTNER")


# --- which endpoints an event goes to ----------------------------------------------------


@dataclass(frozen=True)
class EndpointRule:
    endpoint_id: str
    channel_id: str
    event_types: Sequence[str]
    statuses: Sequence[str]
    vocabulary: str
    enabled: bool = True

    def wants(self, event_type: str) -> bool:
        return event_type in (self.event_types or DEFAULT_EVENT_TYPES)

    def wants_status(self, change: StatusChange) -> bool:
        return (
            self.channel_id == change.channel_id
            and self.wants(ORDER_STATUS_CHANGED)
            and (not self.statuses or change.status in self.statuses)
        )


# --- signing ------------------------------------------------------------------------------

SIGNATURE_HEADER = "dwf-signature"
SIGNATURE_TOLERANCE_SECONDS = 300


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """Header value: ``t=<unix seconds>,v1=<lower-case hex HMAC-SHA256 over "<t>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secrets: Iterable[str],
    body: bytes,
    header: str,
    now: int,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: parse t and every v1, reject a stale timestamp (replay), accept
    if any v1 matches any of the receiver's secrets (rotation), in constant time."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    ok = False
    for secret in secrets:
        expected = signature(secret, body, timestamp).rpartition("v1=")[2]
        for candidate in candidates:
            ok |= hmac.compare_digest(expected, candidate)
    return ok


# --- outcome of an attempt --------------------------------------------------------------


class Verdict(enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    RETRY = "RETRY"
    DEAD_LETTER = "DEAD_LETTER"
    GONE = "GONE"  # dead letter + disable the endpoint + alert


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    max_retry_after_seconds: float = 3600.0

    def backoff(self, attempt: int) -> float:
        """Delay after the ``attempt``-th failure: exponential with full jitter (tenacity's
        ``wait_random_exponential``): uniform in [0, min(max, initial * 2^(attempt-1))]."""
        wait = wait_random_exponential(
            multiplier=self.initial_backoff_seconds, max=self.max_backoff_seconds
        )
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(attempt, 1)
        return float(wait(state))


@dataclass(frozen=True)
class Attempt:
    """What happened when a document was sent."""

    http_status: int | None  # None: no response (timeout, connection error), or not HTTP
    error: str = ""
    retry_after: float | None = None  # seconds, from a Retry-After header
    smtp_code: int | None = None  # the SMTP reply code, for email


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    delay_seconds: float = 0.0
    error: str = ""
    details: Mapping[str, str] = field(default_factory=dict)


def is_retryable(http_status: int | None) -> bool:
    return http_status is None or http_status in (408, 425, 429) or http_status >= 500


def decide(attempt: Attempt, attempts_made: int, policy: RetryPolicy) -> Outcome:
    """Success on 2xx; 410 disables the endpoint; timeouts, connection errors, 408, 425,
    429 and 5xx retry until ``max_attempts``; any other status (other 4xx, 3xx) is
    dead-lettered at once: retrying it would only storm the channel."""
    if attempt.smtp_code is not None:
        return _decide_smtp(attempt, attempts_made, policy)
    status = attempt.http_status
    if status is not None and 200 <= status < 300:
        return Outcome(Verdict.SUCCEEDED)
    error = attempt.error or (f"HTTP {status}" if status is not None else "no response")
    if status == 410:
        return Outcome(Verdict.GONE, error=error)
    if not is_retryable(status):
        return Outcome(Verdict.DEAD_LETTER, error=error)
    if attempts_made >= policy.max_attempts:
        return Outcome(
            Verdict.DEAD_LETTER, error=f"{error} (gave up after {attempts_made} attempts)"
        )
    delay = policy.backoff(attempts_made)
    if attempt.retry_after is not None:
        delay = max(delay, min(attempt.retry_after, policy.max_retry_after_seconds))
    return Outcome(Verdict.RETRY, delay_seconds=delay, error=error)


def _decide_smtp(attempt: Attempt, attempts_made: int, policy: RetryPolicy) -> Outcome:
    """SMTP replies: 2xx accepted, 4xx transient (retry), 5xx permanent (dead letter)."""
    code = attempt.smtp_code or 0
    if 200 <= code < 300:
        return Outcome(Verdict.SUCCEEDED)
    error = attempt.error or f"SMTP {code}"
    if code >= 500:
        return Outcome(Verdict.DEAD_LETTER, error=error)
    if attempts_made >= policy.max_attempts:
        return Outcome(
            Verdict.DEAD_LETTER, error=f"{error} (gave up after {attempts_made} attempts)"
        )
    return Outcome(Verdict.RETRY, delay_seconds=policy.backoff(attempts_made), error=error)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def excerpt(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lease_for(timeout_seconds: float) -> timedelta:
    """How long a claimed delivery is reserved for its sender: the request timeout plus a
    margin. A sender that dies frees it after that (the delivery is then sent again)."""
    return timedelta(seconds=timeout_seconds + 10.0)
