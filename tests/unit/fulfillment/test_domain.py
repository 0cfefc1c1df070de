"""The fulfillment domain core: line counters, completion, backoff and safe actions."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from services.fulfillment import domain


def lines(**ordered: int) -> domain.Lines:
    return {line_id: domain.LineState(f"SKU-{line_id}", qty) for line_id, qty in ordered.items()}


def test_add_caps_at_ordered_and_ignores_unknown_lines_and_non_positive_quantities() -> None:
    book = domain.add(lines(a=5, b=2), "allocated", [("a", 3), ("b", 9), ("zz", 4), ("a", 0)])
    assert (book["a"].allocated, book["b"].allocated) == (3, 2)
    assert "zz" not in book


def test_subtract_takes_back_a_rejected_release_and_never_goes_below_zero() -> None:
    book = domain.add(lines(a=5), "allocated", [("a", 4)])
    book = domain.add(book, "released", [("a", 4)])
    book = domain.subtract(book, "released", [("a", 3), ("zz", 1)])
    book = domain.subtract(book, "allocated", [("a", 9)])
    assert (book["a"].released, book["a"].allocated) == (1, 0)


@given(st.lists(st.tuples(st.booleans(), st.integers(-3, 12)), max_size=30))
def test_counters_stay_within_zero_and_ordered(moves: list[tuple[bool, int]]) -> None:
    book = lines(a=10)
    for adding, quantity in moves:
        step = domain.add if adding else domain.subtract
        book = step(book, "released", [("a", quantity)])
        assert 0 <= book["a"].released <= 10


def test_open_complete_and_fully_states() -> None:
    book = domain.add(lines(a=3, b=1), "canceled", [("b", 1)])
    assert not domain.fully_shipped(book)
    book = domain.add(book, "shipped", [("a", 3)])
    assert domain.fully_shipped(book) and not domain.fully_canceled(book)
    assert not domain.complete(book, shipments=1, invoiced_shipments=0)
    assert domain.complete(book, shipments=1, invoiced_shipments=1)
    assert domain.fully_canceled(domain.add(lines(a=2), "canceled", [("a", 2)]))
    returned = domain.add(book, "returned", [("a", 3)])
    assert domain.fully_returned(returned) and not domain.fully_returned(book)


def test_backoff_is_jittered_within_its_doubling_cap() -> None:
    rng = random.Random(7)
    for attempts in range(1, 12):
        ceiling = min(domain.MAX_BACKOFF_SECONDS, 2 ** (attempts - 1))
        delay = domain.backoff_seconds(attempts, rng=rng)
        assert 0.1 * ceiling <= delay <= ceiling


def test_only_transient_failures_retry_without_an_operator() -> None:
    assert domain.retried_automatically(domain.Category.RETRYABLE)
    assert domain.retried_automatically(domain.Category.DEPENDENCY)
    assert not domain.retried_automatically(domain.Category.DATA_QUALITY)
    assert domain.Action.RETRY not in domain.SAFE_ACTIONS[domain.Category.DATA_QUALITY]
    assert domain.Action.OVERRIDE in domain.SAFE_ACTIONS[domain.Category.BUSINESS_RULE]
