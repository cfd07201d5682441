"""Ask the provider about the API key in use: OpenRouter's `GET {base}/key`.

OpenRouter answers `{"data": {"limit": 100, "usage": 25.5, "limit_remaining": 74.5, "limit_reset": "monthly",
"is_free_tier": false, "label": "sk-or-v1-au7...890", ...}}` (limit and limit_remaining null when unlimited) and
401 for a key it does not know. The answer is cached (`ttl_s`, shorter after a failure) so that the keyed
`GET /api/v1/llm/health` asks at most once a minute; callers at the same moment share one request. A new key
(rotation) is asked about at once. The public `/health` only reads the last answer (`last`) and never asks. The
key's `label` (a masked key) is never passed on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from app.services.llm.llm_metrics import KeyHealth

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0
FAILURE_TTL_S = 15.0
TIMEOUT_S = 5.0


class KeyChecker:
    def __init__(
        self,
        base_url: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        failure_ttl_s: float = FAILURE_TTL_S,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/key"
        self.ttl_s = ttl_s
        self.failure_ttl_s = failure_ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._transport = transport
        self._cached: tuple[str, float, KeyHealth] | None = None  # (fingerprint, expires at, answer)
        self._lock = asyncio.Lock()

    async def check(self, key: str | None, *, source: str, fingerprint: str | None) -> KeyHealth:
        """The provider's word on `key` (cached per key); never raises."""
        if key is None or fingerprint is None:
            return _health("invalid", source, None, detail="no API key: none stored and OPENROUTER_API_KEY is unset")
        cached = self._fresh(fingerprint)
        if cached is not None:
            return cached.model_copy(update={"source": source})
        async with self._lock:
            cached = self._fresh(fingerprint)  # asked by another caller while this one waited
            if cached is None:
                cached = await self._ask(key, source, fingerprint)
                ttl = self.failure_ttl_s if cached.status == "unreachable" else self.ttl_s
                self._cached = (fingerprint, self._clock() + ttl, cached)
        return cached.model_copy(update={"source": source})

    def last(self, fingerprint: str | None) -> KeyHealth | None:
        """The last answer about this key, however old; None when it was never asked about (nothing is sent)."""
        if fingerprint is None or self._cached is None or self._cached[0] != fingerprint:
            return None
        return self._cached[2]

    def forget(self) -> None:
        self._cached = None

    async def ask(self, key: str, *, source: str, fingerprint: str | None) -> KeyHealth:
        """Ask now, uncached (a key about to be stored)."""
        return await self._ask(key, source, fingerprint)

    def _fresh(self, fingerprint: str) -> KeyHealth | None:
        if self._cached is None:
            return None
        cached_for, expires_at, answer = self._cached
        if cached_for != fingerprint or self._clock() >= expires_at:
            return None
        return answer

    async def _ask(self, key: str, source: str, fingerprint: str | None) -> KeyHealth:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport) as client:
                response = await client.get(self.url, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            # The exception's text names the URL, never the header: no secret in it.
            log.warning("cannot ask %s about the API key: %s", self.url, type(exc).__name__)
            return _health("unreachable", source, fingerprint, detail=f"cannot reach {self.url}: {type(exc).__name__}")
        if response.status_code in (401, 403):
            return _health(
                "invalid", source, fingerprint, detail=f"the provider refused the key (HTTP {response.status_code})"
            )
        if response.status_code == 404:
            return _health("unsupported", source, fingerprint, detail=f"{self.url} does not exist on this endpoint")
        if response.status_code != 200:
            return _health(
                "unreachable", source, fingerprint, detail=f"{self.url} answered HTTP {response.status_code}"
            )
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            data = None
        if not isinstance(data, dict):
            return _health("unreachable", source, fingerprint, detail=f"{self.url} answered without a `data` object")
        return key_health(data, source=source, fingerprint=fingerprint)


def key_health(data: dict[str, Any], *, source: str, fingerprint: str | None) -> KeyHealth:
    """`GET /key`'s `data` as a KeyHealth: no_credit when a limit is set and nothing is left under it."""
    limit, usage = _number(data.get("limit")), _number(data.get("usage"))
    remaining = _number(data.get("limit_remaining"))
    if remaining is None and limit is not None and usage is not None:
        remaining = max(0.0, limit - usage)
    spent = limit is not None and remaining is not None and remaining <= 0
    reset = data.get("limit_reset")
    free = data.get("is_free_tier")
    return _health(
        "no_credit" if spent else "ok",
        source,
        fingerprint,
        limit_usd=limit,
        usage_usd=usage,
        limit_remaining_usd=remaining,
        limit_reset=reset if isinstance(reset, str) else None,
        is_free_tier=free if isinstance(free, bool) else None,
        detail="the key's credit limit is spent" if spent else None,  # the amounts: limit_usd, usage_usd
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _health(status: str, source: str, fingerprint: str | None, **fields: Any) -> KeyHealth:
    return KeyHealth.model_validate(
        {"status": status, "source": source, "fingerprint": fingerprint, "checked_at": datetime.now(UTC), **fields}
    )
