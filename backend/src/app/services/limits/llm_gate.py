"""The gate every remote model call passes: a concurrency cap (`slot`) and a request rate (`pace`).

`LocalLLMGate` holds both in this process's memory: enough when one process makes every call (SQLite, the embedded
`run`). `SharedLLMGate` holds them in the database, so that workers and API servers on one PostgreSQL together stay
within LLM_MAX_CONCURRENCY calls in flight and LLM_REQUESTS_PER_MINUTE requests: the rate is a `SharedBuckets`
bucket, the cap the rows of `llm_slots`, each leased by one call until a moment on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Protocol

from aiolimiter import AsyncLimiter
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.db.models import LLMSlot
from app.db.upsert import insert_for
from app.services.limits.buckets import SharedBuckets

log = logging.getLogger(__name__)

REQUESTS_BUCKET = "llm:requests"
POLL_S = (0.02, 0.05)  # a call waiting for a slot asks again after a random pause in this range (no lockstep)


class LLMGate(Protocol):
    def slot(self, *, shadow: bool) -> AbstractAsyncContextManager[None]:
        """Held for the length of one call: the concurrency cap. A `shadow` call (an experiment's variant that is
        only recorded) gives way to executed decisions' calls."""

    async def pace(self) -> None:
        """Wait until the request rate allows one more request, and count it."""

    async def release_all(self) -> None:
        """Free every slot, whoever leased it: only for a process that is the one process on its database, at its
        start (what is leased was left by its killed predecessor)."""


class CallSlots:
    """The concurrency cap on model calls in one process, executed decisions first: a shadow call takes a free slot
    only while no executed decision waits for one, so shadows never delay a decision that trades."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._urgent_waiting = 0
        self._changed = asyncio.Condition()

    @property
    def urgent_waiting(self) -> int:
        """The executed decisions' calls waiting for a slot now."""
        return self._urgent_waiting

    @contextlib.asynccontextmanager
    async def slot(self, *, shadow: bool) -> AsyncIterator[None]:
        async with self._changed:
            if not shadow:
                self._urgent_waiting += 1
            try:
                await self._changed.wait_for(lambda: self._free > 0 and (not shadow or not self._urgent_waiting))
            finally:
                if not shadow:
                    self._urgent_waiting -= 1
                    self._changed.notify_all()
            self._free -= 1
        try:
            yield
        finally:
            async with self._changed:
                self._free += 1
                self._changed.notify_all()


class LocalLLMGate:
    """This process's gate: `max_concurrency` calls at once (executed decisions first) and a leaky bucket of
    `requests_per_minute` requests (at least one)."""

    def __init__(self, requests_per_minute: float, max_concurrency: int) -> None:
        self._limiter = AsyncLimiter(max(1.0, requests_per_minute), 60.0)
        self._slots = CallSlots(max_concurrency)

    def slot(self, *, shadow: bool) -> AbstractAsyncContextManager[None]:
        return self._slots.slot(shadow=shadow)

    async def pace(self) -> None:
        await self._limiter.acquire()

    async def release_all(self) -> None:
        """Nothing outlives this process."""


class SharedLLMGate:
    """The gate of every process on one database.

    The rate: the bucket `llm:requests` of `SharedBuckets` (holds `requests_per_minute`, drains as many a minute);
    `pace` waits the seconds it answers and asks again.

    The cap: `llm_slots` rows 0 .. max_concurrency-1 (created when missing). A call leases a free one (`until` null
    or past) until now + `lease_s`, and frees it after (`until` null). A process killed during a call leaves its row
    leased; the slot is free again at `until`. `lease_s` must outlast the longest call (a provider's timeout and
    retries): a call still running when its lease ends no longer counts, and the cap could be passed by one.
    The lease is taken by a conditional UPDATE (`until` still null or past), so two processes that picked the same
    row cannot both have it; on PostgreSQL `FOR UPDATE SKIP LOCKED` makes them pick different rows to begin with.

    Executed decisions first, in spirit: across processes nobody knows who waits in another process, so with two
    slots or more a shadow call only takes one while another stays free after it (one slot is kept for executed
    calls; with a single slot shadows take it when it is free). Within this process a shadow also gives way to the
    executed calls of this process that wait (as `LocalLLMGate` does). Two shadows of two processes looking at once
    may still both take a slot, leaving none free: the rule is a preference, not a guarantee; the cap itself holds.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        wall_clock: Clock,
        *,
        requests_per_minute: float,
        max_concurrency: int,
        holder: str,
        lease_s: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.requests_per_minute = max(1.0, requests_per_minute)
        self.max_concurrency = max_concurrency
        self.holder = holder
        self.lease_s = lease_s
        self._sleep = sleep  # tests pace on a manual clock without waiting
        self._buckets = SharedBuckets(sessions)
        self._leases = itertools.count(1)  # each lease names its call: a call frees only its own lease
        self._rows_made = False
        self._urgent_waiting = 0

    async def pace(self) -> None:
        while True:
            wait = await self._buckets.take(
                REQUESTS_BUCKET,
                capacity=self.requests_per_minute,
                per_second=self.requests_per_minute / 60.0,
                now=self.wall_clock.now(),
            )
            if wait is None:
                return
            await self._sleep(wait)

    @contextlib.asynccontextmanager
    async def slot(self, *, shadow: bool) -> AsyncIterator[None]:
        lease = f"{self.holder}#{next(self._leases)}"[-120:]
        slot = await self._take(lease, shadow=shadow)
        try:
            yield
        finally:
            await asyncio.shield(self._free(slot, lease))

    async def _take(self, lease: str, *, shadow: bool) -> int:
        if not self._rows_made:
            await self._make_rows()
        if not shadow:
            self._urgent_waiting += 1
        try:
            while True:
                if not shadow or not self._urgent_waiting:
                    slot = await self._try_take(lease, shadow=shadow)
                    if slot is not None:
                        return slot
                await asyncio.sleep(random.uniform(*POLL_S))
        finally:
            if not shadow:
                self._urgent_waiting -= 1

    async def _make_rows(self) -> None:
        async with self.sessions.begin() as session:
            insert = insert_for(session)
            rows = [{"slot": n, "holder": None, "until": None} for n in range(self.max_concurrency)]
            await session.execute(insert(LLMSlot).values(rows).on_conflict_do_nothing(index_elements=["slot"]))
        self._rows_made = True

    async def _try_take(self, lease: str, *, shadow: bool) -> int | None:
        """A free slot leased to `lease`, or None when there is none (for a shadow: none it may take)."""
        now = self.wall_clock.now()
        free = or_(LLMSlot.until.is_(None), LLMSlot.until <= now)
        capped = LLMSlot.slot < self.max_concurrency
        async with self.sessions.begin() as session:
            if shadow and self.max_concurrency > 1:
                busy = await session.scalar(select(func.count()).select_from(LLMSlot).where(capped, ~free))
                if (busy or 0) >= self.max_concurrency - 1:
                    return None
            candidate = select(LLMSlot.slot).where(capped, free).order_by(LLMSlot.slot).limit(1)
            slot = await session.scalar(candidate.with_for_update(skip_locked=True))
            if slot is None:
                return None
            taken = await session.execute(
                update(LLMSlot)
                .where(LLMSlot.slot == slot, free)
                .values(holder=lease, until=now + timedelta(seconds=self.lease_s))
                .returning(LLMSlot.slot)
            )
            return taken.scalar_one_or_none()

    async def release_all(self) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(LLMSlot).values(holder=None, until=None))

    async def _free(self, slot: int, lease: str) -> None:
        try:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(LLMSlot).where(LLMSlot.slot == slot, LLMSlot.holder == lease).values(holder=None, until=None)
                )
        except Exception:  # the lease ends by itself at `until`
            log.warning("could not free model-call slot %d", slot, exc_info=True)
