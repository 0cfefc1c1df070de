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
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from chassis.config import SERVICE_NAMES, ServiceSettings
from stack.scenario import (
    ERP_FAULTS,
    FAULT_CHANNEL,
    FAULT_ORDERS,
    SHIPMENT_EMAIL,
    STATUS_HOOKS,
    ErpFaultDemo,
    FulfillmentDemo,
    FulfillmentRow,
    GatewayDemo,
    OrderFeed,
    StatusFeedDemo,
    check_services,
    register_demo_endpoints,
    register_status_endpoints,
    run_erp_fault_demo,
    run_fulfillment_demo,
    run_gateway_demo,
    run_inventory_demo,
    run_notifications_demo,
    run_status_feed_demo,
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sandbox(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="erp, wms, carrier or channel")],
) -> None:
    """Run one HTTP sandbox in the foreground (the container entrypoint of staging sandboxes);
    the remaining options go to it, e.g. ``--host 0.0.0.0 --port 8080``. The ERP, WMS and
    carrier read their token from DWF_<NAME>_TOKEN."""
    import sys

    modules = {
        "erp": "stack.sandboxes.erp",
        "wms": "stack.sandboxes.wms",
        "carrier": "stack.sandboxes.carrier",
        "channel": "stack.sandbox_channel",
    }
    if name not in modules:
        raise typer.BadParameter(f"one of {', '.join(modules)}", param_hint="NAME")
    module = importlib.import_module(modules[name])
    sys.argv = [modules[name], *ctx.args]
    module.main()


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
    for name, url in stack.sandbox_urls.items():
        table.add_row(f"{name} sandbox", url)
    return table


async def _up_until_signal(stack: Stack) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with console.status("starting Postgres, NATS JetStream, the sandboxes and the services..."):
        await stack.up()
    console.print(_endpoints_table(stack))
    console.print(
        "sandbox bearer tokens and admin APIs (/_admin/...): "
        f"{escape(str(stack.data_dir / 'stack.json'))}, docs/sandboxes.md"
    )
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
    with console.status("starting Postgres, NATS JetStream, the sandboxes and the services..."):
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

    assert stack.sandbox is not None and stack.smtp is not None
    await register_demo_endpoints(stack.services["notifications"].address, stack.sandbox)
    # Before any order exists: every status change of the demo's orders reaches its channel.
    await register_status_endpoints(stack.services["notifications"].address, stack.sandbox)

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

    console.rule("fulfillment: orders to COMPLETED")
    orders = [
        (order.order_id, f"{order.channel_id} {order.channel_order_id}")
        for order in [gateway.accepted, *gateway.ingested]
        if order.order_id
    ]
    console.print(
        f"fulfillment books each order in the ERP sandbox ({stack.sandbox_urls['erp']}), "
        "allocates it in inventory, releases it to the WMS sandbox "
        f"({stack.sandbox_urls['wms']}), records what ships, posts the shipment and invoices it "
        "in the ERP:"
    )
    with _Progress("the gateway demo's orders in fulfillment") as progress:
        fulfilled = await run_fulfillment_demo(
            stack.services["fulfillment"].address, orders, timeout=60, progress=progress
        )
    _print_fulfillment(fulfilled)

    console.rule("fulfillment: the ERP fails, the orders recover")
    console.print(
        "the ERP sandbox is set (POST /_admin/faults) to answer "
        f"{ERP_FAULTS['rate_429']:.0%} of requests 429, {ERP_FAULTS['rate_5xx']:.0%} 5xx, and "
        f"to hang {ERP_FAULTS['hang_seconds']} s after committing "
        f"{ERP_FAULTS['rate_timeout_after_commit']:.0%} of them (fulfillment's read timeout is "
        f"1 s: it cannot tell whether those took effect); then the web store sends "
        f"{FAULT_ORDERS} orders:"
    )
    with _Progress("new web-store orders while the ERP misbehaves") as progress:
        faulty = await run_erp_fault_demo(
            stack.services["order_gateway"].address,
            stack.services["fulfillment"].address,
            stack.services["inventory"].address,
            stack.sandbox_urls["erp"],
            run=gateway.run,
            timeout=60,
            progress=progress,
        )
    phase_one_booked_once = all(
        faulty.sales_orders.get(row.order_id) == 1 for row in fulfilled.rows
    )
    _print_erp_faults(faulty, fulfilled, phase_one_booked_once)

    console.rule("notifications: what the channels were told")
    demo_orders = [
        (order.order_id, order.channel_id, f"{order.channel_id} {order.channel_order_id}")
        for order in [gateway.accepted, *gateway.ingested]
        if order.order_id
    ]
    fault_orders = [
        (row.order_id, row.channel_id or FAULT_CHANNEL, row.label) for row in faulty.rows
    ]
    console.print(
        "each channel has a webhook for the order status feed (dwf.order.v1.OrderStatusChanged) "
        "in its own vocabulary ("
        + ", ".join(f"{channel}: {vocabulary}" for channel, (_, vocabulary) in STATUS_HOOKS.items())
        + f"), registered before the first order; the {SHIPMENT_EMAIL[1]} also emails its "
        "customers (mailto: = the order's customer) when an order ships:"
    )
    with console.status("waiting until every channel was told its orders' last status..."):
        told = await run_status_feed_demo(
            stack.services["order_gateway"].address,
            stack.sandbox,
            stack.smtp,
            [*demo_orders, *fault_orders],
            timeout=30,
        )
    _print_status_feed(told, {order_id for order_id, _, _ in demo_orders})

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
    return (
        services_ok
        and inventory.ok
        and gateway.ok
        and fulfilled.ok
        and faulty.ok
        and phase_one_booked_once
        and told.ok
        and notified.ok
    )


class _Progress:
    """Shows orders moving through fulfillment: a live table on a terminal, otherwise a line
    whenever an order changes (status, ERP number, releases, shipments, invoices)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.live: Live | None = None
        self.seen: dict[str, tuple[object, ...]] = {}
        self.started = 0.0

    def __enter__(self) -> _Progress:
        import time

        self.started = time.monotonic()
        if console.is_terminal:
            self.live = Live(  # transient: the final table is printed after it
                _fulfillment_table(self.title, []),
                console=console,
                auto_refresh=False,
                transient=True,
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, rows: list[FulfillmentRow]) -> None:
        import time

        if self.live is not None:
            self.live.update(_fulfillment_table(self.title, rows), refresh=True)
            return
        for row in rows:
            state = (
                row.shown_status,
                row.erp_order_number,
                tuple(row.releases),
                len(row.shipments),
                len(row.invoices),
                row.fixed,
            )
            if self.seen.get(row.order_id) == state:
                continue
            self.seen[row.order_id] = state
            line = (
                f"  {time.monotonic() - self.started:5.1f}s  {row.order_id[:8]}…  "
                f"{_status(row.shown_status)}"
            )
            if row.open_exception:
                line += f" ({escape(row.open_exception)})"
            line += (
                f"  {row.erp_order_number or '-'}  released: {', '.join(row.releases) or '-'}  "
                f"shipments {len(row.shipments)}, invoices {len(row.invoices)}"
            )
            if row.fixed:
                line += f"  \\[workbench: {escape(row.fixed)}]"
            console.print(line)


def _status(status: str) -> str:
    color = (
        "green"
        if status == "COMPLETED"
        else "red"
        if status in ("EXCEPTION", "ON_HOLD", "CANCELED")
        else "yellow"
    )
    return f"[{color}]{status}[/{color}]"


def _fulfillment_table(title: str, rows: list[FulfillmentRow]) -> Table:
    table = Table(title=title)
    for column in ("order", "status", "ERP order", "released to", "shipped", "invoiced"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            f"{row.order_id[:8]}…\n{row.channel_id or row.label.split()[0]}",
            _status(row.shown_status),
            row.erp_order_number or "-",
            "\n".join(row.releases) or "-",
            "\n".join(row.shipments) or "-",
            "\n".join(row.invoices) or "-",
        )
    return table


def _print_fulfillment(demo: FulfillmentDemo) -> None:
    console.print(_fulfillment_table("the gateway demo's orders in fulfillment", demo.rows))
    for row in demo.rows:
        if row.fixed:
            console.print(
                f"{escape(row.label)} ({row.order_id[:8]}…) came without a customer the ERP "
                f"could book it to, and was parked on the exception workbench: "
                f"{escape(row.fixed)}"
            )
    done = sum(row.completed for row in demo.rows)
    if demo.ok:
        console.print(
            f"[green]all {done} orders COMPLETED[/green] in {demo.seconds:.1f} s: booked in the "
            "ERP, shipped by the WMS, the shipments posted and invoiced"
        )
    else:
        console.print(
            f"[red]only {done} of {len(demo.rows)} orders COMPLETED within "
            f"{demo.timeout:.0f} s[/red] (see .dwf/logs/fulfillment.log and the exceptions: "
            "FulfillmentService.ListExceptions)"
        )


STEP_NAMES = {
    "ERP_BOOKING": "booking",
    "ALLOCATION": "allocation",
    "RELEASE": "release",
    "SHIPPING": "shipping",
    "SHIPMENT_POSTING": "posting",
    "INVOICING": "invoicing",
}


def _print_erp_faults(
    demo: ErpFaultDemo, before: FulfillmentDemo, phase_one_booked_once: bool
) -> None:
    if demo.error:
        console.print(f"[red]the scenario failed:[/red] {escape(demo.error)}")
    console.print(_fulfillment_table("after the faults", demo.rows))
    table = Table(title="exactly one ERP sales order per order, however often it was tried")
    columns = ("order", "ERP order", "sales orders in the ERP", "booked at attempt", "workbench")
    for column in columns:
        table.add_column(column)
    for row in demo.rows:
        count = demo.sales_orders.get(row.order_id, 0)
        color = "green" if count == 1 else "red"
        table.add_row(
            f"{row.order_id[:8]}…",
            row.erp_order_number or "-",
            f"[{color}]{count}[/{color}]",
            str(row.booking_attempts or "-"),
            "\n".join(
                f"{STEP_NAMES.get(e.stage, e.stage)} {e.error_code}: {e.attempts} failed, {e.state}"
                for e in row.exceptions
            )
            or "-",
        )
    console.print(table)
    done = sum(row.completed for row in demo.rows)
    color = "green" if demo.ok else "red"
    console.print(
        f"[{color}]{done} of {len(demo.rows)} orders COMPLETED[/{color}] in {demo.seconds:.1f} s "
        f"(timeout {demo.timeout:.0f} s). Each failed ERP call was retried as a workflow "
        "step, with backoff (the stack runs fulfillment with one attempt per call): the "
        "booking's attempts are ErpOrderBooked.attempts, and the workbench (ListExceptions, "
        "OPEN/RETRYING/RESOLVED) records a step from its second failure (with its last error)."
    )
    console.print(
        f"the gateway demo's {len(before.rows)} orders: "
        + (
            "[green]one sales order each[/green]"
            if phase_one_booked_once
            else "[red]NOT one sales order each[/red]"
        )
        + f"; ERP faults restored: {', '.join(f'{k}={demo.restored.get(k)}' for k in ERP_FAULTS)}"
    )
    console.print(
        "what these orders took is received again: "
        + (", ".join(f"{qty} x {sku} at {wh}" for sku, wh, qty in demo.restocked) or "nothing")
    )
    table = Table(title="after the fulfillment demo")
    for column in ("sku", "warehouse", "on hand", "reserved", "allocated", "available"):
        table.add_column(column)
    for sku, warehouse, *quantities in demo.positions_after:
        table.add_row(sku, warehouse, *(str(q) for q in quantities))
    console.print(table)


def _print_status_feed(demo: StatusFeedDemo, detailed: set[str]) -> None:
    """The status updates of the ``detailed`` orders one by one, then every order's verdict,
    then the shipment emails."""
    if demo.error:
        console.print(f"[red]the scenario failed:[/red] {escape(demo.error)}")
    table = Table(title="what each order's channel webhook received, in order of arrival")
    for column in ("order → webhook", "seq", "as the channel was told", "signature"):
        table.add_column(column)
    for feed in demo.feeds:
        if feed.order_id not in detailed:
            continue
        channel_order = feed.label.removeprefix(f"{feed.channel_id} ")
        about = [
            f"{feed.order_id[:8]}…",
            f"{feed.channel_id} {escape(channel_order)}",
            f"→ {feed.hook}",
            f"  ({feed.vocabulary})",
        ]
        rows = max(len(feed.updates), len(about))
        for i in range(rows):
            update = feed.updates[i] if i < len(feed.updates) else None
            told, signature = "", ""
            if update is not None:
                told = escape(update.status)
                if not 200 <= update.http_status < 300:
                    told += f" [red](answered {update.http_status})[/red]"
                elif update.duplicate:
                    told += " [yellow](the same event again)[/yellow]"
                signature = _yes(update.signature_valid is True, "valid", "INVALID")
            table.add_row(
                about[i] if i < len(about) else "",
                str(update.sequence)
                if update is not None
                else ("[red]none[/red]" if i == 0 else ""),
                told,
                signature,
                end_section=i == rows - 1,
            )
    console.print(table)

    table = Table(title="every demo order: what its channel applied (each event once)")
    for column in ("order", "sequences", "last told", "signed", "gateway", "ok"):
        table.add_column(column)
    for feed in demo.feeds:
        last = feed.last
        valid = sum(u.signature_valid is True for u in feed.updates)
        table.add_row(
            f"{feed.order_id[:8]}…\n{escape(feed.label)}",
            " ".join(str(u.sequence) for u in feed.applied) or "[red]none[/red]",
            escape(last.status) if last else "-",
            _yes(feed.signed, f"{valid}/{len(feed.updates)}", f"{valid}/{len(feed.updates)}"),
            f"{feed.status}\n#{feed.status_sequence}",
            _feed_verdict(feed),
        )
    console.print(table)

    table = Table(title="shipment emails the SMTP sink received")
    for column in ("to", "subject", "tracking numbers in the body", "seq"):
        table.add_column(column)
    orders = {feed.order_id: feed for feed in demo.feeds}
    for mail in demo.mails:
        of = orders.get(mail.order_id)
        known = set(of.tracking_numbers) if of else set()
        to = escape(", ".join(mail.to))
        if not mail.reply.startswith("250"):
            to += f" [red](sink: {escape(mail.reply)})[/red]"
        table.add_row(
            to,
            escape(mail.subject),
            "\n".join(
                _yes(number in known, number, f"{number} (not the order's)")
                for number in mail.tracking_numbers
            )
            or "[red]none[/red]",
            str(mail.sequence),
        )
    console.print(table)
    webstore = [f for f in demo.feeds if f.channel_id == SHIPMENT_EMAIL[1]]
    mailed = [f for f in webstore if demo.mailed(f)]
    without = [f for f in webstore if not demo.mailed(f)]
    good = sum(feed.ok for feed in demo.feeds)
    color = "green" if demo.ok else "red"
    console.print(
        f"[{color}]{good} of {len(demo.feeds)} orders' channels were told every status in "
        f"order[/{color}] (sequences only up, all signatures valid, the last one the order's "
        f"current status, shipped in the channel's words), {demo.seconds:.1f} s after the "
        f"fulfillment demos (timeout {demo.timeout:.0f} s); {len(mailed)} of {len(webstore)} "
        f"{SHIPMENT_EMAIL[1]} customers got a shipment email with their tracking numbers"
        + (
            " ([red]none for "
            + ", ".join(escape(f.customer_email or f.label) for f in without)
            + "[/red])"
            if without
            else ""
        )
    )


def _yes(ok: bool, yes: str = "yes", no: str = "NO") -> str:
    return f"[green]{yes}[/green]" if ok else f"[red]{no}[/red]"


def _feed_verdict(feed: OrderFeed) -> str:
    problems = []
    if not feed.signed:
        problems.append("unsigned")
    if not feed.increasing:
        problems.append("went back")
    if not feed.caught_up:
        problems.append("behind")
    elif not feed.shipped:
        problems.append("not shipped")
    if feed.regressions:
        problems.append(f"{feed.regressions} regressions")
    if feed.in_flight_max > 1:
        problems.append(f"{feed.in_flight_max} at once")
    return _yes(feed.ok and not problems, "yes", escape(", ".join(problems) or "NO"))


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
        f"receipt PO-DEMO-RESTOCK-{demo.run} brings back what the orders took (fulfillment then "
        "ships them), so the next run starts from the same availability: "
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
