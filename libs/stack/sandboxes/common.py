"""What the ERP, WMS and carrier sandboxes share (docs/sandboxes.md, "Common rules").

- errors: :class:`ApiError` and the ``{"error": {"code", "message", "field"}}`` JSON;
- request bodies: :class:`Body`, typed reads that name the offending field (``lines[2].sku``);
- settings: fault (and behaviour) fields as dataclasses, set from keyword arguments, the admin
  API or ``DWF_<SANDBOX>_<FIELD>`` environment variables;
- :class:`FaultInjector`: latency, 429 + Retry-After, 5xx and timeout-after-commit, drawn from
  a seeded RNG;
- :func:`make_app`: bearer auth and faults around the business routes (``/api/...``), the
  common admin routes (``/_admin/faults``, ``/_admin/reset``, ``/_admin/health``);
- running: :class:`Sandbox` (in-process, an async context manager on a free port) and
  :func:`serve` / :func:`run_cli` (a process, ``python -m stack.sandboxes.<name>``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan

log = logging.getLogger("dwf.sandboxes")

Endpoint = Callable[[Request], Awaitable[Response]]

#: Error codes of HTTP statuses the framework answers itself (unknown path, wrong method...).
_STATUS_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


# --- errors ----------------------------------------------------------------------------------


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return JSONResponse({"error": error, **(extra or {})}, status, headers=headers)


class ApiError(Exception):
    """Raised anywhere in a handler; answered as the sandboxes' error JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(
            self.status,
            self.code,
            self.message,
            field=self.field,
            extra=self.extra,
            headers=self.headers,
        )


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "INVALID_REQUEST", f"{field}: {message}", field=field)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)


# --- small helpers ---------------------------------------------------------------------------


def rfc3339(moment: datetime | None = None) -> str:
    """UTC, milliseconds, ``Z``: ``2026-03-01T12:30:00.000Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


class Numbers:
    """Human-readable document numbers (``SO-000001``), one sequence per prefix. The sequences
    survive ``/_admin/reset`` so that a number is never handed out twice by one process."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, prefix: str) -> str:
        value = self._last.get(prefix, 0) + 1
        self._last[prefix] = value
        return f"{prefix}-{value:06d}"


def tracking_number(carrier_code: str | None) -> str:
    """A unique, carrier-shaped tracking number (not seeded: ids must never repeat)."""
    digits = uuid.uuid4().int
    carrier = (carrier_code or "").upper()
    if carrier.startswith("FEDEX"):
        return f"{digits % 10**12:012d}"
    if carrier.startswith("USPS"):
        return f"9400{digits % 10**18:018d}"
    return f"1Z{digits % 10**16:016d}"


def chance(rng: random.Random, rate: float) -> bool:
    """True with probability ``rate``; draws nothing when the rate is 0 (so that switching
    an unrelated fault off does not shift a seeded run)."""
    return rate > 0 and rng.random() < rate


def make_rng(seed: int | None, stream: str) -> random.Random:
    """One independent, reproducible RNG per ``stream`` for a given ``seed``."""
    return random.Random(f"{seed}:{stream}") if seed is not None else random.Random()


# --- request bodies --------------------------------------------------------------------------


async def read_object(request: Request, *, allow_empty: bool = False) -> Body:
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return Body({})
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(422, "INVALID_REQUEST", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, "INVALID_REQUEST", "the body must be a JSON object")
    return Body(data)


class Body:
    """Typed reads of one JSON object; errors name the field path (``lines[2].quantity``)."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str, *, default: str | None = None) -> str:
        value = self.data.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise invalid(self.where(key), "a non-empty string is required")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self.has(key) else None

    def quantity(self, key: str = "quantity") -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid(self.where(key), "a positive integer is required")
        return value

    def amount(self, key: str) -> Decimal:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise invalid(self.where(key), "a decimal amount is required")
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise invalid(self.where(key), "a decimal amount is required") from None
        if not amount.is_finite() or amount < 0:
            raise invalid(self.where(key), "a non-negative amount is required")
        return amount

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise invalid(self.where(key), "an object is required")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(self.where(key), "a list of strings is required")
        return list(value)

    def objects(self, key: str, *, required: bool = True) -> list[Body]:
        """A list of objects; ``required`` means present and non-empty."""
        value = self.data.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list) or (required and not value):
            raise invalid(self.where(key), "a non-empty list is required")
        items = []
        for index, item in enumerate(value):
            path = f"{self.where(key)}[{index}]"
            if not isinstance(item, dict):
                raise invalid(path, "an object is required")
            items.append(Body(item, path))
        return items


def unique_line_ids(lines: Iterable[Body]) -> None:
    seen: set[str] = set()
    for line in lines:
        line_id = line.text("line_id")
        if line_id in seen:
            raise invalid(line.where("line_id"), f"line {line_id!r} appears twice")
        seen.add(line_id)


# --- settings --------------------------------------------------------------------------------


class SettingsError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a number is required")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError("a number is required")


def parse_rate(value: object) -> float:
    rate = _number(value)
    if not 0 <= rate <= 1:
        raise ValueError("a probability between 0 and 1 is required")
    return rate


def parse_non_negative(value: object) -> float:
    number = _number(value)
    if not number >= 0:  # also refuses NaN
        raise ValueError("a non-negative number is required")
    return number


def parse_non_negative_int(value: object) -> int:
    number = parse_non_negative(value)
    if number != int(number):
        raise ValueError("a whole number is required")
    return int(number)


def parse_seed(value: object) -> int | None:
    if value is None or value == "":
        return None
    return parse_non_negative_int(value)


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false is required")


def parse_range_ms(value: object) -> tuple[float, float]:
    """``[min, max]`` milliseconds; a single number ``n`` means ``[n, n]``; also ``"10,200"``."""
    if isinstance(value, str):
        value = [part for part in value.replace("[", "").replace("]", "").split(",") if part]
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError("[min, max] is required")
        low, high = parse_non_negative(value[0]), parse_non_negative(value[1])
    else:
        low = high = parse_non_negative(value)
    if low > high:
        raise ValueError("min must not exceed max")
    return low, high


def parse_texts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Iterable):
        items = tuple(value)
        if all(isinstance(item, str) for item in items):
            return items
    raise ValueError("a list of strings is required")


def setting(default: Any, parse: Callable[[object], Any]) -> Any:
    """A settings field: its default and the parser for admin JSON and environment values."""
    return field(default=default, metadata={"parse": parse})


@dataclass
class Faults:
    """The fault fields every sandbox has (docs/sandboxes.md, "Injected faults")."""

    latency_ms: tuple[float, float] = setting((0.0, 0.0), parse_range_ms)
    rate_429: float = setting(0.0, parse_rate)
    retry_after_seconds: int = setting(1, parse_non_negative_int)
    rate_5xx: float = setting(0.0, parse_rate)
    seed: int | None = setting(None, parse_seed)

    def commit_timeout(self) -> tuple[float, float]:
        """(rate, hang seconds) of timeouts after the commit; only the ERP has them."""
        return 0.0, 0.0


S = TypeVar("S")


def setting_names(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def apply_settings(settings: S, changes: Mapping[str, object]) -> S:
    """A copy of ``settings`` with ``changes`` parsed in; all or nothing."""
    fields = {f.name: f for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    parsed: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in fields:
            raise SettingsError(name, "unknown setting")
        try:
            parsed[name] = fields[name].metadata["parse"](value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(name, str(exc)) from None
    return dataclasses.replace(settings, **parsed)  # type: ignore[type-var]


def settings_json(settings: object) -> dict[str, Any]:
    document = dataclasses.asdict(settings)  # type: ignore[call-overload]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in document.items()}


def env_settings(
    prefix: str, names: Iterable[str], environ: Mapping[str, str] | None = None
) -> dict[str, object]:
    """``DWF_ERP_RATE_429=0.3`` → ``{"rate_429": 0.3}`` for the given setting names (other
    ``DWF_ERP_*`` variables, such as the connectors' URL and token, are not ours)."""
    environ = os.environ if environ is None else environ
    found: dict[str, object] = {}
    for name in names:
        raw = environ.get(f"{prefix}{name.upper()}")
        if raw is None:
            continue
        try:
            found[name] = json.loads(raw)
        except ValueError:
            found[name] = raw
    return found


# --- faults ----------------------------------------------------------------------------------

F = TypeVar("F", bound=Faults)


class FaultInjector(Generic[F]):
    """The current settings of a sandbox and the RNG its faults are drawn from."""

    def __init__(self, settings: F) -> None:
        self.defaults = type(settings)()
        self.settings = settings
        self.rng = make_rng(settings.seed, "faults")

    def update(self, changes: Mapping[str, object]) -> None:
        self.settings = apply_settings(self.settings, changes)
        if "seed" in changes:
            self.rng = make_rng(self.settings.seed, "faults")

    def reset(self) -> None:
        self.settings = dataclasses.replace(self.defaults)
        self.rng = make_rng(None, "faults")

    async def before(self) -> Response | None:
        """Faults 1-3: latency, then 429 or 5xx (without effect), or None to go on."""
        low, high = self.settings.latency_ms
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high) / 1000)
        if chance(self.rng, self.settings.rate_429):
            seconds = self.settings.retry_after_seconds
            return error_response(
                429,
                "RATE_LIMITED",
                f"too many requests, retry after {seconds}s",
                headers={"Retry-After": str(seconds)},
            )
        if chance(self.rng, self.settings.rate_5xx):
            if self.rng.random() < 0.75:
                return error_response(503, "SERVICE_UNAVAILABLE", "temporarily unavailable")
            return error_response(500, "INTERNAL_ERROR", "internal server error")
        return None

    def hang_after_commit(self) -> float | None:
        """Fault 4: seconds to hang after the work was done, or None."""
        rate, seconds = self.settings.commit_timeout()
        return seconds if chance(self.rng, rate) else None


async def hang(request: Request, seconds: float) -> bool:
    """Hold the response for ``seconds``; True if the client went away meanwhile (the answer
    then goes nowhere, and the request ends without waiting out the hang)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(disconnected())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return bool(done)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


# --- the app ---------------------------------------------------------------------------------


def bearer_ok(request: Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


def guarded(endpoint: Endpoint, token: str, faults: FaultInjector[Any]) -> Endpoint:
    """A business endpoint behind the bearer check and the injected faults."""

    async def guarded_endpoint(request: Request) -> Response:
        if not bearer_ok(request, token):
            return error_response(
                401,
                "UNAUTHORIZED",
                "a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        refusal = await faults.before()
        if refusal is not None:
            return refusal
        try:
            response = await endpoint(request)
        except ApiError as exc:
            response = exc.response()
        seconds = faults.hang_after_commit()
        if seconds is not None:
            log.info("%s %s: committed, hanging %.1fs", request.method, request.url.path, seconds)
            await hang(request, seconds)
        return response

    return guarded_endpoint


def api(
    path: str, endpoint: Endpoint, methods: list[str], token: str, faults: FaultInjector[Any]
) -> Route:
    return Route(path, guarded(endpoint, token, faults), methods=methods)


def admin_routes(
    faults: FaultInjector[Any],
    reset: Callable[[], Awaitable[None]],
    *,
    settings_paths: Iterable[str] = ("/_admin/faults",),
) -> list[BaseRoute]:
    """``GET/POST /_admin/faults`` (and aliases), ``POST /_admin/reset``, ``GET /_admin/health``."""

    async def read_settings(request: Request) -> Response:
        return JSONResponse(settings_json(faults.settings))

    async def write_settings(request: Request) -> Response:
        body = await read_object(request, allow_empty=True)
        try:
            faults.update(body.data)
        except SettingsError as exc:
            raise ApiError(422, "INVALID_SETTING", str(exc), field=exc.field) from None
        return JSONResponse(settings_json(faults.settings))

    async def reset_all(request: Request) -> Response:
        faults.reset()
        await reset()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes: list[BaseRoute] = []
    for path in settings_paths:
        routes.append(Route(path, read_settings, methods=["GET"]))
        routes.append(Route(path, write_settings, methods=["POST"]))
    routes.append(Route("/_admin/reset", reset_all, methods=["POST"]))
    routes.append(Route("/_admin/health", health, methods=["GET"]))
    return routes


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    return error_response(exc.status_code, code, exc.detail, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("sandbox error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal server error")


def make_app(routes: Iterable[BaseRoute], lifespan: Lifespan[Starlette] | None = None) -> Starlette:
    return Starlette(
        routes=list(routes),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
        max_body_size=10 * 1024 * 1024,
    )


# --- running ---------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server with a readiness event, and (in-process) hands off the signals."""

    def __init__(self, config: uvicorn.Config, *, handle_signals: bool) -> None:
        super().__init__(config)
        self.handle_signals = handle_signals
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.handle_signals:
            yield  # in-process: SIGINT/SIGTERM stay with the host program
            return
        with super().capture_signals():
            yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _config(app: ASGIApp, host: str, port: int, *, in_process: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # In-process, leave the host program's logging alone (only set uvicorn's levels).
        log_config=None if in_process else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        lifespan="on",
        # A request hanging on a timeout-after-commit fault must not hold up a stop for long.
        timeout_graceful_shutdown=2,
    )


async def _run(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits when the app's start-up fails
        raise RuntimeError(f"the sandbox server exited ({exc.code})") from None


async def _start(server: _Server, sock: socket.socket) -> asyncio.Task[None]:
    task = asyncio.create_task(_run(server, sock))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        sock.close()
        await task  # raises what stopped the server
        raise RuntimeError("the sandbox server stopped during start-up")
    return task


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Sandbox:
    """Runs a sandbox app in this process (on the running event loop) on a real port::

        async with Sandbox(erp.create_app("token")) as erp_sandbox:
            erp_sandbox.url   # http://127.0.0.1:<free port>

    ``port=0`` picks a free port; ``start()``/``stop()`` are there too for supervisors.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the sandbox is already running")
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        self._server = _Server(
            _config(self.app, self.host, self.port, in_process=True), handle_signals=False
        )
        self._task = await _start(self._server, sock)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = None
            self._task = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def _serve(app: ASGIApp, host: str, port: int, name: str) -> None:
    sock = _bind(host, port)
    port = int(sock.getsockname()[1])
    server = _Server(_config(app, host, port, in_process=False), handle_signals=True)
    task = await _start(server, sock)
    print(f"{name} sandbox listening on {_url(host, port)}", flush=True)
    await task


def serve(app: ASGIApp, host: str, port: int, *, name: str = "sandbox") -> None:
    """Serve ``app`` until SIGINT/SIGTERM (``port`` 0: a free one, printed at start-up)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(app, host, port, name))


def run_cli(
    name: str,
    description: str,
    create: Callable[..., Starlette],
    setting_fields: Iterable[str],
    argv: list[str] | None = None,
) -> None:
    """``python -m stack.sandboxes.<name> --port P --token T [--host H]``; initial settings
    from ``DWF_<NAME>_<FIELD>`` variables; the token may also come from ``DWF_<NAME>_TOKEN``."""
    prefix = f"DWF_{name.upper()}_"
    parser = argparse.ArgumentParser(
        prog=f"python -m stack.sandboxes.{name}", description=description
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument(
        "--token",
        default=os.environ.get(f"{prefix}TOKEN"),
        help=f"the bearer token the business API requires (default: ${prefix}TOKEN)",
    )
    args = parser.parse_args(argv)
    if not args.token:
        parser.error(f"--token (or {prefix}TOKEN) is required")
    try:
        app = create(args.token, **env_settings(prefix, setting_fields))
    except SettingsError as exc:
        parser.error(f"{prefix}{exc.field.upper()}: {exc}")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        serve(app, args.host, args.port, name=name)
    except OSError as exc:  # e.g. the port is taken
        parser.exit(1, f"{name} sandbox: {exc}\n")


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """Run ``app``'s lifespan without a server (for ``httpx.ASGITransport`` tests, which do not
    send lifespan events): background work is stopped on exit."""
    async with app.router.lifespan_context(app):
        yield app
