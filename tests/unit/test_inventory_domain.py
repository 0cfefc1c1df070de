"""Property tests of the inventory domain core: random sequences of receive / reserve /
release / expire / commit / allocate / ship never oversell and conserve stock (hypothesis
state machine over the same pure functions the store applies)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.inventory.domain import (
    Line,
    Mode,
    StockPosition,
    apply_release,
    apply_reserve,
    match_commit,
    plan_reservation,
    release_from,
)
from services.inventory.sourcing import SplitRule, plan_allocation

SKUS = ("A", "B", "C")
WAREHOUSES = ("W1", "W2", "W3")
lines_strategy = st.lists(
    st.tuples(st.sampled_from(SKUS), st.integers(1, 8)), min_size=1, max_size=4
).map(lambda items: [Line(f"l{i}", sku, qty) for i, (sku, qty) in enumerate(items)])


class StockBook(RuleBasedStateMachine):
    """A pure model of the store: positions, reservations (line -> sku, holds), ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = {
            (sku, wh): StockPosition(sku, wh, safety_stock=1 if wh == "W1" else 0)
            for sku in SKUS
            for wh in WAREHOUSES
        }
        self.ledger = dict.fromkeys(self.positions, 0)
        self.reservations: dict[int, dict[str, tuple[str, dict[str, int]]]] = {}
        self.next_id = 0
        self.allocated: dict[tuple[str, str], int] = dict.fromkeys(self.positions, 0)

    def _move(self, key: tuple[str, str], d_reserved: int, d_allocated: int) -> None:
        p = self.positions[key]
        self.positions[key] = StockPosition(
            p.sku,
            p.warehouse,
            p.on_hand,
            p.reserved + d_reserved,
            p.allocated + d_allocated,
            p.safety_stock,
        )

    def _release(self, sku: str, freed: dict[str, int]) -> None:
        for wh, qty in freed.items():
            self.positions[(sku, wh)] = apply_release(self.positions[(sku, wh)], qty)

    @rule(sku=st.sampled_from(SKUS), wh=st.sampled_from(WAREHOUSES), qty=st.integers(1, 20))
    def receive(self, sku: str, wh: str, qty: int) -> None:
        position = self.positions[(sku, wh)]
        self.positions[(sku, wh)] = StockPosition(
            sku,
            wh,
            position.on_hand + qty,
            position.reserved,
            position.allocated,
            position.safety_stock,
        )
        self.ledger[(sku, wh)] += qty

    @rule(
        lines=lines_strategy,
        mode=st.sampled_from(Mode),
        ranked=st.permutations(WAREHOUSES),
    )
    def reserve(self, lines: list[Line], mode: Mode, ranked: list[str]) -> None:
        plan = plan_reservation(lines, self.positions, ranked, mode)
        for line in plan.lines:
            assert line.reserved <= line.line.quantity
        if (mode is Mode.ALL_OR_NOTHING and plan.shortfalls) or not plan.reserved_total:
            return
        for (sku, wh), qty in plan.take().items():
            self.positions[(sku, wh)] = apply_reserve(self.positions[(sku, wh)], qty)
        self.reservations[self.next_id] = {
            line.line.line_id: (line.line.sku, dict(line.by_warehouse)) for line in plan.lines
        }
        self.next_id += 1

    @precondition(lambda self: self.reservations)
    @rule(data=st.data(), quantity=st.integers(0, 10))
    def release_part(self, data: st.DataObject, quantity: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        line_id = data.draw(st.sampled_from(sorted(self.reservations[rid])))
        sku, holds = self.reservations[rid][line_id]
        freed = release_from(holds, quantity or sum(holds.values()))
        assert sum(freed.values()) <= sum(holds.values())
        self._release(sku, freed)
        for wh, qty in freed.items():
            holds[wh] -= qty
        self.reservations[rid][line_id] = (sku, {w: q for w, q in holds.items() if q > 0})

    @precondition(lambda self: self.reservations)
    @rule(data=st.data())
    def expire_or_release_all(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        for sku, holds in self.reservations.pop(rid).values():
            self._release(sku, dict(holds))

    @precondition(lambda self: self.reservations)
    @rule(
        data=st.data(),
        order_lines=lines_strategy,
        reserve_shortfall=st.booleans(),
        ranked=st.permutations(WAREHOUSES),
    )
    def commit(
        self,
        data: st.DataObject,
        order_lines: list[Line],
        reserve_shortfall: bool,
        ranked: list[str],
    ) -> None:
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        held: dict[tuple[str, str], int] = {}
        for sku, holds in self.reservations[rid].values():
            for wh, qty in holds.items():
                held[(sku, wh)] = held.get((sku, wh), 0) + qty
        match = match_commit(order_lines, held, ranked)
        kept = sum(sum(h.values()) for h in match.holds.values())
        assert kept + sum(match.excess.values()) == sum(held.values())  # nothing lost
        for line in order_lines:
            assert sum(match.holds[line.line_id].values()) <= line.quantity
        for (sku, wh), qty in match.excess.items():
            self._release(sku, {wh: qty})
        committed = {
            line.line_id: (line.sku, dict(match.holds[line.line_id])) for line in order_lines
        }
        if reserve_shortfall and match.short:
            extra = plan_reservation(match.short, self.positions, ranked, Mode.PARTIAL)
            for (sku, wh), qty in extra.take().items():
                self.positions[(sku, wh)] = apply_reserve(self.positions[(sku, wh)], qty)
            for planned in extra.lines:
                holds = committed[planned.line.line_id][1]
                for wh, qty in planned.by_warehouse.items():
                    holds[wh] = holds.get(wh, 0) + qty
        self.reservations[rid] = committed

    @precondition(lambda self: self.reservations)
    @rule(
        data=st.data(),
        split=st.sampled_from(SplitRule),
        backorder=st.booleans(),
        ranked=st.permutations(WAREHOUSES),
    )
    def allocate(
        self, data: st.DataObject, split: SplitRule, backorder: bool, ranked: list[str]
    ) -> None:
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        reservation = self.reservations[rid]
        lines = [
            Line(line_id, sku, max(sum(h.values()), 1) + data.draw(st.integers(0, 3)))
            for line_id, (sku, h) in reservation.items()
        ]
        reserved = {
            (line_id, wh): q for line_id, (_, h) in reservation.items() for wh, q in h.items()
        }
        available = {key: p.sellable for key, p in self.positions.items()}
        plan = plan_allocation(lines, reserved, available, ranked, split, backorder)
        sku_of = {line.line_id: line.sku for line in lines}
        for (line_id, wh), qty in plan.consumed_reservation.items():
            self._move((sku_of[line_id], wh), -qty, qty)
            self.allocated[(sku_of[line_id], wh)] += qty
        for (sku, wh), qty in plan.taken_atp.items():
            self._move((sku, wh), 0, qty)
            self.allocated[(sku, wh)] += qty
        for (line_id, wh), qty in plan.released_reservation.items():
            self._move((sku_of[line_id], wh), -qty, 0)
        kept = dict(plan.kept_reservation)
        remaining = {
            line_id: (sku, {wh: q for (lid, wh), q in kept.items() if lid == line_id})
            for line_id, (sku, _) in reservation.items()
        }
        if any(h for _, h in remaining.values()):
            self.reservations[rid] = remaining
        else:
            del self.reservations[rid]

    @rule(sku=st.sampled_from(SKUS), wh=st.sampled_from(WAREHOUSES), qty=st.integers(1, 10))
    def ship(self, sku: str, wh: str, qty: int) -> None:
        shipped = min(qty, self.allocated[(sku, wh)])
        if shipped == 0:
            return
        p = self.positions[(sku, wh)]
        self.positions[(sku, wh)] = StockPosition(
            sku, wh, p.on_hand - shipped, p.reserved, p.allocated - shipped, p.safety_stock
        )
        self.allocated[(sku, wh)] -= shipped
        self.ledger[(sku, wh)] -= shipped

    @invariant()
    def allocated_equals_allocations(self) -> None:
        assert {k: p.allocated for k, p in self.positions.items()} == self.allocated

    @invariant()
    def no_oversell(self) -> None:
        for position in self.positions.values():
            assert position.holds_invariant(), position

    @invariant()
    def reserved_equals_active_holds(self) -> None:
        held = dict.fromkeys(self.positions, 0)
        for reservation in self.reservations.values():
            for sku, holds in reservation.values():
                for wh, qty in holds.items():
                    held[(sku, wh)] += qty
        assert {k: p.reserved for k, p in self.positions.items()} == held

    @invariant()
    def on_hand_is_the_ledger_sum(self) -> None:
        assert {k: p.on_hand for k, p in self.positions.items()} == self.ledger


TestStockBook = StockBook.TestCase
TestStockBook.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_all_or_nothing_plan_reports_what_was_available() -> None:
    positions = {("A", "W1"): StockPosition("A", "W1", on_hand=3)}
    plan = plan_reservation([Line("1", "A", 5)], positions, ["W1"], Mode.ALL_OR_NOTHING)
    assert [(s.line.line_id, s.reserved, s.shortfall) for s in plan.shortfalls] == [("1", 3, 2)]


def test_lines_of_one_sku_share_availability() -> None:
    positions = {("A", "W1"): StockPosition("A", "W1", on_hand=5)}
    plan = plan_reservation([Line("1", "A", 3), Line("2", "A", 3)], positions, ["W1"], Mode.PARTIAL)
    assert [line.reserved for line in plan.lines] == [3, 2]


def test_safety_stock_and_negative_availability_are_not_sellable() -> None:
    drifted = StockPosition("A", "W1", on_hand=2, reserved=3)
    assert drifted.available == -1 and drifted.sellable == 0
    plan = plan_reservation([Line("1", "A", 1)], {("A", "W1"): drifted}, ["W1"], Mode.PARTIAL)
    assert plan.reserved_total == 0
    guarded = StockPosition("A", "W1", on_hand=10, safety_stock=4)
    assert (
        plan_reservation(
            [Line("1", "A", 9)], {("A", "W1"): guarded}, ["W1"], Mode.PARTIAL
        ).reserved_total
        == 6
    )


def test_commit_match_prefers_ranked_warehouses_and_reports_excess_and_short() -> None:
    match = match_commit(
        [Line("o1", "A", 4), Line("o2", "B", 3)],
        {("A", "W2"): 3, ("A", "W1"): 2, ("C", "W1"): 1},
        ["W1", "W2"],
    )
    assert match.holds == {"o1": {"W1": 2, "W2": 2}, "o2": {}}
    assert match.excess == {("A", "W2"): 1, ("C", "W1"): 1}
    assert match.short == (Line("o2", "B", 3),)
