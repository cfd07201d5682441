"""The clock of a job: a worker decides each job at its candle, whatever the time is when it runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime

from app.core.clock import Clock, WallClock

_JOB_TIME: ContextVar[datetime | None] = ContextVar("job_time", default=None)


class JobClock:
    """`now()` is the moment of the job running in this task (`at`), else `fallback`'s. A worker runs many jobs at once,
    each in its own task with its own moment, so every service built on this clock (the engine, the venues, the context)
    sees the job's candle; waiting and holding are the fallback's (a worker never waits for a candle)."""

    def __init__(self, fallback: Clock | None = None) -> None:
        self.fallback = fallback or WallClock()

    def now(self) -> datetime:
        moment = _JOB_TIME.get()
        return moment if moment is not None else self.fallback.now()

    @contextlib.contextmanager
    def at(self, moment: datetime) -> Iterator[None]:
        """The current task (and the tasks it starts) sees `moment` as now until the block ends."""
        token = _JOB_TIME.set(moment)
        try:
            yield
        finally:
            _JOB_TIME.reset(token)

    async def sleep_until(self, moment: datetime) -> None:
        await self.fallback.sleep_until(moment)

    def start(self) -> None:
        self.fallback.start()

    def hold(self, limit: datetime) -> None:
        self.fallback.hold(limit)

    def release(self) -> None:
        self.fallback.release()
