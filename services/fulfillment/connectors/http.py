"""The resilient HTTP core shared by fulfillment's ERP, WMS and carrier connectors.

One :class:`ResilientClient` per external system owns:

- an ``httpx.AsyncClient`` (connect/read/write/pool timeouts, bearer token);
- a rate limiter (aiolimiter) applied before every HTTP request, retries included, so the
  ERP quota holds however many attempts a call needs;
- a circuit breaker (:class:`CircuitBreaker`, written here rather than taken from
  ``circuitbreaker``/``purgatory``: it is asyncio-safe, lets exactly one probe through when
  half-open, and takes an injectable clock);
- retries with exponential backoff and full jitter (tenacity ``AsyncRetrying``) on timeouts,
  connection errors, 5xx and 429 (honouring ``Retry-After``), never on any other 4xx.

Every failure leaves as a :class:`ConnectorError` whose ``category`` is one of the brief's:
RETRYABLE (timeouts, 5xx, 429 still failing after the last attempt), DEPENDENCY (breaker
open, system unreachable, unusable answers, credentials refused), DATA_QUALITY (unknown
item/customer, invalid request) and BUSINESS_RULE (credit hold, already shipped, refusals).

A call is a function of an :class:`Attempt`; tenacity runs it again after a retryable
failure. ``Attempt.maybe_applied`` tells the function that an earlier attempt may have taken
effect on the remote side (a read timeout or a dropped connection after the request was
sent, or a 5xx), so a non-idempotent submission can look its result up before resubmitting.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Final, Literal, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from prometheus_client import Counter, Gauge
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from chassis.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("dwf.fulfillment.connectors")

System = Literal["ERP", "WMS", "CARRIER"]
Category = Literal["RETRYABLE", "DEPENDENCY", "DATA_QUALITY", "BUSINESS_RULE"]
BreakerState = Literal["CLOSED", "OPEN", "HALF_OPEN"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

USER_AGENT: Final = "dwf-fulfillment/1"

#: Remote error codes whose category does not follow from the HTTP status alone.
DATA_QUALITY_CODES: Final = frozenset(
    {
        "UNKNOWN_ITEM",
        "UNKNOWN_SKU",
        "UNKNOWN_CUSTOMER",
        "UNKNOWN_WAREHOUSE",
        "INVALID_REQUEST",
        "INVALID_ADDRESS",
        "UOM_MISMATCH",
    }
)
BUSINESS_RULE_CODES: Final = frozenset(
    {
        "CREDIT_HOLD",
        "ALREADY_SHIPPED",
        "ALREADY_CANCELED",
        "ORDER_CLOSED",
        "RELEASE_REJECTED",
        "CANCEL_REFUSED",
        "INVENTORY_DISCREPANCY",
    }
)

CONNECTOR_REQUESTS = Counter(
    "dwf_connector_requests_total",
    "HTTP requests to external systems, by outcome (2xx, 4xx, 429, 5xx, timeout, connection)",
    ["system", "outcome"],
)
CONNECTOR_RETRIES = Counter(
    "dwf_connector_retries_total", "Retries of calls to external systems", ["system"]
)
CONNECTOR_REJECTED = Counter(
    "dwf_connector_circuit_rejected_total",
    "Requests failed fast because the system's circuit breaker was open",
    ["system"],
)
CONNECTOR_CIRCUIT = Gauge(
    "dwf_connector_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["system"]
)
_STATE_VALUE: Final[dict[BreakerState, int]] = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ConnectorError(Exception):
    """A call to an external system failed; ``category`` tells the workflow what to do.

    Attributes: ``system`` (ERP/WMS/CARRIER), ``category``, ``code`` (the remote error code,
    e.g. UNKNOWN_ITEM, else ours: TIMEOUT, HTTP_503, RATE_LIMITED, CONNECTION_REFUSED,
    CIRCUIT_OPEN, BAD_RESPONSE...), ``field`` (remote field path, if named), ``status`` (HTTP
    status or None), ``attempts`` (attempts made by this call), ``request_payload`` (the body
    or query we sent, for the exception record), ``retry_after`` (seconds, when known),
    ``operation`` (e.g. "POST /api/v1/sales-orders") and ``maybe_applied`` (an attempt may
    have taken effect remotely although no answer arrived).
    """

    category: ClassVar[Category]

    def __init__(
        self,
        message: str,
        *,
        system: System,
        code: str,
        field: str | None = None,
        status: int | None = None,
        attempts: int = 1,
        request_payload: Any = None,
        retry_after: float | None = None,
        operation: str | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system: System = system
        self.code = code
        self.field = field
        self.status = status
        self.attempts = attempts
        self.request_payload = request_payload
        self.retry_after = retry_after
        self.operation = operation
        self.maybe_applied = maybe_applied

    def __str__(self) -> str:
        where = f" {self.operation}" if self.operation else ""
        return f"{self.system}{where}: {self.category} {self.code}: {self.message}"

    def to_record(self) -> dict[str, Any]:
        """What an exception record keeps of this failure (JSON-friendly)."""
        return {
            "system": self.system,
            "category": self.category,
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "status": self.status,
            "attempts": self.attempts,
            "request_payload": self.request_payload,
            "retry_after": self.retry_after,
            "operation": self.operation,
            "maybe_applied": self.maybe_applied,
        }

    def to_domain_error(self) -> DomainError:
        """The gRPC-facing error, for an RPC that called the system synchronously."""
        metadata = {"system": self.system, "category": self.category, "code": self.code}
        if self.category == "DATA_QUALITY" and self.field:
            return InvalidArgument(
                [FieldViolation(self.field, self.message)], str(self), reason=self.code
            )
        if self.category in ("DATA_QUALITY", "BUSINESS_RULE"):
            return FailedPrecondition(str(self), self.code, metadata=metadata)
        if self.category == "RETRYABLE" and self.retry_after is not None:
            return ResourceExhausted(str(self), self.retry_after, reason=self.code)
        return Unavailable(str(self), **metadata)


class RetryableError(ConnectorError):
    """Timeouts, 5xx, 429 that still failed on the last attempt: retry later."""

    category = "RETRYABLE"


class DependencyError(ConnectorError):
    """The system is down or unusable (unreachable, breaker open, bad answers, auth)."""

    category = "DEPENDENCY"


class CircuitOpenError(DependencyError):
    """Failed fast: the system's circuit breaker is open (``retry_after``: until half-open)."""


class DataQualityError(ConnectorError):
    """The system refused our data (unknown item or customer, invalid request): fix, retry."""

    category = "DATA_QUALITY"


class BusinessRuleError(ConnectorError):
    """A business refusal (credit hold, already shipped, release rejected...)."""

    category = "BUSINESS_RULE"


ERROR_CLASSES: Final[Mapping[Category, type[ConnectorError]]] = {
    "RETRYABLE": RetryableError,
    "DEPENDENCY": DependencyError,
    "DATA_QUALITY": DataQualityError,
    "BUSINESS_RULE": BusinessRuleError,
}


def classify_code(code: str | None) -> Category | None:
    """The category a remote code implies by itself, if it does."""
    if code in BUSINESS_RULE_CODES:
        return "BUSINESS_RULE"
    if code in DATA_QUALITY_CODES:
        return "DATA_QUALITY"
    return None


def classify_refusal(status: int, code: str | None) -> Category:
    """Category of a non-retryable answer (anything but 2xx, 5xx and 429)."""
    by_code = classify_code(code)
    if by_code is not None:
        return by_code
    if status in (401, 403, 407):
        return "DEPENDENCY"  # our credentials: fix the configuration, not the order
    if status == 409:
        return "BUSINESS_RULE"
    if 400 <= status < 500:
        return "DATA_QUALITY"
    return "DEPENDENCY"  # 1xx/3xx: not a conversation we know how to have


class _Transient(Exception):
    """A retryable failure of one attempt (internal: leaves as RetryableError/DependencyError)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_applied: bool = False,
        unreachable: bool = False,
        field: str | None = None,
        operation: str,
        payload: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied
        self.unreachable = unreachable
        self.field = field
        self.operation = operation
        self.payload = payload


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 5.0
    #: A Retry-After up to this long is waited for; a longer one ends the call at once
    #: (RETRYABLE with ``retry_after`` set) rather than holding a worker for it.
    retry_after_max_seconds: float = 30.0

    def backoff_cap(self, attempt: int) -> float:
        """Upper bound of the (full-jitter) delay after failed attempt number ``attempt``."""
        exponent = min(max(attempt - 1, 0), 62)
        return float(min(self.backoff_max_seconds, self.backoff_initial_seconds * 2**exponent))


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    reset_seconds: float = 30.0


@dataclass(frozen=True)
class SystemConfig:
    system: System
    base_url: str
    token: str = field(repr=False)
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    write_timeout_seconds: float = 10.0
    pool_timeout_seconds: float = 5.0
    max_connections: int = 20
    #: None: no client-side rate limit.
    requests_per_second: float | None = None
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout_seconds,
            read=self.read_timeout_seconds,
            write=self.write_timeout_seconds,
            pool=self.pool_timeout_seconds,
        )


# --------------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------------


class CircuitBreaker:
    """Consecutive-failure breaker: CLOSED → OPEN after ``failure_threshold`` failures in a
    row; OPEN fails fast for ``reset_seconds``; then HALF_OPEN lets one probe through at a
    time (others still fail fast); the probe's success closes it, its failure re-opens it.

    A failure is what says the system is not answering: a timeout, a connection error or a
    5xx. Any other answer, 4xx and 429 included, proves it is up and counts as a success
    (throttling is handled by the rate limiter and Retry-After, not by cutting the system off).
    Single event loop, no awaits inside: no lock needed.
    """

    def __init__(
        self,
        system: System,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.system: System = system
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._state: BreakerState = "CLOSED"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        CONNECTOR_CIRCUIT.labels(system).set(0)

    @property
    def state(self) -> BreakerState:
        if self._state == "OPEN" and self._clock() - self._opened_at >= self.reset_seconds:
            self._set_state("HALF_OPEN")
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def remaining_open_seconds(self) -> float:
        if self._state != "OPEN":
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def allow(self) -> bool:
        """Whether a request may go now; takes the probe slot when half-open."""
        state = self.state
        if state == "CLOSED":
            return True
        if state == "HALF_OPEN" and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state != "CLOSED":
            log.info("circuit closed", extra={"system": self.system})
            self._set_state("CLOSED")

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "HALF_OPEN" or (
            self._state == "CLOSED" and self._failures >= self.failure_threshold
        ):
            log.warning(
                "circuit opened",
                extra={"system": self.system, "consecutive_failures": self._failures},
            )
            self._opened_at = self._clock()
            self._probe_in_flight = False
            self._set_state("OPEN")

    def release(self) -> None:
        """A request that took the probe slot ended without a verdict (e.g. cancelled)."""
        self._probe_in_flight = False

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        CONNECTOR_CIRCUIT.labels(self.system).set(_STATE_VALUE[state])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as delay-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    return max(0.0, seconds) if math.isfinite(seconds) else None


def error_body(response: httpx.Response) -> tuple[str | None, str | None, str]:
    """(code, field, message) of an ``{"error": {...}}`` body; tolerant of anything else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code")
        field_ = error.get("field")
        message = error.get("message")
        return (
            code if isinstance(code, str) and code else None,
            field_ if isinstance(field_, str) and field_ else None,
            message if isinstance(message, str) and message else f"HTTP {response.status_code}",
        )
    text = response.text[:200].strip()
    return None, None, f"HTTP {response.status_code}" + (f": {text}" if text else "")


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object; ValueError otherwise (see :meth:`decode`)."""
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("the response body is not a JSON object")
    return body


DECODE_ERRORS = (KeyError, TypeError, ValueError, InvalidOperation, AttributeError)


# Readers of answer fields: they raise ValueError/KeyError, which ``decode`` turns into a
# DEPENDENCY failure (BAD_RESPONSE).


def text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} is not a non-empty string")
    return value


def optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is not a string")
    return value


def integer(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} is not an integer")
    return value


def decimal(data: Mapping[str, Any], key: str) -> Decimal:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key!r} is not a number")
    number = Decimal(str(value))
    if not number.is_finite():
        raise ValueError(f"{key!r} is not a finite number")
    return number


def timestamp(data: Mapping[str, Any], key: str) -> datetime | None:
    """An RFC 3339 timestamp (naive ones are taken as UTC); None when absent."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is not a timestamp")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def objects(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A list of JSON objects; [] when absent or null."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{key!r} is not a list of objects")
    return value


def _outcome_label(status: int) -> str:
    if status == 429:
        return "429"
    return f"{status // 100}xx"


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class Attempt:
    """One attempt of a call: send requests through it (breaker, limiter, classification)."""

    __slots__ = ("_client", "maybe_applied", "number")

    def __init__(self, client: ResilientClient, number: int, maybe_applied: bool) -> None:
        self._client = client
        self.number = number
        #: An earlier attempt of this call may have taken effect remotely.
        self.maybe_applied = maybe_applied

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        accept: Collection[int] = (),
    ) -> httpx.Response:
        """One HTTP request. Returns 2xx answers and statuses in ``accept``; raises
        ``_Transient`` (retried by the call) for timeouts, connection errors, 5xx and 429,
        and a :class:`ConnectorError` for everything else."""
        return await self._client._send_once(
            self, method, path, json=json, params=params, accept=accept
        )


@dataclass
class _CallState:
    attempts: int = 0
    maybe_applied: bool = False


class ResilientClient:
    """HTTP to one external system with retries, breaker, rate limit and classification.

    ``transport`` (e.g. ``httpx.MockTransport``), ``sleep`` (the backoff sleep), ``clock``
    (the breaker's monotonic clock), ``now`` (wall clock for HTTP-date Retry-After),
    ``uniform`` (the jitter source) and ``limiter`` are injectable for tests.
    """

    def __init__(
        self,
        config: SystemConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        uniform: Callable[[float, float], float] = random.uniform,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.config = config
        self.system: System = config.system
        self._sleep = sleep
        self._now = now
        self._uniform = uniform
        self.breaker = CircuitBreaker(
            config.system,
            config.breaker.failure_threshold,
            config.breaker.reset_seconds,
            clock=clock,
        )
        if limiter is None and config.requests_per_second is not None:
            if config.requests_per_second <= 0:
                raise ValueError("requests_per_second must be positive")
            # Burst of one: requests are spaced 1/rps apart, so no window exceeds the quota.
            limiter = AsyncLimiter(1, 1.0 / config.requests_per_second)
        self.limiter = limiter
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            timeout=config.timeout,
            transport=transport,
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
            headers={
                "Authorization": f"Bearer {config.token}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
            follow_redirects=False,
        )

    async def __aenter__(self) -> ResilientClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- calls --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        accept: Collection[int] = (),
    ) -> httpx.Response:
        """One request, retried as a whole. Safe for reads and idempotent writes."""

        async def once(attempt: Attempt) -> httpx.Response:
            return await attempt.send(method, path, json=json, params=params, accept=accept)

        return await self.run(
            once,
            operation=f"{method} {path}",
            request_payload=json if json is not None else params,
        )

    async def run(
        self,
        fn: Callable[[Attempt], Awaitable[T]],
        *,
        operation: str,
        request_payload: Any = None,
    ) -> T:
        """Run ``fn`` once per attempt until it returns, fails for good or attempts run out.

        Errors raised out of here carry the number of attempts made and, when given,
        ``request_payload`` (the business payload of the call rather than that of whichever
        request failed last, e.g. a lookup).
        """
        state = _CallState()
        policy = self.config.retry

        async def one() -> T:
            state.attempts += 1
            attempt = Attempt(self, state.attempts, state.maybe_applied)
            try:
                return await fn(attempt)
            except _Transient as exc:
                state.maybe_applied = state.maybe_applied or exc.maybe_applied
                raise

        def stop(retry_state: RetryCallState) -> bool:
            if retry_state.attempt_number >= policy.attempts:
                return True
            exc = _outcome_exception(retry_state)
            return (
                isinstance(exc, _Transient)
                and exc.retry_after is not None
                and exc.retry_after > policy.retry_after_max_seconds
            )

        def wait(retry_state: RetryCallState) -> float:
            backoff = self._uniform(0.0, policy.backoff_cap(retry_state.attempt_number))
            exc = _outcome_exception(retry_state)
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return max(backoff, min(exc.retry_after, policy.retry_after_max_seconds))
            return backoff

        def before_sleep(retry_state: RetryCallState) -> None:
            CONNECTOR_RETRIES.labels(self.system).inc()
            exc = _outcome_exception(retry_state)
            log.warning(
                "retrying %s %s after %s",
                self.system,
                operation,
                getattr(exc, "code", type(exc).__name__),
                extra={
                    "system": self.system,
                    "operation": operation,
                    "attempt": retry_state.attempt_number,
                    "delay_seconds": retry_state.upcoming_sleep,
                },
            )

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result: T = await retrying(one)
        except _Transient as exc:
            cls = DependencyError if exc.unreachable else RetryableError
            raise cls(
                exc.message,
                system=self.system,
                code=exc.code,
                field=exc.field,
                status=exc.status,
                attempts=state.attempts,
                request_payload=(request_payload if request_payload is not None else exc.payload),
                retry_after=exc.retry_after,
                operation=exc.operation,
                maybe_applied=state.maybe_applied,
            ) from exc
        except ConnectorError as exc:
            exc.attempts = state.attempts
            exc.maybe_applied = exc.maybe_applied or state.maybe_applied
            if request_payload is not None:
                exc.request_payload = request_payload
            raise
        return result

    async def call(
        self,
        method: str,
        path: str,
        parse: Callable[[int, dict[str, Any]], T],
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        accept: Collection[int] = (),
    ) -> T:
        """Like :meth:`request`, then ``parse(status, body)`` of the JSON object answer (see
        :meth:`decode`)."""

        async def once(attempt: Attempt) -> T:
            response = await attempt.send(method, path, json=json, params=params, accept=accept)
            return self.decode(response, parse, attempt=attempt)

        return await self.run(
            once,
            operation=f"{method} {path}",
            request_payload=json if json is not None else params,
        )

    def decode(
        self,
        response: httpx.Response,
        parse: Callable[[int, dict[str, Any]], T],
        *,
        attempt: Attempt | None = None,
    ) -> T:
        """``parse(status, body)`` of a JSON object answer; a body we cannot read is a
        DEPENDENCY failure (``BAD_RESPONSE``), never a crash."""
        try:
            return parse(response.status_code, json_object(response))
        except DECODE_ERRORS as exc:
            raise DependencyError(
                f"unreadable answer (HTTP {response.status_code}): {exc!r}",
                system=self.system,
                code="BAD_RESPONSE",
                status=response.status_code,
                attempts=attempt.number if attempt is not None else 1,
                request_payload=_payload_of(response.request),
                operation=f"{response.request.method} {response.request.url.path}",
            ) from exc

    def refusal(
        self,
        response: httpx.Response,
        *,
        attempts: int = 1,
        request_payload: Any = None,
    ) -> ConnectorError:
        """The classified error for a non-retryable answer."""
        code, field_, message = error_body(response)
        status = response.status_code
        category = classify_refusal(status, code)
        return ERROR_CLASSES[category](
            message,
            system=self.system,
            code=code or f"HTTP_{status}",
            field=field_,
            status=status,
            attempts=attempts,
            request_payload=request_payload,
            operation=f"{response.request.method} {response.request.url.path}",
        )

    # -- one request ------------------------------------------------------------------------

    async def _send_once(
        self,
        attempt: Attempt,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str | int] | None,
        accept: Collection[int],
    ) -> httpx.Response:
        operation = f"{method} {path}"
        payload = json if json is not None else (dict(params) if params else None)
        if not self.breaker.allow():
            CONNECTOR_REJECTED.labels(self.system).inc()
            raise CircuitOpenError(
                f"circuit open after {self.breaker.consecutive_failures} consecutive failures",
                system=self.system,
                code="CIRCUIT_OPEN",
                attempts=attempt.number,
                request_payload=payload,
                retry_after=self.breaker.remaining_open_seconds() or None,
                operation=operation,
            )
        settled = False
        try:
            if self.limiter is not None:
                await self.limiter.acquire()
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                transient = self._transient_of(exc, method, operation, payload)
                if transient is None:
                    raise DependencyError(
                        f"{type(exc).__name__}: {exc}",
                        system=self.system,
                        code="TRANSPORT_ERROR",
                        attempts=attempt.number,
                        request_payload=payload,
                        operation=operation,
                    ) from exc
                CONNECTOR_REQUESTS.labels(self.system, transient.code.lower()).inc()
                self.breaker.record_failure()
                settled = True
                raise transient from exc

            status = response.status_code
            CONNECTOR_REQUESTS.labels(self.system, _outcome_label(status)).inc()
            if status >= 500:
                self.breaker.record_failure()
                settled = True
                code, field_, message = error_body(response)
                raise _Transient(
                    message,
                    code=code or f"HTTP_{status}",
                    status=status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), self._now()),
                    # A 5xx may come after the work was done: look before resubmitting.
                    maybe_applied=method.upper() not in ("GET", "HEAD"),
                    field=field_,
                    operation=operation,
                    payload=payload,
                )
            self.breaker.record_success()
            settled = True
            if status == 429:
                code, _, message = error_body(response)
                raise _Transient(
                    message,
                    code=code or "RATE_LIMITED",
                    status=status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), self._now()),
                    operation=operation,
                    payload=payload,
                )
            if 200 <= status < 300 or status in accept:
                return response
            raise self.refusal(response, attempts=attempt.number, request_payload=payload)
        finally:
            if not settled:
                self.breaker.release()

    @staticmethod
    def _transient_of(
        exc: httpx.TransportError, method: str, operation: str, payload: Any
    ) -> _Transient | None:
        writes = method.upper() not in ("GET", "HEAD")
        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
            # Nothing was sent; the system (or the network to it) is down.
            code = "CONNECT_TIMEOUT" if isinstance(exc, httpx.ConnectTimeout) else "UNREACHABLE"
            return _Transient(
                f"{type(exc).__name__}: {exc}",
                code=code,
                unreachable=True,
                operation=operation,
                payload=payload,
            )
        if isinstance(exc, httpx.PoolTimeout):
            # Waiting for one of our own connections: nothing was sent.
            return _Transient(
                "no free connection in the pool",
                code="POOL_TIMEOUT",
                operation=operation,
                payload=payload,
            )
        if isinstance(exc, httpx.TimeoutException):
            return _Transient(
                f"{type(exc).__name__}: no answer in time",
                code="TIMEOUT",
                maybe_applied=writes,
                operation=operation,
                payload=payload,
            )
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
            return _Transient(
                f"{type(exc).__name__}: {exc}",
                code="CONNECTION_DROPPED",
                maybe_applied=writes,
                operation=operation,
                payload=payload,
            )
        return None


def _payload_of(request: httpx.Request) -> Any:
    """What we sent: the JSON body, else the query parameters (for error records)."""
    if request.content:
        try:
            return jsonlib.loads(request.content)
        except ValueError:
            return request.content.decode("utf-8", "replace")
    return dict(request.url.params) or None


def _outcome_exception(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()
