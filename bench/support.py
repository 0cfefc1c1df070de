"""Shared set-up of the benchmarks: real Postgres + NATS (embedded unless DWF_DATABASE_URL /
DWF_NATS_URL), a provisioned database, service processes, and a load loop with latencies."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from chassis import db
from chassis.config import ServiceSettings
from chassis.migrations import upgrade
from stack.natsd import ADMIN_USER, EmbeddedNats
from stack.ports import free_port
from stack.postgres import EmbeddedPostgres
from stack.provision import provision
from stack.supervisor import health_status


@dataclass
class Servers:
    root: Path
    admin_url: str
    nats_url: str
    nats_user: str | None
    nats_password: str | None
    service_urls: dict[str, str]

    def settings(self, service: str, **overrides: object) -> ServiceSettings:
        values: dict[str, object] = {
            "service": service,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "database_url": self.service_urls[service],
            "nats_url": self.nats_url,
            "nats_user": self.nats_user,
            "nats_password": self.nats_password,
            "log_level": "WARNING",
            "drain_seconds": 0.0,
        }
        values.update(overrides)
        return ServiceSettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def servers() -> AsyncIterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="dwf-bench-"))
    postgres = nats_server = None
    admin_url = os.environ.get("DWF_DATABASE_URL")
    nats_url = os.environ.get("DWF_NATS_URL")
    user = password = None
    try:
        if not admin_url:
            postgres = EmbeddedPostgres(root / "postgres")  # fsync on: realistic commits
            await asyncio.to_thread(postgres.start)
            admin_url = postgres.admin_url
        if not nats_url:
            nats_server = EmbeddedNats(root / "nats")
            await asyncio.to_thread(nats_server.start)
            nats_url = nats_server.url
            user, password = ADMIN_USER, nats_server.credentials[ADMIN_USER].password
        urls = await provision(
            admin_url,
            f"dwf_bench_{uuid.uuid4().hex[:6]}",
            role_prefix=f"dwfb{uuid.uuid4().hex[:4]}_",
        )
        for name, url in urls.items():
            engine = db.create_engine(url, name, application_name="bench-migrate")
            try:
                await upgrade(engine, name, name)
            finally:
                await engine.dispose()
        yield Servers(root, admin_url, nats_url, user, password, urls)
    finally:
        if nats_server is not None:
            nats_server.stop()
        if postgres is not None:
            postgres.stop()


def service_env(settings: ServiceSettings) -> dict[str, str]:
    return settings.as_environment(dict(os.environ))


@asynccontextmanager
async def processes(
    commands: list[tuple[list[str], dict[str, str], int]],
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Start (argv, env, port) processes and wait until each reports SERVING; yields them."""
    started = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for argv, env, _ in commands
    ]
    try:
        deadline = time.monotonic() + 60
        for (_, _, port), process in zip(commands, started, strict=True):
            while await health_status(f"127.0.0.1:{port}") != "SERVING":
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"process on port {port} did not become SERVING")
                await asyncio.sleep(0.1)  # readiness poll of a child process
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(30)


def service_process(settings: ServiceSettings) -> tuple[list[str], dict[str, str], int]:
    return (
        [sys.executable, "-m", f"services.{settings.service}"],
        service_env(settings),
        (settings.port),
    )


def echo_process() -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    return [sys.executable, "-m", "bench.echo_server", str(port)], dict(os.environ), port


@dataclass
class Load:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    def line(self, name: str) -> str:
        return (
            f"{name:<44} {self.rate:>9,.0f}/s   p50 {statistics.median(self.latencies_ms):6.2f} ms"
            f"   p99 {self.percentile(0.99):7.2f} ms   errors {self.errors}"
        )


async def run_load(call: Callable[[int], Awaitable[object]], total: int, in_flight: int) -> Load:
    """``total`` calls, ``in_flight`` at a time; call(i) gets the request index."""
    counter = iter(range(total))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for index in counter:
            started = time.perf_counter()
            try:
                await call(index)
            except Exception:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return Load(total, time.perf_counter() - started, latencies, errors)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU used so far by these processes."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


async def run_load_cpu(
    call: Callable[[int], Awaitable[object]], total: int, in_flight: int, pids: list[int]
) -> tuple[Load, float]:
    """``run_load``, plus the CPU those processes used per call, in microseconds."""
    before = cpu_seconds(pids)
    load = await run_load(call, total, in_flight)
    return load, (cpu_seconds(pids) - before) / total * 1e6


async def alternating(
    sides: Sequence[tuple[Callable[[int], Awaitable[object]], list[int]]],
    total: int,
    in_flight: int,
    rounds: int = 2,
) -> list[tuple[Load, float]]:
    """``run_load_cpu`` of each (call, server pids) side, ``total`` calls each, split into
    ``rounds`` parts run in turn (a, b, a, b): a machine that speeds up or slows down
    meanwhile affects every side alike. Returns each side's merged load and CPU per call."""
    parts: list[list[tuple[Load, float]]] = [[] for _ in sides]
    for _ in range(rounds):
        for index, (call, pids) in enumerate(sides):
            parts[index].append(await run_load_cpu(call, total // rounds, in_flight, pids))
    merged: list[tuple[Load, float]] = []
    for runs in parts:
        loads = [load for load, _ in runs]
        merged.append(
            (
                Load(
                    sum(load.requests for load in loads),
                    sum(load.seconds for load in loads),
                    [ms for load in loads for ms in load.latencies_ms],
                    sum(load.errors for load in loads),
                ),
                statistics.mean(cpu for _, cpu in runs),
            )
        )
    return merged
