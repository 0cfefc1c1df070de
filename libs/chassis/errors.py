"""Domain errors and their mapping to rich gRPC status (AIP-193).

Handlers raise these; the error interceptor turns them into ``google.rpc.Status`` with an
``ErrorInfo`` detail always, plus ``BadRequest`` / ``PreconditionFailure`` / ``RetryInfo`` where
they apply. Anything else that escapes a handler is a bug and becomes INTERNAL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import StatusCode


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Base of every error a handler may raise on purpose."""

    def __init__(
        self,
        message: str,
        reason: str = "UNSPECIFIED",
        metadata: Mapping[str, str] | None = None,
        *,
        code: StatusCode = StatusCode.UNKNOWN,
        domain: str = "dwf",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.code = code
        self.domain = domain
        # Further detail messages for the caller (e.g. a document it must send back).
        self.attachments: list[object] = []

    def extra_details(self) -> list[any_pb2.Any]:
        return []

    def to_status(self, domain: str | None = None) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=domain or self.domain, metadata=dict(self.metadata)
        )
        details = [
            _pack(info),
            *self.extra_details(),
            *(_pack(message) for message in self.attachments),
        ]
        return status_pb2.Status(code=_RPC_CODES[self.code], message=self.message, details=details)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


class InvalidArgument(DomainError):
    def __init__(
        self,
        violations: Sequence[FieldViolation],
        message: str | None = None,
        reason: str = "INVALID_ARGUMENT",
    ) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(
            message or f"invalid request: {summary}", reason, code=StatusCode.INVALID_ARGUMENT
        )

    def extra_details(self) -> list[any_pb2.Any]:
        return [
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
        ]


class FailedPrecondition(DomainError):
    def __init__(
        self,
        message: str,
        reason: str,
        violations: Sequence[PreconditionViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.violations = list(violations)
        super().__init__(message, reason, metadata or {}, code=StatusCode.FAILED_PRECONDITION)

    def extra_details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        return [
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
        ]


class NotFound(DomainError):
    def __init__(self, message: str, reason: str = "NOT_FOUND", **metadata: str) -> None:
        super().__init__(message, reason, metadata, code=StatusCode.NOT_FOUND)


class AlreadyExists(DomainError):
    def __init__(self, message: str, reason: str = "ALREADY_EXISTS", **metadata: str) -> None:
        super().__init__(message, reason, metadata, code=StatusCode.ALREADY_EXISTS)


class Unauthenticated(DomainError):
    def __init__(self, message: str, reason: str = "UNAUTHENTICATED") -> None:
        super().__init__(message, reason, code=StatusCode.UNAUTHENTICATED)


class PermissionDenied(DomainError):
    def __init__(self, message: str, reason: str = "PERMISSION_DENIED") -> None:
        super().__init__(message, reason, code=StatusCode.PERMISSION_DENIED)


class Unavailable(DomainError):
    def __init__(self, message: str, reason: str = "DEPENDENCY_UNAVAILABLE", **metadata: str):
        super().__init__(message, reason, metadata, code=StatusCode.UNAVAILABLE)


class ResourceExhausted(DomainError):
    def __init__(self, message: str, retry_after_seconds: float, reason: str = "RATE_LIMITED"):
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason, code=StatusCode.RESOURCE_EXHAUSTED)

    def extra_details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_seconds * 1e9))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class RemoteError(DomainError):
    """Another service's refusal, passed on to our caller with its code and details."""

    def __init__(self, code: StatusCode, status: status_pb2.Status) -> None:
        super().__init__(status.message, "REMOTE", code=code)
        self.status = status

    def to_status(self, domain: str | None = None) -> status_pb2.Status:
        return self.status


_RPC_CODES: dict[StatusCode, int] = {
    StatusCode.OK: code_pb2.OK,
    StatusCode.CANCELLED: code_pb2.CANCELLED,
    StatusCode.UNKNOWN: code_pb2.UNKNOWN,
    StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    StatusCode.ABORTED: code_pb2.ABORTED,
    StatusCode.OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
    StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    StatusCode.INTERNAL: code_pb2.INTERNAL,
    StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    StatusCode.DATA_LOSS: code_pb2.DATA_LOSS,
    StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
}


def status_for(code: StatusCode, message: str, reason: str, domain: str) -> status_pb2.Status:
    """A status for errors that are not DomainErrors (UNIMPLEMENTED, DEADLINE_EXCEEDED...)."""
    return DomainError(message, reason, code=code, domain=domain).to_status()
