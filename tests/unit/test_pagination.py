"""chassis.pagination: page tokens resume where the page ended, for the same filters only."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

from chassis.pagination import encode_page_token, filters_of, page_after
from chassis.validation import Violations
from dwf.inventory.v1 import inventory_pb2 as pb

AT = datetime(2026, 11, 23, 1, 2, 3, 456789, tzinfo=UTC)


def test_round_trip_for_the_same_filters() -> None:
    key = str(uuid.uuid4())
    v = Violations()
    assert page_after(v, encode_page_token(["web"], AT, key), ["web"], uuid_key=True) == (AT, key)
    assert v.items == []


def test_first_page_has_no_position() -> None:
    v = Violations()
    assert page_after(v, "", ["web"]) is None and v.items == []


def test_other_filters_garbage_or_a_forged_key_are_violations() -> None:
    forged = base64.urlsafe_b64encode(
        json.dumps({"f": ["web"], "t": AT.isoformat(), "k": "x' OR 1=1"}).encode()
    ).decode()
    cases = [
        (encode_page_token(["web"], AT, "k"), ["b2b"], False),  # a token of other filters
        ("not-base64!", ["web"], False),
        (base64.urlsafe_b64encode(b"[1, 2]").decode(), ["web"], False),
        (forged, ["web"], True),  # the key column is a UUID
    ]
    for token, filters, uuid_key in cases:
        v = Violations()
        assert page_after(v, token, filters, uuid_key=uuid_key) is None
        assert [item.field for item in v.items] == ["page_token"]


def test_filters_ignore_paging_fields_only() -> None:
    base = pb.ListLedgerRequest(sku="A", page_size=10, page_token="t")
    assert filters_of(base) == filters_of(pb.ListLedgerRequest(sku="A"))
    assert filters_of(base) != filters_of(pb.ListLedgerRequest(sku="B"))
