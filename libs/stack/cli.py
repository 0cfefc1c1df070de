"""``dwf``: run the local stack, a single service, or its migrations."""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chassis.config import SERVICE_NAMES, ServiceSettings
from stack.scenario import (
    check_services,
    register_demo_endpoints,
    run_inventory_demo,
    run_notifications_demo,
)
from stack.supervisor import Stack, StackSettings

app = typer.Typer(
    help="dwf — distribution workflow: local stack and service entrypoints.", no_args_is_help=True
)
console = Console()

ServiceArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}")]


def _check_service(name: str) -> str:
    if name not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")
    return name


@app.command()
def serve(service: ServiceArg) -> None:
    """Run one service in the foreground (the container entrypoint)."""
    module = importlib.import_module(f"services.{_check_service(service)}.main")
    module.main()


@app.command()
def migrate(service: ServiceArg) -> None:
    """Apply a service's migrations with its own role (DWF_DATABASE_URL), then exit."""
    from chassis import db
    from chassis.migrations import upgrade

    settings = ServiceSettings(service=_check_service(service))

    async def _run() -> None:
        engine = db.engine_for(settings)
        try:
            await upgrade(engine, settings.service, settings.schema_name)
        finally:
            await engine.dispose()

    asyncio.run(_run())
    console.print(f"[green]{service}: migrations applied[/green]")


@app.command("inventory-load")
def inventory_load(
    path: Annotated[Path, typer.Argument(help="JSON: warehouses, items, safety_stock")],
) -> None:
    """Load inventory master data (warehouses, items, safety stock) with the inventory role."""
    from chassis import db
    from services.inventory.store.master_data import load_master_data

    settings = ServiceSettings(service="inventory")
    data = json.loads(path.read_text())

    async def _run() -> dict[str, int]:
        engine = db.engine_for(settings)
        try:
            async with db.session_factory(engine).begin() as session:
                return await load_master_data(session, data)
        finally:
            await engine.dispose()

    counts = asyncio.run(_run())
    console.print(f"[green]inventory master data loaded:[/green] {counts}")


def _endpoints_table(stack: Stack) -> Table:
    table = Table(title="dwf local stack")
    table.add_column("component")
    table.add_column("endpoint")
    for name, service in stack.services.items():
        table.add_row(name, f"grpc://{service.address}")
    table.add_row("nats", stack.nats_url)
    table.add_row("postgres", stack.admin_database_url.split("@")[-1])
    if stack.sandbox is not None and stack.smtp is not None:
        table.add_row("channel sandbox", stack.sandbox.base_url + "/hooks/<name>")
        table.add_row("smtp sink", f"smtp://127.0.0.1:{stack.smtp.port}")
    return table


async def _up_until_signal(stack: Stack) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with console.status("starting Postgres, NATS JetStream and the four services..."):
        await stack.up()
    console.print(_endpoints_table(stack))
    console.print("all services SERVING — Ctrl-C stops everything")
    try:
        await stop.wait()
    finally:
        await stack.stop_sandboxes()


@app.command()
def up() -> None:
    """Start the whole stack and keep it running until Ctrl-C / SIGTERM."""
    stack = Stack(StackSettings())
    try:
        asyncio.run(_up_until_signal(stack))
    finally:
        console.print("stopping...")
        stack.down()
        console.print("stopped")


async def _demo(stack: Stack) -> bool:
    with console.status("starting Postgres, NATS JetStream and the four services..."):
        await stack.up()
    console.print(_endpoints_table(stack))
    checks = await check_services({n: s.address for n, s in stack.services.items()})
    table = Table(title="demo: services")
    for column in ("service", "address", "health", "gRPC service (via reflection)", "ok"):
        table.add_column(column)
    for check in checks:
        table.add_row(
            check.service,
            check.address,
            check.health,
            ", ".join(name for name in check.reflected if name.startswith("dwf.")),
            "[green]yes[/green]" if check.ok else "[red]NO[/red]",
        )
    console.print(table)
    services_ok = all(check.ok for check in checks) and len(checks) == len(SERVICE_NAMES)

    assert stack.sandbox is not None
    await register_demo_endpoints(stack.services["notifications"].address, stack.sandbox)

    console.rule("inventory: warehouses, stock, a checkout hold")
    inventory = await run_inventory_demo(
        stack.services["inventory"].address, stack.service_database_urls["inventory"]
    )
    console.print(_levels_table("stock after receipts", inventory.levels_before))
    console.print(
        f"hold {inventory.hold_id}: "
        + ", ".join(f"{qty} x {sku} from {wh}" for sku, wh, qty in inventory.hold_lines)
        + " (CHI-1 keeps 10 BOLT-M8-50 as safety stock, so the rest comes from DAL-1)"
    )
    console.print(_levels_table("while the hold is active", inventory.levels_after))
    console.print(
        f"hold extended until {inventory.extended_until}; then released: {inventory.released_state}"
    )
    console.print(_levels_table("after release", inventory.levels_final))

    console.rule("notifications: the stock feed to two channels")
    with console.status("waiting for the deliveries, the retries and a replay..."):
        notified = await run_notifications_demo(
            stack.services["notifications"].address, stack.sandbox
        )
    table = Table(title="what the channel sandbox received (HMAC-SHA256 verified)")
    for column in ("endpoint", "HTTP answer", "signature", "seq", "SKUs"):
        table.add_column(column)
    for hook, status, signature, sequence, skus in notified.rows:
        table.add_row(hook, str(status), "valid" if signature else "INVALID", str(sequence), skus)
    console.print(table)
    console.print(
        "storefront-stock answered 503 twice and was retried with backoff until it took the "
        f"update. edi-stock refused {notified.refused} deliveries (400: dead letters at once, "
        f"no retries); once fixed, replaying its dead letters queued "
        f"{len(notified.replayed)} (and dropped {notified.superseded} superseded by newer "
        f"stock), delivered: {notified.deliveries_after_replay}; replaying the same dead "
        f"letter again: {notified.second_replay}"
    )
    return services_ok and inventory.ok and notified.ok


def _levels_table(title: str, levels: list[tuple[str, str, int, int, int]]) -> Table:
    table = Table(title=title)
    for column in ("sku", "warehouse", "on hand", "reserved", "available"):
        table.add_column(column)
    for sku, warehouse, on_hand, reserved, available in levels:
        table.add_row(sku, warehouse, str(on_hand), str(reserved), str(available))
    return table


@app.command()
def demo() -> None:
    """Bring the stack up, run the end-to-end scenario, print a summary, stop, and exit."""
    stack = Stack(StackSettings())

    async def _run() -> bool:
        try:
            return await _demo(stack)
        finally:
            await stack.stop_sandboxes()

    try:
        ok = asyncio.run(_run())
    finally:
        stack.down()
    console.print(
        "[bold green]demo passed[/bold green]" if ok else "[bold red]demo FAILED[/bold red]"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app()
