"""``dwf``: run the local stack, a single service, or its migrations."""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chassis.config import SERVICE_NAMES, ServiceSettings
from stack.scenario import (
    GatewayDemo,
    check_services,
    register_demo_endpoints,
    run_gateway_demo,
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


def _read_document(path: Path) -> Any:
    """A JSON document, or YAML when the file ends in .yaml/.yml (PyYAML: the dev extra)."""
    try:
        text = path.read_text()
    except OSError as exc:
        console.print(f"[red]cannot read {escape(str(path))}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            yaml = importlib.import_module("yaml")
        except ImportError as exc:
            console.print(
                "[red]YAML needs PyYAML[/red] (installed with the dev extra: "
                "pip install -e '.\\[dev]'); or give the same document as JSON"
            )
            raise typer.Exit(1) from exc
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            console.print(f"[red]{escape(str(path))} is not valid YAML:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        console.print(f"[red]{escape(str(path))} is not valid JSON:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc


@app.command("gateway-load")
def gateway_load(
    path: Annotated[
        Path, typer.Argument(help="JSON (or .yaml/.yml): channels, items, credentials")
    ],
) -> None:
    """Load order-gateway master data (channels, items and units, aliases, credentials) with
    the gateway's role (DWF_DATABASE_URL)."""
    from chassis import db
    from services.order_gateway.store.master_data import (
        MasterDataError,
        load_master_data,
        validate,
    )

    document = _read_document(path)
    try:
        validate(document)  # before connecting: a bad document needs no database
    except MasterDataError as exc:
        console.print(
            f"[red]invalid master data at {escape(exc.path or '(document)')}:[/red] "
            + escape(exc.message)
        )
        raise typer.Exit(1) from exc
    except (AttributeError, TypeError, ValueError) as exc:  # e.g. a row that is no mapping
        console.print(f"[red]not a master-data document:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    settings = ServiceSettings(service="order_gateway")

    async def _run() -> dict[str, int]:
        engine = db.engine_for(settings)
        try:
            async with db.session_factory(engine).begin() as session:
                return await load_master_data(session, document)
        finally:
            await engine.dispose()

    counts = asyncio.run(_run())
    console.print(
        "[green]order gateway master data loaded:[/green] "
        + ", ".join(f"{section} {count}" for section, count in counts.items())
    )


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

    console.rule("order gateway: a storefront and four channel formats")
    gateway = await run_gateway_demo(
        stack.services["order_gateway"].address,
        stack.service_database_urls["order_gateway"],
        stack.services["inventory"].address,
    )
    _print_gateway(gateway)

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
    return services_ok and inventory.ok and gateway.ok and notified.ok


def _print_gateway(demo: GatewayDemo) -> None:
    console.print(
        "admin credential written with the gateway's DB role; "
        "libs/stack/demo/gateway_master_data.json applied with ApplyMasterData: "
        + ", ".join(f"{section} {count}" for section, count in sorted(demo.applied.items()))
    )
    table = Table(
        title=f"web-store CheckAvailability (read model as of {demo.as_of:%H:%M:%S} UTC, "
        f"{demo.as_of_age_seconds:.1f} s old)"
    )
    for column in ("line", "channel SKU", "SKU", "requested", "available", "state"):
        table.add_column(column)
    for line_id, channel_sku, sku, requested, available, state in demo.availability:
        color = "green" if state == "IN_STOCK" else "yellow"
        table.add_row(
            line_id, channel_sku, sku, str(requested), str(available), f"[{color}]{state}[/{color}]"
        )
    console.print(table)
    console.print(
        f"CreateHold: hold {demo.hold_id} "
        + ", ".join(f"{held}/{requested} x {sku}" for sku, requested, held in demo.hold_lines)
        + f" held until {demo.hold_expires_at}"
    )
    accepted = demo.accepted
    console.print(
        f"AcceptOrder (the paid cart) converted hold {accepted.hold_id[:8]}… into order "
        f"{accepted.order_id}: {accepted.status}"
    )
    orders = [accepted, *demo.ingested]
    table = Table(title="orders accepted: the storefront's, then one per channel format")
    for column in ("via", "channel", "channel order", "order", "status"):
        table.add_column(column)
    for order in orders:
        color = "green" if order.consistent else "red"
        table.add_row(
            order.source,
            order.channel_id,
            order.channel_order_id,
            f"{order.order_id[:8]}…",
            f"[{color}]{order.status}[/{color}]",
        )
    console.print(table)
    table = Table(title="their lines: as sent, in each, reserved now or backordered")
    for column in ("order", "sent by the channel", "each", "reserved", "backordered"):
        table.add_column(column)
    for order in orders:
        for i, ln in enumerate(order.lines):
            table.add_row(
                f"{order.order_id[:8]}…" if i == 0 else "",
                f"{ln.quantity} {ln.channel_sku}",
                f"{ln.ordered} {ln.sku}",
                str(ln.reserved),
                f"[yellow]{ln.backordered}[/yellow]" if ln.backordered else "0",
                end_section=i == len(order.lines) - 1,
            )
    console.print(table)
    shown = [s for s in demo.acknowledgement if s.split("*", 1)[0] in ("ST", "BAK", "PO1", "ACK")]
    console.print("edi-acme's 850 answered with an 855 (first segments):")
    for segment in shown[:8]:
        console.print(f"  {segment}", markup=False)
    same = demo.retry_order_id == demo.accepted.order_id
    console.print(
        f"AcceptOrder retried with the same request_id {demo.retry_request_id}: "
        f"order {demo.retry_order_id} "
        + ("[green](the same order, nothing done twice)[/green]" if same else "[red](NEW!)[/red]")
    )
    fields = "; ".join(f"{path}: {description}" for path, description in demo.refused_fields)
    rejected = next((s for s in demo.refused_acknowledgement if s.startswith("BAK")), "none")
    console.print(
        f"an 850 naming a part edi-acme's aliases do not know: {demo.refused_code} "
        f"({demo.refused_reason}) at {escape(fields) or '?'}; 855 sent back: ",
        end="",
    )
    console.print(rejected, markup=False)
    console.print(
        f"the orders stay reserved; receipt PO-DEMO-RESTOCK-{demo.run} brings back what they "
        "took, so the next run starts from the same availability: "
        + ", ".join(f"{qty} x {sku} at {wh}" for sku, wh, qty in demo.restocked)
    )
    console.print(_levels_table("after the gateway demo", demo.levels_after))


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
