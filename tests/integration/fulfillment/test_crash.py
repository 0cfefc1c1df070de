"""Two fulfillment processes work the same orders; one is killed with SIGKILL mid-run and
started again: every order completes, with one ERP order, one shipment and one invoice each."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import grpc

from dwf.common.v1 import common_pb2
from dwf.fulfillment.v1 import fulfillment_pb2 as fpb
from dwf.fulfillment.v1 import fulfillment_pb2_grpc
from stack.ports import free_port
from stack.sandboxes import Sandbox, carrier, erp, wms
from stack.supervisor import health_status
from tests.conftest import Databases, NatsServer
from tests.integration.fulfillment.conftest import TOKENS
from tests.integration.harness import eventually, service_env, settings_for
from tests.integration.order_gateway.conftest import Gateway, order_request

S = common_pb2


async def start(
    databases: Databases,
    nats_server: NatsServer,
    gateway: Gateway,
    urls: dict[str, str],
    log_dir: Path,
    name: str,
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = service_env(settings_for("fulfillment", databases, nats_server, grpc_port=port))
    env.update(
        {
            "DWF_FULFILLMENT_INVENTORY_TARGET": f"127.0.0.1:{gateway.inventory.app.bound_port}",
            "DWF_FULFILLMENT_ERP_URL": urls["erp"],
            "DWF_FULFILLMENT_ERP_TOKEN": TOKENS["erp"],
            "DWF_FULFILLMENT_WMS_URL": urls["wms"],
            "DWF_FULFILLMENT_WMS_TOKEN": TOKENS["wms"],
            "DWF_FULFILLMENT_CARRIER_URL": urls["carrier"],
            "DWF_FULFILLMENT_CARRIER_TOKEN": TOKENS["carrier"],
            "DWF_FULFILLMENT_TASK_POLL_SECONDS": "0.1",
            "DWF_FULFILLMENT_WMS_POLL_SECONDS": "0.05",
            # A killed replica's steps are taken over once its lease runs out.
            "DWF_FULFILLMENT_TASK_LEASE_SECONDS": "3",
            "DWF_FULFILLMENT_STEP_BACKOFF_BASE_SECONDS": "0.1",
            "DWF_FULFILLMENT_STEP_BACKOFF_MAX_SECONDS": "1",
            "DWF_FULFILLMENT_READ_TIMEOUT_SECONDS": "2",
            "DWF_FULFILLMENT_ERP_REQUESTS_PER_SECOND": "1000",
        }
    )
    log = (log_dir / f"{name}-{uuid.uuid4().hex[:4]}.log").open("wb")
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "services.fulfillment"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    async def serving() -> bool:
        return await health_status(f"127.0.0.1:{port}") == "SERVING"

    await eventually(serving, timeout=30, what=f"fulfillment {name} SERVING")
    return process, port


async def test_kill_a_replica_mid_run(
    gateway: Gateway, databases: Databases, nats_server: NatsServer, scratch_dir: Path
) -> None:
    erp_app = erp.create_app(TOKENS["erp"], latency_ms=(20, 80))
    wms_app = wms.create_app(TOKENS["wms"], ack_delay_ms=20, step_delay_ms=30)
    carrier_app = carrier.create_app(TOKENS["carrier"])
    async with Sandbox(erp_app) as e, Sandbox(wms_app) as w, Sandbox(carrier_app) as c:
        urls = {"erp": e.url, "wms": w.url, "carrier": c.url}
        first, _ = await start(databases, nats_server, gateway, urls, scratch_dir, "a")
        second, port = await start(databases, nats_server, gateway, urls, scratch_dir, "b")
        replacement = None
        try:
            channel = await gateway.channel()
            skus = await gateway.skus([500, 500, 500])
            orders = []
            for i in range(12):
                request = order_request(channel, [(skus[i % 3], 1 + i % 4), (skus[(i + 1) % 3], 2)])
                request.customer.customer_id = "C-100"
                orders.append(
                    (await gateway.stub.AcceptOrder(request, metadata=channel.auth)).order
                )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc:
                stub = fulfillment_pb2_grpc.FulfillmentServiceStub(rpc)

                async def statuses() -> list[int]:
                    found = []
                    for order in orders:
                        try:
                            view = await stub.GetOrderFulfillment(
                                fpb.GetOrderFulfillmentRequest(order_id=order.order_id)
                            )
                            found.append(view.fulfillment.status)
                        except grpc.aio.AioRpcError:
                            found.append(0)
                    return found

                async def some_done_some_not() -> bool:
                    done = (await statuses()).count(S.ORDER_STATUS_COMPLETED)
                    return 0 < done < len(orders)

                await eventually(some_done_some_not, timeout=60, what="orders in flight")
                first.send_signal(signal.SIGKILL)
                await asyncio.to_thread(first.wait, 10)
                replacement, _ = await start(
                    databases, nats_server, gateway, urls, scratch_dir, "a-again"
                )

                async def all_done() -> bool:
                    return all(s == S.ORDER_STATUS_COMPLETED for s in await statuses())

                await eventually(all_done, timeout=90, what="every order COMPLETED")
                for order in orders:
                    view = (
                        await stub.GetOrderFulfillment(
                            fpb.GetOrderFulfillmentRequest(order_id=order.order_id)
                        )
                    ).fulfillment
                    refs = [
                        o
                        for o in erp_app.state.erp.orders.values()
                        if o.external_reference == order.order_id
                    ]
                    assert len(refs) == 1
                    assert len(view.shipments) == len(view.fulfillment_orders) == 1
                    assert len(view.invoices) == 1
            released = wms_app.state.wms.releases
            assert len(released) == len(orders)
        finally:
            for process in (first, second, replacement):
                if process is not None and process.poll() is None:
                    process.terminate()
                    await asyncio.to_thread(process.wait, 30)
