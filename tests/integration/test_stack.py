"""The local stack as `dwf up` runs it: four service processes on real Postgres + NATS, and
the ERP, WMS and carrier sandboxes fulfillment talks to.

One test gives the stack *external* servers (DWF_DATABASE_URL / DWF_NATS_URL: the session's
servers, or this machine's when `make test-external` points the session at them); the other
lets it start its own embedded ones. Both end with every service SERVING and listed by
reflection through grpcurl, and every sandbox healthy, guarding its API with the token
fulfillment was given.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from chassis.config import SERVICE_NAMES
from stack.ports import free_port
from stack.scenario import check_services
from stack.supervisor import SANDBOX_NAMES, Stack, StackSettings, health_status
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration

GRPC_SERVICES = {
    "order_gateway": "dwf.order.v1.OrderGatewayService",
    "inventory": "dwf.inventory.v1.InventoryService",
    "fulfillment": "dwf.fulfillment.v1.FulfillmentService",
    "notifications": "dwf.notifications.v1.NotificationService",
}


def _ports() -> dict[str, int]:
    return {f"{name}_port": free_port() for name in SERVICE_NAMES}


def _grpcurl() -> str:
    found = Path(sys.executable).parent / "grpcurl"
    return str(found) if found.exists() else str(shutil.which("grpcurl"))


async def _assert_all_serving(stack: Stack) -> None:
    checks = await check_services({n: s.address for n, s in stack.services.items()})
    assert {c.service: c.health for c in checks} == dict.fromkeys(SERVICE_NAMES, "SERVING")
    for name, service in stack.services.items():
        completed = await asyncio.to_thread(
            subprocess.run,
            [_grpcurl(), "-plaintext", service.address, "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        listed = completed.stdout.split()
        assert GRPC_SERVICES[name] in listed
        assert "grpc.health.v1.Health" in listed


async def _assert_sandboxes_up(stack: Stack) -> None:
    assert set(stack.sandbox_urls) == set(SANDBOX_NAMES)
    fulfillment = stack.service_env("fulfillment")
    probes = {
        "erp": "/api/v1/sales-orders?external_reference=none",
        "wms": "/api/v1/events?limit=1",
        "carrier": "/api/v1/tracking/1Z0000000000000000",
    }
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        for name, url in stack.sandbox_urls.items():
            assert fulfillment[f"DWF_FULFILLMENT_{name.upper()}_URL"] == url
            token = fulfillment[f"DWF_FULFILLMENT_{name.upper()}_TOKEN"]
            assert token == stack.sandbox_tokens[name]
            health = await client.get(f"{url}/_admin/health")
            assert (health.status_code, health.json()) == (200, {"ok": True})
            assert (await client.get(url + probes[name])).status_code == 401
            authorized = {"authorization": f"Bearer {token}"}
            assert (await client.get(url + probes[name], headers=authorized)).status_code == 200


@pytest.fixture
async def external_stack(
    postgres_admin_url: str, nats_server: NatsServer, scratch_dir: Path
) -> AsyncIterator[Stack]:
    nats_url = nats_server.url
    if nats_server.admin_user:
        parsed = make_url(nats_url.replace("nats://", "postgresql://"))  # reuse a URL parser
        nats_url = (
            f"nats://{nats_server.admin_user}:{nats_server.admin_password}"
            f"@{parsed.host}:{parsed.port}"
        )
    settings = StackSettings(
        data_dir=scratch_dir / f"stack-ext-{uuid.uuid4().hex[:6]}",
        database_url=postgres_admin_url,
        nats_url=nats_url,
        database_name=f"dwf_stack_{uuid.uuid4().hex[:8]}",
        db_role_prefix=f"dwfs{uuid.uuid4().hex[:6]}_",
        **_ports(),
    )
    stack = Stack(settings)
    try:
        await stack.up()
        yield stack
    finally:
        stack.down()


async def test_stack_on_external_servers_serves_all_four(external_stack: Stack) -> None:
    assert external_stack.postgres is None and external_stack.nats is None
    await _assert_all_serving(external_stack)
    await _assert_sandboxes_up(external_stack)


async def test_stack_with_embedded_servers_serves_all_four_and_stops_cleanly(
    scratch_dir: Path,
) -> None:
    stack = Stack(
        StackSettings(
            data_dir=scratch_dir / "stack-embedded", database_url=None, nats_url=None, **_ports()
        )
    )
    try:
        await stack.up()
        assert stack.postgres is not None and stack.nats is not None
        await _assert_all_serving(stack)
        await _assert_sandboxes_up(stack)
    finally:
        stack.down()
    for service in stack.services.values():
        assert service.process.returncode == 0, service.log_file.read_text()[-2000:]
        assert await health_status(service.address) == "UNREACHABLE"
    for sandbox in stack.sandbox_processes.values():
        assert sandbox.process.returncode is not None, sandbox.name
    assert stack.postgres.process is not None and stack.postgres.process.poll() is not None
