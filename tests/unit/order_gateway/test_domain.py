"""The gateway's pure rules: master-data resolution, availability verdicts, order identity,
token buckets, and master-data document validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.order_gateway.domain import (
    MasterData,
    Position,
    Principal,
    TokenBucket,
    Verdict,
    derived_request_id,
    eligible,
    judge,
    order_id_for,
)
from services.order_gateway.store.master_data import MasterDataError, validate

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MASTER = MasterData(
    skus=frozenset({"BOLT", "NUT"}),
    conversions={("BOLT", "CS12"): 12},
    channel_units={("edi", "CA"): "CS12"},
    sku_aliases={("shop", "shop-bolt"): "BOLT", ("shop", "stale"): "GONE"},
    customer_aliases={("edi", "0613344550000"): "C-100"},
)


@pytest.mark.parametrize(
    ("channel", "sku", "channel_sku", "expected"),
    [
        ("shop", "BOLT", "", "BOLT"),
        ("shop", "", "shop-bolt", "BOLT"),
        ("shop", "", "NUT", "NUT"),  # a channel SKU that is already canonical
        ("shop", "", "unknown", None),
        ("shop", "", "stale", None),  # alias to a SKU no longer in the item master
        ("other", "", "shop-bolt", None),  # aliases are per channel
        ("shop", "NOPE", "shop-bolt", None),  # sku wins when given
    ],
)
def test_resolve_sku(channel: str, sku: str, channel_sku: str, expected: str | None) -> None:
    assert MASTER.resolve_sku(channel, sku, channel_sku) == expected


def test_units() -> None:
    assert MASTER.factor("BOLT", MASTER.canonical_unit("edi", "ca")) == 12
    assert MASTER.factor("BOLT", MASTER.canonical_unit("edi", "")) == 1
    assert MASTER.factor("NUT", MASTER.canonical_unit("edi", "CA")) is None
    assert MASTER.factor("BOLT", MASTER.canonical_unit("shop", "CA")) is None
    assert MASTER.customer_id("edi", "0613344550000") == "C-100"


def position(warehouse: str, available: int, incoming: int = 0) -> Position:
    return Position("BOLT", warehouse, available, incoming, NOW)


def test_judge() -> None:
    rows = [position("A", 5), position("B", -3, 10)]
    assert judge(5, rows).verdict == Verdict.IN_STOCK
    assert judge(6, rows).available == 5  # a negative position counts as 0
    assert judge(15, rows).verdict == Verdict.BACKORDERABLE
    assert judge(16, rows).verdict == Verdict.OUT_OF_STOCK
    assert [p.warehouse for p in eligible(rows, ("B",))] == ["B"]
    assert len(eligible(rows, ())) == 2


@given(st.text(max_size=20), st.text(max_size=20))
def test_order_id_is_a_function_of_the_channel_key(channel: str, order: str) -> None:
    assert order_id_for(channel, order) == order_id_for(channel, order)
    assert order_id_for(channel, order) != order_id_for(channel + "x", order)


def test_derived_request_ids_differ_by_purpose() -> None:
    request_id = "0b8f1c6e-8c5b-4b8a-9a53-3f1f4f2f9d11"
    assert derived_request_id(request_id, "reserve") == derived_request_id(request_id, "reserve")
    assert derived_request_id(request_id, "reserve") != derived_request_id(request_id, "commit")


def test_token_bucket() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token refilled
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at burst


@given(st.lists(st.floats(0, 0.2), max_size=200))
def test_token_bucket_never_exceeds_rate_plus_burst(gaps: list[float]) -> None:
    bucket = TokenBucket.full(rate=10.0, burst=5.0, now=0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += bucket.take(now) == 0.0
    assert allowed <= 5 + 10 * now + 1e-9


def test_principal_scopes() -> None:
    channel = Principal("c", "shop", frozenset({"channel"}))
    admin = Principal("a", None, frozenset({"admin"}))
    assert channel.may_act_for("shop") and not channel.may_act_for("edi")
    assert admin.may_act_for("edi") and admin.is_admin and not channel.is_admin


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"channels": [{"channel_id": ""}]}, "channels[0].channel_id"),
        (
            {"channels": [{"channel_id": "x", "backorder_policy": "MAYBE"}]},
            "channels[0].backorder_policy",
        ),
        ({"channels": [{"channel_id": "x", "token_secret": "short"}]}, "channels[0].token_secret"),
        ({"channels": [{"channel_id": "x", "sku_aliases": {"a": 1}}]}, "channels[0].sku_aliases.a"),
        ({"items": [{"sku": "A", "units": {"CS12": 0}}]}, "items[0].units.CS12"),
        ({"items": [{"sku": "A", "units": {"EA": 2}}]}, "items[0].units.EA"),
        (
            {"credentials": [{"credential_id": "c", "api_key": "k" * 16}]},
            "credentials[0].channel_id",
        ),
        ({"credentials": [{"credential_id": "c", "api_key": "short"}]}, "credentials[0].api_key"),
        ({"channels": ["x"]}, "channels[0]"),
        ({"items": [{"sku": "A", "units": ["CS12"]}]}, "items[0].units"),
        ({"channels": [{"channel_id": "x", "warehouses": "CHI-1"}]}, "channels[0].warehouses"),
        (
            {"channels": [{"channel_id": "x", "default_hold_ttl_seconds": True}]},
            "channels[0].default_hold_ttl_seconds",
        ),
        (
            {"channels": [{"channel_id": "x", "rate_limit_burst": 0.5}]},
            "channels[0].rate_limit_burst",
        ),
        ({"credentials": [{"credential_id": "c", "channel_id": "x"}]}, "credentials[0].api_key"),
        ({"warehouses": []}, "warehouses"),
    ],
)
def test_invalid_master_data(document: dict[str, object], path: str) -> None:
    with pytest.raises(MasterDataError) as error:
        validate(document)
    assert error.value.path == path
