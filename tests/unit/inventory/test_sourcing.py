"""Example-based tests of sourcing: ranking, allocation rules, promises and backorders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.inventory.domain import Line, Warehouse
from services.inventory.sourcing import (
    FAR_ZONE_DISTANCE,
    AllocationPlan,
    Backorder,
    Eta,
    LineQuantity,
    Policy,
    PromiseOutcome,
    Ranking,
    ShipTo,
    SplitRule,
    Supply,
    WarehouseAllocation,
    WarehouseQuantity,
    backorder_etas,
    eligible_warehouses,
    fill_backorders,
    plan_allocation,
    promise_lines,
    rank_warehouses,
    shipping_distance,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def wh(
    code: str,
    region: str = "US",
    postal: str = "10001",
    priority: int = 0,
    channels: tuple[str, ...] = (),
) -> Warehouse:
    return Warehouse(code, region, postal, priority, frozenset(channels))


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def allocated(plan: AllocationPlan) -> dict[str, dict[str, int]]:
    """warehouse -> line_id -> quantity"""
    return {
        a.warehouse: {line.line_id: line.quantity for line in a.lines} for a in plan.allocations
    }


# --- eligibility and ranking -------------------------------------------------------------------


def test_eligible_warehouses_empty_channels_serve_every_channel() -> None:
    everyone = wh("ALL")
    b2b_only = wh("B2B", channels=("b2b",))
    web_and_b2b = wh("MIX", channels=("web", "b2b"))
    warehouses = [everyone, b2b_only, web_and_b2b]
    assert eligible_warehouses(warehouses, "web") == [everyone, web_and_b2b]
    assert eligible_warehouses(warehouses, "b2b") == warehouses
    assert eligible_warehouses(warehouses, "edi") == [everyone]


def test_priority_list_follows_the_policy_list_and_ignores_unknown_codes() -> None:
    warehouses = [wh("A", priority=1), wh("B", priority=2), wh("C", priority=3), wh("D")]
    policy = Policy(Ranking.PRIORITY_LIST, warehouse_priority=("C", "GONE", "A", "C"))
    # only listed warehouses take part, in list order; the duplicate counts once
    assert rank_warehouses(warehouses, policy, None) == ["C", "A"]


def test_priority_list_naming_no_eligible_warehouse_ranks_nothing() -> None:
    assert rank_warehouses([wh("A")], Policy(warehouse_priority=("X",)), None) == []


def test_priority_list_without_list_orders_by_priority_then_code() -> None:
    warehouses = [wh("Z", priority=1), wh("B", priority=2), wh("A", priority=1), wh("C")]
    assert rank_warehouses(warehouses, Policy(Ranking.PRIORITY_LIST), None) == ["C", "A", "Z", "B"]


def test_rank_refuses_duplicate_warehouse_codes() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        rank_warehouses([wh("A"), wh("A")], Policy(), None)


def test_shipping_distance_region_then_zip3_zone() -> None:
    ship_to = ShipTo("US", "10001")
    assert shipping_distance(wh("X", "US", "10099"), ship_to) == (0, 0)
    assert shipping_distance(wh("X", "us", "19104"), ship_to) == (0, 91)
    assert shipping_distance(wh("X", "US", "94105"), ship_to) == (0, 841)
    assert shipping_distance(wh("X", "CA", "10001"), ship_to) == (1, 0)


def test_shipping_distance_non_numeric_postal_codes_are_equal_or_far() -> None:
    ship_to = ShipTo("GB", "SW1A 1AA")
    assert shipping_distance(wh("X", "GB", "sw1a1aa"), ship_to) == (0, 0)
    assert shipping_distance(wh("X", "GB", "M1 1AE"), ship_to) == (0, FAR_ZONE_DISTANCE)
    assert shipping_distance(wh("X", "US", "10001"), ShipTo("US", "")) == (0, FAR_ZONE_DISTANCE)
    assert shipping_distance(wh("X", "US", ""), ShipTo("US", "")) == (0, FAR_ZONE_DISTANCE)


def test_nearest_prefers_same_region_then_closest_zone_then_priority_and_code() -> None:
    warehouses = [
        wh("TOR", "CA", "100", priority=0),  # numerically identical but another region
        wh("SFO", "US", "94105", priority=0),
        wh("PHL", "US", "19104", priority=5),
        wh("NJ2", "US", "07001", priority=1),  # |070 - 100| = 30
        wh("NJ1", "US", "07099", priority=1),  # same zone as NJ2, same priority: by code
        wh("NYC", "US", "10010", priority=9),
    ]
    policy = Policy(Ranking.NEAREST_TO_SHIP_TO)
    assert rank_warehouses(warehouses, policy, ShipTo("US", "10001")) == [
        "NYC",
        "NJ1",
        "NJ2",
        "PHL",
        "SFO",
        "TOR",
    ]


def test_nearest_puts_uncomparable_postal_codes_after_numeric_ones() -> None:
    warehouses = [wh("ODD", "US", "N/A"), wh("FAR", "US", "99501"), wh("AWAY", "MX", "10001")]
    ranked = rank_warehouses(warehouses, Policy(Ranking.NEAREST_TO_SHIP_TO), ShipTo("US", "10001"))
    assert ranked == ["FAR", "ODD", "AWAY"]


def test_nearest_with_a_list_ranks_only_listed_and_breaks_ties_by_list_order() -> None:
    warehouses = [wh("A", postal="10001"), wh("B", postal="10050"), wh("C", postal="50000")]
    policy = Policy(Ranking.NEAREST_TO_SHIP_TO, warehouse_priority=("C", "B", "A"))
    assert rank_warehouses(warehouses, policy, ShipTo("US", "10001")) == ["B", "A", "C"]
    narrowed = Policy(Ranking.NEAREST_TO_SHIP_TO, warehouse_priority=("C", "B"))
    assert rank_warehouses(warehouses, narrowed, ShipTo("US", "10001")) == ["B", "C"]


def test_nearest_without_ship_to_falls_back_to_priority_order() -> None:
    warehouses = [wh("NEAR", postal="10001", priority=2), wh("FAR", postal="99501", priority=1)]
    policy = Policy(Ranking.NEAREST_TO_SHIP_TO)
    assert rank_warehouses(warehouses, policy, None) == ["FAR", "NEAR"]
    assert rank_warehouses(warehouses, policy, ShipTo("US", "10001")) == ["NEAR", "FAR"]


# --- ALLOW_SPLIT -------------------------------------------------------------------------------


def test_allow_split_consumes_reservation_first_then_atp_from_best_ranked() -> None:
    lines = [Line("L1", "SKU-A", 10)]
    plan = plan_allocation(
        lines,
        reserved={("L1", "W3"): 4},
        available={("SKU-A", "W1"): 3, ("SKU-A", "W2"): 5, ("SKU-A", "W3"): 9},
        ranked=["W1", "W2", "W3"],
        split_rule=SplitRule.ALLOW_SPLIT,
        allow_backorder=False,
    )
    assert allocated(plan) == {"W1": {"L1": 3}, "W2": {"L1": 3}, "W3": {"L1": 4}}
    assert plan.warehouses == ("W1", "W2", "W3")
    assert plan.consumed_reservation == {("L1", "W3"): 4}
    assert plan.taken_atp == {("SKU-A", "W1"): 3, ("SKU-A", "W2"): 3}
    assert plan.released_reservation == {}
    assert plan.backorders == () and plan.unfilled == ()


def test_allow_split_lines_of_one_sku_share_atp_in_line_order() -> None:
    lines = [Line("L1", "SKU-A", 4), Line("L2", "SKU-A", 4)]
    plan = plan_allocation(
        lines,
        reserved={},
        available={("SKU-A", "W1"): 5, ("SKU-A", "W2"): 1},
        ranked=["W1", "W2"],
        split_rule=SplitRule.ALLOW_SPLIT,
        allow_backorder=True,
    )
    assert allocated(plan) == {"W1": {"L1": 4, "L2": 1}, "W2": {"L2": 1}}
    assert plan.taken_atp == {("SKU-A", "W1"): 5, ("SKU-A", "W2"): 1}
    assert plan.backorders == (LineQuantity("L2", "SKU-A", 2),)
    assert plan.unfilled == ()


def test_uncovered_quantity_is_backordered_or_unfilled_by_policy() -> None:
    lines = [Line("L1", "SKU-A", 5), Line("L2", "SKU-B", 2)]

    def plan(allow_backorder: bool) -> AllocationPlan:
        return plan_allocation(
            lines,
            reserved={("L1", "W1"): 2},
            available={("SKU-A", "W1"): 1, ("SKU-B", "W1"): 2},
            ranked=["W1"],
            split_rule=SplitRule.ALLOW_SPLIT,
            allow_backorder=allow_backorder,
        )

    backordered, unfilled = plan(True), plan(False)
    for outcome in (backordered, unfilled):
        assert allocated(outcome) == {"W1": {"L1": 3, "L2": 2}}
    assert backordered.backorders == (LineQuantity("L1", "SKU-A", 2),)
    assert backordered.unfilled == ()
    assert unfilled.backorders == ()
    assert unfilled.unfilled == (LineQuantity("L1", "SKU-A", 2),)


def test_reservation_beyond_open_quantity_or_outside_ranking_is_released() -> None:
    lines = [Line("L1", "SKU-A", 3), Line("L2", "SKU-A", 1)]
    plan = plan_allocation(
        lines,
        reserved={("L1", "W1"): 5, ("L2", "OLD"): 1, ("OTHER-LINE", "W1"): 7},
        available={("SKU-A", "W1"): 1, ("SKU-A", "OLD"): 10},
        ranked=["W1"],
        split_rule=SplitRule.ALLOW_SPLIT,
        allow_backorder=False,
    )
    assert allocated(plan) == {"W1": {"L1": 3, "L2": 1}}
    assert plan.consumed_reservation == {("L1", "W1"): 3}
    assert plan.taken_atp == {("SKU-A", "W1"): 1}
    # reservations of lines not in the request are not touched
    assert plan.released_reservation == {("L1", "W1"): 2, ("L2", "OLD"): 1}
    assert plan.kept_reservation == {}


def test_zero_quantity_lines_allocate_nothing_and_release_their_reservation() -> None:
    plan = plan_allocation(
        [Line("L1", "SKU-A", 0)],
        reserved={("L1", "W1"): 2},
        available={("SKU-A", "W1"): 5},
        ranked=["W1"],
        split_rule=SplitRule.ALLOW_SPLIT,
        allow_backorder=True,
    )
    assert plan.allocations == () and plan.backorders == () and plan.unfilled == ()
    assert plan.released_reservation == {("L1", "W1"): 2}


def test_negative_atp_counts_as_zero() -> None:
    plan = plan_allocation(
        [Line("L1", "SKU-A", 2)],
        reserved={},
        available={("SKU-A", "W1"): -3},
        ranked=["W1"],
        split_rule=SplitRule.ALLOW_SPLIT,
        allow_backorder=True,
    )
    assert plan.allocations == ()
    assert plan.backorders == (LineQuantity("L1", "SKU-A", 2),)


@pytest.mark.parametrize(
    ("lines", "reserved", "ranked", "match"),
    [
        ([Line("L1", "A", 1), Line("L1", "B", 1)], {}, ["W1"], "distinct"),
        ([Line("L1", "A", 1)], {}, ["W1", "W1"], "distinct"),
        ([Line("L1", "A", -1)], {}, ["W1"], ">= 0"),
        ([Line("L1", "A", 1)], {("L1", "W1"): -1}, ["W1"], "negative"),
    ],
)
def test_plan_allocation_rejects_malformed_input(
    lines: list[Line], reserved: dict[tuple[str, str], int], ranked: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        plan_allocation(lines, reserved, {}, ranked, SplitRule.ALLOW_SPLIT, False)


# --- SHIP_COMPLETE -----------------------------------------------------------------------------


def test_ship_complete_picks_the_best_ranked_warehouse_covering_everything() -> None:
    lines = [Line("L1", "SKU-A", 3), Line("L2", "SKU-B", 2)]
    plan = plan_allocation(
        lines,
        reserved={("L1", "W1"): 3, ("L2", "W3"): 1},
        available={
            ("SKU-A", "W1"): 5,  # W1 has no SKU-B at all
            ("SKU-A", "W2"): 3,
            ("SKU-B", "W2"): 2,
            ("SKU-A", "W3"): 3,
            ("SKU-B", "W3"): 1,
        },
        ranked=["W1", "W2", "W3"],
        split_rule=SplitRule.SHIP_COMPLETE,
        allow_backorder=True,
    )
    assert allocated(plan) == {"W2": {"L1": 3, "L2": 2}}
    assert plan.taken_atp == {("SKU-A", "W2"): 3, ("SKU-B", "W2"): 2}
    assert plan.consumed_reservation == {}
    # the reservation in warehouses not chosen goes back to ATP
    assert plan.released_reservation == {("L1", "W1"): 3, ("L2", "W3"): 1}
    assert plan.kept_reservation == {}
    assert plan.backorders == () and plan.unfilled == ()


def test_ship_complete_counts_the_reservation_of_the_warehouse() -> None:
    lines = [Line("L1", "SKU-A", 3), Line("L2", "SKU-B", 2)]
    plan = plan_allocation(
        lines,
        reserved={("L1", "W2"): 3, ("L2", "W2"): 1},
        available={("SKU-A", "W1"): 2, ("SKU-B", "W1"): 9, ("SKU-B", "W2"): 1},
        ranked=["W1", "W2"],
        split_rule=SplitRule.SHIP_COMPLETE,
        allow_backorder=False,
    )
    assert allocated(plan) == {"W2": {"L1": 3, "L2": 2}}
    assert plan.consumed_reservation == {("L1", "W2"): 3, ("L2", "W2"): 1}
    assert plan.taken_atp == {("SKU-B", "W2"): 1}


def test_ship_complete_without_a_single_warehouse_keeps_reservation_and_backorders_rest() -> None:
    lines = [Line("L1", "SKU-A", 4), Line("L2", "SKU-B", 2)]

    def ship_complete(allow_backorder: bool) -> AllocationPlan:
        return plan_allocation(
            lines,
            reserved={("L1", "W2"): 3, ("L1", "W1"): 2, ("L2", "W1"): 1},
            available={("SKU-A", "W1"): 9, ("SKU-B", "W2"): 9},
            ranked=["W1", "W2"],
            split_rule=SplitRule.SHIP_COMPLETE,
            allow_backorder=allow_backorder,
        )

    # W1 lacks SKU-B beyond 1 reserved; W2 lacks SKU-A beyond 3 reserved: no single warehouse
    plan = ship_complete(True)
    assert plan.allocations == ()
    assert plan.taken_atp == {} and plan.consumed_reservation == {}
    # L1 keeps 4 of its 5 reserved (best-ranked first), the excess 1 is released
    assert plan.kept_reservation == {("L1", "W1"): 2, ("L1", "W2"): 2, ("L2", "W1"): 1}
    assert plan.released_reservation == {("L1", "W2"): 1}
    assert plan.unfilled == (LineQuantity("L1", "SKU-A", 4), LineQuantity("L2", "SKU-B", 1))
    assert plan.backorders == (LineQuantity("L2", "SKU-B", 1),)

    no_backorder = ship_complete(False)
    assert no_backorder.allocations == () and no_backorder.backorders == ()
    assert no_backorder.kept_reservation == plan.kept_reservation
    assert no_backorder.unfilled == (
        LineQuantity("L1", "SKU-A", 4),
        LineQuantity("L2", "SKU-B", 2),
    )


# --- FEWEST_SPLITS -----------------------------------------------------------------------------


def _three_sku_case() -> tuple[list[Line], dict[tuple[str, str], int], list[str]]:
    lines = [Line("L1", "SKU-A", 2), Line("L2", "SKU-B", 2), Line("L3", "SKU-C", 2)]
    available = {
        ("SKU-A", "W1"): 5,
        ("SKU-B", "W2"): 5,
        ("SKU-C", "W3"): 5,
        ("SKU-A", "W4"): 2,
        ("SKU-B", "W4"): 2,
        ("SKU-C", "W4"): 2,
    }
    return lines, available, ["W1", "W2", "W3", "W4"]


def test_fewest_splits_beats_allow_split_on_a_crafted_case() -> None:
    lines, available, ranked = _three_sku_case()
    split = plan_allocation(lines, {}, available, ranked, SplitRule.ALLOW_SPLIT, False)
    fewest = plan_allocation(lines, {}, available, ranked, SplitRule.FEWEST_SPLITS, False)
    assert split.warehouses == ("W1", "W2", "W3")
    assert allocated(fewest) == {"W4": {"L1": 2, "L2": 2, "L3": 2}}
    assert fewest.taken_atp == {("SKU-A", "W4"): 2, ("SKU-B", "W4"): 2, ("SKU-C", "W4"): 2}


def test_fewest_splits_covers_the_most_before_using_fewer_warehouses() -> None:
    lines, available, ranked = _three_sku_case()
    lines = [Line("L1", "SKU-A", 3), *lines[1:]]  # W4 alone no longer covers L1
    plan = plan_allocation(lines, {}, available, ranked, SplitRule.FEWEST_SPLITS, True)
    assert allocated(plan) == {"W1": {"L1": 3}, "W4": {"L2": 2, "L3": 2}}
    assert plan.backorders == ()


def test_fewest_splits_prefers_the_warehouse_holding_the_reservation() -> None:
    lines = [Line("L1", "SKU-A", 4)]
    plan = plan_allocation(
        lines,
        reserved={("L1", "W2"): 4},
        available={("SKU-A", "W1"): 10, ("SKU-A", "W2"): 10},
        ranked=["W1", "W2"],
        split_rule=SplitRule.FEWEST_SPLITS,
        allow_backorder=False,
    )
    assert allocated(plan) == {"W2": {"L1": 4}}
    assert plan.consumed_reservation == {("L1", "W2"): 4}
    assert plan.taken_atp == {}


def test_fewest_splits_prefers_reserved_stock_over_rank_then_ties_by_rank() -> None:
    lines = [Line("L1", "SKU-A", 4), Line("L2", "SKU-B", 1)]
    plan = plan_allocation(
        lines,
        reserved={("L2", "W3"): 1, ("L1", "W1"): 1},
        available={
            ("SKU-A", "W1"): 3,  # W1 could do L1 alone, but L2 then needs a second warehouse
            ("SKU-A", "W2"): 4,
            ("SKU-B", "W2"): 1,
            ("SKU-A", "W3"): 4,
        },
        ranked=["W1", "W2", "W3"],
        split_rule=SplitRule.FEWEST_SPLITS,
        allow_backorder=False,
    )
    # W2 and W3 each cover everything alone; W3 wins as it already holds L2's reservation,
    # although W2 ranks better
    assert allocated(plan) == {"W3": {"L1": 4, "L2": 1}}
    assert plan.released_reservation == {("L1", "W1"): 1}

    tie = plan_allocation(
        [Line("L1", "SKU-A", 2)],
        reserved={},
        available={("SKU-A", "W1"): 2, ("SKU-A", "W2"): 2},
        ranked=["W2", "W1"],
        split_rule=SplitRule.FEWEST_SPLITS,
        allow_backorder=False,
    )
    assert tie.warehouses == ("W2",)


def test_fewest_splits_finds_the_optimum_a_greedy_pick_would_miss() -> None:
    # Taking the warehouse covering most first (BIG) then needs two more; OPT1 + OPT2 suffice.
    lines = [Line(f"L-{sku}", sku, 1) for sku in "abcdef"]
    stock = {"BIG": "abde", "ONLY-C": "c", "ONLY-F": "f", "OPT1": "abc", "OPT2": "def"}
    available = {(sku, w): 1 for w, skus in stock.items() for sku in skus}
    ranked = list(stock)
    plan = plan_allocation(lines, {}, available, ranked, SplitRule.FEWEST_SPLITS, False)
    assert plan.warehouses == ("OPT1", "OPT2")
    assert plan.unfilled == ()


def test_fewest_splits_greedy_beyond_the_exact_search_limit() -> None:
    ranked = [f"W{i:02}" for i in range(14)]
    skus = ["SKU-A", "SKU-B", "SKU-C"]
    lines = [Line(f"L-{sku}", sku, 3) for sku in skus]
    available = {(skus[i % 3], w): 3 for i, w in enumerate(ranked[:-1])}
    available |= {(sku, ranked[-1]): 3 for sku in skus}  # the worst-ranked has everything
    plan = plan_allocation(lines, {}, available, ranked, SplitRule.FEWEST_SPLITS, False)
    assert plan.warehouses == ("W13",)
    split = plan_allocation(lines, {}, available, ranked, SplitRule.ALLOW_SPLIT, False)
    assert split.warehouses == ("W00", "W01", "W02")


def test_plan_without_any_stock_backorders_everything() -> None:
    lines = [Line("L1", "SKU-A", 2)]
    for rule in SplitRule:
        plan = plan_allocation(lines, {}, {}, ["W1"], rule, True)
        assert plan.allocations == ()
        assert plan.backorders == (LineQuantity("L1", "SKU-A", 2),)
        assert plan.unfilled == ()


def test_allocation_shape() -> None:
    plan = plan_allocation(
        [Line("L1", "SKU-A", 1)], {}, {("SKU-A", "W1"): 1}, ["W1"], SplitRule.ALLOW_SPLIT, False
    )
    assert plan.allocations == (WarehouseAllocation("W1", (LineQuantity("L1", "SKU-A", 1),)),)
    assert plan.allocated_by_line() == {"L1": 1}


# --- promises ----------------------------------------------------------------------------------


def test_promise_available_now_promised_and_cannot_promise() -> None:
    lines = [Line("L1", "SKU-A", 3), Line("L2", "SKU-A", 6), Line("L3", "SKU-A", 5)]
    available = {("SKU-A", "W1"): 2, ("SKU-A", "W2"): 2, ("SKU-A", "OFF"): 50}
    supplies = [
        Supply("PO-2", "SKU-A", "W1", 3, at(48)),
        Supply("PO-1", "SKU-A", "W2", 2, at(24)),
        Supply("PO-X", "SKU-A", "OFF", 99, at(1)),  # not an eligible warehouse
        Supply("PO-3", "SKU-B", "W1", 99, at(1)),  # another SKU
    ]
    l1, l2, l3 = promise_lines(lines, available, supplies, ["W1", "W2"], T0)

    assert l1.outcome is PromiseOutcome.AVAILABLE_NOW
    assert l1.available_now_quantity == 3
    assert l1.sources == (WarehouseQuantity("W1", 2), WarehouseQuantity("W2", 1))
    assert (l1.promised_quantity, l1.promised_at, l1.unpromisable_quantity) == (0, None, 0)

    # 1 left now, then PO-1 (2, day 1) and PO-2 (3, day 2): the last one needed decides
    assert l2.outcome is PromiseOutcome.PROMISED
    assert l2.available_now_quantity == 1
    assert l2.sources == (WarehouseQuantity("W2", 1),)
    assert (l2.promised_quantity, l2.promised_at, l2.unpromisable_quantity) == (5, at(48), 0)

    assert l3.outcome is PromiseOutcome.CANNOT_PROMISE
    assert (l3.available_now_quantity, l3.sources) == (0, ())
    assert (l3.promised_quantity, l3.promised_at, l3.unpromisable_quantity) == (0, None, 5)


def test_promise_date_is_the_earliest_supply_that_covers_the_line() -> None:
    supplies = [
        Supply("PO-LATE", "SKU-A", "W1", 100, at(72)),
        Supply("PO-SOON", "SKU-A", "W2", 4, at(24)),
        Supply("PO-SOON-W1", "SKU-A", "W1", 4, at(24)),
    ]
    (promise,) = promise_lines([Line("L1", "SKU-A", 6)], {}, supplies, ["W1", "W2"], T0)
    assert promise.outcome is PromiseOutcome.PROMISED
    assert (promise.promised_quantity, promise.promised_at) == (6, at(24))


def test_partial_promise_reports_supply_found_and_the_rest_unpromisable() -> None:
    supplies = [Supply("PO-1", "SKU-A", "W1", 2, at(24))]
    (promise,) = promise_lines([Line("L1", "SKU-A", 5)], {("SKU-A", "W1"): 1}, supplies, ["W1"], T0)
    assert promise.outcome is PromiseOutcome.CANNOT_PROMISE
    assert (promise.available_now_quantity, promise.promised_quantity) == (1, 2)
    assert (promise.promised_at, promise.unpromisable_quantity) == (at(24), 2)


def test_overdue_supply_still_counts_and_is_promised_as_due_now() -> None:
    supplies = [Supply("PO-LATE", "SKU-A", "W1", 5, at(-30))]
    (promise,) = promise_lines([Line("L1", "SKU-A", 5)], {}, supplies, ["W1"], T0)
    assert promise.outcome is PromiseOutcome.PROMISED
    assert promise.promised_at == T0


def test_promise_requires_timezone_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        promise_lines([], {}, [], [], datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        Supply("PO", "SKU-A", "W1", 1, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match=">= 0"):
        Supply("PO", "SKU-A", "W1", -1, T0)


# --- backorders --------------------------------------------------------------------------------


def bo(
    backorder_id: str,
    quantity: int,
    priority: int = 0,
    age_hours: float = 0,
    sku: str = "SKU-A",
    warehouses: tuple[str, ...] = (),
) -> Backorder:
    return Backorder(
        backorder_id,
        f"line-{backorder_id}",
        sku,
        quantity,
        priority,
        T0 - timedelta(hours=age_hours),
        frozenset(warehouses),
    )


def test_backorder_etas_follow_priority_then_age_through_supply_in_time_order() -> None:
    backorders = [
        bo("OLD", 3, priority=0, age_hours=10),
        bo("NEW", 3, priority=0, age_hours=1),
        bo("EXPEDITED", 4, priority=100, age_hours=0),
        bo("OTHER-SKU", 1, sku="SKU-B"),
    ]
    supplies = [
        Supply("PO-2", "SKU-A", "W2", 5, at(48)),
        Supply("PO-1", "SKU-A", "W1", 3, at(24)),
        Supply("PO-IGNORED", "SKU-A", "ELSEWHERE", 50, at(1)),
    ]
    etas = backorder_etas(backorders, supplies, ["W1", "W2"])
    # EXPEDITED takes PO-1's 3 + 1 of PO-2; OLD takes 3 of PO-2; NEW finds only 1 left
    assert etas == {
        "EXPEDITED": Eta(at(48), "W2"),
        "OLD": Eta(at(48), "W2"),
        "NEW": None,
        "OTHER-SKU": None,
    }


def test_backorder_etas_tie_on_time_goes_to_the_better_ranked_warehouse() -> None:
    supplies = [Supply("PO-B", "SKU-A", "W2", 5, at(24)), Supply("PO-A", "SKU-A", "W1", 5, at(24))]
    assert backorder_etas([bo("B1", 5)], supplies, ["W2", "W1"]) == {"B1": Eta(at(24), "W2")}
    assert backorder_etas([bo("B1", 5)], supplies, ["W1", "W2"]) == {"B1": Eta(at(24), "W1")}


def test_backorder_etas_respect_the_warehouses_a_backorder_may_use() -> None:
    supplies = [Supply("PO-1", "SKU-A", "W1", 5, at(24)), Supply("PO-2", "SKU-A", "W2", 5, at(48))]
    backorders = [bo("ONLY-W2", 2, priority=5, warehouses=("W2",)), bo("ANY", 5)]
    assert backorder_etas(backorders, supplies, ["W1", "W2"]) == {
        "ONLY-W2": Eta(at(48), "W2"),
        "ANY": Eta(at(24), "W1"),
    }


def test_backorder_etas_keep_an_overdue_supply_date() -> None:
    supplies = [Supply("PO-LATE", "SKU-A", "W1", 5, at(-5))]
    assert backorder_etas([bo("B1", 5)], supplies, ["W1"]) == {"B1": Eta(at(-5), "W1")}


def test_backorder_validation() -> None:
    with pytest.raises(ValueError, match="> 0"):
        bo("B", 0)
    with pytest.raises(ValueError, match="distinct"):
        backorder_etas([bo("B", 1), bo("B", 2)], [], ["W1"])


def test_fill_backorders_by_priority_then_age_partially_filling_the_last() -> None:
    backorders = [
        bo("YOUNG", 4, priority=0, age_hours=1),
        bo("OLD", 4, priority=0, age_hours=9),
        bo("URGENT", 3, priority=10, age_hours=0),
        bo("OTHER-SKU", 5, priority=99, sku="SKU-B"),
        bo("NOT-HERE", 5, priority=99, warehouses=("W2",)),
    ]
    assert fill_backorders(backorders, "SKU-A", "W1", 9) == [
        ("URGENT", 3),
        ("OLD", 4),
        ("YOUNG", 2),
    ]
    assert fill_backorders(backorders, "SKU-A", "W1", 100) == [
        ("URGENT", 3),
        ("OLD", 4),
        ("YOUNG", 4),
    ]
    assert fill_backorders(backorders, "SKU-A", "W2", 6) == [("NOT-HERE", 5), ("URGENT", 1)]
    assert fill_backorders(backorders, "SKU-A", "W1", 0) == []
    with pytest.raises(ValueError, match=">= 0"):
        fill_backorders(backorders, "SKU-A", "W1", -1)
