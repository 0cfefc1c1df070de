"""chassis.protos.ts: the hand-rolled conversion must equal protobuf's own FromDatetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from chassis.protos import ts

_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30)), None]
)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    _ZONES,
)
def test_ts_equals_protobuf_from_datetime(value: datetime, zone: timezone | None) -> None:
    moment = value.replace(tzinfo=zone)
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert ts(moment) == expected


def test_ts_keeps_none_unset() -> None:
    assert ts(None) is None
