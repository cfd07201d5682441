"""The injected clock. Nothing in the agent reads the wall clock directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Now, a way to wait until a moment (the next closed candle), and a way for the loop to make a simulated
    clock wait for the cycle in flight."""

    def now(self) -> datetime: ...

    async def sleep_until(self, moment: datetime) -> None: ...

    def start(self) -> None:
        """The trading loop begins: a simulated clock counts from its start moment from now on (the seconds the
        agent took to start up are not simulated, so the first candle is decided); real time ignores it."""

    def hold(self, limit: datetime) -> None:
        """Until `release()`, `now()` does not pass `limit`. A simulated clock waits (the trading loop holds it
        before the next candle's close while a cycle is in flight, so no candle is skipped); real time cannot
        wait, and the wall clock ignores it."""

    def release(self) -> None:
        """Let the clock run again from where it waits."""


class WallClock:
    """Real UTC time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        delay = (moment - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

    def start(self) -> None:
        """Real time does not start over."""

    def hold(self, limit: datetime) -> None:
        """Real time does not wait: a late cycle is counted by the loop instead."""

    def release(self) -> None:
        """Nothing is held."""


class AcceleratedClock:
    """Simulated time that starts at `start` and runs `speed` times faster than the wall clock. While held it
    stops at the limit, and when released it runs on from there (the time spent waiting is not simulated)."""

    def __init__(self, start: datetime, speed: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._monotonic = monotonic  # real seconds (injectable: tests drive it instead of waiting)
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._t0 = monotonic()
        self._limit: datetime | None = None
        self._started = False

    @property
    def speed(self) -> float:
        return self._speed

    def _running(self) -> datetime:
        return self._start + timedelta(seconds=(self._monotonic() - self._t0) * self._speed)

    def now(self) -> datetime:
        moment = self._running()
        return moment if self._limit is None or moment <= self._limit else self._limit

    def start(self) -> None:
        if not self._started:  # once: time the loop has seen is never taken back
            self._started, self._t0 = True, self._monotonic()

    def hold(self, limit: datetime) -> None:
        self._limit = limit.astimezone(UTC)

    def release(self) -> None:
        if self._limit is None:
            return
        moment = self.now()
        self._start, self._t0, self._limit = moment, self._monotonic(), None

    async def sleep_until(self, moment: datetime) -> None:
        delay = (moment - self.now()).total_seconds() / self._speed
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that moves only when told to (tests and backtests). `sleep_until` jumps to the moment."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    async def sleep_until(self, moment: datetime) -> None:
        if moment > self._now:
            self._now = moment
        await asyncio.sleep(0)

    def start(self) -> None:
        """A manual clock moves only when told to."""

    def hold(self, limit: datetime) -> None:
        """A manual clock moves only when told to, held or not (a test moves it to play a late cycle)."""

    def release(self) -> None:
        """Nothing is held."""
