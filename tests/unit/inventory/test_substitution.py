"""Substitution planning: named substitutes cover what the ordered SKU could not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.inventory.sourcing import LineQuantity, Substitution, plan_substitutions

RANKED = ["EAST", "WEST"]


def test_substitutes_in_master_data_order_from_the_best_ranked_warehouses() -> None:
    plan = plan_substitutions(
        [LineQuantity("1", "A", 5)],
        {"A": ["B", "C"]},
        {("B", "WEST"): 2, ("B", "EAST"): 1, ("C", "EAST"): 9},
        RANKED,
    )
    assert plan.substitutions == (
        Substitution("1", "EAST", "B", "A", 1),
        Substitution("1", "WEST", "B", "A", 2),
        Substitution("1", "EAST", "C", "A", 2),
    )
    assert plan.uncovered == ()
    assert plan.taken_atp() == {("B", "EAST"): 1, ("B", "WEST"): 2, ("C", "EAST"): 2}


def test_lines_share_a_substitute_in_line_order_and_the_rest_stays_uncovered() -> None:
    plan = plan_substitutions(
        [LineQuantity("1", "A", 3), LineQuantity("2", "A", 3), LineQuantity("3", "Z", 1)],
        {"A": ["B"]},
        {("B", "EAST"): 4, ("B", "WEST"): -2},
        RANKED,
    )
    assert [(s.line_id, s.quantity) for s in plan.substitutions] == [("1", 3), ("2", 1)]
    assert plan.uncovered == (LineQuantity("2", "A", 2), LineQuantity("3", "Z", 1))


def test_a_sku_never_substitutes_itself_and_unranked_warehouses_are_not_used() -> None:
    plan = plan_substitutions(
        [LineQuantity("1", "A", 2)],
        {"A": ["A", "B"]},
        {("A", "EAST"): 5, ("B", "NORTH"): 5},
        RANKED,
    )
    assert plan.substitutions == () and plan.uncovered == (LineQuantity("1", "A", 2),)


@given(
    st.lists(st.integers(1, 8), min_size=1, max_size=5),
    st.dictionaries(
        st.tuples(st.sampled_from(["B", "C"]), st.sampled_from(["EAST", "WEST", "NORTH"])),
        st.integers(-3, 10),
    ),
)
def test_never_takes_more_than_needed_or_available(
    quantities: list[int], available: dict[tuple[str, str], int]
) -> None:
    lines = [LineQuantity(str(i), "A", q) for i, q in enumerate(quantities)]
    plan = plan_substitutions(lines, {"A": ["B", "C"]}, available, RANKED)
    for key, taken in plan.taken_atp().items():
        assert key[1] in RANKED and 0 < taken <= max(available.get(key, 0), 0)
    covered = {line.line_id: 0 for line in lines}
    for sub in plan.substitutions:
        covered[sub.line_id] += sub.quantity
    left = {u.line_id: u.quantity for u in plan.uncovered}
    for line in lines:  # conservation per line
        assert covered[line.line_id] + left.get(line.line_id, 0) == line.quantity
