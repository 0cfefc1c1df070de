"""Real Postgres and NATS JetStream for the whole test session.

By default both are embedded (pip wheels) on free ports in a temporary directory. Setting
``DWF_DATABASE_URL`` (a role that may create databases and roles) and/or ``DWF_NATS_URL`` runs
the same tests against those servers instead; nothing here ever falls back to an in-memory
stand-in, and a server that cannot start fails the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chassis import db
from chassis.config import SERVICE_NAMES
from chassis.migrations import upgrade
from chassis.telemetry import configure_tracing
from stack.natsd import ADMIN_USER, EmbeddedNats
from stack.postgres import EmbeddedPostgres
from stack.provision import provision

SPANS = InMemorySpanExporter()
configure_tracing("dwf-tests", SimpleSpanProcessor(SPANS))


@dataclass(frozen=True)
class NatsServer:
    url: str
    admin_user: str | None
    admin_password: str | None
    embedded: EmbeddedNats | None

    def service_credentials(self, service: str) -> tuple[str | None, str | None]:
        if self.embedded is None:
            return None, None
        creds = self.embedded.credentials[service]
        return creds.user, creds.password


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the embedded Postgres runs as another user and must reach it.
    path = Path(tempfile.mkdtemp(prefix="dwf-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url(scratch_dir: Path) -> Iterator[str]:
    external = os.environ.get("DWF_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(scratch_dir / "postgres", fast=True)
    server.start()
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server(scratch_dir: Path) -> Iterator[NatsServer]:
    external = os.environ.get("DWF_NATS_URL")
    if external:
        yield NatsServer(external, None, None, None)
        return
    server = EmbeddedNats(scratch_dir / "nats")
    server.start()
    admin = server.credentials[ADMIN_USER]
    try:
        yield NatsServer(server.url, admin.user, admin.password, server)
    finally:
        server.stop()


@dataclass(frozen=True)
class Databases:
    admin_url: str
    name: str
    service_urls: dict[str, str]


@pytest.fixture(scope="session")
async def databases(postgres_admin_url: str) -> Databases:
    """A fresh database with one schema + role per service, migrated to head."""
    name = f"dwf_test_{uuid.uuid4().hex[:8]}"
    prefix = f"dwft{uuid.uuid4().hex[:6]}_"
    urls = await provision(postgres_admin_url, name, role_prefix=prefix)
    for service in SERVICE_NAMES:
        engine = db.create_engine(urls[service], service, application_name="dwf-test-migrate")
        try:
            await upgrade(engine, service, service)
        finally:
            await engine.dispose()
    return Databases(postgres_admin_url, name, urls)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS


@pytest.fixture
async def nats_admin(nats_server: NatsServer) -> AsyncIterator[object]:
    import nats

    client = await nats.connect(
        nats_server.url, user=nats_server.admin_user, password=nats_server.admin_password
    )
    try:
        yield client
    finally:
        await client.close()
