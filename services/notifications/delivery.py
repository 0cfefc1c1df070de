"""The delivery worker: claims due deliveries, POSTs them signed, records the outcome.

Safe with any number of replicas: claims lock queue rows with ``FOR UPDATE SKIP LOCKED`` and
lease one delivery per (endpoint, order) at a time (see ``store.deliveries``). The HTTP call
happens outside any transaction; its outcome is written under the queue row's lock, and only
by the holder of the lease. Retries are persisted (``next_attempt_at``), never slept on.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import smtplib
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from chassis.protos import ts
from chassis.server import Runtime
from dwf.notifications.v1 import events_pb2
from dwf.notifications.v1 import notifications_pb2 as pb
from services.notifications import domain
from services.notifications.domain import Attempt, Outcome, Verdict
from services.notifications.settings import NotifySettings
from services.notifications.store import deliveries as store

log = logging.getLogger("dwf.notifications.delivery")

DISABLE_REASONS = {
    "GONE": pb.DISABLE_REASON_GONE,
    "REPEATED_FAILURES": pb.DISABLE_REASON_REPEATED_FAILURES,
    "OPERATOR": pb.DISABLE_REASON_OPERATOR,
}


# --- outgoing events ------------------------------------------------------------------------


async def record_dead_letters(
    runtime: Runtime, session: AsyncSession, dead: Sequence[store.DeadLettered]
) -> None:
    await runtime.events.record_many(
        session,
        [
            (
                "channel_endpoint",
                d.endpoint_id,
                events_pb2.DeliveryDeadLettered(
                    dead_letter_id=d.dead_letter_id,
                    delivery_id=d.delivery_id,
                    channel_id=d.channel_id,
                    endpoint_id=d.endpoint_id,
                    event_id=d.event_id,
                    event_type=d.event_type,
                    order_id=d.order_id,
                    attempts=d.attempts,
                    last_http_status=d.last_http_status,
                    last_error=d.last_error,
                    dead_lettered_at=ts(d.dead_lettered_at),
                ),
            )
            for d in dead
        ],
    )


async def record_endpoint_disabled(
    runtime: Runtime,
    session: AsyncSession,
    *,
    endpoint_id: str,
    channel_id: str,
    reason: str,
    disabled_at: datetime,
    http_status: int = 0,
    error: str = "",
) -> None:
    await runtime.events.record(
        session,
        aggregate_type="channel_endpoint",
        aggregate_id=endpoint_id,
        payload=events_pb2.EndpointDisabled(
            channel_id=channel_id,
            endpoint_id=endpoint_id,
            reason=DISABLE_REASONS[reason],
            last_http_status=http_status,
            last_error=error,
            disabled_at=ts(disabled_at),
        ),
    )


async def disable_endpoint(
    runtime: Runtime,
    session: AsyncSession,
    endpoint_id: str,
    *,
    reason: str,
    http_status: int = 0,
    error: str = "",
) -> bool:
    """Disable an endpoint (alert + EndpointDisabled) and dead-letter its backlog."""
    disabled = await store.disable_endpoint(
        session, endpoint_id, reason, http_status, error or f"endpoint disabled: {reason}"
    )
    if disabled is None:
        return False
    channel_id, disabled_at = disabled
    await record_endpoint_disabled(
        runtime,
        session,
        endpoint_id=endpoint_id,
        channel_id=channel_id,
        reason=reason,
        disabled_at=disabled_at,
        http_status=http_status,
        error=error,
    )
    backlog = await store.dead_letter_backlog(session, endpoint_id, f"endpoint disabled ({reason})")
    await record_dead_letters(runtime, session, backlog)
    log.warning(
        "endpoint %s disabled (%s); %d deliveries dead-lettered", endpoint_id, reason, len(backlog)
    )
    return True


# --- the worker -----------------------------------------------------------------------------


class Deliverer:
    def __init__(self, runtime: Runtime, settings: NotifySettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.policy = settings.retry_policy
        self.lease_seconds = domain.lease_for(settings.timeout_seconds).total_seconds()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(
            max_connections=self.settings.concurrency,
            max_keepalive_connections=self.settings.concurrency,
        )
        async with (
            httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_seconds),
                limits=limits,
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": self.settings.user_agent},
            ) as client,
            self.runtime.engine.connect() as listen_conn,
        ):
            self._client = client
            raw = await listen_conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            channel = store.notify_channel(self.runtime.settings.schema_name)
            await driver.add_listener(channel, self._on_notify)
            try:
                await self._loop(stop)
            finally:
                await driver.remove_listener(channel, self._on_notify)
                await self._drain()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            free = self.settings.concurrency - len(self._inflight)
            busy = False
            if free > 0:
                try:
                    busy = await self.claim_and_start(free)
                except Exception:
                    log.exception("claiming deliveries failed; retrying")
            if busy and len(self._inflight) < self.settings.concurrency:
                continue
            await _wait_any(self._wake, stop, timeout=self.settings.poll_interval_seconds)

    async def _drain(self) -> None:
        if not self._inflight:
            return
        _, pending = await asyncio.wait(self._inflight, timeout=self.settings.timeout_seconds)
        for task in pending:  # their leases expire; another sender takes them over
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def claim_and_start(self, limit: int) -> bool:
        """Claim up to ``limit`` deliveries and start sending them. True if the claim was
        full (there may be more due)."""
        async with self.runtime.sessions.begin() as session:
            result = await store.claim(
                session,
                limit=limit,
                lease_seconds=self.lease_seconds,
                max_attempts=self.policy.max_attempts,
            )
            await record_dead_letters(self.runtime, session, result.dead)
        for item in result.claimed:
            task = asyncio.create_task(self._deliver(item))
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return result.locked >= limit

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # the queue may have its next delivery ready

    async def _deliver(self, item: store.Claimed) -> None:
        try:
            attempt = await self.send(item)
            await self.finish(item, attempt)
        except Exception:
            log.exception(
                "delivery %s failed unexpectedly; its lease will expire", item.delivery_id
            )

    async def send(self, item: store.Claimed) -> Attempt:
        if item.kind == "EMAIL":
            return await asyncio.to_thread(self.send_email, item)
        assert self._client is not None
        headers = request_headers(item, int(time.time()))
        try:
            response = await self._client.post(item.url, content=item.body, headers=headers)
        except httpx.TimeoutException:
            return Attempt(None, f"timeout after {self.settings.timeout_seconds:g}s")
        except httpx.HTTPError as exc:
            return Attempt(None, domain.excerpt(f"{type(exc).__name__}: {exc}"))
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(status)
        retry_after = domain.parse_retry_after(
            response.headers.get("retry-after"), datetime.now(UTC)
        )
        return Attempt(status, domain.excerpt(f"HTTP {status}: {response.text}"), retry_after)

    def send_email(self, item: store.Claimed) -> Attempt:
        """One SMTP transaction (blocking: runs in a worker thread)."""
        settings = self.settings
        message = email.message_from_bytes(item.body, policy=email.policy.SMTP)
        message["From"] = settings.smtp_from
        message["Message-ID"] = f"<{item.delivery_id}@dwf.notifications>"
        for name, value in request_headers(item, int(time.time())).items():
            if name.startswith("dwf-") and name != domain.SIGNATURE_HEADER:
                message[f"X-{name.title()}"] = value
        try:
            with smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds
            ) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls()
                if settings.smtp_user:
                    smtp.login(settings.smtp_user, settings.smtp_password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return Attempt(None, domain.excerpt(f"SMTP {code}: {reply!r}"), smtp_code=code)
        except smtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            return Attempt(None, domain.excerpt(text), smtp_code=exc.smtp_code)
        except (OSError, smtplib.SMTPException) as exc:  # connection refused, timeout...
            return Attempt(None, domain.excerpt(f"{type(exc).__name__}: {exc}"), smtp_code=421)
        if refused:
            code, reply = next(iter(refused.values()))
            return Attempt(None, domain.excerpt(f"SMTP {code}: {reply!r}"), smtp_code=code)
        return Attempt(None, smtp_code=250)

    async def finish(self, item: store.Claimed, attempt: Attempt) -> Outcome:
        outcome = domain.decide(attempt, item.attempts, self.policy)
        status = attempt.http_status or 0
        runtime = self.runtime
        async with runtime.sessions.begin() as session:
            if not await store.hold_lease(session, item):
                log.warning("lease of delivery %s lost; outcome dropped", item.delivery_id)
                return outcome
            if outcome.verdict is Verdict.SUCCEEDED:
                delivered_at = await store.mark_succeeded(session, item, status)
                if delivered_at is not None:
                    await runtime.events.record(
                        session,
                        aggregate_type="channel_endpoint",
                        aggregate_id=item.endpoint_id,
                        payload=events_pb2.DeliverySucceeded(
                            delivery_id=item.delivery_id,
                            channel_id=item.channel_id,
                            endpoint_id=item.endpoint_id,
                            event_id=item.event_id,
                            event_type=item.event_type,
                            order_id=item.order_id,
                            status_sequence=item.sequence if item.order_id else 0,
                            attempts=item.attempts,
                            http_status=status,
                            delivered_at=ts(delivered_at),
                        ),
                        correlation_id=item.correlation_id or None,
                        causation_id=item.event_id,
                    )
            elif outcome.verdict is Verdict.RETRY:
                await store.mark_retrying(
                    session, item, status, outcome.error, outcome.delay_seconds
                )
            else:
                await store.record_failure(session, item.delivery_id, status, outcome.error)
                dead = await store.dead_letter(session, [item.delivery_id], outcome.error)
                await record_dead_letters(runtime, session, dead)
            await store.release(session, item)
            if outcome.verdict is Verdict.GONE:
                await disable_endpoint(
                    runtime,
                    session,
                    item.endpoint_id,
                    reason="GONE",
                    http_status=status,
                    error=outcome.error,
                )
        return outcome


def request_headers(item: store.Claimed, now: int) -> dict[str, str]:
    headers = {
        "content-type": item.content_type,
        "dwf-delivery-id": item.delivery_id,
        "dwf-event-id": item.event_id,
        "dwf-event-type": item.event_type,
        "dwf-channel-id": item.channel_id,
        "dwf-endpoint-id": item.endpoint_id,
        "dwf-sequence": str(item.sequence),
        "dwf-attempt": str(item.attempts),
    }
    if item.order_id:
        headers["dwf-order-id"] = item.order_id
    if item.correlation_id:
        headers["dwf-correlation-id"] = item.correlation_id
    if item.secret:
        headers[domain.SIGNATURE_HEADER] = domain.signature(item.secret, item.body, now)
    return headers


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
