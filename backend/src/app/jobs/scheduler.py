"""`trading-agent scheduler`: the market clock of a multi-process agent.

The scheduler is the trading loop (`TradingLoop`: its pace, its late cycles, the replay's end, the outcome tracker)
with the accounts' cycles sent to the job queue instead of run here (`QueueCycles`). On a simulated or replayed clock it
waits until every job of a candle is done before the next candle, so every candle is decided in order, however many
workers there are; on the wall clock it queues each candle on time and does not wait (a worker skips a job whose
candle has gone by). Every `stalled_after_s / 3` it queues again the jobs of workers that stopped beating (killed).
Run one scheduler per database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import datetime

import procrastinate
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.config import Settings
from app.db.models import Decision
from app.jobs.queue import CHECK, DECIDE, enqueue, ensure_schema, queue_app, retry_stalled, unfinished

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the scheduler asks whether a candle's jobs are done
KEEP_JOBS_H = 1  # succeeded jobs are kept this long (hours), then deleted
CLEAN_EVERY_S = 300.0


class QueueCycles:
    """The loop's `CycleJobs` on procrastinate."""

    def __init__(
        self,
        app: procrastinate.App,
        sessions: async_sessionmaker[AsyncSession],
        wall_clock: Clock,
        *,
        stalled_after_s: float,
        max_cycles: int = 0,
        on_last_cycle: Callable[[], None] | None = None,
    ) -> None:
        """`max_cycles` (0: no end): after that many cycles `on_last_cycle` is called (it stops the loop)."""
        self.max_cycles = max_cycles
        self.on_last_cycle = on_last_cycle
        self.cycles = 0
        self.app = app
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.stalled_after_s = stalled_after_s
        self._pending: list[int] = []  # jobs queued without waiting (the wall clock), until they are done

    async def check(self, candle: datetime, account_ids: list[int], *, wait: bool) -> None:
        ids = await enqueue(self.app, CHECK, account_ids, candle, now=self.wall_clock.now())
        log.info("start-up: %d account check(s) queued", len(ids))
        if wait:
            await self.wait_for(ids)
        else:
            self._pending.extend(ids)

    async def decide(
        self, candle: datetime, account_ids: list[int], guarded: list[int], *, wait: bool
    ) -> tuple[int, int]:
        ids = await enqueue(self.app, DECIDE, account_ids, candle, now=self.wall_clock.now())
        ids += await enqueue(self.app, CHECK, guarded, candle, now=self.wall_clock.now())
        log.info(
            "cycle %s: %d job(s) queued (%d decisions, %d checks)", candle, len(ids), len(account_ids), len(guarded)
        )
        self.cycles += 1
        if self.max_cycles and self.cycles >= self.max_cycles and self.on_last_cycle is not None:
            self.on_last_cycle()  # the loop stops before the next candle
        if not wait:
            self._pending.extend(ids)
            return 0, 0
        await self.wait_for(ids)
        async with self.sessions() as session:
            loop_decisions = select(func.count()).where(
                Decision.trigger == "loop", Decision.cycle_time == candle, Decision.shadow_of.is_(None)
            )
            stored = await session.scalar(loop_decisions.where(Decision.status != "interrupted")) or 0
            failed = await session.scalar(loop_decisions.where(Decision.status == "error")) or 0
        return stored, failed

    async def wait_for(self, job_ids: list[int]) -> None:
        """Until none of `job_ids` waits or runs (a job of a killed worker is queued again meanwhile: `maintain`)."""
        while True:  # another process runs them: nothing here to wait on but the database
            if not await unfinished(self.app, job_ids):
                return
            await asyncio.sleep(POLL_S)

    async def drain(self) -> None:
        """Until the jobs queued without waiting are done."""
        pending, self._pending = self._pending, []
        await self.wait_for(pending)

    async def maintain(self) -> None:
        """Forever: jobs of workers whose heartbeat stopped go back to the queue, and the jobs that succeeded more than
        KEEP_JOBS_H hours ago are deleted (every account's every candle is a row: the table would grow without end;
        the decisions themselves are the record). Failed jobs are kept for a look."""
        cleaned = 0.0
        while True:
            try:
                await retry_stalled(self.app, stalled_after_s=self.stalled_after_s)
                now = asyncio.get_running_loop().time()
                if now - cleaned >= CLEAN_EVERY_S:
                    await self.app.job_manager.delete_old_jobs(nb_hours=KEEP_JOBS_H)
                    cleaned = now
            except Exception:  # the database hiccuped: next time
                log.warning("could not look for stalled jobs", exc_info=True)
            await asyncio.sleep(max(0.2, self.stalled_after_s / 3))


async def run_scheduler(settings: Settings, *, cycles: int = 0) -> int:
    """Run the scheduler until SIGTERM/SIGINT, or after `cycles` cycles (0: forever) once their jobs are done; returns
    the number of cycles run."""
    from app.bootstrap import build_agent

    await ensure_schema(settings.database_url)
    agent = await build_agent(settings)
    app = queue_app(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with app.open_async():
            jobs = QueueCycles(
                app,
                agent.sessions,
                agent.wall_clock,
                stalled_after_s=settings.worker_stalled_s,
                max_cycles=cycles,
                on_last_cycle=agent.loop.stop,
            )
            agent.loop.jobs = jobs
            print(agent.describe().replace("AI Trading Agent:", "AI Trading Agent scheduler:", 1), flush=True)
            # alerts a killed worker (or scheduler) was sending go out again, once their sender's claim has ended
            await agent.alerts.resend_unsent()
            maintaining = asyncio.create_task(jobs.maintain())
            running = asyncio.create_task(agent.loop.run_forever())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            agent.loop.stop()
            await running
            stopping.cancel()
            if not stop.is_set():  # the last cycle ran: its jobs are done before the exit
                await jobs.drain()
            maintaining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintaining
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await agent.close()
    return agent.loop.heartbeat.cycles
