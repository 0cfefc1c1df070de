"""Small conversions between Python values and protobuf well-known types."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for a datetime; None stays None (the field is left unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp
