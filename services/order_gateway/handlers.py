"""Event handlers of the order_gateway service (durable JetStream consumers)."""

from __future__ import annotations

from collections.abc import Sequence

from chassis.bus import ConsumerSpec
from chassis.server import Runtime


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    return ()
