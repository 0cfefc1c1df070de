"""Property tests of the sourcing invariants, checked against independent brute force.

Maximum coverage of a warehouse set is computed by a max-flow over a small network (lines ->
own reservation / shared ATP per SKU and warehouse), not by the code under test.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from services.inventory import sourcing
from services.inventory.domain import Line
from services.inventory.sourcing import (
    AllocationPlan,
    Backorder,
    Eta,
    PromiseOutcome,
    SplitRule,
    Supply,
    backorder_etas,
    fill_backorders,
    plan_allocation,
    promise_lines,
)

WAREHOUSES = ("W1", "W2", "W3", "W4", "W5")
SKUS = ("A", "B", "C")
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PROPERTY = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Case:
    lines: list[Line]
    reserved: dict[tuple[str, str], int]
    available: dict[tuple[str, str], int]
    ranked: list[str]
    allow_backorder: bool


# Lines are L0..L3; reservations may also belong to lines not in the request.
LINES = st.lists(st.tuples(st.sampled_from(SKUS), st.integers(0, 8)), min_size=1, max_size=4).map(
    lambda rows: [Line(f"L{i}", sku, quantity) for i, (sku, quantity) in enumerate(rows)]
)
RESERVED = st.dictionaries(
    st.tuples(st.sampled_from(("L0", "L1", "L2", "L3", "ELSE")), st.sampled_from(WAREHOUSES)),
    st.integers(0, 5),
    max_size=6,
)
AVAILABLE = st.dictionaries(
    st.tuples(st.sampled_from(SKUS), st.sampled_from(WAREHOUSES)), st.integers(-2, 6), max_size=10
)
RANKED = st.lists(st.sampled_from(WAREHOUSES), unique=True, max_size=5)
CASES = st.builds(Case, LINES, RESERVED, AVAILABLE, RANKED, st.booleans())


def plan_for(case: Case, rule: SplitRule, ranked: Sequence[str] | None = None) -> AllocationPlan:
    return plan_allocation(
        case.lines,
        case.reserved,
        case.available,
        case.ranked if ranked is None else ranked,
        rule,
        case.allow_backorder,
    )


def max_flow(capacity: dict[str, dict[str, int]], source: str, sink: str) -> int:
    residual: dict[str, dict[str, int]] = {}
    for u, edges in capacity.items():
        for v, c in edges.items():
            residual.setdefault(u, {})[v] = residual.get(u, {}).get(v, 0) + c
            residual.setdefault(v, {}).setdefault(u, 0)
    total = 0
    while True:
        parent: dict[str, str] = {source: source}
        queue = deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, c in residual.get(u, {}).items():
                if c > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return total
        path, v = [], sink
        while v != source:
            path.append((parent[v], v))
            v = parent[v]
        push = min(residual[u][v] for u, v in path)
        for u, v in path:
            residual[u][v] -= push
            residual[v][u] += push
        total += push


def best_coverage(case: Case, warehouses: Sequence[str]) -> int:
    """Most quantity any allocation from ``warehouses`` can cover (max flow)."""
    big = 10**9
    network: dict[str, dict[str, int]] = {"s": {}}
    for line in case.lines:
        node = f"line:{line.line_id}"
        network["s"][node] = line.quantity
        edges = network.setdefault(node, {})
        for w in warehouses:
            held = case.reserved.get((line.line_id, w), 0)
            if held:
                edges[f"res:{line.line_id}:{w}"] = held
                network[f"res:{line.line_id}:{w}"] = {"t": held}
            atp = max(case.available.get((line.sku, w), 0), 0)
            if atp:
                edges[f"atp:{line.sku}:{w}"] = big
                network[f"atp:{line.sku}:{w}"] = {"t": atp}
    return max_flow(network, "s", "t")


def total_allocated(plan: AllocationPlan) -> int:
    return sum(plan.allocated_by_line().values())


def assert_invariants(case: Case, plan: AllocationPlan) -> None:
    by_line = plan.allocated_by_line()
    backordered = {b.line_id: b.quantity for b in plan.backorders}
    unfilled = {u.line_id: u.quantity for u in plan.unfilled}
    assert len(backordered) == len(plan.backorders) and len(unfilled) == len(plan.unfilled)
    for line in case.lines:
        assert (
            by_line.get(line.line_id, 0)
            + backordered.get(line.line_id, 0)
            + unfilled.get(line.line_id, 0)
            == line.quantity
        )
    if not case.allow_backorder:
        assert plan.backorders == ()
    # positive quantities only, and only at ranked warehouses
    quantities = [line.quantity for a in plan.allocations for line in a.lines]
    quantities += [b.quantity for b in plan.backorders] + [u.quantity for u in plan.unfilled]
    for mapping in (
        plan.consumed_reservation,
        plan.taken_atp,
        plan.released_reservation,
        plan.kept_reservation,
    ):
        quantities += list(mapping.values())
    assert all(q > 0 for q in quantities)
    assert set(plan.warehouses) <= set(case.ranked)
    assert len(set(plan.warehouses)) == len(plan.warehouses)
    assert all(a.lines for a in plan.allocations)
    # ATP and reservation are never overdrawn; reservation is consumed, released or kept
    for (sku, w), taken in plan.taken_atp.items():
        assert taken <= case.available.get((sku, w), 0)
    line_ids = {line.line_id for line in case.lines}
    for key, held in case.reserved.items():
        accounted = (
            plan.consumed_reservation.get(key, 0)
            + plan.released_reservation.get(key, 0)
            + plan.kept_reservation.get(key, 0)
        )
        assert accounted == (held if key[0] in line_ids else 0)
    for mapping in (plan.consumed_reservation, plan.released_reservation, plan.kept_reservation):
        assert set(mapping) <= set(case.reserved)
    # what a warehouse ships of a SKU is its consumed reservation plus the ATP taken there
    sku_of = {line.line_id: line.sku for line in case.lines}
    shipped: dict[tuple[str, str], int] = {}
    for a in plan.allocations:
        for item in a.lines:
            key = (item.sku, a.warehouse)
            shipped[key] = shipped.get(key, 0) + item.quantity
    drawn: dict[tuple[str, str], int] = dict(plan.taken_atp)
    for (line_id, w), consumed in plan.consumed_reservation.items():
        key = (sku_of[line_id], w)
        drawn[key] = drawn.get(key, 0) + consumed
    assert shipped == drawn
    # reservation is kept only by SHIP_COMPLETE when nothing could be allocated
    if plan.kept_reservation:
        assert plan.allocations == ()


@PROPERTY
@given(CASES)
def test_allow_split_covers_as_much_as_possible_with_the_best_ranked_stock(case: Case) -> None:
    plan = plan_for(case, SplitRule.ALLOW_SPLIT)
    assert_invariants(case, plan)
    assert total_allocated(plan) == best_coverage(case, case.ranked)
    if case.allow_backorder:
        assert plan.unfilled == ()
    # reservation is consumed before ATP: a line takes ATP only once its ranked reservation
    # is used up (or its open quantity reached)
    for line in case.lines:
        held = sum(case.reserved.get((line.line_id, w), 0) for w in case.ranked)
        consumed = sum(plan.consumed_reservation.get((line.line_id, w), 0) for w in case.ranked)
        assert consumed == min(held, line.quantity)


@PROPERTY
@given(CASES)
def test_fewest_splits_uses_the_fewest_warehouses_of_any_maximal_plan(case: Case) -> None:
    plan = plan_for(case, SplitRule.FEWEST_SPLITS)
    assert_invariants(case, plan)
    best = best_coverage(case, case.ranked)
    assert total_allocated(plan) == best
    if case.allow_backorder:
        assert plan.unfilled == ()
    fewest = min(
        size
        for size in range(len(case.ranked) + 1)
        for subset in itertools.combinations(case.ranked, size)
        if best_coverage(case, subset) == best
    )
    assert len(plan.warehouses) == fewest
    assert len(plan.warehouses) <= len(plan_for(case, SplitRule.ALLOW_SPLIT).warehouses)


@PROPERTY
@given(CASES)
def test_fewest_splits_greedy_fallback_covers_the_most_with_no_redundant_warehouse(
    case: Case,
) -> None:
    with mock.patch.object(sourcing, "EXACT_SEARCH_MAX_WAREHOUSES", 0):
        plan = plan_for(case, SplitRule.FEWEST_SPLITS)
    assert_invariants(case, plan)
    best = best_coverage(case, case.ranked)
    assert total_allocated(plan) == best
    for warehouse in plan.warehouses:
        rest = [w for w in plan.warehouses if w != warehouse]
        assert best_coverage(case, rest) < best


@PROPERTY
@given(CASES)
def test_ship_complete_uses_the_first_warehouse_covering_everything_or_keeps(case: Case) -> None:
    plan = plan_for(case, SplitRule.SHIP_COMPLETE)
    assert_invariants(case, plan)
    assert len(plan.warehouses) <= 1
    wanted = sum(line.quantity for line in case.lines)
    complete = [w for w in case.ranked if wanted and best_coverage(case, [w]) == wanted]
    if complete:
        assert plan.warehouses == (complete[0],)
        assert total_allocated(plan) == wanted
        assert plan.backorders == () and plan.unfilled == () and plan.kept_reservation == {}
        return
    assert plan.allocations == ()
    assert plan.taken_atp == {} and plan.consumed_reservation == {}
    backordered = {b.line_id: b.quantity for b in plan.backorders}
    unfilled = {u.line_id: u.quantity for u in plan.unfilled}
    for line in case.lines:
        held = sum(q for (owner, _), q in case.reserved.items() if owner == line.line_id)
        kept = sum(q for (owner, _), q in plan.kept_reservation.items() if owner == line.line_id)
        assert kept == min(held, line.quantity)
        if case.allow_backorder:
            assert unfilled.get(line.line_id, 0) == kept
            assert backordered.get(line.line_id, 0) == line.quantity - kept
        else:
            assert unfilled.get(line.line_id, 0) == line.quantity


# --- promises ----------------------------------------------------------------------------------


def supplies_strategy() -> st.SearchStrategy[list[Supply]]:
    supply = st.tuples(
        st.sampled_from(SKUS),
        st.sampled_from(WAREHOUSES),
        st.integers(0, 6),
        st.integers(-10, 30),
    )
    return st.lists(supply, max_size=8).map(
        lambda rows: [
            Supply(f"S{i}", sku, w, quantity, T0 + timedelta(hours=hours))
            for i, (sku, w, quantity, hours) in enumerate(rows)
        ]
    )


@PROPERTY
@given(CASES, supplies_strategy())
def test_promises_add_up_and_share_stock_and_supply(case: Case, supplies: list[Supply]) -> None:
    promises = promise_lines(case.lines, case.available, supplies, case.ranked, T0)
    assert [p.line_id for p in promises] == [line.line_id for line in case.lines]
    rank = {w: i for i, w in enumerate(case.ranked)}
    sourced: dict[tuple[str, str], int] = {}
    last_promise: dict[str, datetime] = {}
    for line, p in zip(case.lines, promises, strict=True):
        assert (p.sku, p.requested_quantity) == (line.sku, line.quantity)
        assert p.available_now_quantity + p.promised_quantity + p.unpromisable_quantity == (
            line.quantity
        )
        assert min(p.available_now_quantity, p.promised_quantity, p.unpromisable_quantity) >= 0
        assert sum(s.quantity for s in p.sources) == p.available_now_quantity
        assert all(s.quantity > 0 for s in p.sources)
        order = [rank[s.warehouse] for s in p.sources]
        assert order == sorted(order)
        for s in p.sources:
            sourced[(p.sku, s.warehouse)] = sourced.get((p.sku, s.warehouse), 0) + s.quantity
        if p.unpromisable_quantity:
            assert p.outcome is PromiseOutcome.CANNOT_PROMISE
        elif p.promised_quantity:
            assert p.outcome is PromiseOutcome.PROMISED
        else:
            assert p.outcome is PromiseOutcome.AVAILABLE_NOW
        assert (p.promised_at is None) == (p.promised_quantity == 0)
        if p.promised_at is not None:
            assert p.promised_at >= T0
            assert p.promised_at in {
                max(s.expected_at, T0)
                for s in supplies
                if s.sku == p.sku and s.warehouse in rank and s.quantity
            }
            # earlier lines of a SKU take earlier supply
            assert p.promised_at >= last_promise.get(p.sku, p.promised_at)
            last_promise[p.sku] = p.promised_at
    for key, quantity in sourced.items():
        assert quantity <= case.available.get(key, 0)
    for sku in SKUS:
        mine = [p for p in promises if p.sku == sku]
        demand = sum(p.requested_quantity for p in mine)
        atp = sum(max(case.available.get((sku, w), 0), 0) for w in case.ranked)
        incoming = sum(s.quantity for s in supplies if s.sku == sku and s.warehouse in rank)
        now = sum(p.available_now_quantity for p in mine)
        assert now == min(demand, atp)
        assert sum(p.promised_quantity for p in mine) == min(demand - now, incoming)


# --- backorders --------------------------------------------------------------------------------


def backorders_strategy() -> st.SearchStrategy[list[Backorder]]:
    row = st.tuples(
        st.sampled_from(SKUS[:2]),
        st.integers(1, 6),
        st.integers(0, 2),
        st.integers(0, 3),
        st.frozensets(st.sampled_from(WAREHOUSES), max_size=2),
    )
    return st.lists(row, max_size=7).map(
        lambda rows: [
            Backorder(f"B{i}", f"L{i}", sku, q, priority, T0 + timedelta(hours=age), warehouses)
            for i, (sku, q, priority, age, warehouses) in enumerate(rows)
        ]
    )


@PROPERTY
@given(
    backorders_strategy(),
    supplies_strategy(),
    st.lists(st.sampled_from(WAREHOUSES), unique=True, min_size=1),
)
def test_backorder_eta_is_when_receipts_in_time_order_complete_it(
    backorders: list[Backorder], supplies: list[Supply], ranked: list[str]
) -> None:
    etas = backorder_etas(backorders, supplies, ranked)
    rank = {w: i for i, w in enumerate(ranked)}
    arrivals = sorted(
        (s for s in supplies if s.warehouse in rank and s.quantity),
        key=lambda s: (s.expected_at, rank[s.warehouse], s.supply_id),
    )
    waiting = {b.backorder_id: b for b in backorders}
    completed: dict[str, Eta] = {}
    for supply in arrivals:
        fills = fill_backorders(waiting.values(), supply.sku, supply.warehouse, supply.quantity)
        for backorder_id, quantity in fills:
            backorder = waiting[backorder_id]
            if quantity == backorder.quantity:
                del waiting[backorder_id]
                completed[backorder_id] = Eta(supply.expected_at, supply.warehouse)
            else:
                waiting[backorder_id] = replace(backorder, quantity=backorder.quantity - quantity)
    assert etas == {b.backorder_id: completed.get(b.backorder_id) for b in backorders}


@PROPERTY
@given(
    backorders_strategy(),
    st.sampled_from(SKUS),
    st.sampled_from(WAREHOUSES),
    st.integers(0, 20),
)
def test_fill_backorders_by_priority_then_age_within_the_receipt(
    backorders: list[Backorder], sku: str, warehouse: str, received: int
) -> None:
    fills = fill_backorders(backorders, sku, warehouse, received)
    by_id: Mapping[str, Backorder] = {b.backorder_id: b for b in backorders}
    assert sum(q for _, q in fills) <= received
    assert all(q > 0 for _, q in fills)
    assert len({backorder_id for backorder_id, _ in fills}) == len(fills)
    eligible = sorted(
        (b for b in backorders if b.sku == sku and (not b.warehouses or warehouse in b.warehouses)),
        key=lambda b: (-b.priority, b.created_at, b.backorder_id),
    )
    # a prefix of the eligible backorders in fill order, all complete except maybe the last
    assert [backorder_id for backorder_id, _ in fills] == [
        b.backorder_id for b in eligible[: len(fills)]
    ]
    for backorder_id, quantity in fills[:-1]:
        assert quantity == by_id[backorder_id].quantity
    if fills:
        assert fills[-1][1] <= by_id[fills[-1][0]].quantity
    if sum(q for _, q in fills) < received:
        assert len(fills) == len(eligible)
        assert all(q == by_id[backorder_id].quantity for backorder_id, q in fills)
