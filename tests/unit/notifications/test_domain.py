"""The notifications core: vocabularies, signing, retry decisions and backoff."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications import domain
from services.notifications.domain import Attempt, RetryPolicy, Verdict
from stack.sandbox_channel import verify as sandbox_verify

WHEN = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
REF = domain.DeliveryRef("6f1c0a52-7d0e-4a53-9c39-2d1f0b1c7e11", 7, WHEN)


def change(status: str, lifecycle: str = "", **overrides: object) -> domain.StatusChange:
    values: dict[str, object] = {
        "order_id": "ord-1",
        "channel_id": "edi-acme",
        "channel_order_id": "PO-4711",
        "status": status,
        "previous_status": "RELEASED",
        "lifecycle_status": lifecycle or status,
        "status_sequence": 7,
        "changed_at": WHEN,
        "lines": [
            domain.LineFacts("1", "SKU-1", "ACME-1", ordered=10, shipped=4),
            domain.LineFacts("2", "SKU-2", "", ordered=5, backordered=5, backorder_eta=WHEN),
        ],
        "tracking": [domain.TrackingFacts("S-1", "UPS", "UPS_GROUND", "1Z999", "", WHEN)],
    }
    values.update(overrides)
    return domain.StatusChange(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "shopify", "amazon"),
    [
        ("ACCEPTED", "unfulfilled", "Unshipped"),
        ("ERP_BOOKED", "unfulfilled", "Unshipped"),
        ("ALLOCATED", "unfulfilled", "Unshipped"),
        ("BACKORDERED", "unfulfilled", "Unshipped"),
        ("RELEASED", "unfulfilled", "Unshipped"),
        ("PARTIALLY_SHIPPED", "partial", "PartiallyShipped"),
        ("SHIPPED", "fulfilled", "Shipped"),
        ("INVOICED", "fulfilled", "Shipped"),
        ("COMPLETED", "fulfilled", "Shipped"),
        ("CANCELED", "unfulfilled", "Canceled"),
        ("RETURNED", "fulfilled", "Shipped"),
    ],
)
def test_status_vocabularies(status: str, shopify: str, amazon: str) -> None:
    shop = domain.render_status(domain.SHOPIFY, change(status), REF)
    amzn = domain.render_status(domain.AMAZON, change(status), REF)
    assert shop is not None and amzn is not None
    assert json.loads(shop.body)["fulfillment_status"] == shopify == shop.summary
    assert json.loads(amzn.body)["OrderStatus"] == amazon == amzn.summary


def test_an_overlay_maps_the_lifecycle_status_underneath() -> None:
    held = domain.render_status(domain.SHOPIFY, change("ON_HOLD", "PARTIALLY_SHIPPED"), REF)
    assert held is not None
    body = json.loads(held.body)
    assert (body["fulfillment_status"], body["on_hold"]) == ("partial", True)
    # An overlay with nothing underneath, and EDI partners, hear nothing.
    assert domain.render_status(domain.AMAZON, change("EXCEPTION", "EXCEPTION"), REF) is None
    assert domain.render_status(domain.X12, change("ON_HOLD", "ACCEPTED"), REF) is None


def test_canonical_documents_keep_dwf_names() -> None:
    document = domain.render_status(domain.B2B_PORTAL, change("BACKORDERED"), REF)
    assert document is not None and document.content_type == "application/json"
    body = json.loads(document.body)
    assert (body["status"], body["sequence"], body["event_id"]) == ("BACKORDERED", 7, REF.event_id)
    assert body["lines"][1]["backorder_eta"] == "2026-03-01T12:30:00Z"


def segments(text: str) -> list[list[str]]:
    return [s.strip().split("*") for s in text.split("~") if s.strip()]


def test_x12_855_acknowledges_lines_and_backorders() -> None:
    document = domain.render_status(domain.X12, change("ACCEPTED"), REF)
    assert document is not None and document.summary == "855"
    assert document.content_type == "application/edi-x12"
    segs = segments(document.body.decode())
    ids = [s[0] for s in segs]
    assert ids[:3] == ["ISA", "GS", "ST"] and ids[-3:] == ["SE", "GE", "IEA"]
    assert len(segs[0]) == 17 and len("*".join(segs[0])) == 105  # ISA is fixed width
    assert segs[2] == ["ST", "855", "0001"]
    assert segs[3][:4] == ["BAK", "00", "AC", "PO-4711"]
    acks = [s for s in segs if s[0] == "ACK"]
    assert acks == [["ACK", "IA", "10", "EA"], ["ACK", "IB", "5", "EA", "068", "20260301"]]
    se = next(s for s in segs if s[0] == "SE")
    assert int(se[1]) == ids.index("SE") - ids.index("ST") + 1  # segment count
    assert segs[0][13] == segs[-1][2]  # ISA13 == IEA02


def test_x12_855_rejects_a_canceled_order_and_856_ships() -> None:
    canceled = domain.render_status(domain.X12, change("CANCELED"), REF)
    assert canceled is not None
    assert segments(canceled.body.decode())[3][2] == "RD"
    shipped = domain.render_status(domain.X12, change("PARTIALLY_SHIPPED"), REF)
    assert shipped is not None and shipped.summary == "856"
    segs = segments(shipped.body.decode())
    assert ["REF", "CN", "1Z999"] in segs
    assert ["SN1", "", "4", "EA", "", "10", "EA"] in segs  # only the shipped line
    assert not any(s[0] == "LIN" and "SKU-2" in s for s in segs)
    for status in ("ERP_BOOKED", "ALLOCATED", "RELEASED", "INVOICED", "COMPLETED"):
        assert domain.render_status(domain.X12, change(status), REF) is None


def test_x12_elements_cannot_break_the_document() -> None:
    document = domain.render_status(
        domain.X12, change("ACCEPTED", channel_order_id="PO*1~ISA"), REF
    )
    assert document is not None
    assert "BAK*00*AC*PO 1 ISA*20260301" in document.body.decode()


def test_availability_documents() -> None:
    levels = [domain.StockFacts("B", "WH-1", 3), domain.StockFacts("A", "", 9)]
    shop = domain.render_availability(domain.SHOPIFY, levels, REF)
    assert shop is not None
    assert json.loads(shop.body)["inventory_levels"] == [
        {"sku": "A", "location_id": None, "available": 9},
        {"sku": "B", "location_id": "WH-1", "available": 3},
    ]
    edi = domain.render_availability(domain.X12, levels, REF)
    assert edi is not None and "QTY*33*3*EA" in edi.body.decode()
    assert domain.render_availability(domain.AMAZON, [], REF) is None


def test_endpoint_rules() -> None:
    rule = domain.EndpointRule("e", "edi-acme", [], ["SHIPPED"], domain.SHOPIFY)
    assert rule.wants(domain.ORDER_STATUS_CHANGED)  # empty filter: status changes only
    assert not rule.wants(domain.AVAILABILITY_CHANGED)
    assert rule.wants_status(change("SHIPPED"))
    assert not rule.wants_status(change("ACCEPTED"))
    assert not rule.wants_status(change("SHIPPED", channel_id="other"))


# --- signing -----------------------------------------------------------------------------

SECRET = "s" * 32


def test_signature_scheme_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    header = domain.signature(SECRET, b'{"a":1}', 1700000000)
    expected = hmac.new(SECRET.encode(), b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


@given(body=st.binary(max_size=512), skew=st.integers(-300, 300))
def test_a_signature_verifies_on_both_sides(body: bytes, skew: int) -> None:
    header = domain.signature(SECRET, body, 1700000000)
    assert domain.verify_signature([SECRET], body, header, 1700000000 + skew)
    assert sandbox_verify([SECRET], body, header, 1700000000 + skew)


def test_a_signature_fails_when_anything_changes() -> None:
    header = domain.signature(SECRET, b"body", 1700000000)
    now = 1700000010
    assert not domain.verify_signature([SECRET], b"body!", header, now)
    assert not domain.verify_signature(["t" * 32], b"body", header, now)
    assert not domain.verify_signature([SECRET], b"body", header, now + 400)  # replayed later
    assert not domain.verify_signature([SECRET], b"body", "v1=abc", now)
    assert not domain.verify_signature([SECRET], b"body", "", now)
    tampered = header.replace("t=1700000000", "t=1700000001")
    assert not domain.verify_signature([SECRET], b"body", tampered, now)
    # Rotation: the receiver knows the old and the new secret.
    assert domain.verify_signature(["t" * 32, SECRET], b"body", header, now)


# --- retry decisions ---------------------------------------------------------------------

POLICY = RetryPolicy(max_attempts=5, initial_backoff_seconds=1, max_backoff_seconds=60)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SUCCEEDED),
        (204, Verdict.SUCCEEDED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (400, Verdict.DEAD_LETTER),
        (401, Verdict.DEAD_LETTER),
        (404, Verdict.DEAD_LETTER),
        (422, Verdict.DEAD_LETTER),
        (301, Verdict.DEAD_LETTER),
        (410, Verdict.GONE),
    ],
)
def test_what_an_answer_means(status: int | None, verdict: Verdict) -> None:
    assert domain.decide(Attempt(status), 1, POLICY).verdict is verdict


def test_retries_stop_after_max_attempts() -> None:
    assert domain.decide(Attempt(503), 4, POLICY).verdict is Verdict.RETRY
    last = domain.decide(Attempt(503, "HTTP 503: busy"), 5, POLICY)
    assert last.verdict is Verdict.DEAD_LETTER
    assert last.error == "HTTP 503: busy (gave up after 5 attempts)"
    # A 4xx is never retried, and 410 is gone even on the last attempt.
    assert domain.decide(Attempt(400), 1, POLICY).verdict is Verdict.DEAD_LETTER
    assert domain.decide(Attempt(410), 5, POLICY).verdict is Verdict.GONE


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(5, 0.01, 0.02, max_retry_after_seconds=120)
    assert domain.decide(Attempt(429, retry_after=30), 1, policy).delay_seconds == 30
    assert domain.decide(Attempt(503, retry_after=9999), 1, policy).delay_seconds == 120
    assert domain.decide(Attempt(429), 1, policy).delay_seconds <= 0.02


@given(attempt=st.integers(1, 40))
def test_backoff_is_exponential_with_full_jitter(attempt: int) -> None:
    delay = POLICY.backoff(attempt)
    assert 0 <= delay <= min(60, 2 ** (attempt - 1))


def test_backoff_grows() -> None:
    early = max(POLICY.backoff(1) for _ in range(200))
    late = max(POLICY.backoff(6) for _ in range(200))
    assert early <= 1 < late <= 32


def test_parse_retry_after() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert domain.parse_retry_after("120", now) == 120
    assert domain.parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30
    assert domain.parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0
    assert domain.parse_retry_after("soon", now) is None
    assert domain.parse_retry_after(None, now) is None


def test_lease_covers_the_request_timeout() -> None:
    assert domain.lease_for(10) > timedelta(seconds=10)


def test_excerpt() -> None:
    assert domain.excerpt("a\n  b") == "a b"
    assert len(domain.excerpt("x" * 1000, 50)) == 50


# --- email -------------------------------------------------------------------------------


def test_mailto_addresses() -> None:
    assert domain.mailto_address("mailto:ops@acme.example") == "ops@acme.example"
    assert domain.mailto_address("mailto:") == ""  # the order's customer
    assert domain.mailto_address("mailto:not-an-address") is None
    assert domain.mailto_address("https://x.example") is None


def test_a_shipment_email_names_the_tracking() -> None:
    import email
    import email.policy

    document = domain.render_email(
        change("PARTIALLY_SHIPPED", customer_name="Jane", customer_email="jane@x.example"),
        REF,
        "",
    )
    assert document is not None and document.content_type == "message/rfc822"
    message = email.message_from_bytes(document.body, policy=email.policy.default)
    assert message["To"] == "jane@x.example"
    assert message["Subject"] == "Part of your order PO-4711 has shipped"
    body = message.get_content()  # type: ignore[attr-defined]
    assert "UPS (UPS_GROUND) 1Z999" in body
    assert "ACME-1: 4 of 10 shipped" in body
    assert "SKU-2: 0 of 5 shipped, 5 expected 2026-03-01" in body
    # A fixed recipient wins; no recipient at all means no email.
    fixed = domain.render_email(change("SHIPPED"), REF, "ops@acme.example")
    assert fixed is not None and b"To: ops@acme.example" in fixed.body
    assert domain.render_email(change("SHIPPED"), REF, "") is None


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (250, Verdict.SUCCEEDED),
        (421, Verdict.RETRY),
        (451, Verdict.RETRY),
        (550, Verdict.DEAD_LETTER),
        (554, Verdict.DEAD_LETTER),
    ],
)
def test_what_an_smtp_reply_means(code: int, verdict: Verdict) -> None:
    assert domain.decide(Attempt(None, smtp_code=code), 1, POLICY).verdict is verdict
    if verdict is Verdict.RETRY:
        assert domain.decide(Attempt(None, smtp_code=code), 5, POLICY).verdict is (
            Verdict.DEAD_LETTER
        )
