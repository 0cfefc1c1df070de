"""``dwf up``: Postgres + NATS (embedded, or external via DWF_DATABASE_URL / DWF_NATS_URL),
provisioning, migrations, the ERP, WMS and carrier sandboxes fulfillment talks to, and the
four services, each of them a separate OS process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from chassis import db
from chassis.config import DEFAULT_GRPC_PORTS, SERVICE_NAMES
from chassis.migrations import upgrade
from stack.natsd import ADMIN_USER, EmbeddedNats
from stack.postgres import EmbeddedPostgres
from stack.provision import provision
from stack.sandbox_channel import SandboxChannel, SmtpSink

log = logging.getLogger("dwf.stack")


class StackSettings(BaseSettings):
    """Settings of the local stack (prefix ``DWF_``); see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="DWF_", extra="ignore")

    data_dir: Path = Field(Path(".dwf"), description="Where embedded servers keep their data.")
    database_url: str | None = Field(
        None, description="External Postgres (a role that may create roles); else embedded."
    )
    nats_url: str | None = Field(None, description="External NATS with JetStream; else embedded.")
    database_name: str = "dwf"
    db_role_prefix: str = "dwf_"
    host: str = "127.0.0.1"
    order_gateway_port: int = DEFAULT_GRPC_PORTS["order_gateway"]
    inventory_port: int = DEFAULT_GRPC_PORTS["inventory"]
    fulfillment_port: int = DEFAULT_GRPC_PORTS["fulfillment"]
    notifications_port: int = DEFAULT_GRPC_PORTS["notifications"]
    startup_timeout_seconds: float = 90.0
    log_level: str = "INFO"
    sandbox_port: int = Field(0, description="Channel webhook sandbox port (0: a free one).")
    smtp_sink_port: int = Field(0, description="SMTP sink port (0: a free one).")
    erp_sandbox_port: int = Field(0, description="ERP sandbox port (0: a free one).")
    wms_sandbox_port: int = Field(0, description="WMS/3PL sandbox port (0: a free one).")
    carrier_sandbox_port: int = Field(0, description="Carrier sandbox port (0: a free one).")

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))


@dataclass
class ServiceProcess:
    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_file: Path


#: The external systems fulfillment talks to (docs/sandboxes.md), one process each.
SANDBOX_NAMES = ("erp", "wms", "carrier")
#: Start-up settings of the sandboxes unless the environment sets them (``DWF_WMS_...``):
#: slow enough that an order's way through the WMS can be watched, fast enough for a demo.
SANDBOX_DEFAULTS: dict[str, dict[str, str]] = {
    "erp": {},
    "wms": {"DWF_WMS_ACK_DELAY_MS": "200", "DWF_WMS_STEP_DELAY_MS": "250"},
    "carrier": {},
}
#: Fulfillment's workflow and connector knobs in the local stack (unset in production, where
#: the defaults of services/fulfillment/settings.py and connectors/settings.py apply): short
#: polls and backoffs, so that orders move in seconds and recover from faults in seconds.
FULFILLMENT_STACK_ENV = {
    "DWF_FULFILLMENT_TASK_POLL_SECONDS": "0.2",
    "DWF_FULFILLMENT_WMS_POLL_SECONDS": "0.2",
    "DWF_FULFILLMENT_STEP_BACKOFF_BASE_SECONDS": "0.2",
    "DWF_FULFILLMENT_STEP_BACKOFF_MAX_SECONDS": "2",
    "DWF_FULFILLMENT_RETRY_BACKOFF_MAX_SECONDS": "2",
    "DWF_FULFILLMENT_RETRY_BACKOFF_INITIAL_SECONDS": "0.1",
    # Shorter than the demo's ERP hang (timeout after commit), so that it times out.
    "DWF_FULFILLMENT_READ_TIMEOUT_SECONDS": "1",
    # A failed call is not retried within the step: the step is (durably, with backoff), so
    # retries show as ErpOrderBooked.attempts and on the exception workbench.
    "DWF_FULFILLMENT_RETRY_ATTEMPTS": "1",
    "DWF_FULFILLMENT_BREAKER_RESET_SECONDS": "2",
    "DWF_FULFILLMENT_ERP_REQUESTS_PER_SECOND": "50",
}
_LISTENING = re.compile(r"sandbox listening on (http://\S+)")


@dataclass
class SandboxProcess:
    """An ERP, WMS or carrier sandbox (``python -m stack.sandboxes.<name>``)."""

    name: str
    token: str
    process: subprocess.Popen[bytes]
    log_file: Path
    log_offset: int  # where this run's output starts in the (appended) log file
    url: str = ""  # known once it printed that it listens


@dataclass
class Stack:
    settings: StackSettings
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    admin_database_url: str = ""
    nats_url: str = ""
    nats_admin: tuple[str, str] | None = None
    service_database_urls: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    sandbox: SandboxChannel | None = None
    smtp: SmtpSink | None = None
    sandbox_processes: dict[str, SandboxProcess] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    @property
    def sandbox_urls(self) -> dict[str, str]:
        """Base URL of each running ERP/WMS/carrier sandbox, e.g. ``{"erp": "http://..."}``."""
        return {name: sb.url for name, sb in self.sandbox_processes.items() if sb.url}

    @property
    def sandbox_tokens(self) -> dict[str, str]:
        """The bearer token each sandbox's business API wants (generated per start)."""
        return {name: sb.token for name, sb in self.sandbox_processes.items()}

    async def start_dependencies(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.database_url:
            self.admin_database_url = self.settings.database_url
        else:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
            await asyncio.to_thread(self.postgres.start)
            self.admin_database_url = self.postgres.admin_url
        if self.settings.nats_url:
            self.nats_url = self.settings.nats_url
        else:
            self.nats = EmbeddedNats(self.data_dir / "nats")
            await asyncio.to_thread(self.nats.start)
            self.nats_url = self.nats.url
            admin = self.nats.credentials[ADMIN_USER]
            self.nats_admin = (admin.user, admin.password)

    async def provision_and_migrate(self) -> None:
        self.service_database_urls = await provision(
            self.admin_database_url,
            self.settings.database_name,
            role_prefix=self.settings.db_role_prefix,
        )
        for name, url in self.service_database_urls.items():
            engine = db.create_engine(
                url, name, application_name=f"dwf-migrate-{name}", pool_size=1
            )
            try:
                await upgrade(engine, name, name)
            finally:
                await engine.dispose()

    def service_env(self, name: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DWF_")}
        env.update(
            {
                "DWF_SERVICE": name,
                "DWF_GRPC_HOST": self.settings.host,
                "DWF_GRPC_PORT": str(self.settings.port_of(name)),
                "DWF_DATABASE_URL": self.service_database_urls[name],
                "DWF_DB_SCHEMA": name,
                "DWF_NATS_URL": self.nats_url,
                "DWF_LOG_LEVEL": self.settings.log_level,
                "DWF_DRAIN_SECONDS": "0.5",  # no load balancer in front of a laptop
                "PYTHONUNBUFFERED": "1",
            }
        )
        for service in SERVICE_NAMES:
            env[f"DWF_{service.upper()}_ADDR"] = (
                f"{self.settings.host}:{self.settings.port_of(service)}"
            )
        if name == "notifications" and self.sandbox is not None and self.smtp is not None:
            # The local channel sandbox speaks plain HTTP; the SMTP sink takes the email.
            env["DWF_NOTIFY_ALLOW_HTTP"] = "true"
            env["DWF_NOTIFY_SMTP_PORT"] = str(self.smtp.port)
            env["DWF_NOTIFY_AVAILABILITY_INTERVAL_SECONDS"] = "1"
            env["DWF_NOTIFY_BACKOFF_INITIAL_SECONDS"] = "0.5"
            env["DWF_NOTIFY_BACKOFF_MAX_SECONDS"] = "2"
        if name == "fulfillment":
            for system, sandbox in self.sandbox_processes.items():
                env[f"DWF_FULFILLMENT_{system.upper()}_URL"] = sandbox.url
                env[f"DWF_FULFILLMENT_{system.upper()}_TOKEN"] = sandbox.token
            if self.sandbox_processes:
                env.update(FULFILLMENT_STACK_ENV)
        if self.nats is not None:
            credentials = self.nats.credentials[name]
            env["DWF_NATS_USER"] = credentials.user
            env["DWF_NATS_PASSWORD"] = credentials.password
        return env

    def start_services(self) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        for name in SERVICE_NAMES:
            log_file = logs / f"{name}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=self.service_env(name),
                stdout=log_file.open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.services[name] = ServiceProcess(
                name, f"{self.settings.host}:{self.settings.port_of(name)}", process, log_file
            )

    async def wait_serving(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_seconds
        pending = set(self.services)
        while pending:
            for name in list(pending):
                service = self.services[name]
                if service.process.poll() is not None:
                    tail = service.log_file.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {service.process.returncode}:\n{tail}")
                if await health_status(service.address) == "SERVING":
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not SERVING in time: {sorted(pending)}")
            if pending:
                await asyncio.sleep(0.1)  # poll interval of the readiness probe

    def start_system_sandboxes(self) -> None:
        """Start the ERP, WMS and carrier sandboxes (each a process, with a fresh token);
        :meth:`wait_system_sandboxes` waits until they answer."""
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("DWF_")
            or key.startswith(tuple(f"DWF_{n.upper()}_" for n in SANDBOX_NAMES))
        }
        for name in SANDBOX_NAMES:
            if name in self.sandbox_processes:
                continue
            token = secrets.token_hex(24)
            env = {
                **SANDBOX_DEFAULTS[name],
                **inherited,
                f"DWF_{name.upper()}_TOKEN": token,  # the default of --token, kept out of ps
                "PYTHONUNBUFFERED": "1",
            }
            port = int(getattr(self.settings, f"{name}_sandbox_port"))
            log_file = logs / f"{name}-sandbox.log"
            with log_file.open("ab") as out:
                offset = out.tell()
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        f"stack.sandboxes.{name}",
                        "--host",
                        self.settings.host,
                        "--port",
                        str(port),
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.sandbox_processes[name] = SandboxProcess(name, token, process, log_file, offset)

    async def wait_system_sandboxes(self) -> None:
        """Until every sandbox printed where it listens and answers ``GET /_admin/health``."""
        deadline = time.monotonic() + self.settings.startup_timeout_seconds
        pending = set(self.sandbox_processes)
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while pending:
                for name in sorted(pending):
                    sandbox = self.sandbox_processes[name]
                    output = _read_from(sandbox.log_file, sandbox.log_offset)
                    if sandbox.process.poll() is not None:
                        raise RuntimeError(
                            f"the {name} sandbox exited with {sandbox.process.returncode}:\n"
                            + output[-3000:]
                        )
                    if not sandbox.url:
                        found = _LISTENING.search(output)
                        if found is None:
                            continue
                        sandbox.url = found.group(1)
                    with contextlib.suppress(httpx.HTTPError):
                        answer = await client.get(f"{sandbox.url}/_admin/health")
                        if answer.status_code == 200:
                            pending.discard(name)
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"sandboxes not healthy in time: {sorted(pending)}")
                if pending:
                    await asyncio.sleep(0.05)  # poll interval of the readiness probe

    def stop_system_sandboxes(self, timeout: float = 10.0) -> None:
        for sandbox in self.sandbox_processes.values():
            if sandbox.process.poll() is None:
                sandbox.process.send_signal(signal.SIGTERM)
        for sandbox in self.sandbox_processes.values():
            try:
                sandbox.process.wait(timeout)
            except subprocess.TimeoutExpired:
                sandbox.process.kill()
                sandbox.process.wait()

    async def start_sandboxes(self) -> None:
        """The channel side of the local stack: a webhook receiver and an SMTP sink."""
        self.sandbox = SandboxChannel(port=self.settings.sandbox_port)
        self.smtp = SmtpSink(port=self.settings.smtp_sink_port)
        await self.sandbox.start()
        await self.smtp.start()

    async def stop_sandboxes(self) -> None:
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self.smtp is not None:
            await self.smtp.stop()

    async def up(self) -> None:
        await self.start_dependencies()
        await self.start_sandboxes()
        self.start_system_sandboxes()  # they start while the databases are migrated
        await self.provision_and_migrate()
        await self.wait_system_sandboxes()
        self.start_services()
        await self.wait_serving()
        self.write_state()

    def write_state(self) -> None:
        state = {
            "services": {name: s.address for name, s in self.services.items()},
            "nats_url": self.nats_url,
            "postgres": make_url(self.admin_database_url).render_as_string(hide_password=True),
            "channel_sandbox": self.sandbox.base_url if self.sandbox else None,
            "smtp_sink": f"127.0.0.1:{self.smtp.port}" if self.smtp else None,
            "sandboxes": {
                name: {"url": sb.url, "token": sb.token}
                for name, sb in self.sandbox_processes.items()
            },
        }
        (self.data_dir / "stack.json").write_text(json.dumps(state, indent=2))

    def stop_services(self, timeout: float = 20.0) -> None:
        for service in self.services.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self.services.values():
            try:
                service.process.wait(timeout)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()

    def down(self) -> None:
        self.stop_services()
        self.stop_system_sandboxes()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "stack.json").unlink()


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


async def health_status(address: str, service: str = "", timeout: float = 1.0) -> str:
    """The grpc.health.v1 status name of ``service`` at ``address`` (UNREACHABLE if down)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
