"""A circuit breaker per model: stop calling a model that keeps failing, try it again after a while.

* closed: calls go through; `failure_threshold` consecutive failures open the circuit.
* open: calls are refused until `recovery_timeout_s` has passed since it opened, then it is half-open.
* half_open: up to `half_open_max_calls` trial calls go through; a success closes the circuit, a failure
  opens it again for another `recovery_timeout_s`.

The caller asks `allow()` before a call and reports `record_success()` / `record_failure()` after it.
`on_change(state, why)` hears every opening and every closing (the alerts). Timing runs on a monotonic clock;
`snapshot()` reports the wall-clock time the circuit opened (ISO 8601) and the whole seconds until the next attempt
(rounded up), for people and monitors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from app.core.clock import WallClock

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
ChangeListener = Callable[[State, str], None]  # (new state, why): "open" or "closed"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        recovery_timeout_s: float,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = WallClock().now,
        on_change: ChangeListener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if recovery_timeout_s < 0:
            raise ValueError("recovery_timeout_s must not be negative")
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be at least 1")
        self.failure_threshold = failure_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._wall_clock = wall_clock
        self.on_change = on_change
        self._state: State = "closed"
        self._failures = 0  # consecutive failures
        self._opened_at: float | None = None  # monotonic
        self._opened_wall: datetime | None = None
        self._half_open_calls = 0
        self.total_failures = 0
        self.total_successes = 0
        self.times_opened = 0

    @property
    def state(self) -> State:
        if self._state == "open" and self._recovery_due():
            self._state = "half_open"
            self._half_open_calls = 0
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a call go through now? In half-open state each True counts as one trial call."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        if self._half_open_calls < self.half_open_max_calls:
            self._half_open_calls += 1
            return True
        return False

    def record_success(self) -> None:
        self.total_successes += 1
        self._failures = 0
        if self.state != "closed":
            self._close()

    def record_failure(self) -> None:
        self.total_failures += 1
        self._failures += 1
        state = self.state
        if state == "half_open" or (state == "closed" and self._failures >= self.failure_threshold):
            self._open()
        # already open: a late failure report (a call let through before opening) changes nothing

    def reset(self) -> None:
        self._close()
        self._failures = 0

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        next_in: int | None = None
        if state == "open" and self._opened_at is not None:
            next_in = max(0, math.ceil(self._opened_at + self.recovery_timeout_s - self._clock()))
        opened = self._opened_wall if state != "closed" else None
        return {
            "state": state,
            "failures": self._failures,
            "failure_threshold": self.failure_threshold,
            "opened_at": opened.isoformat(timespec="seconds") if opened is not None else None,
            "next_attempt_in_s": next_in,
            "half_open_calls": self._half_open_calls if state == "half_open" else 0,
            "times_opened": self.times_opened,
            "total_failures": self.total_failures,
            "total_successes": self.total_successes,
        }

    def _recovery_due(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at >= self.recovery_timeout_s

    def _tell(self, state: State, detail: str) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(state, detail)
        except Exception:  # a listener's failure must not change what the breaker does
            log.exception("circuit breaker listener failed")

    def _open(self) -> None:
        again = self._state == "half_open"
        self._state = "open"
        self._opened_at = self._clock()
        self._opened_wall = self._wall_clock()
        self._half_open_calls = 0
        self.times_opened += 1
        self._tell(
            "open",
            ("the trial call failed" if again else f"{self._failures} consecutive failures")
            + f": calls are refused for {self.recovery_timeout_s:g} s, then one trial call goes through",
        )

    def _close(self) -> None:
        was_open = self._state != "closed"
        self._state = "closed"
        self._opened_at = None
        self._opened_wall = None
        self._half_open_calls = 0
        if was_open:
            self._tell("closed", "a call succeeded: calls go through again")


class CircuitBreakerRegistry:
    """One breaker per key (a model slug), all with the same settings, created on first use."""

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout_s: float = 60.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = WallClock().now,
        on_change: Callable[[str, State, str], None] | None = None,
    ) -> None:
        """`on_change(key, state, why)`: told when any model's circuit opens or closes (settable later)."""
        self.on_change = on_change
        self.failure_threshold = failure_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._wall_clock = wall_clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                self.failure_threshold,
                self.recovery_timeout_s,
                self.half_open_max_calls,
                clock=self._clock,
                wall_clock=self._wall_clock,
                on_change=lambda state, why: self._changed(key, state, why),
            )
            self._breakers[key] = breaker
        return breaker

    def _changed(self, key: str, state: State, why: str) -> None:
        if self.on_change is not None:
            self.on_change(key, state, why)

    def allow(self, key: str) -> bool:
        return self.get(key).allow()

    def record_success(self, key: str) -> None:
        self.get(key).record_success()

    def record_failure(self, key: str) -> None:
        self.get(key).record_failure()

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def keys(self) -> list[str]:
        return sorted(self._breakers)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: breaker.snapshot() for key, breaker in sorted(self._breakers.items())}
