"""Channel authentication and per-channel rate limits of the gateway.

A caller presents ``authorization: Bearer <credential>``:
* an API key, looked up by its SHA-256 (cached per replica for ``credential_ttl_seconds``), or
* a signed token (JWT, HS256) issued with the channel's ``token_secret``: ``sub`` = channel id,
  ``exp`` required. A signed token never carries the admin scope.
Rate limits are token buckets per channel and replica (the channel's rate / replicas).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from chassis.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.order_gateway.domain import CHANNEL_SCOPE, MasterData, Principal, TokenBucket

KeyLookup = Callable[[str], Awaitable[Principal | None]]
MasterDataSource = Callable[[], Awaitable[MasterData]]


class Authenticator:
    def __init__(self, lookup: KeyLookup, master_data: MasterDataSource, ttl: float) -> None:
        self._lookup = lookup
        self._master_data = master_data
        self._ttl = ttl
        self._keys: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, context: Any) -> Principal:
        token = bearer_token(context)
        if token is None:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <api key or signed token>'"
            )
        if token.count(".") == 2:
            return await self._signed(token)
        return await self._api_key(token)

    def forget(self) -> None:
        """Drop every cached verdict (after this replica changed credentials)."""
        self._keys.clear()

    async def _api_key(self, key: str) -> Principal:
        now = asyncio.get_running_loop().time()
        cached = self._keys.get(key)
        # An unknown key is remembered only briefly: a key just issued must start working
        # soon, while a flood of bad keys still costs the database one query a second each.
        ttl = self._ttl if cached is None or cached[1] is not None else min(self._ttl, 1.0)
        if cached is None or now - cached[0] >= ttl:
            principal = await self._lookup(key)
            if len(self._keys) > 10_000:  # bounded: unknown keys must not grow memory
                self._keys.clear()
            cached = (now, principal)
            self._keys[key] = cached
        if cached[1] is None:
            raise Unauthenticated("unknown or revoked API key", "INVALID_CREDENTIALS")
        return cached[1]

    async def _signed(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}", "INVALID_CREDENTIALS") from exc
        channel = (await self._master_data()).channels.get(str(claims.get("sub", "")))
        if channel is None or not channel.token_secret:
            raise Unauthenticated("token for an unknown channel", "INVALID_CREDENTIALS")
        try:
            jwt.decode(
                token,
                channel.token_secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}", "INVALID_CREDENTIALS") from exc
        return Principal(
            f"token:{channel.channel_id}", channel.channel_id, frozenset({CHANNEL_SCOPE})
        )


def bearer_token(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip() or None
    return None


def require_channel(principal: Principal, channel_id: str) -> None:
    if not principal.may_act_for(channel_id):
        raise PermissionDenied(
            f"the credential may not act for channel {channel_id!r}", "CHANNEL_NOT_ALLOWED"
        )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("master data needs a credential with the admin scope")


class RateLimiter:
    """Per channel, per replica; operators (admin scope) are not limited."""

    def __init__(self, replicas: int) -> None:
        self._replicas = replicas
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, principal: Principal, master: MasterData) -> None:
        if principal.is_admin or principal.channel_id is None:
            return
        channel = master.channels.get(principal.channel_id)
        if channel is None:
            return
        rate = channel.rate_limit_per_second / self._replicas
        burst = max(channel.rate_limit_burst / self._replicas, 1.0)
        now = asyncio.get_running_loop().time()
        bucket = self._buckets.get(channel.channel_id)
        if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
            bucket = self._buckets[channel.channel_id] = TokenBucket.full(rate, burst, now)
        wait = bucket.take(now)
        if wait > 0:
            raise ResourceExhausted(
                f"rate limit of channel {channel.channel_id!r} exceeded; retry in {wait:.2f}s",
                retry_after_seconds=wait,
            )
