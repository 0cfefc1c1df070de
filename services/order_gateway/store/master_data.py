"""Gateway master data: channels, credentials, items and units, SKU/customer aliases.

One document format (JSON or YAML; docs/order_gateway.md) serves the files, the CLI
(``dwf gateway-load``) and the ApplyMasterData RPC. Loading upserts: what a document does not
mention is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    ValidationError,
)
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


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ChannelDoc(_Strict):
    channel_id: NonEmpty
    name: str = ""
    backorder_policy: Literal["BACKORDER", "REFUSE"] = "BACKORDER"
    default_hold_ttl_seconds: int = Field(900, ge=1, le=3600)
    warehouses: list[NonEmpty] = []
    status_vocabulary: dict[NonEmpty, NonEmpty] = {}
    rate_limit_per_second: float = Field(100.0, gt=0)
    rate_limit_burst: int = Field(200, ge=1)
    token_secret: Annotated[str, StringConstraints(min_length=32)] | None = None
    default_customer_id: str = ""
    units: dict[NonEmpty, NonEmpty] = {}
    sku_aliases: dict[NonEmpty, NonEmpty] = {}
    customer_aliases: dict[NonEmpty, NonEmpty] = {}


class ItemDoc(_Strict):
    sku: NonEmpty
    description: str = ""
    units: dict[NonEmpty, PositiveInt] = {}


class CredentialDoc(_Strict):
    credential_id: NonEmpty
    channel_id: NonEmpty | None = None
    api_key: Annotated[str, StringConstraints(min_length=16)] | None = None
    key_sha256: Annotated[str, StringConstraints(pattern="^[0-9a-f]{64}$")] | None = None
    scopes: list[Literal["channel", "admin"]] = ["channel"]
    revoked: bool = False


class MasterDataDocument(_Strict):
    channels: list[ChannelDoc] = []
    items: list[ItemDoc] = []
    credentials: list[CredentialDoc] = []


def _path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validate(document: Any) -> MasterDataDocument:
    """The whole document, checked before anything is written (the loader runs in one tx)."""
    try:
        parsed = MasterDataDocument.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MasterDataError(_path(tuple(first["loc"])), first["msg"]) from exc
    for i, row in enumerate(parsed.items):
        for unit, factor in row.units.items():
            if unit.upper() == BASE_UNIT and factor != 1:
                raise MasterDataError(f"items[{i}].units.{unit}", "EA is the base unit (1)")
    for i, cred in enumerate(parsed.credentials):
        if (cred.api_key is None) == (cred.key_sha256 is None):
            raise MasterDataError(f"credentials[{i}].api_key", "api_key or key_sha256, one of")
        if "channel" in cred.scopes and cred.channel_id is None:
            raise MasterDataError(f"credentials[{i}].channel_id", "required for the channel scope")
    return parsed


async def load_master_data(session: AsyncSession, document: Any) -> dict[str, int]:
    """Validate, then upsert every entry; returns the count per section. A channel entry
    changes only the fields it names (an alias can be added without restating the rest)."""
    parsed = validate(document)
    for ch in parsed.channels:
        row = ch.model_dump(exclude={"units", "sku_aliases", "customer_aliases"})
        given = ch.model_fields_set - {"units", "sku_aliases", "customer_aliases"}
        await session.execute(
            insert(channel)
            .values(**row)
            .on_conflict_do_update(
                index_elements=["channel_id"],
                set_={**{k: row[k] for k in given}, "updated_at": func.now()},
            )
        )
        await _upsert_pairs(
            session,
            channel_unit,
            ["channel_id", "channel_unit"],
            "unit_of_measure",
            [(ch.channel_id, k.upper(), v.upper()) for k, v in ch.units.items()],
        )
        await _upsert_pairs(
            session,
            sku_alias,
            ["channel_id", "channel_sku"],
            "sku",
            [(ch.channel_id, k, v) for k, v in ch.sku_aliases.items()],
        )
        await _upsert_pairs(
            session,
            customer_alias,
            ["channel_id", "channel_customer_id"],
            "customer_id",
            [(ch.channel_id, k, v) for k, v in ch.customer_aliases.items()],
        )
    for it in parsed.items:
        described = {"sku": it.sku, "description": it.description}
        await session.execute(
            insert(item)
            .values(**described)
            .on_conflict_do_update(index_elements=["sku"], set_=described)
        )
        await _upsert_pairs(
            session,
            unit_conversion,
            ["sku", "unit_of_measure"],
            "factor",
            [(it.sku, unit.upper(), factor) for unit, factor in it.units.items()],
        )
    for cred in parsed.credentials:
        values: dict[str, Any] = {
            "key_sha256": cred.key_sha256 or key_digest(cred.api_key or ""),
            "credential_id": cred.credential_id,
            "channel_id": cred.channel_id,
            "scopes": list(cred.scopes),
            "revoked": cred.revoked,
        }
        await session.execute(
            insert(credential)
            .values(**values)
            .on_conflict_do_update(index_elements=["credential_id"], set_=values)
        )
    return {
        "channels": len(parsed.channels),
        "items": len(parsed.items),
        "credentials": len(parsed.credentials),
    }


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
            default_customer_id=row.default_customer_id,
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
                "default_customer_id": ch.default_customer_id,
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
