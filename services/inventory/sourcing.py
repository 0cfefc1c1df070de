"""Sourcing and allocation: which warehouses serve an order, from which stock, and when.

Pure functions over plain dataclasses (no I/O, no protobuf); the store and API layers map the
contract's SourcingPolicy / AllocateRequest / PromiseLinesRequest onto them. Quantities are
counts of the SKU's base unit; datetimes are timezone-aware.

Rules this module settles where the contract is silent:

* Ranking. ``Policy.warehouse_priority``, when given, is the eligible set *and* its order
  (unknown or ineligible codes are ignored, duplicates count once). NEAREST_TO_SHIP_TO ranks by
  :func:`shipping_distance`; ties fall back to the priority order. Without a ship-to address
  NEAREST_TO_SHIP_TO falls back to the priority order.
* Reservations. A line's reservation is consumed before any ATP is taken. Reservation that
  ends up not allocated is *released* once the line is settled (allocated, backordered or
  reported unfilled), e.g. reservation in a warehouse SHIP_COMPLETE or FEWEST_SPLITS did not
  choose, reservation in a warehouse outside the ranking, or reservation above the open
  quantity. Only when SHIP_COMPLETE finds no single warehouse is reservation *kept* (up to
  the line's open quantity, best-ranked warehouses first; any excess is released).
* Promises and ETAs. Incoming supply whose ``expected_at`` is already past (a late purchase
  order) still counts: it is consumed first, and :func:`promise_lines` promises it at ``now``
  rather than at a date in the past. :func:`backorder_etas` reports the raw ``expected_at``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import NamedTuple

from services.inventory.domain import Line, Warehouse

# FEWEST_SPLITS searches warehouse subsets exhaustively up to this many useful warehouses (and
# while the search stays within EXACT_SEARCH_BUDGET steps); beyond that it is greedy.
EXACT_SEARCH_MAX_WAREHOUSES = 12
EXACT_SEARCH_BUDGET = 2_000_000
# Zone distance of two postal codes in one region that cannot be compared numerically and
# differ; larger than any ZIP3 difference (at most 999).
FAR_ZONE_DISTANCE = 1000


class Ranking(Enum):
    PRIORITY_LIST = 1
    NEAREST_TO_SHIP_TO = 2


class SplitRule(Enum):
    SHIP_COMPLETE = 1
    ALLOW_SPLIT = 2
    FEWEST_SPLITS = 3


@dataclass(frozen=True)
class Policy:
    ranking: Ranking = Ranking.PRIORITY_LIST
    warehouse_priority: tuple[str, ...] = ()  # eligible warehouses in preference order
    split_rule: SplitRule = SplitRule.ALLOW_SPLIT
    allow_backorder: bool = False


@dataclass(frozen=True)
class ShipTo:
    region_code: str  # ISO 3166-1 alpha-2
    postal_code: str


# --- eligibility and ranking ---------------------------------------------------------------


def eligible_warehouses(warehouses: Iterable[Warehouse], channel_id: str) -> list[Warehouse]:
    """The warehouses allowed to sell to ``channel_id`` (empty ``channels`` = every channel),
    in input order."""
    return [w for w in warehouses if not w.channels or channel_id in w.channels]


def _zip3(postal_code: str) -> int | None:
    head = postal_code.strip()[:3]
    if len(head) == 3 and head.isascii() and head.isdigit():
        return int(head)
    return None


def _normalised_postal_code(postal_code: str) -> str:
    return "".join(postal_code.split()).upper()


def shipping_distance(warehouse: Warehouse, ship_to: ShipTo) -> tuple[int, int]:
    """Sort key for "nearest to ship-to": ``(other_region, zone_distance)``, smaller is nearer.

    Any warehouse in the ship-to's region (``region_code``, case-insensitive) is nearer than
    every warehouse in another region; warehouses in other regions are all equally far
    ``(1, 0)``. Within the region the zone distance is ``|zip3(a) - zip3(b)|`` where zip3 is
    the number formed by the first three characters of the postal code when they are digits
    (US ZIP3-style zones; also usable for other numeric postal systems). If either code is not
    numeric that way, the distance is 0 when both codes are equal ignoring spaces and case and
    non-empty, else FAR_ZONE_DISTANCE (farther than any numeric distance).
    """
    if warehouse.region_code.strip().upper() != ship_to.region_code.strip().upper():
        return (1, 0)
    a, b = _zip3(warehouse.postal_code), _zip3(ship_to.postal_code)
    if a is not None and b is not None:
        return (0, abs(a - b))
    same = _normalised_postal_code(warehouse.postal_code)
    if same and same == _normalised_postal_code(ship_to.postal_code):
        return (0, 0)
    return (0, FAR_ZONE_DISTANCE)


def rank_warehouses(
    warehouses: Sequence[Warehouse], policy: Policy, ship_to: ShipTo | None = None
) -> list[str]:
    """Codes of the eligible ``warehouses`` in the policy's preference order, best first.

    ``warehouses`` are the channel's eligible ones (see :func:`eligible_warehouses`). If
    ``policy.warehouse_priority`` is non-empty only the warehouses it names take part, in its
    order (so a list naming none of them ranks nothing); otherwise all take part ordered by
    ``Warehouse.priority`` then code. NEAREST_TO_SHIP_TO orders by :func:`shipping_distance`
    first and uses that priority order to break ties; without ``ship_to`` it is the priority
    order alone.
    """
    by_code: dict[str, Warehouse] = {}
    for warehouse in warehouses:
        if warehouse.code in by_code:
            raise ValueError(f"duplicate warehouse {warehouse.code!r}")
        by_code[warehouse.code] = warehouse
    listed: dict[str, int] = {}
    for code in policy.warehouse_priority:
        if code in by_code and code not in listed:
            listed[code] = len(listed)
    candidates = (
        [by_code[code] for code in listed] if policy.warehouse_priority else [*by_code.values()]
    )

    def preference(warehouse: Warehouse) -> tuple[int, int, str]:
        return (listed.get(warehouse.code, 0), warehouse.priority, warehouse.code)

    if policy.ranking is Ranking.NEAREST_TO_SHIP_TO and ship_to is not None:
        nearest = ship_to
        candidates.sort(key=lambda w: (shipping_distance(w, nearest), preference(w)))
    else:
        candidates.sort(key=preference)
    return [warehouse.code for warehouse in candidates]


# --- allocation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineQuantity:
    line_id: str
    sku: str
    quantity: int  # > 0


@dataclass(frozen=True)
class WarehouseAllocation:
    warehouse: str
    lines: tuple[LineQuantity, ...]  # in request line order


@dataclass(frozen=True)
class AllocationPlan:
    """What an allocation does. Every mapping holds positive quantities only.

    For every requested line and warehouse with reservation r > 0:
    ``consumed_reservation + released_reservation + kept_reservation == r``. For every
    (sku, warehouse): the quantity allocated == consumed reservation + ``taken_atp``.
    """

    allocations: tuple[WarehouseAllocation, ...] = ()  # one per warehouse used, ranked order
    # (line_id, warehouse) -> reservation turned into allocation
    consumed_reservation: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (sku, warehouse) -> ATP newly allocated (beyond the order's reservation)
    taken_atp: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (line_id, warehouse) -> reservation given back to ATP
    released_reservation: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (line_id, warehouse) -> reservation still held (SHIP_COMPLETE without a single warehouse)
    kept_reservation: Mapping[tuple[str, str], int] = field(default_factory=dict)
    backorders: tuple[LineQuantity, ...] = ()  # uncovered quantity, when backorders are allowed
    # per line, quantity neither allocated nor backordered: kept reserved and/or uncovered
    unfilled: tuple[LineQuantity, ...] = ()

    @property
    def warehouses(self) -> tuple[str, ...]:
        return tuple(allocation.warehouse for allocation in self.allocations)

    def allocated_by_line(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for allocation in self.allocations:
            for line in allocation.lines:
                totals[line.line_id] = totals.get(line.line_id, 0) + line.quantity
        return totals


# (line_id, warehouse) -> (from reservation, from ATP)
_Fill = dict[tuple[str, str], tuple[int, int]]


def _fill(
    lines: Sequence[Line],
    reserved: Mapping[tuple[str, str], int],
    available: Mapping[tuple[str, str], int],
    warehouses: Sequence[str],
) -> _Fill:
    """Allocate line by line: the line's own reservation first, then shared ATP, each in the
    order of ``warehouses``. Maximises the allocated total for that warehouse set, because
    reservation is line-specific and ATP is fungible across the lines of a SKU."""
    atp_left: dict[tuple[str, str], int] = {}
    filled: _Fill = {}
    for line in lines:
        need = line.quantity
        for warehouse in warehouses:
            if need == 0:
                break
            take = min(need, reserved.get((line.line_id, warehouse), 0))
            if take > 0:
                filled[(line.line_id, warehouse)] = (take, 0)
                need -= take
        for warehouse in warehouses:
            if need == 0:
                break
            key = (line.sku, warehouse)
            left = atp_left.setdefault(key, max(available.get(key, 0), 0))
            take = min(need, left)
            if take > 0:
                atp_left[key] = left - take
                from_reservation, _ = filled.get((line.line_id, warehouse), (0, 0))
                filled[(line.line_id, warehouse)] = (from_reservation, take)
                need -= take
    return filled


def _filled_quantity(filled: _Fill) -> int:
    return sum(a + b for a, b in filled.values())


class _Coverage:
    """Fast evaluation of how much a warehouse subset (a bitmask over ``useful``) covers:
    sum over lines of min(open, own reservation in the subset) plus, per SKU,
    min(ATP in the subset, demand the reservations leave). Equal to ``_fill``'s total."""

    def __init__(
        self,
        lines: Sequence[Line],
        reserved: Mapping[tuple[str, str], int],
        available: Mapping[tuple[str, str], int],
        useful: Sequence[str],
    ) -> None:
        skus = sorted({line.sku for line in lines})
        self.sku_index = {sku: i for i, sku in enumerate(skus)}
        self.atp: list[list[tuple[int, int]]] = [
            [
                (1 << bit, available.get((sku, w), 0))
                for bit, w in enumerate(useful)
                if available.get((sku, w), 0) > 0
            ]
            for sku in skus
        ]
        # lines with some reservation, and per SKU the demand of lines without any
        self.reserving: list[tuple[int, int, list[tuple[int, int]]]] = []
        self.plain_demand = [0] * len(skus)
        for line in lines:
            entries = [
                (1 << bit, reserved.get((line.line_id, w), 0))
                for bit, w in enumerate(useful)
                if reserved.get((line.line_id, w), 0) > 0
            ]
            if entries:
                self.reserving.append((self.sku_index[line.sku], line.quantity, entries))
            else:
                self.plain_demand[self.sku_index[line.sku]] += line.quantity
        self.cost = len(self.reserving) + sum(len(e) for _, _, e in self.reserving)
        self.cost += sum(len(a) for a in self.atp) + len(skus)
        # per warehouse bit: (reserving line index, quantity) and (sku index, ATP)
        self.reservation_at: list[list[tuple[int, int]]] = [[] for _ in useful]
        for index, (_, _, entries) in enumerate(self.reserving):
            for bit, quantity in entries:
                self.reservation_at[bit.bit_length() - 1].append((index, quantity))
        self.atp_at: list[list[tuple[int, int]]] = [[] for _ in useful]
        for sku_index, entries in enumerate(self.atp):
            for bit, quantity in entries:
                self.atp_at[bit.bit_length() - 1].append((sku_index, quantity))

    def __call__(self, mask: int) -> tuple[int, int]:
        """(covered quantity, of which from reservation)."""
        demand = list(self.plain_demand)
        from_reservation = 0
        for sku, quantity, entries in self.reserving:
            held = min(quantity, sum(q for bit, q in entries if mask & bit))
            from_reservation += held
            demand[sku] += quantity - held
        from_atp = 0
        for sku, entries in enumerate(self.atp):
            if demand[sku]:
                from_atp += min(demand[sku], sum(q for bit, q in entries if mask & bit))
        return from_reservation + from_atp, from_reservation


class _IncrementalCoverage:
    """Coverage of a warehouse set that changes one warehouse at a time (for the greedy
    search on large inputs): a change only looks at that warehouse's lines and SKUs."""

    def __init__(self, coverage: _Coverage) -> None:
        self.coverage = coverage
        self.mask = 0
        self.held = [0] * len(coverage.reserving)  # reservation in the set, per reserving line
        self.atp = [0] * len(coverage.atp)  # ATP in the set, per SKU
        self.demand = list(coverage.plain_demand)  # demand reservations leave, per SKU
        for sku, quantity, _ in coverage.reserving:
            self.demand[sku] += quantity
        self.covered = 0

    def _deltas(self, bit: int, sign: int) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
        """New held per reserving line, demand change and ATP change per SKU."""
        held: dict[int, int] = {}
        demand: dict[int, int] = {}
        for index, quantity in self.coverage.reservation_at[bit]:
            sku, wanted, _ = self.coverage.reserving[index]
            held[index] = self.held[index] + sign * quantity
            used = min(wanted, held[index]) - min(wanted, self.held[index])
            demand[sku] = demand.get(sku, 0) - used
        atp = {sku: sign * quantity for sku, quantity in self.coverage.atp_at[bit]}
        return held, demand, atp

    def change(self, bit: int, sign: int) -> tuple[int, int]:
        """(change of covered quantity, change of reservation used) if ``bit`` is added
        (sign +1) or removed (sign -1)."""
        held, demand, atp = self._deltas(bit, sign)
        reservation = 0
        for index, new in held.items():
            wanted = self.coverage.reserving[index][1]
            reservation += min(wanted, new) - min(wanted, self.held[index])
        from_atp = 0
        for sku in demand.keys() | atp.keys():
            after = min(self.atp[sku] + atp.get(sku, 0), self.demand[sku] + demand.get(sku, 0))
            from_atp += after - min(self.atp[sku], self.demand[sku])
        return reservation + from_atp, reservation

    def apply(self, bit: int, sign: int) -> None:
        covered, _ = self.change(bit, sign)
        held, demand, atp = self._deltas(bit, sign)
        for index, new in held.items():
            self.held[index] = new
        for sku, delta in demand.items():
            self.demand[sku] += delta
        for sku, delta in atp.items():
            self.atp[sku] += delta
        self.covered += covered
        self.mask ^= 1 << bit


def _fewest_warehouses(
    lines: Sequence[Line],
    reserved: Mapping[tuple[str, str], int],
    available: Mapping[tuple[str, str], int],
    ranked: Sequence[str],
) -> list[str]:
    """Smallest warehouse set covering as much as all of ``ranked`` would; among equally
    small sets the one consuming the most reservation, then the best-ranked (lexicographic on
    rank positions). Exhaustive for small inputs, greedy (then pruned) beyond."""
    useful = [
        w
        for w in ranked
        if any(
            reserved.get((line.line_id, w), 0) > 0 or available.get((line.sku, w), 0) > 0
            for line in lines
        )
    ]
    coverage = _Coverage(lines, reserved, available, useful)
    everything = (1 << len(useful)) - 1
    full, _ = coverage(everything)
    if full == 0:
        return []
    if (
        len(useful) <= EXACT_SEARCH_MAX_WAREHOUSES
        and coverage.cost << len(useful) <= EXACT_SEARCH_BUDGET
    ):
        for size in range(1, len(useful) + 1):
            best: tuple[int, ...] | None = None
            best_reserved = -1
            for combo in itertools.combinations(range(len(useful)), size):
                covered, from_reservation = coverage(sum(1 << bit for bit in combo))
                if covered == full and from_reservation > best_reserved:
                    best, best_reserved = combo, from_reservation
            if best is not None:
                return [useful[bit] for bit in best]
    greedy = _IncrementalCoverage(coverage)
    while greedy.covered < full:
        candidates = [bit for bit in range(len(useful)) if not greedy.mask & (1 << bit)]
        gains = [(*greedy.change(bit, +1), -bit) for bit in candidates]
        gain, _, neg_bit = max(gains)
        if gain <= 0:  # cannot happen (coverage of all useful is full); stay safe
            break
        greedy.apply(-neg_bit, +1)
    for bit in reversed(range(len(useful))):  # drop what became redundant, worst-ranked first
        if greedy.mask & (1 << bit) and greedy.change(bit, -1)[0] == 0:
            greedy.apply(bit, -1)
    mask = greedy.mask if greedy.covered == full else everything
    return [w for bit, w in enumerate(useful) if mask & (1 << bit)]


def plan_allocation(
    lines: Sequence[Line],
    reserved: Mapping[tuple[str, str], int],
    available: Mapping[tuple[str, str], int],
    ranked: Sequence[str],
    split_rule: SplitRule,
    allow_backorder: bool,
) -> AllocationPlan:
    """Plan the allocation of the open quantities ``lines`` (``Line.quantity`` = open qty).

    ``reserved`` maps (line_id, warehouse) to what the order's reservation holds (entries of
    other lines are ignored); ``available`` maps (sku, warehouse) to extra ATP that may be
    taken (negative counts as 0). Nothing is allocated outside ``ranked`` (best first).

    * ALLOW_SPLIT: per line in order, its reservation (ranked order), then ATP from the
      best-ranked warehouses; lines of one SKU share ATP in line order.
    * FEWEST_SPLITS: the fewest warehouses that cover as much as possible (see
      :func:`_fewest_warehouses`), then ALLOW_SPLIT within them.
    * SHIP_COMPLETE: the best-ranked warehouse whose reservation + ATP covers every line;
      if none, nothing is allocated, the reservation is kept and reported in ``unfilled``,
      and the rest is backordered (or also reported in ``unfilled``).

    Uncovered quantity is backordered when ``allow_backorder``, else reported in ``unfilled``.
    """
    if len({line.line_id for line in lines}) != len(lines):
        raise ValueError("line ids must be distinct")
    if len(set(ranked)) != len(ranked):
        raise ValueError("ranked warehouses must be distinct")
    if any(line.quantity < 0 for line in lines):
        raise ValueError("line quantities must be >= 0")
    line_ids = {line.line_id for line in lines}
    holdings: dict[str, dict[str, int]] = {}  # line_id -> warehouse -> reserved > 0
    for (line_id, warehouse), quantity in reserved.items():
        if quantity < 0:
            raise ValueError(f"negative reservation for {(line_id, warehouse)}")
        if quantity > 0 and line_id in line_ids:
            holdings.setdefault(line_id, {})[warehouse] = quantity
    open_lines = [line for line in lines if line.quantity > 0]

    if split_rule is SplitRule.SHIP_COMPLETE:
        wanted = sum(line.quantity for line in open_lines)
        for warehouse in ranked:
            filled = _fill(open_lines, reserved, available, [warehouse])
            if wanted and _filled_quantity(filled) == wanted:
                return _plan(lines, holdings, ranked, filled, allow_backorder, keep=False)
        return _plan(lines, holdings, ranked, {}, allow_backorder, keep=True)
    if split_rule is SplitRule.FEWEST_SPLITS:
        chosen = _fewest_warehouses(open_lines, reserved, available, ranked)
        filled = _fill(open_lines, reserved, available, chosen)
    else:
        filled = _fill(open_lines, reserved, available, ranked)
    return _plan(lines, holdings, ranked, filled, allow_backorder, keep=False)


def _plan(
    lines: Sequence[Line],
    holdings: Mapping[str, Mapping[str, int]],
    ranked: Sequence[str],
    filled: _Fill,
    allow_backorder: bool,
    keep: bool,
) -> AllocationPlan:
    rank = {warehouse: i for i, warehouse in enumerate(ranked)}
    per_warehouse: dict[str, list[LineQuantity]] = {}
    consumed: dict[tuple[str, str], int] = {}
    taken: dict[tuple[str, str], int] = {}
    released: dict[tuple[str, str], int] = {}
    kept: dict[tuple[str, str], int] = {}
    backorders: list[LineQuantity] = []
    unfilled: list[LineQuantity] = []
    for line in lines:
        allocated = 0
        for warehouse in ranked:
            from_reservation, from_atp = filled.get((line.line_id, warehouse), (0, 0))
            if from_reservation + from_atp == 0:
                continue
            allocated += from_reservation + from_atp
            per_warehouse.setdefault(warehouse, []).append(
                LineQuantity(line.line_id, line.sku, from_reservation + from_atp)
            )
            if from_reservation:
                consumed[(line.line_id, warehouse)] = from_reservation
            if from_atp:
                key = (line.sku, warehouse)
                taken[key] = taken.get(key, 0) + from_atp
        # what the line's reservation does besides being consumed: kept (up to the open
        # quantity, best-ranked first) when SHIP_COMPLETE found no warehouse, else released
        keep_left = line.quantity if keep else 0
        held = holdings.get(line.line_id, {})
        for warehouse in sorted(held, key=lambda w: (w not in rank, rank.get(w, 0), w)):
            rest = held[warehouse] - consumed.get((line.line_id, warehouse), 0)
            keep_here = min(rest, keep_left)
            keep_left -= keep_here
            if keep_here:
                kept[(line.line_id, warehouse)] = keep_here
            if rest - keep_here:
                released[(line.line_id, warehouse)] = rest - keep_here
        kept_quantity = (line.quantity - keep_left) if keep else 0
        uncovered = line.quantity - allocated - kept_quantity
        if allow_backorder:
            if uncovered:
                backorders.append(LineQuantity(line.line_id, line.sku, uncovered))
            if kept_quantity:
                unfilled.append(LineQuantity(line.line_id, line.sku, kept_quantity))
        elif uncovered + kept_quantity:
            unfilled.append(LineQuantity(line.line_id, line.sku, uncovered + kept_quantity))
    return AllocationPlan(
        allocations=tuple(
            WarehouseAllocation(w, tuple(per_warehouse[w])) for w in ranked if w in per_warehouse
        ),
        consumed_reservation=consumed,
        taken_atp=taken,
        released_reservation=released,
        kept_reservation=kept,
        backorders=tuple(backorders),
        unfilled=tuple(unfilled),
    )


@dataclass(frozen=True)
class Substitution:
    """Quantity of a line allocated as a substitute SKU in one warehouse."""

    line_id: str
    warehouse: str
    sku: str  # the substitute
    substituted_for: str  # the SKU the line asked for
    quantity: int  # > 0


@dataclass(frozen=True)
class SubstitutionPlan:
    substitutions: tuple[Substitution, ...] = ()
    # what is still uncovered per line after substitution (quantity > 0 only)
    uncovered: tuple[LineQuantity, ...] = ()

    def taken_atp(self) -> dict[tuple[str, str], int]:
        """(substitute sku, warehouse) -> ATP taken."""
        taken: dict[tuple[str, str], int] = {}
        for sub in self.substitutions:
            key = (sub.sku, sub.warehouse)
            taken[key] = taken.get(key, 0) + sub.quantity
        return taken


def plan_substitutions(
    uncovered: Sequence[LineQuantity],
    substitutes: Mapping[str, Sequence[str]],
    available: Mapping[tuple[str, str], int],
    ranked: Sequence[str],
) -> SubstitutionPlan:
    """Cover what the ordered SKUs could not with their named substitutes: per line in
    order, each substitute in master-data order, from the best-ranked warehouses with ATP
    (negative ATP counts as 0). Lines share a substitute's ATP in line order. The caller
    passes only lines that allow substitution, and ATP net of what the plan already took."""
    left = {key: max(quantity, 0) for key, quantity in available.items()}
    substitutions: list[Substitution] = []
    still: list[LineQuantity] = []
    for line in uncovered:
        need = line.quantity
        for substitute in substitutes.get(line.sku, ()):
            if substitute == line.sku:
                continue
            for warehouse in ranked:
                if need == 0:
                    break
                take = min(need, left.get((substitute, warehouse), 0))
                if take > 0:
                    left[(substitute, warehouse)] -= take
                    need -= take
                    substitutions.append(
                        Substitution(line.line_id, warehouse, substitute, line.sku, take)
                    )
        if need > 0:
            still.append(LineQuantity(line.line_id, line.sku, need))
    return SubstitutionPlan(tuple(substitutions), tuple(still))


# --- promises, backorder ETAs and fills ------------------------------------------------------


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


@dataclass(frozen=True)
class Supply:
    """Incoming supply (purchase order line, transfer in transit) still expected."""

    supply_id: str
    sku: str
    warehouse: str
    quantity: int  # >= 0
    expected_at: datetime  # may be in the past: a late supply still counts

    def __post_init__(self) -> None:
        if self.quantity < 0:
            raise ValueError("supply quantity must be >= 0")
        _require_aware(self.expected_at, "expected_at")


def _supply_order(supplies: Iterable[Supply], ranked: Sequence[str]) -> list[Supply]:
    """Supplies at ranked warehouses with quantity, by expected_at, then rank, then id."""
    rank = {warehouse: i for i, warehouse in enumerate(ranked)}
    usable = [s for s in supplies if s.quantity > 0 and s.warehouse in rank]
    usable.sort(key=lambda s: (s.expected_at, rank[s.warehouse], s.supply_id, s.sku))
    return usable


class PromiseOutcome(Enum):
    AVAILABLE_NOW = 1
    PROMISED = 2
    CANNOT_PROMISE = 3


@dataclass(frozen=True)
class WarehouseQuantity:
    warehouse: str
    quantity: int


@dataclass(frozen=True)
class LinePromise:
    line_id: str
    sku: str
    requested_quantity: int
    available_now_quantity: int
    sources: tuple[WarehouseQuantity, ...]  # where available_now comes from, ranked order
    promised_quantity: int  # covered by incoming supply
    promised_at: datetime | None  # None iff promised_quantity == 0; never before `now`
    unpromisable_quantity: int
    outcome: PromiseOutcome


def promise_lines(
    lines: Sequence[Line],
    available: Mapping[tuple[str, str], int],
    supplies: Iterable[Supply],
    ranked: Sequence[str],
    now: datetime,
) -> list[LinePromise]:
    """Promise each line, in order, from ATP now then incoming supply; no stock is held.

    Lines of one SKU share ATP and supply: earlier lines take first. ATP is taken in ranked
    order; supply at ranked warehouses in expected_at order (then ranked order, then id).
    ``promised_at`` is the expected_at of the last supply needed, or ``now`` if that is
    earlier (an overdue supply is promised as due now). A line that cannot be fully covered
    is CANNOT_PROMISE but still takes (and reports) the partial stock and supply it found.
    """
    _require_aware(now, "now")
    if any(line.quantity < 0 for line in lines):
        raise ValueError("line quantities must be >= 0")
    atp_left: dict[tuple[str, str], int] = {}
    ordered = _supply_order(supplies, ranked)
    supply_left = [supply.quantity for supply in ordered]
    promises: list[LinePromise] = []
    for line in lines:
        need = line.quantity
        sources: list[WarehouseQuantity] = []
        for warehouse in ranked:
            if need == 0:
                break
            key = (line.sku, warehouse)
            left = atp_left.setdefault(key, max(available.get(key, 0), 0))
            take = min(need, left)
            if take > 0:
                atp_left[key] = left - take
                sources.append(WarehouseQuantity(warehouse, take))
                need -= take
        available_now = line.quantity - need
        last: datetime | None = None
        for i, supply in enumerate(ordered):
            if need == 0:
                break
            if supply.sku != line.sku or supply_left[i] == 0:
                continue
            take = min(need, supply_left[i])
            supply_left[i] -= take
            need -= take
            last = supply.expected_at
        promised = line.quantity - available_now - need
        if need:
            outcome = PromiseOutcome.CANNOT_PROMISE
        elif promised:
            outcome = PromiseOutcome.PROMISED
        else:
            outcome = PromiseOutcome.AVAILABLE_NOW
        promises.append(
            LinePromise(
                line_id=line.line_id,
                sku=line.sku,
                requested_quantity=line.quantity,
                available_now_quantity=available_now,
                sources=tuple(sources),
                promised_quantity=promised,
                promised_at=None if last is None else max(last, now),
                unpromisable_quantity=need,
                outcome=outcome,
            )
        )
    return promises


@dataclass(frozen=True)
class Backorder:
    """Open backorder: quantity of an order line waiting for supply."""

    backorder_id: str
    line_id: str
    sku: str
    quantity: int  # still waiting, > 0
    priority: int  # higher is filled first
    created_at: datetime  # older is filled first within a priority
    # Warehouses whose supply may fill it (the order's eligible ones); empty = any.
    warehouses: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("backorder quantity must be > 0")
        _require_aware(self.created_at, "created_at")

    def fill_key(self) -> tuple[int, datetime, str]:
        """Fill order: priority descending, then created_at ascending, then id."""
        return (-self.priority, self.created_at, self.backorder_id)

    def fillable_from(self, warehouse: str) -> bool:
        return not self.warehouses or warehouse in self.warehouses


class Eta(NamedTuple):
    expected_at: datetime
    warehouse: str


def backorder_etas(
    backorders: Sequence[Backorder], supplies: Iterable[Supply], ranked: Sequence[str]
) -> dict[str, Eta | None]:
    """ETA of every backorder: the supply that completes it when backorders take incoming
    supply in fill order (priority, age, id), each from the earliest remaining supply of its
    SKU at ranked warehouses it may be filled from (expected_at, then rank, then id).

    A backorder that the known supply cannot complete gets None, but still takes what it
    found, as it would on receipt (:func:`fill_backorders` fills it partially first). The ETA
    equals the moment the backorder would be completed if every supply arrived on time and
    were filled by :func:`fill_backorders`. Overdue supplies keep their past expected_at.
    """
    if len({b.backorder_id for b in backorders}) != len(backorders):
        raise ValueError("backorder ids must be distinct")
    ordered = _supply_order(supplies, ranked)
    supply_left = [supply.quantity for supply in ordered]
    etas: dict[str, Eta | None] = {}
    for backorder in sorted(backorders, key=Backorder.fill_key):
        need = backorder.quantity
        eta: Eta | None = None
        for i, supply in enumerate(ordered):
            if (
                supply.sku != backorder.sku
                or supply_left[i] == 0
                or not backorder.fillable_from(supply.warehouse)
            ):
                continue
            take = min(need, supply_left[i])
            supply_left[i] -= take
            need -= take
            if need == 0:
                eta = Eta(supply.expected_at, supply.warehouse)
                break
        etas[backorder.backorder_id] = eta
    return etas


def fill_backorders(
    backorders: Iterable[Backorder], sku: str, warehouse: str, received_quantity: int
) -> list[tuple[str, int]]:
    """Fill open backorders of ``sku`` that may be filled from ``warehouse`` with a receipt,
    by priority then age (then id); the last one filled may be partial. Returns
    (backorder_id, quantity) in fill order, quantities > 0, total <= received_quantity."""
    if received_quantity < 0:
        raise ValueError("received quantity must be >= 0")
    left = received_quantity
    fills: list[tuple[str, int]] = []
    candidates = [b for b in backorders if b.sku == sku and b.fillable_from(warehouse)]
    for backorder in sorted(candidates, key=Backorder.fill_key):
        if left == 0:
            break
        take = min(left, backorder.quantity)
        fills.append((backorder.backorder_id, take))
        left -= take
    return fills
