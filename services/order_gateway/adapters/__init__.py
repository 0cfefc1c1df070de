"""Channel adapters of the order gateway: raw channel payloads -> canonical AcceptOrderRequest.

Pure functions (no I/O): ``adapt`` dispatches on the payload format and always returns an
``AdaptedOrder``, never raising on bad input. See ``common`` for the result contract and each
format module for its mapping choices; ``x12.build_855`` writes the 850's acknowledgement.
"""

from __future__ import annotations

from dwf.common.v1 import common_pb2
from services.order_gateway.adapters.amazon import adapt_amazon
from services.order_gateway.adapters.b2b_portal import adapt_b2b_portal
from services.order_gateway.adapters.common import AdaptedOrder, Issue, LinePaths
from services.order_gateway.adapters.shopify import adapt_shopify
from services.order_gateway.adapters.x12 import LineAck, X12Context, adapt_x12, build_855

__all__ = [
    "AdaptedOrder",
    "Issue",
    "LineAck",
    "LinePaths",
    "X12Context",
    "adapt",
    "build_855",
]

_ADAPTERS = {
    common_pb2.CHANNEL_FORMAT_SHOPIFY_JSON: adapt_shopify,
    common_pb2.CHANNEL_FORMAT_AMAZON_JSON: adapt_amazon,
    common_pb2.CHANNEL_FORMAT_B2B_PORTAL_JSON: adapt_b2b_portal,
    common_pb2.CHANNEL_FORMAT_X12_850: adapt_x12,
}


def adapt(fmt: common_pb2.ChannelFormat.ValueType, payload: bytes) -> AdaptedOrder:
    """Map one raw channel payload. CANONICAL and UNSPECIFIED (or an unknown format) raise
    ValueError: those are caller errors, not payload problems."""
    adapter = _ADAPTERS.get(fmt)
    if adapter is None:
        raise ValueError(f"no channel adapter for format {fmt}")
    return adapter(payload)
