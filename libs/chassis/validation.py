"""Collects field violations so an RPC answers every problem of a request at once."""

from __future__ import annotations

from chassis.errors import FieldViolation, InvalidArgument
from chassis.idempotency import request_id_violation


class Violations:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.add(field, description)
        return ok

    def request_id(self, request_id: str) -> None:
        violation = request_id_violation(request_id)
        if violation is not None:
            self.items.append(violation)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
