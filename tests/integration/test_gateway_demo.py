"""The order-gateway part of `make demo`: its payloads map under its master data, and it plays
(twice, as on a kept data dir) against a stack of the four services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dwf.common.v1 import common_pb2
from services.order_gateway.adapters import adapt
from services.order_gateway.api import resolve_lines
from services.order_gateway.domain import MasterData
from services.order_gateway.store.master_data import validate
from stack.ports import free_port
from stack.scenario import (
    CHANNEL_PAYLOADS,
    DEMO_MASTER_DATA,
    GATEWAY_MASTER_DATA,
    REFUSED_FIELD,
    REFUSED_PAYLOAD,
    render_payload,
    run_gateway_demo,
    run_inventory_demo,
)
from stack.supervisor import Stack, StackSettings


def demo_master_data() -> MasterData:
    document = json.loads(GATEWAY_MASTER_DATA.read_text())
    validate(document)
    channels = document["channels"]
    return MasterData(
        channels={},
        skus=frozenset(item["sku"] for item in document["items"]),
        conversions={
            (item["sku"], unit.upper()): factor
            for item in document["items"]
            for unit, factor in item.get("units", {}).items()
        },
        channel_units={
            (c["channel_id"], k.upper()): v.upper()
            for c in channels
            for k, v in c.get("units", {}).items()
        },
        sku_aliases={
            (c["channel_id"], k): v for c in channels for k, v in c.get("sku_aliases", {}).items()
        },
    )


def test_demo_master_data_sells_what_the_inventory_demo_stocks() -> None:
    master = demo_master_data()
    assert master.skus == {item["sku"] for item in DEMO_MASTER_DATA["items"]}
    assert set(master.sku_aliases.values()) <= master.skus


@pytest.mark.parametrize(("template", "channel_id", "fmt"), [*CHANNEL_PAYLOADS, REFUSED_PAYLOAD])
def test_demo_payloads_map_under_the_demo_master_data(
    template: str, channel_id: str, fmt: str
) -> None:
    adapted = adapt(
        common_pb2.ChannelFormat.Value(f"CHANNEL_FORMAT_{fmt}"), render_payload(template, "1234567")
    )
    assert adapted.issues == [] and adapted.order is not None
    assert "1234567" in adapted.channel_order_id
    resolved, problems = resolve_lines(demo_master_data(), channel_id, adapted.order.lines)
    if (template, channel_id, fmt) == REFUSED_PAYLOAD:
        assert [adapted.line_paths[adapted.order.lines[p.index].line_id].sku for p in problems] == [
            REFUSED_FIELD
        ]
    else:
        assert problems == [] and all(line is not None for line in resolved)


@pytest.mark.integration
async def test_gateway_demo_plays_twice_on_one_data_dir(scratch_dir: Path) -> None:
    stack = Stack(
        StackSettings(
            data_dir=scratch_dir / "stack-gateway-demo",
            database_url=None,
            nats_url=None,
            order_gateway_port=free_port(),
            inventory_port=free_port(),
            fulfillment_port=free_port(),
            notifications_port=free_port(),
        )
    )
    try:
        await stack.up()
        inventory = stack.services["inventory"].address
        gateway = stack.services["order_gateway"].address
        database_url = stack.service_database_urls["order_gateway"]
        assert (await run_inventory_demo(inventory, stack.service_database_urls["inventory"])).ok
        first = await run_gateway_demo(gateway, database_url, inventory, run="0000001")
        assert first.ok, first
        second = await run_gateway_demo(gateway, database_url, inventory, run="0000002")
        assert second.ok, second
        assert first.accepted.order_id != second.accepted.order_id
        # What the orders reserved was received again: the same availability every run.
        assert [row[4] for row in first.levels_after] == [row[4] for row in second.levels_after]
        assert (await run_inventory_demo(inventory, stack.service_database_urls["inventory"])).ok
    finally:
        await stack.stop_sandboxes()
        stack.down()
