"""Gateway master data: channels, credentials, items and units, SKU/customer aliases.

One document format (JSON or YAML; docs/order_gateway.md) serves the files, the CLI
(``dwf gateway-load``) and the ApplyMasterData RPC. Loading upserts: what a document does not
mention is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.order_gateway.domain import (
    BASE_UNIT,
    BackorderPolicy,
    Channel,
    MasterData,
    Principal,
)
from services.order_gateway.store.tables import (
    channel,
    channel_unit,
    credential,
    customer_alias,
    item,
    sku_alias,
    unit_conversion,
)

SECTIONS = ("channels", "items", "credentials")


class MasterDataError(ValueError):
    """A document that cannot be loaded; ``path`` names the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _text(row: Mapping[str, Any], key: str, path: str, required: bool = True) -> str:
    value = row.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise MasterDataError(f"{path}.{key}", "required non-empty string")
    return value.strip()


def validate(document: Mapping[str, Any]) -> None:
    """Every problem is caught before anything is written (the loader runs in one tx)."""
    if not isinstance(document, Mapping):
        raise MasterDataError("", "a mapping with channels / items / credentials")
    unknown = set(document) - set(SECTIONS)
    if unknown:
        raise MasterDataError(sorted(unknown)[0], "unknown section")
    for section in SECTIONS:
        if not isinstance(document.get(section, []), list):
            raise MasterDataError(section, "must be a list")
    for i, row in enumerate(document.get("channels", [])):
        path = f"channels[{i}]"
        _text(row, "channel_id", path)
        policy = row.get("backorder_policy", "BACKORDER")
        if policy not in BackorderPolicy.__members__:
            raise MasterDataError(f"{path}.backorder_policy", "BACKORDER or REFUSE")
        ttl = row.get("default_hold_ttl_seconds", 900)
        if not isinstance(ttl, int) or not 1 <= ttl <= 3600:
            raise MasterDataError(f"{path}.default_hold_ttl_seconds", "1..3600")
        for key in ("rate_limit_per_second", "rate_limit_burst"):
            value = row.get(key, 1)
            if not isinstance(value, int | float) or value <= 0:
                raise MasterDataError(f"{path}.{key}", "must be > 0")
        secret = row.get("token_secret")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 32):
            raise MasterDataError(f"{path}.token_secret", "at least 32 characters (HS256)")
        for key in ("units", "sku_aliases", "customer_aliases", "status_vocabulary"):
            mapping = row.get(key, {})
            if not isinstance(mapping, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()
            ):
                raise MasterDataError(f"{path}.{key}", "a mapping of non-empty strings")
    for i, row in enumerate(document.get("items", [])):
        path = f"items[{i}]"
        _text(row, "sku", path)
        for unit, factor in dict(row.get("units", {})).items():
            if not isinstance(factor, int) or factor <= 0 or isinstance(factor, bool):
                raise MasterDataError(f"{path}.units.{unit}", "a whole number > 0")
            if unit.upper() == BASE_UNIT and factor != 1:
                raise MasterDataError(f"{path}.units.{unit}", "EA is the base unit (1)")
    for i, row in enumerate(document.get("credentials", [])):
        path = f"credentials[{i}]"
        _text(row, "credential_id", path)
        if not (row.get("api_key") or row.get("key_sha256")):
            raise MasterDataError(f"{path}.api_key", "api_key or key_sha256 required")
        scopes = row.get("scopes", ["channel"])
        if not isinstance(scopes, list) or not set(scopes) <= {"channel", "admin"}:
            raise MasterDataError(f"{path}.scopes", "a list of 'channel' and/or 'admin'")
        if "channel" in scopes and not row.get("channel_id"):
            raise MasterDataError(f"{path}.channel_id", "required for the channel scope")


async def load_master_data(session: AsyncSession, document: Mapping[str, Any]) -> dict[str, int]:
    """Validate, then upsert every section present; returns the row count per section."""
    validate(document)
    for row in document.get("channels", []):
        channel_id = row["channel_id"].strip()
        values = {
            "channel_id": channel_id,
            "name": row.get("name", ""),
            "backorder_policy": row.get("backorder_policy", "BACKORDER"),
            "default_hold_ttl_seconds": int(row.get("default_hold_ttl_seconds", 900)),
            "warehouses": list(row.get("warehouses", [])),
            "status_vocabulary": dict(row.get("status_vocabulary", {})),
            "rate_limit_per_second": float(row.get("rate_limit_per_second", 100)),
            "rate_limit_burst": int(row.get("rate_limit_burst", 200)),
            "token_secret": row.get("token_secret"),
            "updated_at": func.now(),
        }
        await session.execute(
            insert(channel)
            .values(**values)
            .on_conflict_do_update(index_elements=["channel_id"], set_=values)
        )
        await _upsert_pairs(
            session,
            channel_unit,
            ["channel_id", "channel_unit"],
            "unit_of_measure",
            [(channel_id, k.upper(), v.upper()) for k, v in row.get("units", {}).items()],
        )
        await _upsert_pairs(
            session,
            sku_alias,
            ["channel_id", "channel_sku"],
            "sku",
            [(channel_id, k, v) for k, v in row.get("sku_aliases", {}).items()],
        )
        await _upsert_pairs(
            session,
            customer_alias,
            ["channel_id", "channel_customer_id"],
            "customer_id",
            [(channel_id, k, v) for k, v in row.get("customer_aliases", {}).items()],
        )
    for row in document.get("items", []):
        sku = row["sku"].strip()
        values = {"sku": sku, "description": row.get("description", "")}
        await session.execute(
            insert(item).values(**values).on_conflict_do_update(index_elements=["sku"], set_=values)
        )
        await _upsert_pairs(
            session,
            unit_conversion,
            ["sku", "unit_of_measure"],
            "factor",
            [(sku, unit.upper(), factor) for unit, factor in row.get("units", {}).items()],
        )
    for row in document.get("credentials", []):
        digest = row.get("key_sha256") or key_digest(row["api_key"])
        values = {
            "key_sha256": digest,
            "credential_id": row["credential_id"],
            "channel_id": row.get("channel_id"),
            "scopes": list(row.get("scopes", ["channel"])),
            "revoked": bool(row.get("revoked", False)),
        }
        await session.execute(
            insert(credential)
            .values(**values)
            .on_conflict_do_update(index_elements=["credential_id"], set_=values)
        )
    return {section: len(document.get(section, [])) for section in SECTIONS}


async def _upsert_pairs(
    session: AsyncSession,
    table: Any,
    keys: list[str],
    value_column: str,
    rows: Sequence[tuple[Any, Any, Any]],
) -> None:
    if not rows:
        return
    statement = insert(table).values(
        [dict(zip([*keys, value_column], r, strict=True)) for r in rows]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=keys, set_={value_column: statement.excluded[value_column]}
        )
    )


async def read_master_data(connection: AsyncConnection | AsyncSession) -> MasterData:
    channels = {
        row.channel_id: Channel(
            channel_id=row.channel_id,
            name=row.name,
            backorder_policy=BackorderPolicy(row.backorder_policy),
            default_hold_ttl_seconds=row.default_hold_ttl_seconds,
            warehouses=tuple(row.warehouses),
            status_vocabulary=dict(row.status_vocabulary),
            rate_limit_per_second=row.rate_limit_per_second,
            rate_limit_burst=row.rate_limit_burst,
            token_secret=row.token_secret,
        )
        for row in (await connection.execute(select(channel))).all()
    }
    skus = frozenset((await connection.execute(select(item.c.sku))).scalars())
    conversions = {
        (r.sku, r.unit_of_measure): r.factor
        for r in (await connection.execute(select(unit_conversion))).all()
    }
    units = {
        (r.channel_id, r.channel_unit): r.unit_of_measure
        for r in (await connection.execute(select(channel_unit))).all()
    }
    aliases = {
        (r.channel_id, r.channel_sku): r.sku
        for r in (await connection.execute(select(sku_alias))).all()
    }
    customers = {
        (r.channel_id, r.channel_customer_id): r.customer_id
        for r in (await connection.execute(select(customer_alias))).all()
    }
    return MasterData(channels, skus, conversions, units, aliases, customers)


async def principal_for_key(
    connection: AsyncConnection | AsyncSession, api_key: str
) -> Principal | None:
    row = (
        await connection.execute(
            select(credential).where(
                credential.c.key_sha256 == key_digest(api_key), credential.c.revoked.is_(False)
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return Principal(row.credential_id, row.channel_id, frozenset(row.scopes))


def master_data_json(data: MasterData) -> str:
    """The snapshot as a document (secrets left out), for GetMasterData and the CLI."""
    channels = []
    for ch in sorted(data.channels.values(), key=lambda c: c.channel_id):
        channels.append(
            {
                "channel_id": ch.channel_id,
                "name": ch.name,
                "backorder_policy": ch.backorder_policy.value,
                "default_hold_ttl_seconds": ch.default_hold_ttl_seconds,
                "warehouses": list(ch.warehouses),
                "status_vocabulary": dict(ch.status_vocabulary),
                "rate_limit_per_second": ch.rate_limit_per_second,
                "rate_limit_burst": ch.rate_limit_burst,
                "signed_tokens": ch.token_secret is not None,
                "units": {
                    u: c for (cid, u), c in data.channel_units.items() if cid == ch.channel_id
                },
                "sku_aliases": {
                    s: k for (cid, s), k in data.sku_aliases.items() if cid == ch.channel_id
                },
                "customer_aliases": {
                    s: k for (cid, s), k in data.customer_aliases.items() if cid == ch.channel_id
                },
            }
        )
    items = [
        {
            "sku": sku,
            "units": {u: f for (s, u), f in sorted(data.conversions.items()) if s == sku},
        }
        for sku in sorted(data.skus)
    ]
    return json.dumps({"channels": channels, "items": items}, sort_keys=True)
