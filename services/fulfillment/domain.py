"""Pure domain core of the fulfillment service: no I/O, unit- and property-tested.

* Line book-keeping of an order's workflow: what was ordered, allocated, released, shipped,
  canceled and invoiced per line, and when the order is complete.
* Retry schedule (exponential backoff with full jitter) and the safe actions of each
  exception category.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

MAX_BACKOFF_SECONDS = 300.0


class Category(StrEnum):
    RETRYABLE = "RETRYABLE"
    DEPENDENCY = "DEPENDENCY"
    DATA_QUALITY = "DATA_QUALITY"
    BUSINESS_RULE = "BUSINESS_RULE"


class Action(StrEnum):
    RETRY = "RETRY"
    FIX_DATA_AND_RETRY = "FIX_DATA_AND_RETRY"
    CANCEL = "CANCEL"
    OVERRIDE = "OVERRIDE"


SAFE_ACTIONS: Mapping[Category, tuple[Action, ...]] = {
    # Retried on schedule without an operator; an operator may also retry now or cancel.
    Category.RETRYABLE: (Action.RETRY, Action.CANCEL),
    Category.DEPENDENCY: (Action.RETRY, Action.CANCEL),
    # Retrying the same payload would fail the same way.
    Category.DATA_QUALITY: (Action.FIX_DATA_AND_RETRY, Action.CANCEL),
    Category.BUSINESS_RULE: (Action.RETRY, Action.CANCEL, Action.OVERRIDE),
}


def retried_automatically(category: Category) -> bool:
    return category in (Category.RETRYABLE, Category.DEPENDENCY)


def backoff_seconds(
    attempts: int,
    base: float = 1.0,
    cap: float = MAX_BACKOFF_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempts-1))], never below 10% of it."""
    ceiling = min(cap, base * (2 ** max(attempts - 1, 0)))
    draw = (rng or random).uniform(0.1 * ceiling, ceiling)
    return draw


@dataclass(frozen=True)
class LineState:
    sku: str
    ordered: int
    allocated: int = 0
    released: int = 0
    shipped: int = 0
    canceled: int = 0
    invoiced: int = 0
    returned: int = 0  # received back and credited

    @property
    def open(self) -> int:
        """Still to ship: ordered minus canceled minus shipped."""
        return max(self.ordered - self.canceled - self.shipped, 0)


Lines = dict[str, LineState]


def lines_from_json(document: Mapping[str, Mapping[str, object]]) -> Lines:
    return {line_id: LineState(**values) for line_id, values in document.items()}  # type: ignore[arg-type]


def lines_to_json(lines: Lines) -> dict[str, dict[str, object]]:
    return {line_id: asdict(state) for line_id, state in lines.items()}


def add(lines: Lines, field: str, quantities: Iterable[tuple[str, int]]) -> Lines:
    """Add quantities to one counter; unknown lines are ignored, counters capped at ordered."""
    updated = dict(lines)
    for line_id, quantity in quantities:
        state = updated.get(line_id)
        if state is None or quantity <= 0:
            continue
        value = min(getattr(state, field) + quantity, state.ordered)
        updated[line_id] = replace(state, **{field: value})
    return updated


def subtract(lines: Lines, field: str, quantities: Iterable[tuple[str, int]]) -> Lines:
    """Take quantities off one counter (e.g. a rejected release); never below zero."""
    updated = dict(lines)
    for line_id, quantity in quantities:
        state = updated.get(line_id)
        if state is None or quantity <= 0:
            continue
        updated[line_id] = replace(state, **{field: max(getattr(state, field) - quantity, 0)})
    return updated


def fully_shipped(lines: Lines) -> bool:
    """Every line shipped or canceled, and something shipped."""
    return all(state.open == 0 for state in lines.values()) and any(
        state.shipped > 0 for state in lines.values()
    )


def fully_canceled(lines: Lines) -> bool:
    return all(state.canceled >= state.ordered for state in lines.values())


def fully_returned(lines: Lines) -> bool:
    """RETURNED: everything shipped came back and was credited."""
    return any(s.shipped > 0 for s in lines.values()) and all(
        s.returned >= s.shipped for s in lines.values()
    )


def complete(lines: Lines, shipments: int, invoiced_shipments: int) -> bool:
    """COMPLETED: nothing left to ship and every shipment invoiced."""
    return fully_shipped(lines) and shipments > 0 and invoiced_shipments >= shipments
