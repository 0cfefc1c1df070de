"""AIP-158 page tokens for every List RPC: an opaque keyset position (a time and a key, the
last row of the page) bound to the query's filters, so a token used with other filters, or
forged, is a clear INVALID_ARGUMENT on ``page_token`` rather than a wrong page."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from chassis.validation import Violations


def filters_of(request: Message) -> str:
    """A List request's filters (everything but page_size and page_token), as a short hash."""
    filters = request.__class__()
    filters.CopyFrom(request)
    filters.ClearField("page_size")
    filters.ClearField("page_token")
    return hashlib.sha256(filters.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_page_token(filters: Any, at: datetime, key: str) -> str:
    raw = json.dumps({"f": filters, "t": at.isoformat(), "k": key})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_page_token(
    token: str, filters: Any, *, uuid_key: bool = False
) -> tuple[datetime, str] | None:
    """The (time, key) a token resumes after; None if it is not a token of these filters
    (or its key is not a UUID where the key column is one)."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        if raw["f"] != filters:
            return None
        key = str(uuid.UUID(raw["k"])) if uuid_key else str(raw["k"])
        return datetime.fromisoformat(raw["t"]), key
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def page_after(
    v: Violations, token: str, filters: Any, *, uuid_key: bool = False
) -> tuple[datetime, str] | None:
    """Where the page starts: None for the first page; a bad token is a violation."""
    if not token:
        return None
    after = decode_page_token(token, filters, uuid_key=uuid_key)
    v.check(after is not None, "page_token", "invalid, or from a call with other filters")
    return after
