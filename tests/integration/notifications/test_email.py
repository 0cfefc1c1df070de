"""EMAIL endpoints: the customer hears about the shipment, over SMTP, once; a busy mail
server is retried, a refusal is dead-lettered."""

from __future__ import annotations

import pytest

from dwf.common.v1 import common_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from tests.integration.notifications.conftest import Notifications, new_id

pytestmark = pytest.mark.integration

SHIPPED = common_pb2.ORDER_STATUS_SHIPPED
ACCEPTED = common_pb2.ORDER_STATUS_ACCEPTED


async def email_endpoint(n: Notifications, endpoint_id: str, url: str = "mailto:") -> None:
    await n.stub.UpsertChannelEndpoint(
        pb.UpsertChannelEndpointRequest(
            request_id=new_id(),
            endpoint=pb.ChannelEndpoint(
                endpoint_id=endpoint_id,
                channel_id=endpoint_id,
                kind=pb.ENDPOINT_KIND_EMAIL,
                url=url,
                statuses=[SHIPPED],
                vocabulary="canonical",
                enabled=True,
            ),
        )
    )


async def test_the_customer_gets_a_shipment_email(notifications: Notifications) -> None:
    n = notifications
    channel = f"mail-{new_id()[:8]}"
    await email_endpoint(n, channel)
    order = new_id()
    await n.status(order, channel, ACCEPTED, 1)  # filtered out: only SHIPPED is mailed
    envelope = await n.status(order, channel, SHIPPED, 2, shipped=2, tracking=["1ZTRACK"])
    (delivery,) = await n.settled(channel, 1)
    assert delivery.state == pb.DELIVERY_STATE_SUCCEEDED and delivery.last_http_status == 0
    (mail,) = [m for m in n.smtp.accepted() if envelope.id in m.data.decode()]
    message = mail.message()
    assert mail.rcpt_tos == ["jane@example.com"]
    assert message["Subject"] == f"Your order #{order[:8]} has shipped"
    assert message["Message-ID"] == f"<{delivery.delivery_id}@dwf.notifications>"
    assert message["X-Dwf-Event-Id"] == envelope.id
    body = message.get_content()
    assert "Hello Jane Doe," in body and "UPS 1ZTRACK" in body


async def test_a_busy_mail_server_is_retried_a_refusal_dead_lettered(
    notifications: Notifications,
) -> None:
    n = notifications
    ops = f"ops-{new_id()[:8]}"
    await email_endpoint(n, ops, url=f"mailto:{ops}@example.com")
    n.smtp.fail("451 4.3.0 Try again later", times=1)
    await n.status(new_id(), ops, SHIPPED, 1)
    (first,) = await n.settled(ops, 1)
    assert first.state == pb.DELIVERY_STATE_SUCCEEDED and first.attempts == 2
    assert len(n.smtp.accepted(f"{ops}@example.com")) == 1
    n.smtp.fail("550 5.1.1 No such user", times=1)
    await n.status(new_id(), ops, SHIPPED, 1)
    deliveries = await n.settled(ops, 2)
    refused = [d for d in deliveries if d.state == pb.DELIVERY_STATE_DEAD_LETTERED]
    assert len(refused) == 1 and refused[0].attempts == 1
    assert "550" in refused[0].last_error
