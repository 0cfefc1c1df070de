"""Pure domain core of the order_gateway service: no I/O, unit- and property-tested.

* Master data: a snapshot of channels, items, unit conversions and aliases, with the
  resolution rules (channel SKU → SKU, channel unit → canonical unit → base quantity).
* Availability: the verdict for a requested quantity from read-model positions.
* Rate limiting: a token bucket per channel.
* Identities: order ids derived from the channel key, so every replica and every retry
  names the same order the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

BASE_UNIT = "EA"
MAX_LINES = 1000
MAX_CHECK_ITEMS = 500
MAX_HOLD_TTL_SECONDS = 3600
MAX_HOLD_LIFE_SECONDS = 2 * 3600
DEFAULT_HOLD_TTL_SECONDS = 900
ORDER_NAMESPACE = uuid.UUID("6f1c8f0e-3f0b-4d57-9a8e-0b7f4d1f2a10")
ADMIN_SCOPE = "admin"
CHANNEL_SCOPE = "channel"


class BackorderPolicy(StrEnum):
    BACKORDER = "BACKORDER"  # accept what cannot be reserved as backorder
    REFUSE = "REFUSE"  # refuse the order when any line is short


@dataclass(frozen=True)
class Channel:
    channel_id: str
    name: str = ""
    backorder_policy: BackorderPolicy = BackorderPolicy.BACKORDER
    default_hold_ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS
    warehouses: tuple[str, ...] = ()  # empty = every warehouse
    status_vocabulary: Mapping[str, str] = field(default_factory=dict)
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 200
    token_secret: str | None = None
    default_customer_id: str = ""


@dataclass(frozen=True)
class Principal:
    """Who is calling: one channel, or an operator with the admin scope (any channel)."""

    credential_id: str
    channel_id: str | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def may_act_for(self, channel_id: str) -> bool:
        return self.is_admin or (CHANNEL_SCOPE in self.scopes and self.channel_id == channel_id)


@dataclass(frozen=True)
class MasterData:
    channels: Mapping[str, Channel] = field(default_factory=dict)
    skus: frozenset[str] = frozenset()
    # (sku, canonical unit) → base units per unit; EA is always 1.
    conversions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (channel, channel unit code) → canonical unit code.
    channel_units: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # (channel, channel SKU) → canonical SKU.
    sku_aliases: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # (channel, channel customer id) → canonical customer id.
    customer_aliases: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def resolve_sku(self, channel_id: str, sku: str, channel_sku: str) -> str | None:
        """The canonical SKU of a line: ``sku`` when given, else the channel's alias; a
        channel SKU that is already canonical resolves to itself."""
        if sku:
            return sku if sku in self.skus else None
        alias = self.sku_aliases.get((channel_id, channel_sku))
        if alias is not None:
            return alias if alias in self.skus else None
        return channel_sku if channel_sku in self.skus else None

    def canonical_unit(self, channel_id: str, unit: str) -> str:
        unit = unit.strip().upper() or BASE_UNIT
        return self.channel_units.get((channel_id, unit), unit)

    def factor(self, sku: str, canonical_unit: str) -> int | None:
        if canonical_unit == BASE_UNIT:
            return 1
        return self.conversions.get((sku, canonical_unit))

    def customer_id(self, channel_id: str, channel_customer_id: str) -> str:
        return self.customer_aliases.get((channel_id, channel_customer_id), "")


def order_id_for(channel_id: str, channel_order_id: str) -> str:
    """dwf order id of a channel order: the same on every replica and every retry, so two
    concurrent submissions of one purchase can only ever name one order."""
    return str(uuid.uuid5(ORDER_NAMESPACE, f"{channel_id}\x1f{channel_order_id}"))


def derived_request_id(request_id: str, purpose: str) -> str:
    """request_id of a call made on behalf of ``request_id`` (a retry replays, never repeats)."""
    return str(uuid.uuid5(uuid.UUID(request_id), purpose))


# --- availability -------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """One read-model row: a SKU's numbers in one warehouse."""

    sku: str
    warehouse: str
    available: int
    incoming: int
    as_of: datetime


class Verdict(StrEnum):
    IN_STOCK = "IN_STOCK"
    BACKORDERABLE = "BACKORDERABLE"
    OUT_OF_STOCK = "OUT_OF_STOCK"


@dataclass(frozen=True)
class ItemVerdict:
    available: int
    incoming: int
    verdict: Verdict


def eligible(positions: Iterable[Position], warehouses: tuple[str, ...]) -> list[Position]:
    allowed = set(warehouses)
    return [p for p in positions if not allowed or p.warehouse in allowed]


def judge(requested: int, positions: Iterable[Position]) -> ItemVerdict:
    """Availability verdict from the channel's eligible positions; a negative available
    (after a drift correction) counts as 0."""
    rows = list(positions)
    available = sum(max(p.available, 0) for p in rows)
    incoming = sum(max(p.incoming, 0) for p in rows)
    if available >= requested:
        verdict = Verdict.IN_STOCK
    elif available + incoming >= requested:
        verdict = Verdict.BACKORDERABLE
    else:
        verdict = Verdict.OUT_OF_STOCK
    return ItemVerdict(available, incoming, verdict)


# --- rate limiting -------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 when allowed, else the seconds until it would be."""
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate
