"""Per-call context that travels with the asyncio task: correlation and causation ids."""

from __future__ import annotations

import uuid
from contextvars import ContextVar

CORRELATION_ID_HEADER = "x-correlation-id"

correlation_id_var: ContextVar[str | None] = ContextVar("dwf_correlation_id", default=None)
causation_id_var: ContextVar[str | None] = ContextVar("dwf_causation_id", default=None)


def new_id() -> str:
    return str(uuid.uuid4())


def current_correlation_id() -> str | None:
    return correlation_id_var.get()
