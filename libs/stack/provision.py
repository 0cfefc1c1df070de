"""Database provisioning: one database for dwf, one schema and one role per service.

A service's role owns its schema and nothing else: PUBLIC loses its default rights on the
database and on ``public``, so a role touching another service's schema gets "permission
denied". Safe to run repeatedly and concurrently (an advisory lock serialises it).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable

import asyncpg
from sqlalchemy.engine import URL, make_url

from chassis.config import SERVICE_NAMES


def asyncpg_dsn(url: str | URL, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def service_url(admin_url: str, database: str, role: str, password: str) -> str:
    return (
        make_url(admin_url)
        .set(drivername="postgresql+asyncpg", username=role, password=password, database=database)
        .render_as_string(hide_password=False)
    )


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe SQL identifier {name!r}")
    return f'"{name}"'


async def ensure_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # created concurrently
                await conn.execute(f"CREATE DATABASE {_ident(database)}")
    finally:
        await conn.close()


async def provision(
    admin_url: str,
    database: str,
    *,
    services: Iterable[str] = SERVICE_NAMES,
    role_prefix: str = "dwf_",
    passwords: dict[str, str] | None = None,
) -> dict[str, str]:
    """Create/refresh roles and schemas; return each service's own database URL."""
    await ensure_database(admin_url, database)
    passwords = dict(passwords or {})
    urls: dict[str, str] = {}
    conn = await asyncpg.connect(asyncpg_dsn(admin_url, database))
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dwf-provision'))")
            await conn.execute(f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC")
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            for service in services:
                role = f"{role_prefix}{service}"
                password = passwords.setdefault(service, secrets.token_urlsafe(24))
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                verb = "ALTER" if exists else "CREATE"
                # Passwords cannot be bound parameters in DDL; token_urlsafe has no quotes.
                await conn.execute(
                    f"{verb} ROLE {_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    f"PASSWORD '{password}'"
                )
                await conn.execute(
                    f"GRANT CONNECT ON DATABASE {_ident(database)} TO {_ident(role)}"
                )
                await conn.execute(
                    f"CREATE SCHEMA IF NOT EXISTS {_ident(service)} AUTHORIZATION {_ident(role)}"
                )
                await conn.execute(f"ALTER SCHEMA {_ident(service)} OWNER TO {_ident(role)}")
                await conn.execute(
                    f"ALTER ROLE {_ident(role)} IN DATABASE {_ident(database)} "
                    f"SET search_path = {_ident(service)}"
                )
                urls[service] = service_url(admin_url, database, role, password)
    finally:
        await conn.close()
    return urls
