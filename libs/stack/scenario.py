"""The ``make demo`` scenario against a running stack. It grows with each issue into the full
end-to-end flow; today it proves all four services are SERVING and discoverable by reflection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stack.supervisor import health_status


@dataclass
class Check:
    service: str
    address: str
    health: str
    reflected: list[str]

    @property
    def ok(self) -> bool:
        return self.health == "SERVING" and any(name.startswith("dwf.") for name in self.reflected)


async def reflected_services(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
            return [service.name for service in response.list_services_response.service]
    return []


async def check_services(addresses: dict[str, str]) -> list[Check]:
    checks = []
    for name, address in addresses.items():
        services = await reflected_services(address)
        own = [s for s in services if s.startswith("dwf.")]
        status = await health_status(address, own[0] if own else "")
        checks.append(Check(name, address, status, services))
    return checks


# --- inventory: seed, availability, a hold ---------------------------------------------

DEMO_MASTER_DATA: dict[str, list[dict[str, Any]]] = {
    "warehouses": [
        {
            "code": "CHI-1",
            "name": "Chicago DC",
            "region_code": "US",
            "postal_code": "60607",
            "priority": 1,
        },
        {
            "code": "DAL-1",
            "name": "Dallas DC",
            "region_code": "US",
            "postal_code": "75201",
            "priority": 2,
        },
        {
            "code": "B2B-NJ",
            "name": "Newark B2B",
            "region_code": "US",
            "postal_code": "07102",
            "priority": 3,
            "channels": ["b2b-portal"],
        },
    ],
    "items": [
        {"sku": "BOLT-M8-50", "description": "Hex bolt M8x50, zinc"},
        {"sku": "NUT-M8", "description": "Hex nut M8"},
        {"sku": "WASHER-M8", "description": "Flat washer M8"},
    ],
    "safety_stock": [{"sku": "BOLT-M8-50", "warehouse": "CHI-1", "quantity": 10}],
}
DEMO_RECEIPTS = [
    ("BOLT-M8-50", "CHI-1", 120),
    ("BOLT-M8-50", "DAL-1", 60),
    ("NUT-M8", "CHI-1", 500),
    ("NUT-M8", "B2B-NJ", 1000),
    ("WASHER-M8", "DAL-1", 40),
]


@dataclass
class InventoryDemo:
    levels_before: list[tuple[str, str, int, int, int]]
    hold_id: str
    hold_lines: list[tuple[str, str, int]]
    levels_after: list[tuple[str, str, int, int, int]]
    extended_until: str
    released_state: str
    levels_final: list[tuple[str, str, int, int, int]]

    @property
    def ok(self) -> bool:
        # Relative to the start, and in available stock: with a kept data dir earlier runs'
        # orders may still be reserved, and fulfillment may allocate or ship them meanwhile
        # (which moves reserved to allocated, or takes allocated and on-hand alike, but leaves
        # what is available alone).
        available_before = sum(a for *_, a in self.levels_before)
        available_after = sum(a for *_, a in self.levels_after)
        available_final = sum(a for *_, a in self.levels_final)
        return (
            available_before - available_after == 120
            and available_final == available_before
            and self.released_state == "RELEASED"
        )


async def run_inventory_demo(address: str, database_url: str) -> InventoryDemo:
    import uuid

    from google.protobuf import duration_pb2

    from chassis import db
    from dwf.inventory.v1 import inventory_pb2 as pb
    from dwf.inventory.v1 import inventory_pb2_grpc
    from services.inventory.store.master_data import load_master_data

    engine = db.create_engine(database_url, "inventory", application_name="dwf-demo")
    try:
        async with db.session_factory(engine).begin() as session:
            await load_master_data(session, DEMO_MASTER_DATA)
    finally:
        await engine.dispose()
    skus = [item["sku"] for item in DEMO_MASTER_DATA["items"]]

    def ttl(seconds: int) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=seconds)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)

        async def levels() -> list[tuple[str, str, int, int, int]]:
            answer = await stub.GetAvailability(pb.GetAvailabilityRequest(skus=skus))
            return [
                (s.sku, lv.warehouse_id, lv.on_hand, lv.reserved, lv.available)
                for s in answer.skus
                for lv in s.warehouses
            ]

        for sku, warehouse, quantity in DEMO_RECEIPTS:
            await stub.RecordStockMovement(
                pb.RecordStockMovementRequest(
                    request_id=str(uuid.uuid4()),
                    sku=sku,
                    warehouse_id=warehouse,
                    kind=pb.MOVEMENT_KIND_RECEIPT,
                    quantity_delta=quantity,
                    reference=f"PO-DEMO-{sku}-{warehouse}",
                )
            )
        before = await levels()
        hold = await stub.Reserve(
            pb.ReserveRequest(
                request_id=str(uuid.uuid4()),
                channel_id="web-store",
                ttl=ttl(900),
                owner=pb.ReservationOwner(
                    type=pb.RESERVATION_OWNER_TYPE_HOLD, owner_id=f"checkout-{uuid.uuid4().hex[:8]}"
                ),
                lines=[
                    pb.LineItem(line_id="1", sku="BOLT-M8-50", quantity=115),
                    pb.LineItem(line_id="2", sku="WASHER-M8", quantity=5),
                ],
            )
        )
        reservation = hold.reservation
        after = await levels()
        extended = await stub.ExtendReservation(
            pb.ExtendReservationRequest(
                request_id=str(uuid.uuid4()),
                reservation_id=reservation.reservation_id,
                ttl=ttl(1800),
            )
        )
        released = await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(
                request_id=str(uuid.uuid4()),
                reservation_id=reservation.reservation_id,
                reason="demo: checkout abandoned",
            )
        )
        final = await levels()
    return InventoryDemo(
        levels_before=before,
        hold_id=reservation.reservation_id,
        hold_lines=[
            (ln.sku, w.warehouse_id, w.quantity) for ln in reservation.lines for w in ln.warehouses
        ],
        levels_after=after,
        extended_until=extended.reservation.expires_at.ToJsonString(),
        released_state=pb.ReservationState.Name(released.reservation.state).removeprefix(
            "RESERVATION_STATE_"
        ),
        levels_final=final,
    )


# --- order gateway: a storefront and the four channel formats --------------------------

DEMO_DIR = Path(__file__).parent / "demo"
GATEWAY_MASTER_DATA = DEMO_DIR / "gateway_master_data.json"
RUN_MARKER = "{{run}}"  # in the payload templates: replaced by a token unique to each run
# (template, channel, format name); each channel's API key is in GATEWAY_MASTER_DATA.
CHANNEL_PAYLOADS = (
    ("shopify_order.json.tmpl", "web-store", "SHOPIFY_JSON"),
    ("amazon_order.json.tmpl", "marketplace", "AMAZON_JSON"),
    ("b2b_portal_order.json.tmpl", "b2b-portal", "B2B_PORTAL_JSON"),
    ("x12_850.edi.tmpl", "edi-acme", "X12_850"),
)
REFUSED_PAYLOAD = ("x12_850_unknown_part.edi.tmpl", "edi-acme", "X12_850")
REFUSED_FIELD = "PO1[1].PO107"  # the 850's one line names a part edi-acme's aliases lack
# The storefront's cart: (line_id, channel SKU, quantity in each).
STOREFRONT_CART = (("1", "NW-BOLT-M8X50", 24), ("2", "NW-WASHER-M8", 6))
STOREFRONT_CHECK = (*STOREFRONT_CART, ("3", "NW-NUT-M8", 50), ("4", "NW-BOLT-M8X50", 5000))
READ_MODEL_CATCH_UP_SECONDS = 10.0
READ_MODEL_POLL_SECONDS = 0.1
STOREFRONT_PRICES = {"NW-BOLT-M8X50": 850_000_000, "NW-WASHER-M8": 100_000_000}  # USD nanos


StockRow = tuple[str, str, int, int, int]  # sku, warehouse, on hand, reserved, available


async def stock_levels(stub: Any) -> list[StockRow]:
    """Inventory's levels of the demo SKUs (an InventoryServiceStub)."""
    from dwf.inventory.v1 import inventory_pb2 as ipb

    skus = [item["sku"] for item in DEMO_MASTER_DATA["items"]]
    answer = await stub.GetAvailability(ipb.GetAvailabilityRequest(skus=skus), timeout=10)
    return [
        (s.sku, lv.warehouse_id, lv.on_hand, lv.reserved, lv.available)
        for s in answer.skus
        for lv in s.warehouses
    ]


PositionRow = tuple[str, str, int, int, int, int]  # ... on hand, reserved, allocated, available


async def stock_positions(address: str) -> list[PositionRow]:
    """Inventory's levels of the demo SKUs with what is allocated to fulfillment."""
    from dwf.inventory.v1 import inventory_pb2 as ipb
    from dwf.inventory.v1 import inventory_pb2_grpc

    skus = [item["sku"] for item in DEMO_MASTER_DATA["items"]]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        answer = await stub.GetAvailability(ipb.GetAvailabilityRequest(skus=skus), timeout=10)
    return [
        (s.sku, lv.warehouse_id, lv.on_hand, lv.reserved, lv.allocated, lv.available)
        for s in answer.skus
        for lv in s.warehouses
    ]


async def restock_sold(
    address: str, run: str, before: Sequence[StockRow]
) -> tuple[list[tuple[str, str, int]], list[StockRow]]:
    """Receive, per SKU and warehouse, what is no longer available since ``before`` (what the
    orders since then reserved); answers the quantities received and the levels after. The
    inventory demo's receipts are recorded once per data dir (their references are fixed), so
    without this every `make demo` on a kept data dir would sell from an ever smaller stock.

    Measured in available stock, not in reserved: fulfillment allocates (reserved →
    allocated) and ships (allocated and on-hand down) the orders meanwhile, which leaves the
    available quantity alone. Once the orders have shipped, on-hand is back where it was."""
    import uuid

    from dwf.inventory.v1 import inventory_pb2 as ipb
    from dwf.inventory.v1 import inventory_pb2_grpc

    available = {(sku, warehouse): a for sku, warehouse, _, _, a in before}
    restocked: list[tuple[str, str, int]] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for sku, warehouse, _, _, now_available in await stock_levels(stub):
            sold = available.get((sku, warehouse), now_available) - now_available
            if sold <= 0:
                continue
            await stub.RecordStockMovement(
                ipb.RecordStockMovementRequest(
                    request_id=str(uuid.uuid4()),
                    sku=sku,
                    warehouse_id=warehouse,
                    kind=ipb.MOVEMENT_KIND_RECEIPT,
                    quantity_delta=sold,
                    reference=f"PO-DEMO-RESTOCK-{run}",
                ),
                timeout=10,
            )
            restocked.append((sku, warehouse, sold))
        return restocked, await stock_levels(stub)


def render_payload(template: str, run: str) -> bytes:
    """A demo channel payload with this run's token in its order ids, so that every run
    (also against a kept data dir) sends new channel orders."""
    return (DEMO_DIR / template).read_text().replace(RUN_MARKER, run).encode()


@dataclass
class OrderLineRow:
    line_id: str
    channel_sku: str
    quantity: str  # as the channel sent it, e.g. "2 CA"
    sku: str
    ordered: int  # each
    reserved: int
    backordered: int


@dataclass
class GatewayOrder:
    source: str  # "AcceptOrder" or the payload format
    channel_id: str
    channel_order_id: str
    order_id: str
    status: str
    hold_id: str
    existing: bool
    customer_id: str
    lines: list[OrderLineRow]

    @property
    def consistent(self) -> bool:
        return (
            bool(self.order_id)
            and self.status == "ACCEPTED"
            and not self.existing
            and bool(self.lines)
            and all(ln.reserved + ln.backordered == ln.ordered > 0 for ln in self.lines)
        )


@dataclass
class GatewayDemo:
    run: str
    restocked: list[tuple[str, str, int]]  # sku, warehouse, quantity received again
    levels_after: list[StockRow]  # inventory's, after the restock
    expected_counts: dict[str, int]
    applied: dict[str, int]
    # line_id, channel SKU, SKU, requested, available, state
    availability: list[tuple[str, str, str, int, int, str]]
    as_of: datetime  # of the read model's answer
    as_of_age_seconds: float
    hold_id: str
    hold_lines: list[tuple[str, int, int]]  # sku, requested, held
    hold_expires_at: str
    accepted: GatewayOrder
    ingested: list[GatewayOrder]
    acknowledgement: list[str]  # the 855's segments
    retry_order_id: str
    retry_request_id: str
    refused_code: str
    refused_reason: str
    refused_fields: list[tuple[str, str]]  # field path, description
    refused_acknowledgement: list[str]

    @property
    def ok(self) -> bool:
        states = {line_id: state for line_id, _, _, _, _, state in self.availability}
        in_cart = {line_id for line_id, _, _ in STOREFRONT_CART}
        x12 = next((o for o in self.ingested if o.source == "X12_850"), None)
        return (
            self.applied == self.expected_counts
            and len(self.availability) == len(STOREFRONT_CHECK)
            and all(states[line_id] == "IN_STOCK" for line_id in in_cart)
            and "UNKNOWN_SKU" not in states.values()
            and bool(self.hold_id)
            and all(held == requested for _, requested, held in self.hold_lines)
            and self.accepted.consistent
            and self.accepted.hold_id == self.hold_id
            and all(ln.reserved == ln.ordered for ln in self.accepted.lines)
            and len(self.ingested) == len(CHANNEL_PAYLOADS)
            and all(order.consistent for order in self.ingested)
            and x12 is not None
            and any(s.startswith("BAK*00*A") for s in self.acknowledgement)
            and sum(s.startswith("ACK*") for s in self.acknowledgement) == len(x12.lines)
            and self.retry_order_id == self.accepted.order_id
            and self.refused_code == "INVALID_ARGUMENT"
            and [path for path, _ in self.refused_fields] == [REFUSED_FIELD]
            and any(s.startswith("BAK*00*RJ") for s in self.refused_acknowledgement)
            and sum(q for _, _, q in self.restocked)
            == sum(ln.reserved for order in [self.accepted, *self.ingested] for ln in order.lines)
        )


def x12_segments(document: str) -> list[str]:
    """The segments of an X12 interchange (its ISA declares the terminator)."""
    if len(document) < 106:
        return []
    return [s.strip() for s in document.split(document[105]) if s.strip()]


def _rich_details(error: grpc.aio.AioRpcError) -> list[Any]:
    from google.rpc import error_details_pb2, status_pb2

    from dwf.order.v1 import order_gateway_pb2 as pb

    found: list[Any] = []
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            for cls in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.BadRequest,
                pb.IngestChannelOrderResponse,
            ):
                message = cls()
                if detail.Unpack(message):
                    found.append(message)
    return found


def _order_row(source: str, order: Any, existing: bool) -> GatewayOrder:
    from dwf.common.v1 import common_pb2

    return GatewayOrder(
        source=source,
        channel_id=order.channel.channel_id,
        channel_order_id=order.channel.channel_order_id,
        order_id=order.order_id,
        status=common_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_"),
        hold_id=order.hold_id,
        existing=existing,
        customer_id=order.customer.customer_id,
        lines=[
            OrderLineRow(
                line_id=line.line_id,
                channel_sku=line.channel_sku,
                quantity=f"{line.quantity.value} {line.quantity.unit_of_measure}",
                sku=line.sku,
                ordered=line.quantities.ordered,
                reserved=line.quantities.reserved,
                backordered=line.quantities.backordered,
            )
            for line in order.lines
        ],
    )


async def run_gateway_demo(
    address: str, database_url: str, inventory_address: str, run: str | None = None
) -> GatewayDemo:
    """Play a storefront and four channels against the order gateway.

    The gateway's master data (channels, items and units, aliases, API keys) comes from
    ``demo/gateway_master_data.json`` through MasterDataService.ApplyMasterData, called with an
    admin credential this function first writes into the gateway's database with the
    gateway's own role (a fresh random key on every run). The stock is what the inventory demo
    received; what the orders take from available stock is received again at the end
    (``restock_sold``; fulfillment then ships them, which brings on-hand back down), so a
    rerun on a kept data dir starts from the same availability. ``run`` goes into the
    channel order ids (default: from the clock).
    """
    import secrets
    import time
    import uuid

    from google.protobuf import duration_pb2
    from google.rpc import error_details_pb2

    from chassis import db
    from dwf.common.v1 import common_pb2
    from dwf.inventory.v1 import inventory_pb2_grpc
    from dwf.order.v1 import master_data_pb2, master_data_pb2_grpc, order_gateway_pb2_grpc
    from dwf.order.v1 import order_gateway_pb2 as pb
    from services.order_gateway.store.master_data import SECTIONS, load_master_data

    admin_key = f"demo-admin-{secrets.token_urlsafe(24)}"
    engine = db.create_engine(database_url, "order_gateway", application_name="dwf-demo")
    try:
        async with db.session_factory(engine).begin() as session:
            await load_master_data(
                session,
                {
                    "credentials": [
                        {"credential_id": "demo-admin", "api_key": admin_key, "scopes": ["admin"]}
                    ]
                },
            )
    finally:
        await engine.dispose()

    document_text = GATEWAY_MASTER_DATA.read_text()
    document = json.loads(document_text)
    keys = {c["channel_id"]: c["api_key"] for c in document["credentials"]}

    def auth(key: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {key}")]

    if run is None:  # 7 digits (the order ids' shapes), a new value every second
        run = f"{int(time.time()) % 10**7:07d}"
    async with grpc.aio.insecure_channel(inventory_address) as channel:
        stock_before = await stock_levels(inventory_pb2_grpc.InventoryServiceStub(channel))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            admin = master_data_pb2_grpc.MasterDataServiceStub(channel)
            stub = order_gateway_pb2_grpc.OrderGatewayServiceStub(channel)
            applied = await admin.ApplyMasterData(
                master_data_pb2.ApplyMasterDataRequest(
                    request_id=str(uuid.uuid4()), document=document_text
                ),
                metadata=auth(admin_key),
                timeout=10,
            )
            web = auth(keys["web-store"])

            def items(rows: Sequence[tuple[str, str, int]]) -> list[pb.RequestedItem]:
                return [
                    pb.RequestedItem(
                        line_id=line_id,
                        channel_sku=sku,
                        quantity=common_pb2.Quantity(value=quantity),
                    )
                    for line_id, sku, quantity in rows
                ]

            # The storefront: is it in stock, hold it during payment, then the paid order.
            # The read model follows inventory's (coalesced) events: the check waits until it
            # has caught up with what inventory holds now (the previous section just held and
            # released stock), as a storefront page would show a few moments later.
            web_warehouses = next(
                set(c["warehouses"]) for c in document["channels"] if c["channel_id"] == "web-store"
            )
            check = pb.CheckAvailabilityRequest(
                channel_id="web-store", items=items(STOREFRONT_CHECK)
            )
            deadline = asyncio.get_running_loop().time() + READ_MODEL_CATCH_UP_SECONDS
            async with grpc.aio.insecure_channel(inventory_address) as inventory_channel:
                inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
                while True:
                    truth: dict[str, int] = {}
                    for sku, warehouse, _, _, available in await stock_levels(inventory):
                        if warehouse in web_warehouses:
                            truth[sku] = truth.get(sku, 0) + max(available, 0)
                    checked = await stub.CheckAvailability(check, metadata=web, timeout=10)
                    caught_up = all(
                        item.available_quantity == truth.get(item.sku, 0)
                        for item in checked.items
                        if item.sku
                    )
                    if caught_up or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(READ_MODEL_POLL_SECONDS)  # a storefront's next look
            as_of = checked.as_of.ToDatetime(tzinfo=UTC)
            as_of_age = (datetime.now(UTC) - as_of).total_seconds()
            channel_skus = {line_id: sku for line_id, sku, _ in STOREFRONT_CHECK}
            availability = [
                (
                    a.line_id,
                    channel_skus[a.line_id],
                    a.sku,
                    a.requested_quantity,
                    a.available_quantity,
                    pb.AvailabilityState.Name(a.state).removeprefix("AVAILABILITY_STATE_"),
                )
                for a in checked.items
            ]
            held = await stub.CreateHold(
                pb.CreateHoldRequest(
                    request_id=str(uuid.uuid4()),
                    channel_id="web-store",
                    items=items(STOREFRONT_CART),
                    ttl=duration_pb2.Duration(seconds=900),
                    checkout_reference=f"cart-{run}",
                ),
                metadata=web,
                timeout=10,
            )
            hold = held.hold
            address_to = common_pb2.PostalAddress(
                name="Sam Rivera",
                lines=["1600 W Fulton St", "Unit 3"],
                locality="Chicago",
                administrative_area="IL",
                postal_code="60612",
                region_code="US",
                phone="+13125550123",
            )
            accept = pb.AcceptOrderRequest(
                request_id=str(uuid.uuid4()),
                channel=common_pb2.ChannelReference(
                    channel_id="web-store", channel_order_id=f"WEB-{run}"
                ),
                customer=common_pb2.Customer(
                    channel_customer_id="cust-4411", name="Sam Rivera", email="sam@example.com"
                ),
                ship_to=address_to,
                lines=[
                    common_pb2.OrderLine(
                        line_id=line_id,
                        channel_sku=sku,
                        quantity=common_pb2.Quantity(value=quantity, unit_of_measure="EA"),
                        unit_price=common_pb2.Money(
                            currency_code="USD", nanos=STOREFRONT_PRICES[sku]
                        ),
                    )
                    for line_id, sku, quantity in STOREFRONT_CART
                ],
                hold_id=hold.hold_id,
                shipping_method="STANDARD",
                payment_reference=f"pi_demo_{run}",
            )
            accepted = await stub.AcceptOrder(accept, metadata=web, timeout=10)

            # The channels: one raw payload per format, each with its own channel's API key.
            ingested: list[GatewayOrder] = []
            acknowledgement: list[str] = []
            for template, channel_id, fmt in CHANNEL_PAYLOADS:
                answer = await stub.IngestChannelOrder(
                    pb.IngestChannelOrderRequest(
                        request_id=str(uuid.uuid4()),
                        channel_id=channel_id,
                        format=common_pb2.ChannelFormat.Value(f"CHANNEL_FORMAT_{fmt}"),
                        payload=render_payload(template, run),
                    ),
                    metadata=auth(keys[channel_id]),
                    timeout=10,
                )
                ingested.append(_order_row(fmt, answer.order, answer.existing_order))
                if answer.acknowledgement_document:
                    acknowledgement = x12_segments(answer.acknowledgement_document)

            # A client that lost the answer retries with the same request_id: the same order.
            retried = await stub.AcceptOrder(accept, metadata=web, timeout=10)

            # A payload the gateway cannot map is refused, naming the field in the channel's
            # own document; an 850 is still answered (with a rejecting 855).
            template, channel_id, fmt = REFUSED_PAYLOAD
            refused_code, refused_reason = "OK", ""
            refused_fields: list[tuple[str, str]] = []
            refused_ack: list[str] = []
            try:
                await stub.IngestChannelOrder(
                    pb.IngestChannelOrderRequest(
                        request_id=str(uuid.uuid4()),
                        channel_id=channel_id,
                        format=common_pb2.ChannelFormat.Value(f"CHANNEL_FORMAT_{fmt}"),
                        payload=render_payload(template, run),
                    ),
                    metadata=auth(keys[channel_id]),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                refused_code = error.code().name
                for detail in _rich_details(error):
                    if isinstance(detail, pb.IngestChannelOrderResponse):
                        refused_ack = x12_segments(detail.acknowledgement_document)
                    elif isinstance(detail, error_details_pb2.BadRequest):
                        refused_fields = [(v.field, v.description) for v in detail.field_violations]
                    elif isinstance(detail, error_details_pb2.ErrorInfo):
                        refused_reason = detail.reason
    finally:  # also when a step failed: the next run must find the same stock
        restocked, levels_after = await restock_sold(inventory_address, run, stock_before)
    return GatewayDemo(
        run=run,
        restocked=restocked,
        levels_after=levels_after,
        expected_counts={section: len(document.get(section, [])) for section in SECTIONS},
        applied=dict(applied.applied),
        availability=availability,
        as_of=as_of,
        as_of_age_seconds=as_of_age,
        hold_id=hold.hold_id,
        hold_lines=[(ln.sku, ln.requested_quantity, ln.held_quantity) for ln in hold.lines],
        hold_expires_at=hold.expires_at.ToJsonString(),
        accepted=_order_row("AcceptOrder", accepted.order, accepted.existing_order),
        ingested=ingested,
        acknowledgement=acknowledgement,
        retry_order_id=retried.order.order_id,
        retry_request_id=accept.request_id,
        refused_code=refused_code,
        refused_reason=refused_reason,
        refused_fields=refused_fields,
        refused_acknowledgement=refused_ack,
    )


# --- fulfillment: the orders through the ERP, WMS and carrier sandboxes ------------------

#: The ERP's faults in the fault scenario: 30% 429, 20% 5xx, 10% timeout after the commit
#: (hanging longer than fulfillment's read timeout in the local stack, 1 s).
ERP_FAULTS: dict[str, Any] = {
    "rate_429": 0.3,
    "rate_5xx": 0.2,
    "rate_timeout_after_commit": 0.1,
    "hang_seconds": 2,
}
#: The storefront's orders of the fault scenario: (line_id, channel SKU, quantity in each).
FAULT_CART = (("1", "NW-BOLT-M8X50", 2), ("2", "NW-NUT-M8", 3))
FAULT_ORDERS = 4
FAULT_CHANNEL = "web-store"  # its API key is in GATEWAY_MASTER_DATA
_ATTEMPT = re.compile(r"\(attempt (\d+)\)")


@dataclass
class ExceptionRow:
    """An exception of the workbench (ListExceptions)."""

    stage: str
    error_code: str
    state: str
    attempts: int


@dataclass
class FulfillmentRow:
    """An order as GetOrderFulfillment shows it."""

    order_id: str
    label: str  # where it came from, e.g. "web-store WEB-0000001"
    status: str = "not seen yet"  # by fulfillment (its lifecycle status)
    channel_id: str = ""
    open_exception: str = ""  # "<stage> <error code>" of an OPEN exception, if any
    erp_order_number: str = ""
    releases: list[str] = field(default_factory=list)  # "CHI-1 SHIPPED"
    shipments: list[str] = field(default_factory=list)  # ERP item fulfillment (IF-) or WMS ids
    invoices: list[str] = field(default_factory=list)  # ERP invoice numbers
    booking_attempts: int = 0  # ErpOrderBooked.attempts (from the order's timeline)
    exceptions: list[ExceptionRow] = field(default_factory=list)
    fixed: str = ""  # what was fixed on the exception workbench, and why

    @property
    def completed(self) -> bool:
        return self.status == "COMPLETED" and not self.open_exception

    @property
    def shown_status(self) -> str:
        """The status with the EXCEPTION overlay the gateway's order view shows (fulfillment's
        own view keeps the lifecycle status and lists the open exception)."""
        return "EXCEPTION" if self.open_exception else self.status


@dataclass
class FulfillmentDemo:
    rows: list[FulfillmentRow]
    seconds: float  # until all were COMPLETED (or the timeout)
    timeout: float

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(row.completed for row in self.rows)


@dataclass
class ErpFaultDemo:
    before: dict[str, Any]  # the ERP's fault settings before the scenario
    faults: dict[str, Any]  # while the orders ran
    restored: dict[str, Any]  # and after it
    rows: list[FulfillmentRow]
    seconds: float
    timeout: float
    sales_orders: dict[str, int]  # order id → sales orders the ERP holds for it
    restocked: list[tuple[str, str, int]]
    positions_after: list[PositionRow]
    error: str = ""  # what went wrong, if something did

    @property
    def ok(self) -> bool:
        faulted = all(self.faults.get(name) == value for name, value in ERP_FAULTS.items())
        restored = all(self.restored.get(name) == self.before.get(name) for name in ERP_FAULTS)
        return (
            not self.error
            and faulted
            and restored
            and len(self.rows) == FAULT_ORDERS
            and all(row.completed for row in self.rows)
            and all(self.sales_orders.get(row.order_id) == 1 for row in self.rows)
            and all(e.state != "OPEN" for row in self.rows for e in row.exceptions)
        )


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def _fill_row(row: FulfillmentRow, found: Any) -> None:
    """``row`` from an OrderFulfillment message."""
    from dwf.common.v1 import common_pb2
    from dwf.fulfillment.v1 import fulfillment_pb2 as fpb

    row.status = _name(common_pb2.OrderStatus, found.status, "ORDER_STATUS_")
    row.channel_id = found.channel_id
    row.open_exception = next(
        (
            f"{_name(fpb.WorkflowStage, e.stage, 'WORKFLOW_STAGE_')} {e.error_code}"
            for e in found.exceptions
            if e.state == fpb.EXCEPTION_STATE_OPEN
        ),
        "",
    )
    row.erp_order_number = found.erp_order_number
    row.releases = [
        f"{fo.warehouse_id} "
        + _name(fpb.FulfillmentOrderState, fo.state, "FULFILLMENT_ORDER_STATE_")
        for fo in found.fulfillment_orders
    ]
    row.shipments = [s.erp_shipment_reference or s.wms_shipment_id for s in found.shipments]
    row.invoices = [i.erp_invoice_number for i in found.invoices]
    for entry in found.timeline:
        if entry.stage == fpb.WORKFLOW_STAGE_ERP_BOOKING:
            attempt = _ATTEMPT.search(entry.summary)
            if attempt is not None:
                row.booking_attempts = int(attempt.group(1))


def workbench_customer(channel_id: str) -> str:
    """The ERP customer account a channel's anonymous orders are booked to."""
    return f"CUST-{channel_id.upper()}"


async def _fix_missing_customer(stub: Any, row: FulfillmentRow, found: Any) -> None:
    """What an operator does with an order the ERP refused for want of a customer (a
    marketplace order: the marketplace does not name its buyer as an account): on the
    exception workbench, RetryException with the channel's account as the customer."""
    import uuid

    from dwf.fulfillment.v1 import fulfillment_pb2 as fpb

    for record in found.exceptions:
        if (
            record.state == fpb.EXCEPTION_STATE_OPEN
            and fpb.EXCEPTION_ACTION_FIX_DATA_AND_RETRY in record.safe_actions
            and "customer_id" in record.error_message
        ):
            customer = workbench_customer(found.channel_id)
            await stub.RetryException(
                fpb.RetryExceptionRequest(
                    request_id=str(uuid.uuid4()),
                    exception_id=record.exception_id,
                    fix=fpb.ExceptionFix(customer_id=customer),
                    note=f"demo: {found.channel_id} orders are booked to account {customer}",
                ),
                timeout=5,
            )
            refusal = record.error_message.split(f"{record.error_code}: ", 1)[-1]
            row.fixed = (
                f"ERP {record.error_code} '{refusal}' → RetryException with customer_id {customer}"
            )
            row.open_exception = ""
            return


async def _follow_orders(
    stub: Any,
    rows: list[FulfillmentRow],
    timeout: float,
    progress: Callable[[list[FulfillmentRow]], None] | None,
    *,
    fix_missing_customers: bool = False,
) -> float:
    """Poll GetOrderFulfillment until every order is COMPLETED or ``timeout`` passed; answers
    the seconds it took. With ``fix_missing_customers``, an order the ERP refused for want of
    a customer is retried once on the workbench with its channel's account."""
    import time

    from dwf.fulfillment.v1 import fulfillment_pb2 as fpb

    started = time.monotonic()
    to_fix: list[tuple[FulfillmentRow, Any]] = []
    while True:
        for row in rows:
            if row.completed:
                continue
            try:
                answer = await stub.GetOrderFulfillment(
                    fpb.GetOrderFulfillmentRequest(order_id=row.order_id), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: not consumed yet
                    row.status = f"({error.code().name})"
                continue
            _fill_row(row, answer.fulfillment)
            if fix_missing_customers and row.open_exception and not row.fixed:
                to_fix.append((row, answer.fulfillment))
        if progress is not None:
            progress(rows)
        for row, found in to_fix:  # after showing the exception
            await _fix_missing_customer(stub, row, found)
        to_fix.clear()
        elapsed = time.monotonic() - started
        if all(row.completed for row in rows) or elapsed > timeout:
            return elapsed
        await asyncio.sleep(0.25)  # polling fulfillment's view of the orders


async def run_fulfillment_demo(
    address: str,
    orders: Sequence[tuple[str, str]],
    *,
    timeout: float = 60,
    progress: Callable[[list[FulfillmentRow]], None] | None = None,
) -> FulfillmentDemo:
    """Follow ``orders`` ((order id, label), e.g. the gateway demo's) through fulfillment —
    ERP booking, allocation, WMS release, shipments, ERP posting and invoices — until each is
    COMPLETED, within ``timeout`` seconds. An order the ERP refuses for want of a customer
    (the marketplace's) is fixed on the exception workbench, as an operator would."""
    from dwf.fulfillment.v1 import fulfillment_pb2_grpc

    rows = [FulfillmentRow(order_id, label) for order_id, label in orders]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = fulfillment_pb2_grpc.FulfillmentServiceStub(channel)
        seconds = await _follow_orders(stub, rows, timeout, progress, fix_missing_customers=True)
    return FulfillmentDemo(rows=rows, seconds=seconds, timeout=timeout)


async def _exceptions_of(stub: Any, order_id: str) -> list[ExceptionRow]:
    from dwf.fulfillment.v1 import fulfillment_pb2 as fpb

    answer = await stub.ListExceptions(
        fpb.ListExceptionsRequest(
            order_id=order_id,
            states=[
                fpb.EXCEPTION_STATE_OPEN,
                fpb.EXCEPTION_STATE_RETRYING,
                fpb.EXCEPTION_STATE_RESOLVED,
            ],
            page_size=100,
        ),
        timeout=5,
    )
    return [
        ExceptionRow(
            stage=_name(fpb.WorkflowStage, e.stage, "WORKFLOW_STAGE_"),
            error_code=e.error_code,
            state=_name(fpb.ExceptionState, e.state, "EXCEPTION_STATE_"),
            attempts=e.attempts,
        )
        for e in answer.exceptions
    ]


async def run_erp_fault_demo(
    gateway_address: str,
    fulfillment_address: str,
    inventory_address: str,
    erp_url: str,
    *,
    run: str,
    timeout: float = 60,
    progress: Callable[[list[FulfillmentRow]], None] | None = None,
) -> ErpFaultDemo:
    """The ERP misbehaves (``ERP_FAULTS``, set through its admin API) while the web store
    sends ``FAULT_ORDERS`` new orders: each still reaches COMPLETED, and the ERP holds exactly
    one sales order per order however often fulfillment had to try (the per-order counts come
    from the ERP's ``GET /_admin/sales-orders``; the retries from ErpOrderBooked.attempts and
    the exception workbench). The ERP's settings are restored afterwards, and what the orders
    took from stock is received again (``restock_sold``)."""
    import time
    import uuid

    import httpx

    from dwf.common.v1 import common_pb2
    from dwf.fulfillment.v1 import fulfillment_pb2_grpc
    from dwf.inventory.v1 import inventory_pb2_grpc
    from dwf.order.v1 import order_gateway_pb2 as pb
    from dwf.order.v1 import order_gateway_pb2_grpc

    document = json.loads(GATEWAY_MASTER_DATA.read_text())
    key = next(
        c["api_key"] for c in document["credentials"] if c.get("channel_id") == FAULT_CHANNEL
    )
    web = [("authorization", f"Bearer {key}")]
    rows: list[FulfillmentRow] = []
    settings: dict[str, Any] = {}
    faults: dict[str, Any] = {}
    restored: dict[str, Any] = {}
    sales_orders: dict[str, int] = {}
    seconds, error = 0.0, ""
    async with grpc.aio.insecure_channel(inventory_address) as channel:
        stock_before = await stock_levels(inventory_pb2_grpc.InventoryServiceStub(channel))
    async with httpx.AsyncClient(base_url=erp_url, timeout=10, trust_env=False) as erp:
        settings = (await erp.get("/_admin/faults")).raise_for_status().json()
        try:
            faults = (await erp.post("/_admin/faults", json=ERP_FAULTS)).raise_for_status().json()
            async with (
                grpc.aio.insecure_channel(gateway_address) as gateway_channel,
                grpc.aio.insecure_channel(fulfillment_address) as fulfillment_channel,
            ):
                gateway = order_gateway_pb2_grpc.OrderGatewayServiceStub(gateway_channel)
                fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(fulfillment_channel)
                for n in range(1, FAULT_ORDERS + 1):
                    channel_order_id = f"WEB-{run}-F{n}"
                    accepted = await gateway.AcceptOrder(
                        pb.AcceptOrderRequest(
                            request_id=str(uuid.uuid4()),
                            channel=common_pb2.ChannelReference(
                                channel_id=FAULT_CHANNEL, channel_order_id=channel_order_id
                            ),
                            customer=common_pb2.Customer(
                                channel_customer_id=f"cust-{5000 + n}",
                                name=f"Demo Buyer {n}",
                                email=f"buyer{n}@example.com",
                            ),
                            ship_to=common_pb2.PostalAddress(
                                name=f"Demo Buyer {n}",
                                lines=[f"{100 * n} N Wabash Ave"],
                                locality="Chicago",
                                administrative_area="IL",
                                postal_code="60602",
                                region_code="US",
                            ),
                            lines=[
                                common_pb2.OrderLine(
                                    line_id=line_id,
                                    channel_sku=sku,
                                    quantity=common_pb2.Quantity(
                                        value=quantity, unit_of_measure="EA"
                                    ),
                                    unit_price=common_pb2.Money(
                                        currency_code="USD", units=1, nanos=250_000_000
                                    ),
                                )
                                for line_id, sku, quantity in FAULT_CART
                            ],
                            shipping_method="STANDARD",
                            payment_reference=f"pi_demo_{run}_f{n}",
                        ),
                        metadata=web,
                        timeout=10,
                    )
                    rows.append(
                        FulfillmentRow(
                            accepted.order.order_id, f"{FAULT_CHANNEL} {channel_order_id}"
                        )
                    )
                seconds = await _follow_orders(fulfillment, rows, timeout, progress)
                listed = (await erp.get("/_admin/sales-orders")).raise_for_status().json()
                for order in listed["items"]:
                    reference = order["external_reference"]
                    sales_orders[reference] = sales_orders.get(reference, 0) + 1
                for row in rows:
                    row.exceptions = await _exceptions_of(fulfillment, row.order_id)
        except (grpc.aio.AioRpcError, httpx.HTTPError) as failed:
            error = f"{type(failed).__name__}: {failed}"
        finally:
            restore = {name: settings[name] for name in ERP_FAULTS if name in settings}
            started = time.monotonic()
            while True:  # the admin API has no faults, but be patient with a busy sandbox
                try:
                    answer = await erp.post("/_admin/faults", json=restore)
                    restored = answer.raise_for_status().json()
                    break
                except httpx.HTTPError:
                    if time.monotonic() - started > 10:
                        raise
                    await asyncio.sleep(0.2)
            restocked, _ = await restock_sold(inventory_address, f"{run}-ERP-FAULTS", stock_before)
            positions_after = await stock_positions(inventory_address)
    return ErpFaultDemo(
        before=settings,
        faults=faults,
        restored=restored,
        rows=rows,
        seconds=seconds,
        timeout=timeout,
        sales_orders=sales_orders,
        restocked=restocked,
        positions_after=positions_after,
        error=error,
    )


# --- notifications: the availability feed to channels, a failure, a replay --------------

AVAILABILITY_EVENT = "dwf.inventory.v1.AvailabilityChanged"
DEMO_SECRET = "demo-shared-secret-0123456789abcdef"  # >= 32 characters


@dataclass
class NotificationsDemo:
    rows: list[tuple[str, int, bool | None, int, str]]  # hook, status, signature ok, seq, skus
    dead_letter_id: str
    replayed: list[str]
    superseded: int  # replays skipped because a newer update had been delivered
    refused: int  # deliveries the endpoint refused (400) before it was fixed
    second_replay: str  # how a second replay of the same dead letter was answered
    deliveries_after_replay: int

    @property
    def ok(self) -> bool:
        recovered = any(h == "storefront-stock" and 200 <= s < 300 for h, s, *_ in self.rows)
        retried = any(h == "storefront-stock" and s == 503 for h, s, *_ in self.rows)
        signed = all(v for _, _, v, _, _ in self.rows)
        return (
            recovered
            and retried
            and signed
            and bool(self.dead_letter_id)
            and self.dead_letter_id in self.replayed
            and self.second_replay == "FAILED_PRECONDITION"
            and self.deliveries_after_replay >= 1
        )


async def register_demo_endpoints(address: str, sandbox: Any) -> None:
    import uuid

    from dwf.notifications.v1 import notifications_pb2 as npb
    from dwf.notifications.v1 import notifications_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        for hook, vocabulary in (("storefront-stock", "shopify"), ("edi-stock", "canonical")):
            sandbox.configure(hook, secret=DEMO_SECRET)
            await stub.UpsertChannelEndpoint(
                npb.UpsertChannelEndpointRequest(
                    request_id=str(uuid.uuid4()),
                    endpoint=npb.ChannelEndpoint(
                        endpoint_id=hook,
                        channel_id=hook,
                        kind=npb.ENDPOINT_KIND_WEBHOOK,
                        url=sandbox.url(hook),
                        secret=DEMO_SECRET,
                        event_types=[AVAILABILITY_EVENT],
                        vocabulary=vocabulary,
                        enabled=True,
                    ),
                )
            )
    sandbox.fail("storefront-stock", 503, times=2)  # down twice, then recovers by itself
    sandbox.fail("edi-stock", 400, times=None)  # refuses until fixed: dead letters, no storm


async def run_notifications_demo(
    address: str, sandbox: Any, timeout: float = 60
) -> NotificationsDemo:
    import time
    import uuid

    from dwf.notifications.v1 import notifications_pb2 as npb
    from dwf.notifications.v1 import notifications_pb2_grpc

    deadline = time.monotonic() + timeout

    async def until(condition: Any, what: str) -> None:
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo: timed out waiting for {what}")
            await asyncio.sleep(0.1)  # polling the sandbox's record of deliveries

    await until(lambda: sandbox.accepted("storefront-stock"), "the storefront feed")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        dead: list[Any] = []

        async def poll_dead() -> None:
            answer = await stub.ListDeadLetters(
                npb.ListDeadLettersRequest(
                    filter=npb.DeadLetterFilter(
                        endpoint_id="edi-stock", state=npb.DEAD_LETTER_STATE_PENDING
                    )
                )
            )
            dead[:] = list(answer.dead_letters)

        while not dead:
            if time.monotonic() > deadline:
                raise TimeoutError("demo: no dead letter for edi-stock")
            await poll_dead()
            await asyncio.sleep(0.1)  # polling the service's dead-letter list
        refused_before = len(sandbox.received("edi-stock"))
        sandbox.recover("edi-stock")  # the channel fixed its endpoint
        first = await stub.ReplayDeadLetter(
            npb.ReplayDeadLetterRequest(
                request_id=str(uuid.uuid4()),
                filter=npb.DeadLetterFilter(
                    endpoint_id="edi-stock", state=npb.DEAD_LETTER_STATE_PENDING
                ),
            )
        )
        await until(lambda: sandbox.accepted("edi-stock"), "the replayed delivery")
        dead_letter_id = (list(first.replayed_dead_letter_ids) or [""])[0]
        try:
            await stub.ReplayDeadLetter(
                npb.ReplayDeadLetterRequest(
                    request_id=str(uuid.uuid4()), dead_letter_id=dead_letter_id
                )
            )
            second_replay = "OK"
        except grpc.aio.AioRpcError as refused:
            second_replay = refused.code().name
    rows = []
    for hook in ("storefront-stock", "edi-stock"):
        for received in sandbox.received(hook):
            skus = ", ".join(sorted(_skus_in(received.json())))
            rows.append((hook, received.status, received.signature_valid, received.sequence, skus))
    return NotificationsDemo(
        rows=rows,
        dead_letter_id=dead_letter_id,
        replayed=list(first.replayed_dead_letter_ids),
        superseded=len(first.skipped),
        refused=refused_before,
        second_replay=second_replay,
        deliveries_after_replay=len(sandbox.accepted("edi-stock")),
    )


def _skus_in(document: Any) -> set[str]:
    """Every "sku" value anywhere in a channel payload (vocabularies nest them differently)."""
    if isinstance(document, dict):
        found = {str(document["sku"])} if "sku" in document else set()
        for value in document.values():
            found |= _skus_in(value)
        return found
    if isinstance(document, list):
        return set().union(*(_skus_in(item) for item in document)) if document else set()
    return set()


# --- notifications: every channel learns its orders' statuses; the shipment email --------

ORDER_STATUS_EVENT = "dwf.order.v1.OrderStatusChanged"
#: channel → (its webhook endpoint, which is also its hook on the channel sandbox; the status
#: vocabulary it speaks). The X12 partner hears canonical JSON here: in "x12" it would get
#: only 855/856 documents (and its 855 is already the gateway's synchronous answer).
STATUS_HOOKS: dict[str, tuple[str, str]] = {
    "web-store": ("web-store-orders", "shopify"),
    "marketplace": ("marketplace-orders", "amazon"),
    "b2b-portal": ("b2b-portal-orders", "b2b_portal"),
    "edi-acme": ("edi-acme-orders", "canonical"),
}
SHIPMENT_EMAIL = ("web-store-shipment-email", "web-store")  # endpoint, channel
#: What each vocabulary says about an order that has shipped (SHIPPED, INVOICED, COMPLETED).
SHIPPED_STATES: dict[str, frozenset[str]] = {
    "shopify": frozenset({"fulfilled / authorized", "fulfilled / paid"}),
    "amazon": frozenset({"Shipped"}),
    "b2b_portal": frozenset({"SHIPPED", "INVOICED", "COMPLETED"}),
    "canonical": frozenset({"SHIPPED", "INVOICED", "COMPLETED"}),
}


async def register_status_endpoints(address: str, sandbox: Any) -> None:
    """Each demo channel's webhook for the order status feed, in its own vocabulary, on the
    channel sandbox (signed with ``DEMO_SECRET``), and the web store's customer shipment email
    (a bare ``mailto:``: the order's customer), for SHIPPED and PARTIALLY_SHIPPED only."""
    import uuid

    from dwf.common.v1 import common_pb2
    from dwf.notifications.v1 import notifications_pb2 as npb
    from dwf.notifications.v1 import notifications_pb2_grpc

    endpoints = []
    for channel_id, (hook, vocabulary) in STATUS_HOOKS.items():
        sandbox.configure(hook, secret=DEMO_SECRET)
        endpoints.append(
            npb.ChannelEndpoint(
                endpoint_id=hook,
                channel_id=channel_id,
                kind=npb.ENDPOINT_KIND_WEBHOOK,
                url=sandbox.url(hook),
                secret=DEMO_SECRET,
                event_types=[ORDER_STATUS_EVENT],
                vocabulary=vocabulary,
                enabled=True,
            )
        )
    endpoint_id, channel_id = SHIPMENT_EMAIL
    endpoints.append(
        npb.ChannelEndpoint(
            endpoint_id=endpoint_id,
            channel_id=channel_id,
            kind=npb.ENDPOINT_KIND_EMAIL,
            url="mailto:",
            event_types=[ORDER_STATUS_EVENT],
            statuses=[common_pb2.ORDER_STATUS_SHIPPED, common_pb2.ORDER_STATUS_PARTIALLY_SHIPPED],
            vocabulary=STATUS_HOOKS[channel_id][1],
            enabled=True,
        )
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        for endpoint in endpoints:
            await stub.UpsertChannelEndpoint(
                npb.UpsertChannelEndpointRequest(request_id=str(uuid.uuid4()), endpoint=endpoint),
                timeout=10,
            )


@dataclass
class StatusUpdate:
    """One status delivery a channel's webhook received."""

    sequence: int
    status: str  # as the channel was told, in its vocabulary
    signature_valid: bool | None
    http_status: int  # what the sandbox answered
    event_id: str
    duplicate: bool = False  # the same event again (a redelivery: receivers dedupe on it)


@dataclass
class OrderFeed:
    """What an order's channel was told about it, next to what the gateway says now."""

    order_id: str
    label: str  # e.g. "web-store WEB-0000001"
    channel_id: str
    hook: str
    vocabulary: str
    status: str = ""  # the gateway's (canonical) status now
    status_sequence: int = 0  # and its status_sequence
    customer_email: str = ""
    tracking_numbers: list[str] = field(default_factory=list)  # the gateway's, of the order
    updates: list[StatusUpdate] = field(default_factory=list)
    in_flight_max: int = 0  # the hook's most concurrent requests of one order
    regressions: int = 0  # accepted sequences that went backwards (the sandbox's check)

    @property
    def applied(self) -> list[StatusUpdate]:
        """What a receiver applies: accepted, each event once."""
        return [u for u in self.updates if 200 <= u.http_status < 300 and not u.duplicate]

    @property
    def increasing(self) -> bool:
        sequences = [u.sequence for u in self.applied]
        return all(a < b for a, b in itertools.pairwise(sequences))

    @property
    def signed(self) -> bool:
        return bool(self.updates) and all(u.signature_valid is True for u in self.updates)

    @property
    def last(self) -> StatusUpdate | None:
        applied = self.applied
        return applied[-1] if applied else None

    @property
    def caught_up(self) -> bool:
        """The channel was told the order's current status (the gateway's last sequence)."""
        last = self.last
        return (
            last is not None and self.status_sequence > 0 and last.sequence == self.status_sequence
        )

    @property
    def shipped(self) -> bool:
        last = self.last
        return last is not None and last.status in SHIPPED_STATES.get(self.vocabulary, ())

    @property
    def ok(self) -> bool:
        return (
            self.increasing
            and self.signed
            and self.caught_up
            and self.shipped
            and self.regressions == 0
            and self.in_flight_max <= 1
        )


@dataclass
class ShipmentMail:
    """A mail the SMTP sink received."""

    to: list[str]
    subject: str
    tracking_numbers: list[str]  # found in its body
    order_id: str  # its X-Dwf-Order-Id
    sequence: int  # its X-Dwf-Sequence
    reply: str  # what the sink answered


@dataclass
class StatusFeedDemo:
    feeds: list[OrderFeed]
    mails: list[ShipmentMail]
    seconds: float
    timeout: float
    error: str = ""

    def mails_of(self, feed: OrderFeed) -> list[ShipmentMail]:
        return [m for m in self.mails if m.order_id == feed.order_id]

    def mailed(self, feed: OrderFeed) -> bool:
        """A shipment email reached the order's customer, naming one of its tracking
        numbers."""
        return any(
            feed.customer_email in mail.to
            and mail.reply.startswith("250")
            and set(mail.tracking_numbers) & set(feed.tracking_numbers)
            for mail in self.mails_of(feed)
        )

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and bool(self.feeds)
            and all(feed.ok for feed in self.feeds)
            and any(
                self.mailed(feed) for feed in self.feeds if feed.channel_id == SHIPMENT_EMAIL[1]
            )
        )


def _told(vocabulary: str, document: Any) -> str:
    """The status a channel document states, in its vocabulary's words."""
    if not isinstance(document, dict):
        return "?"
    if vocabulary == "shopify":
        told = f"{document.get('fulfillment_status')} / {document.get('financial_status')}"
        if document.get("cancelled"):
            told += ", cancelled"
        return told + (", on hold" if document.get("on_hold") else "")
    if vocabulary == "amazon":
        told = str(document.get("OrderStatus"))
        return told + (", IsOnHold" if document.get("IsOnHold") else "")
    status = str(document.get("status"))
    lifecycle = document.get("lifecycle_status")
    return status if lifecycle in (None, status) else f"{lifecycle}, {status}"


_TRACKING_LINE = re.compile(r"^\s+\S.*$")


def _tracking_in(body: str) -> list[str]:
    """The tracking numbers of a shipment email: the lines under "Tracking:", each
    ``<carrier> [(<service>)] <number> [<url>]``."""
    found: list[str] = []
    lines = body.splitlines()
    if "Tracking:" not in lines:
        return found
    for line in lines[lines.index("Tracking:") + 1 :]:
        if not _TRACKING_LINE.match(line):
            break
        words = [w for w in line.split() if not w.startswith(("http://", "https://"))]
        if len(words) >= 2:
            found.append(words[-1])
    return found


def _mail_row(mail: Any) -> ShipmentMail:
    message = mail.message()
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    try:
        sequence = int(message.get("X-Dwf-Sequence", "0"))
    except ValueError:
        sequence = 0
    return ShipmentMail(
        to=list(mail.rcpt_tos),
        subject=str(message.get("Subject", "")),
        tracking_numbers=_tracking_in(text),
        order_id=str(message.get("X-Dwf-Order-Id", "")),
        sequence=sequence,
        reply=mail.reply,
    )


async def run_status_feed_demo(
    gateway_address: str,
    sandbox: Any,
    smtp: Any,
    orders: Sequence[tuple[str, str, str]],
    *,
    timeout: float = 30,
) -> StatusFeedDemo:
    """What the channels' webhooks (``register_status_endpoints``) were told about ``orders``
    ((order id, channel id, label)), and the shipment emails the SMTP sink received. Waits,
    within ``timeout`` seconds, until each order's webhook has been told the order's current
    status (its status_sequence as the gateway's GetOrder shows it, with the channel's own
    credential) and each web-store order with a customer email has its shipment email."""
    import time

    from dwf.common.v1 import common_pb2
    from dwf.order.v1 import order_gateway_pb2 as pb
    from dwf.order.v1 import order_gateway_pb2_grpc

    document = json.loads(GATEWAY_MASTER_DATA.read_text())
    keys = {c["channel_id"]: c["api_key"] for c in document["credentials"] if "channel_id" in c}
    feeds = [
        OrderFeed(order_id, label, channel_id, *STATUS_HOOKS[channel_id])
        for order_id, channel_id, label in orders
        if channel_id in STATUS_HOOKS
    ]
    started = time.monotonic()
    error = ""

    def read_hooks() -> None:
        for feed in feeds:
            hook = sandbox.hook(feed.hook)
            seen: set[str] = set()
            feed.updates = []
            for received in hook.received:
                if received.order_id != feed.order_id:
                    continue
                try:
                    told = _told(feed.vocabulary, received.json())
                except ValueError:
                    told = "(not JSON)"
                feed.updates.append(
                    StatusUpdate(
                        sequence=received.sequence,
                        status=told,
                        signature_valid=received.signature_valid,
                        http_status=received.status,
                        event_id=received.event_id,
                        duplicate=received.ok and received.event_id in seen,
                    )
                )
                if received.ok:
                    seen.add(received.event_id)
            feed.in_flight_max = hook.max_in_flight_per_order
            feed.regressions = sum(order == feed.order_id for order, _, _ in hook.regressions)

    def mails() -> list[ShipmentMail]:
        return [_mail_row(mail) for mail in smtp.mails]

    def mail_awaited(feed: OrderFeed, received: list[ShipmentMail]) -> bool:
        if feed.channel_id != SHIPMENT_EMAIL[1] or not feed.customer_email:
            return False
        return not any(m.order_id == feed.order_id and m.reply.startswith("250") for m in received)

    try:
        async with grpc.aio.insecure_channel(gateway_address) as channel:
            stub = order_gateway_pb2_grpc.OrderGatewayServiceStub(channel)
            while True:
                for feed in feeds:
                    if feed.status == "COMPLETED":
                        continue  # the gateway's view is final
                    answer = await stub.GetOrder(
                        pb.GetOrderRequest(order_id=feed.order_id),
                        metadata=[("authorization", f"Bearer {keys[feed.channel_id]}")],
                        timeout=5,
                    )
                    order = answer.order
                    feed.status = _name(common_pb2.OrderStatus, order.status, "ORDER_STATUS_")
                    feed.status_sequence = order.status_sequence
                    feed.customer_email = order.customer.email
                    feed.tracking_numbers = [t.tracking_number for t in order.tracking]
                read_hooks()
                received = mails()
                waiting = [f for f in feeds if not f.caught_up or mail_awaited(f, received)]
                if not waiting or time.monotonic() - started > timeout:
                    break
                await asyncio.sleep(0.25)  # polling the gateway and the sandbox's records
    except grpc.aio.AioRpcError as failed:
        error = f"GetOrder: {failed.code().name}: {failed.details()}"
    read_hooks()
    return StatusFeedDemo(
        feeds=feeds,
        mails=mails(),
        seconds=time.monotonic() - started,
        timeout=timeout,
        error=error,
    )
