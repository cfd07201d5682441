"""Is the market answering? A venue outage is normal: the agent starts without the market, says once why no
decision is made, and asks again with a growing pause until it answers.

The probe is what the agent needs from the market before it can trade (the venue's market rules: tick, lot,
minimum notional). Pauses run on the wall clock (they pace requests to a real server, like any retry), from
`first_backoff_s` doubling up to `max_backoff_s`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from app.core.clock import Clock, WallClock
from app.services.alerts.events import NO_ALERTS, AlertSink, market_stale

log = logging.getLogger(__name__)


class MarketAvailability:
    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[object]],
        *,
        first_backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        wall: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        alerts: AlertSink = NO_ALERTS,
    ) -> None:
        """`alerts` hears of each outage once, when it begins."""
        self.name = name
        self.alerts = alerts
        self._probe = probe
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self._wall = wall or WallClock()
        self._monotonic = monotonic
        self.ready = False
        self.error: str | None = None  # why the market cannot be used, while it cannot
        self.down_since: datetime | None = None  # wall time of the first failed attempt of this outage
        self.failed_attempts = 0  # of this outage
        self._next_attempt = 0.0  # monotonic

    def retry_in_s(self) -> float:
        """Seconds until the next attempt is due (0 when it is due now)."""
        return 0.0 if self.ready else max(0.0, self._next_attempt - self._monotonic())

    async def check(self) -> bool:
        """True once the market has answered; otherwise ask it again if the pause is over."""
        if self.ready:
            return True
        if self.retry_in_s() > 0:
            return False
        try:
            await self._probe()
        except Exception as exc:  # any failure: report it, never stop the agent
            self._failed(exc)
            return False
        if self.failed_attempts:
            log.warning(
                "market %s answers again after %d failed attempts: decisions resume", self.name, self.failed_attempts
            )
        self.ready, self.error, self.down_since, self.failed_attempts = True, None, None, 0
        return True

    def _failed(self, exc: Exception) -> None:
        self.failed_attempts += 1
        self.error = f"{type(exc).__name__}: {exc}"
        pause = min(self.max_backoff_s, self.first_backoff_s * 2 ** (self.failed_attempts - 1))
        self._next_attempt = self._monotonic() + pause
        if self.down_since is None:
            self.down_since = self._wall.now()
            log.warning(
                "market %s cannot be reached: no decision is made until it answers (asking again with a growing "
                "pause, up to %g s): %s",
                self.name,
                self.max_backoff_s,
                self.error,
            )
            self.alerts.emit(
                market_stale(
                    self.name, f"The market cannot be reached: no decision is made until it answers: {self.error}"
                )
            )
        else:
            log.debug("market %s still cannot be reached (attempt %d): %s", self.name, self.failed_attempts, self.error)

    def reason(self) -> str | None:
        """Why no decision is made because of the market, or None when it answers."""
        if self.ready or self.error is None:
            return None
        since = self.down_since.isoformat(timespec="seconds") if self.down_since else "start-up"
        return (
            f"market {self.name} cannot be reached since {since} ({self.failed_attempts} attempts; next in "
            f"{math.ceil(self.retry_in_s())} s): no decision is made until it answers: {self.error}"
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reachable": self.ready if self.ready or self.error else None,  # None: not asked yet
            "error": self.error,
            "down_since": self.down_since.isoformat(timespec="seconds") if self.down_since else None,
            "failed_attempts": self.failed_attempts,
            "next_attempt_in_s": None if self.ready or self.error is None else math.ceil(self.retry_in_s()),
        }
