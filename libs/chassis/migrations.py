"""Alembic, run per service as the service's own role, inside its schema.

Each service keeps its revisions in ``services/<name>/store/migrations``; its ``env.py`` is
two lines calling :func:`run_env`. Concurrent runs (several replicas or Jobs) serialise on an
advisory lock, so exactly one applies each revision.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.schema import metadata as chassis_metadata


def migrations_dir(service: str) -> Path:
    package = importlib.import_module(f"services.{service}")
    assert package.__file__ is not None
    return Path(package.__file__).parent / "store" / "migrations"


def alembic_config(service: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir(service)))
    cfg.attributes["schema"] = schema
    return cfg


def run_env() -> None:
    """Body of every service's ``env.py`` (online mode only: we always have a connection)."""
    connection: Connection = context.config.attributes["connection"]
    schema: str = context.config.attributes["schema"]
    context.configure(
        connection=connection,
        target_metadata=chassis_metadata,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def upgrade(engine: AsyncEngine, service: str, schema: str, revision: str = "head") -> None:
    cfg = alembic_config(service, schema)

    def _run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"dwf-migrate:{schema}"}
        )
        await conn.run_sync(_run)
