"""Authentication and scoping: every endpoint but `/health` needs an API key (the API's description,
`/openapi.json` and `/docs`, is public too: it holds no secret nor account data).

An admin key sees every account; an account key sees and acts on its own account only: any other
account id answers 404, exactly as if it did not exist.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import hash_api_key
from app.db.repositories.api_keys import ApiKeyRepository
from app.services.limits.buckets import SharedBuckets

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An admin or account API key")
bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token")


@dataclass(frozen=True)
class Principal:
    role: str  # admin | account
    account_id: int | None
    key_prefix: str
    key_id: int = 0  # the stored key's row: per-key limits count by it (prefixes may collide)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_see(self, account_id: int) -> bool:
        return self.is_admin or self.account_id == account_id


class VerifiedKeys:
    """Keys found valid in the database, trusted for `ttl_s` before they are looked up again.

    Every request is authenticated, and the lookup (a session and a query) was the largest part of a small
    request: 0.32 ms of CPU in-process, more under load. A key revoked through this API is forgotten at once
    (`forget_all`), so it is refused from the next request on; a key revoked behind this process's back (another
    process on the same database, an edit by hand) is refused within `ttl_s`. Only the keys' hashes are held,
    never the keys, and a key that was refused is never remembered (unknown keys cannot fill the table).

    A lookup that began before a revocation and ends after it is not remembered either: `generation` counts the
    `forget_all`s, and `remember` is given the one its lookup began in."""

    def __init__(self, ttl_s: float = 1.0, *, max_keys: int = 10_000, now: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._now = now
        self._valid: dict[str, tuple[Principal, float]] = {}
        self.generation = 0

    def get(self, key_hash: str) -> Principal | None:
        entry = self._valid.get(key_hash)
        if entry is None:
            return None
        if self._now() >= entry[1]:
            del self._valid[key_hash]
            return None
        return entry[0]

    def remember(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Trust a key found valid by a lookup that began in `generation` (unless keys were forgotten since)."""
        if generation != self.generation:
            return
        if len(self._valid) >= self.max_keys:
            self._valid.pop(next(iter(self._valid)))  # the oldest
        self._valid[key_hash] = (principal, self._now() + self.ttl_s)

    def forget_all(self) -> None:
        self._valid.clear()
        self.generation += 1


async def get_principal(
    request: Request,
    header_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Principal:
    """The caller, from `X-API-Key` or `Authorization: Bearer`; 401 without a valid key."""
    key = header_key or (credentials.credentials if credentials else None)
    if not key:
        raise HTTPException(
            status_code=401,
            detail="missing API key: send it as X-API-Key or Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    verified: VerifiedKeys = request.app.state.verified_keys
    key_hash = hash_api_key(key)
    principal = verified.get(key_hash)
    if principal is None:
        generation = verified.generation
        async with request.app.state.agent.sessions() as session:
            row = await ApiKeyRepository(session).find(key_hash)
        if row is None:
            raise HTTPException(status_code=401, detail="invalid API key", headers={"WWW-Authenticate": "Bearer"})
        principal = Principal(role=row.role, account_id=row.account_id, key_prefix=row.prefix, key_id=row.id)
        verified.remember(key_hash, principal, generation)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status_code=403, detail="this needs an admin API key")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]


def ensure_scope(principal: Principal, account_id: int) -> None:
    """404 for an account the caller may not see (indistinguishable from one that does not exist)."""
    if not principal.can_see(account_id):
        raise HTTPException(status_code=404, detail=f"account {account_id} does not exist")


class MutationLimiter:
    """A per-key rate limit on mutating endpoints, on the wall clock (`now` is the agent's `wall_clock`): a
    leaky bucket of `per_minute` requests that drains `per_minute` a minute. Over it, 429 with Retry-After:
    the whole seconds until one more request fits.

    The buckets are rows of the database (`SharedBuckets`, one per key: `api-changes:key:<key id>`), so every
    process serving the API on one database counts in the same bucket. `sessions` is called for the agent's
    sessions on each request: the limiter is made with the app, before its lifespan builds the agent."""

    def __init__(self, per_minute: int, *, sessions: Callable[[], async_sessionmaker[AsyncSession]]) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0  # requests drained per second
        self._sessions = sessions
        self._buckets: SharedBuckets | None = None

    def _shared(self) -> SharedBuckets:
        sessions = self._sessions()
        if self._buckets is None or self._buckets.sessions is not sessions:
            self._buckets = SharedBuckets(sessions)
        return self._buckets

    async def take(self, principal: Principal, now: datetime) -> Principal:
        wait = await self._shared().take(
            f"api-changes:key:{principal.key_id}", capacity=self.per_minute, per_second=self._rate, now=now
        )
        if wait is not None:
            raise HTTPException(
                status_code=429,
                detail=f"too many changes: at most {self.per_minute} mutating requests per minute per key",
                headers={"Retry-After": str(max(1, math.ceil(wait - 1e-9)))},
            )
        return principal


async def mutation_guard(request: Request) -> MutationLimiter:
    limiter: MutationLimiter = request.app.state.mutation_limiter
    return limiter


def _wall_now(request: Request) -> datetime:
    now: datetime = request.app.state.agent.wall_clock.now()
    return now


async def limited_principal(
    request: Request, principal: CurrentPrincipal, limiter: Annotated[MutationLimiter, Depends(mutation_guard)]
) -> Principal:
    return await limiter.take(principal, _wall_now(request))


MutatingPrincipal = Annotated[Principal, Depends(limited_principal)]


async def limited_admin(
    request: Request, principal: AdminPrincipal, limiter: Annotated[MutationLimiter, Depends(mutation_guard)]
) -> Principal:
    """An admin key, within the same per-key limit on mutating requests as every other key."""
    return await limiter.take(principal, _wall_now(request))


MutatingAdmin = Annotated[Principal, Depends(limited_admin)]
