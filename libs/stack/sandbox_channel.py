"""Channel sandbox: a webhook receiver that behaves like a storefront or marketplace.

It records every request it receives (headers, body, whether the ``dwf-signature`` verifies
against the hook's secret), and it can be told to fail the way channels do: answer 5xx or
429 (with Retry-After), a 4xx, 410 Gone, or hang past the sender's timeout. It also checks
what a channel cares about: that no two requests of one order are in flight at once, and
that an order's accepted ``dwf-sequence`` never goes backwards.

A tiny HTTP/1.1 server on asyncio streams + h11 (no web framework). Use it in-process::

    sandbox = SandboxChannel()
    await sandbox.start()
    sandbox.configure("shop", secret="...")
    sandbox.fail("shop", 503, times=2)
    url = sandbox.url("shop")       # http://127.0.0.1:<port>/hooks/shop

or as a process (``python -m stack.sandbox_channel --port 8099 --smtp-port 8025``) driven
over HTTP:

    POST   /hooks/<name>                 a delivery (answered per the hook's script)
    PUT    /_admin/hooks/<name>          {"secret": "...", "latency_ms": 0}
    POST   /_admin/hooks/<name>/fail     {"status": 503, "times": 2, "retry_after": "1",
                                          "delay_ms": 0}   (times null = until reset)
    GET    /_admin/hooks/<name>          what it received, and its checks
    DELETE /_admin/hooks/<name>          forget the hook (history, script, secret)
    GET    /_admin/health

``SmtpSink`` is the email side: an SMTP server (aiosmtpd) that keeps every message and can
answer transient (4xx) or permanent (5xx) failures on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h11
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope, Session

log = logging.getLogger("dwf.sandbox_channel")

SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BODY = 10 * 1024 * 1024


def verify(secrets: Iterable[str], body: bytes, header: str, now: float) -> bool:
    """``dwf-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``; the
    timestamp must be within 5 minutes; any v1 may match any secret (rotation)."""
    timestamp = None
    candidates = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    signed = f"{timestamp}.".encode() + body
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for candidate in candidates:
            ok |= hmac.compare_digest(expected, candidate)
    return ok


@dataclass
class Behaviour:
    status: int = 200
    times: int | None = 1  # None: until reset
    retry_after: str | None = None
    delay: float = 0.0  # seconds before answering (longer than the sender's timeout = hang)


@dataclass(frozen=True)
class Received:
    hook: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    signature_valid: bool | None  # None: the hook has no secret configured
    status: int  # what the sandbox answered (or was going to, for a hang)
    delay: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def order_id(self) -> str:
        return self.headers.get("dwf-order-id", "")

    @property
    def sequence(self) -> int:
        return int(self.headers.get("dwf-sequence", "0") or 0)

    @property
    def event_id(self) -> str:
        return self.headers.get("dwf-event-id", "")

    def json(self) -> Any:
        return json.loads(self.body)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body.decode(errors="replace"),
            "received_at": self.received_at,
            "signature_valid": self.signature_valid,
            "status": self.status,
            "delay": self.delay,
        }


@dataclass
class Hook:
    secrets: list[str] = field(default_factory=list)
    latency: float = 0.0
    script: deque[Behaviour] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)  # per dwf-order-id
    max_in_flight_per_order: int = 0
    in_flight_total: int = 0
    max_in_flight: int = 0
    accepted_sequence: dict[str, int] = field(default_factory=dict)  # per order, highest 2xx
    regressions: list[tuple[str, int, int]] = field(default_factory=list)  # order, seen, got

    def next_behaviour(self) -> Behaviour:
        while self.script:
            head = self.script[0]
            if head.times is None:
                return head
            if head.times > 0:
                head.times -= 1
                if head.times == 0:
                    self.script.popleft()
                return head
            self.script.popleft()
        return Behaviour(200, None, None, self.latency)


class SandboxChannel:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.hooks: dict[str, Hook] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # --- control (in-process) ---------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("channel sandbox on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closing the transports ends each connection's read with EOF; cancelling the tasks
        # instead trips asyncio's client-connected callback (it logs the cancellation).
        for writer in list(self._writers):
            writer.close()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=2)
            for task in pending:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SandboxChannel:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, hook: str) -> str:
        return f"{self.base_url}/hooks/{hook}"

    def hook(self, name: str) -> Hook:
        return self.hooks.setdefault(name, Hook())

    def configure(
        self, name: str, *, secret: str | None = None, latency: float | None = None
    ) -> Hook:
        hook = self.hook(name)
        if secret is not None:
            hook.secrets = [secret]
        if latency is not None:
            hook.latency = latency
        return hook

    def fail(
        self,
        name: str,
        status: int,
        *,
        times: int | None = 1,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` deliveries (None: all, until reset) with ``status``."""
        self.hook(name).script.append(Behaviour(status, times, retry_after, delay))

    def hang(self, name: str, seconds: float, *, times: int | None = 1) -> None:
        """Hold the next ``times`` deliveries for ``seconds`` (a timeout for the sender)."""
        self.hook(name).script.append(Behaviour(200, times, None, seconds))

    def recover(self, name: str) -> None:
        """Forget the failure script: answer 200 again."""
        self.hook(name).script.clear()

    def received(self, name: str) -> list[Received]:
        return list(self.hook(name).received)

    def accepted(self, name: str) -> list[Received]:
        return [r for r in self.hook(name).received if r.ok]

    def reset(self, name: str) -> None:
        self.hooks.pop(name, None)

    # --- HTTP ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer (or stop()) closed the connection
        finally:
            self._writers.discard(writer)
            self._connections.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            while True:
                request, body = await _read_request(conn, reader)
                if request is None:
                    return
                status, headers, payload = await self._handle(request, body)
                out = conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            *headers,
                            ("content-length", str(len(payload))),
                            ("server", "dwf-sandbox-channel"),
                        ],
                    )
                )
                writer.write((out or b"") + (conn.send(h11.Data(data=payload)) or b""))
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in request.headers}
        if len(parts) == 2 and parts[0] == "hooks" and method == "POST":
            return await self._deliver(parts[1], method, path, headers, body)
        if parts[:1] == ["_admin"]:
            return self._admin(method, parts[1:], body)
        return _json(404, {"error": "not found"})

    async def _deliver(
        self, name: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        hook = self.hook(name)
        behaviour = hook.next_behaviour()
        now = time.time()
        valid = (
            verify(hook.secrets, body, headers.get("dwf-signature", ""), now)
            if hook.secrets
            else None
        )
        received = Received(
            name, method, path, headers, body, now, valid, behaviour.status, behaviour.delay
        )
        hook.received.append(received)
        order = received.order_id
        hook.in_flight_total += 1
        hook.max_in_flight = max(hook.max_in_flight, hook.in_flight_total)
        if order:
            hook.in_flight[order] = hook.in_flight.get(order, 0) + 1
            hook.max_in_flight_per_order = max(hook.max_in_flight_per_order, hook.in_flight[order])
        try:
            delay = behaviour.delay or hook.latency
            if delay:
                await asyncio.sleep(delay)  # the channel's latency (or a hang)
        finally:
            hook.in_flight_total -= 1
            if order:
                hook.in_flight[order] -= 1
        if received.ok and order:
            seen = hook.accepted_sequence.get(order, 0)
            if received.sequence < seen:
                hook.regressions.append((order, seen, received.sequence))
            hook.accepted_sequence[order] = max(seen, received.sequence)
        extra: list[tuple[str, str]] = []
        if behaviour.retry_after is not None:
            extra.append(("retry-after", behaviour.retry_after))
        if valid is False:
            log.warning("hook %s: signature does not verify", name)
        payload = json.dumps({"received": received.ok}).encode()
        return behaviour.status, [*extra, ("content-type", "application/json")], payload

    def _admin(
        self, method: str, parts: list[str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return _json(400, {"error": "body must be JSON"})
        if parts == ["health"]:
            return _json(200, {"ok": True})
        if len(parts) < 2 or parts[0] != "hooks":
            return _json(404, {"error": "not found"})
        name = parts[1]
        if len(parts) == 2 and method == "GET":
            hook = self.hook(name)
            return _json(
                200,
                {
                    "received": [r.summary() for r in hook.received],
                    "max_in_flight_per_order": hook.max_in_flight_per_order,
                    "regressions": hook.regressions,
                },
            )
        if len(parts) == 2 and method == "PUT":
            latency_ms = data.get("latency_ms")
            self.configure(
                name,
                secret=data.get("secret"),
                latency=None if latency_ms is None else float(latency_ms) / 1000,
            )
            return _json(200, {"ok": True})
        if len(parts) == 2 and method == "DELETE":
            self.reset(name)
            return _json(200, {"ok": True})
        if len(parts) == 3 and parts[2] == "fail" and method == "POST":
            self.fail(
                name,
                int(data.get("status", 503)),
                times=data.get("times", 1),
                retry_after=data.get("retry_after"),
                delay=float(data.get("delay_ms", 0)) / 1000,
            )
            return _json(200, {"ok": True})
        if len(parts) == 3 and parts[2] == "recover" and method == "POST":
            self.recover(name)
            return _json(200, {"ok": True})
        return _json(404, {"error": "not found"})


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return request, b"".join(chunks)
        else:  # ConnectionClosed, PAUSED
            return None, b""


def _json(status: int, document: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("content-type", "application/json")], json.dumps(document).encode()


# --- email ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: float
    reply: str  # what the sink answered

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("250")

    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


class SmtpSink:
    """An SMTP server on the running event loop that records what it is sent."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.mails: list[Mail] = []  # every DATA, accepted or not
        self._script: deque[list[Any]] = deque()  # [reply, times]
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTPProtocol(self, hostname="dwf-sandbox"), self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SMTP sink on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def fail(self, reply: str = "451 4.3.0 Try again later", *, times: int | None = 1) -> None:
        """Answer the next ``times`` messages (None: all, until recover) with ``reply``."""
        self._script.append([reply, times])

    def recover(self) -> None:
        self._script.clear()

    def accepted(self, to: str | None = None) -> list[Mail]:
        return [m for m in self.mails if m.accepted and (to is None or to in m.rcpt_tos)]

    def _next_reply(self) -> str:
        while self._script:
            reply, times = self._script[0]
            if times is None:
                return str(reply)
            if times > 0:
                self._script[0][1] = times - 1
                if times == 1:
                    self._script.popleft()
                return str(reply)
            self._script.popleft()
        return "250 OK"

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        reply = self._next_reply()
        content = envelope.original_content or b""
        self.mails.append(
            Mail(
                str(envelope.mail_from),
                [str(r) for r in envelope.rcpt_tos],
                bytes(content) if not isinstance(content, str) else content.encode(),
                time.time(),
                reply,
            )
        )
        return reply


async def _main(host: str, port: int, secrets: list[str], smtp_port: int | None) -> None:
    sandbox = SandboxChannel(host, port)
    for item in secrets:
        name, _, secret = item.partition("=")
        sandbox.configure(name, secret=secret)
    await sandbox.start()
    print(f"channel sandbox listening on {sandbox.base_url}", flush=True)
    sink = SmtpSink(host, smtp_port) if smtp_port is not None else None
    if sink is not None:
        await sink.start()
        print(f"SMTP sink listening on {host}:{sink.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
        if sink is not None:
            await sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="dwf channel sandbox (webhook receiver)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--secret", action="append", default=[], help="<hook>=<secret>, may repeat")
    parser.add_argument("--smtp-port", type=int, default=None, help="also run an SMTP sink")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.host, args.port, args.secret, args.smtp_port))


if __name__ == "__main__":
    main()
