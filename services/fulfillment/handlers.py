"""Event handlers and background loops of the fulfillment service.

* ``fulfillment_orders``: the gateway's OrderAccepted starts an order's workflow.
* ``fulfillment_backorders``: inventory's BackorderFilled adds a fulfillment order for the
  filled allocation.
* Workers: the task engine (steps and timers) and the WMS feed poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from chassis.bus import ConsumerSpec
from chassis.events import STREAMS, subject_for
from chassis.server import Runtime, Worker
from dwf.events.v1 import envelope_pb2
from dwf.inventory.v1 import events_pb2 as inventory_events
from dwf.order.v1 import events_pb2 as order_events
from services.fulfillment.engine import StepFailure

if TYPE_CHECKING:
    from services.fulfillment.main import Parts

log = logging.getLogger("dwf.fulfillment")


def consumers(parts: Parts) -> Sequence[ConsumerSpec]:
    async def order_accepted(session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        event = order_events.OrderAccepted()
        if envelope.payload.Unpack(event):
            await parts.workflow.on_order_accepted(session, event, envelope.id)

    async def cancel_requested(session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        event = order_events.OrderCancelRequested()
        if envelope.payload.Unpack(event):
            await parts.workflow.on_cancel_requested(session, event, envelope.id)

    async def return_requested(session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        event = order_events.ReturnRequested()
        if envelope.payload.Unpack(event):
            await parts.workflow.on_return_requested(session, event, envelope.id)

    async def backorder_filled(session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        event = inventory_events.BackorderFilled()
        if envelope.payload.Unpack(event):
            await parts.workflow.on_backorder_filled(session, event, envelope.id)

    return (
        ConsumerSpec(
            durable="fulfillment_orders",
            stream=STREAMS["order_gateway"].name,
            subjects=[
                subject_for("order_gateway", order_events.OrderAccepted.DESCRIPTOR.full_name)
            ],
            handler=order_accepted,
        ),
        ConsumerSpec(
            durable="fulfillment_cancellations",
            stream=STREAMS["order_gateway"].name,
            subjects=[
                subject_for("order_gateway", order_events.OrderCancelRequested.DESCRIPTOR.full_name)
            ],
            handler=cancel_requested,
        ),
        ConsumerSpec(
            durable="fulfillment_returns",
            stream=STREAMS["order_gateway"].name,
            subjects=[
                subject_for("order_gateway", order_events.ReturnRequested.DESCRIPTOR.full_name)
            ],
            handler=return_requested,
        ),
        ConsumerSpec(
            durable="fulfillment_backorders",
            stream=STREAMS["inventory"].name,
            subjects=[
                subject_for("inventory", inventory_events.BackorderFilled.DESCRIPTOR.full_name)
            ],
            handler=backorder_filled,
        ),
    )


async def poll_wms(parts: Parts, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            read = await parts.workflow.poll_wms()
        except StepFailure as failure:
            log.warning("WMS feed unavailable: %s", failure)
            read = 0
        if read:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def workers(runtime: Runtime, parts: Parts) -> Sequence[Worker]:
    return (
        ("workflow task engine", parts.engine.run),
        (
            "WMS feed poller",
            lambda stop: poll_wms(parts, parts.settings.wms_poll_seconds, stop),
        ),
    )
