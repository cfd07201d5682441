"""The trading loop: one decision cycle per active account on every closed `INTERVAL` candle, in order.

Accounts run concurrently up to a bound; one account's failure is logged and never stops the others or
the loop. The loop keeps a heartbeat that the health endpoint reports.

Pace: while a cycle is in flight the loop holds the clock before the next candle's close. A simulated or
replayed clock waits there, so every candle is decided, in order, whatever the load or `SIM_SPEED`. Real time
cannot wait: when a cycle on the wall clock ends after the next candle closed, the loop decides the newest
candle at once and counts, logs and reports the candles it skipped (a late cycle).

The market: before its first cycle the loop waits until the market answers (`MarketAvailability`: start-up
does not need the venue; the reason is in `/health` and once in the log). A replay stops deciding after the
last candle of its data (`data_end`), and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock, WallClock
from app.core.errors import TemporaryError
from app.core.metrics import AgentMetrics
from app.core.timeframes import floor_time, timeframe_delta
from app.db.repositories.accounts import AccountRepository
from app.services.alerts.events import NO_ALERTS, AlertSink, loop_behind
from app.services.llm.decision_engine import DecisionEngine
from app.services.market_data.availability import MarketAvailability

log = logging.getLogger(__name__)

_TICK = timedelta(microseconds=1)  # a held clock stays this much before the next candle's close
_NAMED_SKIPS = 12  # candles named in a late cycle's log line and in the heartbeat


@dataclass
class Heartbeat:
    cycles: int = 0
    last_cycle_at: datetime | None = None  # the clock's time of the last finished cycle
    last_error: str | None = None
    decisions: int = 0  # decisions stored by the loop (the failed ones too)
    failures: int = 0  # account cycles that raised or stored a decision in `error`
    running: bool = False
    per_account_errors: dict[int, str] = field(default_factory=dict)  # accounts whose last cycle failed
    last_cycle_accounts: int = 0
    last_cycle_failures: int = 0
    late_cycles: int = 0  # wall clock: cycles that started after the next candle had closed
    candles_skipped: int = 0
    last_skipped: list[datetime] = field(default_factory=list)  # cycle times the last late cycle skipped
    stopped: str | None = None  # why the loop makes no more decisions (the replay's data ended)


class OutcomeUpdater(Protocol):
    """Records what followed earlier decisions once their horizons' candles have closed (the outcome tracker)."""

    async def update(self, now: datetime) -> int: ...


class CycleJobs(Protocol):
    """Where the loop's work goes when other processes do it (the scheduler of `app.jobs`): one job per account."""

    async def check(self, candle: datetime, account_ids: list[int], *, wait: bool) -> None:
        """Every account reconciled and its stops checked (start-up); `wait`: until the jobs are done."""
        ...

    async def decide(
        self, candle: datetime, account_ids: list[int], guarded: list[int], *, wait: bool
    ) -> tuple[int, int]:
        """The candle's decisions of `account_ids` and the stop checks of `guarded`; with `wait`, once they are done,
        (decisions stored, accounts whose cycle failed); without, (0, 0) as soon as they are queued."""
        ...


class TradingLoop:
    def __init__(
        self,
        *,
        engine: DecisionEngine,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        interval: str,
        max_concurrency: int,
        metrics: AgentMetrics | None = None,
        market: MarketAvailability | None = None,
        data_end: datetime | None = None,
        outcomes: OutcomeUpdater | None = None,
        alerts: AlertSink = NO_ALERTS,
        jobs: CycleJobs | None = None,
    ) -> None:
        """`data_end`: the last cycle time the market has a new candle for (a replay's end), None for live or
        simulated markets. `alerts` hears of every late cycle. `jobs`: the accounts' cycles are jobs other processes run
        (a simulated or replayed clock waits for them; the wall clock does not)."""
        self.jobs = jobs
        self.alerts = alerts
        self.engine = engine
        self.sessions = sessions
        self.clock = clock
        self.interval = interval
        self.metrics = metrics
        self.market = market
        self.data_end = data_end
        self.outcomes = outcomes
        self._shadows_behind: asyncio.Future[None] | None = None  # shadows still running past their cycle
        self.heartbeat = Heartbeat()
        self._step = timeframe_delta(interval)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run_forever(self) -> None:
        """Once the market answers: a cycle on the current candle, then one on every following candle, until
        `stop()` (or the end of a replay's data)."""
        self.heartbeat.running = True
        self.clock.start()
        # simulated time stands still through the start-up: however long it takes (a busy machine, a slow venue),
        # no candle of a replay goes by undecided
        self.clock.hold(self.clock.now())
        try:
            if not await self._wait_for_market():
                return
            await self._check_accounts()
            self.clock.release()
            candle: datetime | None = floor_time(self.clock.now(), self.interval)
            while candle is not None and not self._stop.is_set():
                if self.data_end is not None and candle > self.data_end:
                    self._data_ended(candle)
                    return
                await self._cycle(candle)
                candle = await self._next_candle(candle)
        finally:
            self.heartbeat.running = False

    async def _check_accounts(self) -> None:
        """At start-up, before the first cycle: every account is reconciled with its venue and its positions checked
        for protective stops (a stop the last process did not get to place is placed now, not at the next candle).
        A failure is logged and left to the account's cycles."""
        if self.jobs is not None:  # as jobs, only for the accounts with something to check (at 10,000 accounts the
            # checks of flat paper accounts took minutes before the first cycle)
            async with self.sessions() as session:
                checked = await AccountRepository(session).checked_at_start_ids()
            await self.jobs.check(floor_time(self.clock.now(), self.interval), checked, wait=self._waits)
            return
        async with self.sessions() as session:
            accounts = [a.id for a in await AccountRepository(session).all()]
        for account_id in accounts:
            try:
                await self.engine.check_account(account_id)
            except Exception as exc:
                log.warning("start-up check of account %s failed: %s", account_id, exc)
                self.heartbeat.per_account_errors[account_id] = f"account {account_id}: start-up check: {exc}"

    async def run_cycle(self) -> int:
        """One decision for every tradable account; returns how many decisions were stored."""
        async with self.sessions() as session:
            accounts = await AccountRepository(session).tradable_ids()
            guarded = await AccountRepository(session).guarded_ids()
        # an account no longer traded (paused, halted, deleted) has no failing cycle: it must not hold /health down
        for stale in set(self.heartbeat.per_account_errors) - set(accounts):
            del self.heartbeat.per_account_errors[stale]
        if self.jobs is not None:
            candle = floor_time(self.clock.now(), self.interval)
            stored, failed = await self.jobs.decide(candle, accounts, guarded, wait=self._waits)
            await self._update_outcomes()
            self._count_cycle(len(accounts), failed)
            self.heartbeat.decisions += stored
            self.heartbeat.failures += failed
            return stored
        results = await asyncio.gather(*(self._one(account_id) for account_id in accounts))
        for account_id in guarded:  # paused or halted with positions: their venue is read and their stops checked
            try:
                await self.engine.check_account(account_id)
            except Exception as exc:
                log.warning("stop check of idle account %s failed: %s", account_id, exc)
        await self._wait_for_shadows()
        await self._update_outcomes()
        self._count_cycle(len(accounts), sum(1 for stored, failed in results if failed))
        return sum(1 for stored, _ in results if stored)

    @property
    def _waits(self) -> bool:
        """A simulated or replayed clock waits for the cycle in flight; real time cannot."""
        return not isinstance(self.clock, WallClock)

    def _count_cycle(self, accounts: int, failures: int) -> None:
        self.heartbeat.cycles += 1
        self.heartbeat.last_cycle_at = self.clock.now()
        self.heartbeat.last_cycle_accounts = accounts
        self.heartbeat.last_cycle_failures = failures

    async def _wait_for_shadows(self) -> None:
        """The experiments' shadow decisions of this cycle are made now that its executed decisions are done, and the
        cycle waits for them to be stored. On the wall clock, only until the next candle closes: a slow shadow model
        must never make the next executed decisions late (the shadows left go on beside the next cycle, their model
        calls after the executed ones). A simulated or replayed clock waits for them all (it waits for the cycle)."""
        waiting = asyncio.ensure_future(self.engine.shadows_done())
        if not isinstance(self.clock, WallClock):
            await waiting
            return
        now = self.clock.now()
        left = (floor_time(now, self.interval) + self._step - now).total_seconds()
        done, _ = await asyncio.wait({waiting}, timeout=max(0.0, left))
        if not done:
            self._shadows_behind = waiting  # kept until it ends (Agent.close cancels the shadows)
            log.warning("shadow decisions still running at the next candle's close: they go on beside the next cycle")

    async def _update_outcomes(self) -> None:
        """What followed earlier decisions, now that this cycle's candle has closed; a failure is logged and tried
        again next cycle (the tracker is idempotent), never a reason to stop deciding."""
        if self.outcomes is None:
            return
        try:
            await self.outcomes.update(self.clock.now())
        except Exception as exc:
            log.exception("decision outcomes could not be updated")
            self.heartbeat.last_error = f"outcomes: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------------------------------ pace
    async def _cycle(self, candle: datetime) -> None:
        """The cycle of `candle`, with the clock held before the next candle's close while it runs."""
        self.clock.hold(candle + self._step - _TICK)
        try:
            await self.run_cycle()
        finally:
            self.clock.release()

    async def _next_candle(self, candle: datetime) -> datetime | None:
        """The next cycle time to decide, once it has come (None when stopped): the candle after `candle`, or,
        when that one has already gone by on the wall clock, the newest (the ones between are skipped)."""
        following = candle + self._step
        current = floor_time(self.clock.now(), self.interval)
        if current > following:
            self._late(candle, following, current)
            return current
        if self.data_end is not None and following > self.data_end:
            return following  # nothing to wait for: the data has ended
        # Held until the next cycle holds the same limit: however long this task is kept from running (a busy
        # event loop), a simulated clock never passes the close after `following` unseen, nor goes back then.
        self.clock.hold(following + self._step - _TICK)
        while floor_time(self.clock.now(), self.interval) < following:
            sleeper = asyncio.create_task(self.clock.sleep_until(following))
            stopper = asyncio.create_task(self._stop.wait())
            _done, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if self._stop.is_set():
                return None
        return following

    def _late(self, candle: datetime, first_skipped: datetime, current: datetime) -> None:
        skipped = [first_skipped + i * self._step for i in range((current - first_skipped) // self._step)]
        beat = self.heartbeat
        beat.late_cycles += 1
        beat.candles_skipped += len(skipped)
        beat.last_skipped = skipped[:_NAMED_SKIPS]
        if self.metrics is not None:
            self.metrics.late_cycles.inc()
            self.metrics.candles_skipped.inc(len(skipped))
        named = ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in skipped[:_NAMED_SKIPS])
        more = f" and {len(skipped) - _NAMED_SKIPS} more" if len(skipped) > _NAMED_SKIPS else ""
        why = (
            f"late cycle: the cycle of {candle:%Y-%m-%d %H:%M} ended at {self.clock.now():%Y-%m-%d %H:%M:%S}, after "
            f"the next candle closed; skipped {len(skipped)} candle(s) (cycle times {named}{more}); deciding "
            f"{current:%Y-%m-%d %H:%M} now"
        )
        log.warning("%s", why)
        self.alerts.emit(loop_behind(why))

    # ---------------------------------------------------------------------------------------- market
    async def _wait_for_market(self) -> bool:
        """Wait (asking again with the availability's pauses) until the market answers; False when stopped."""
        if self.market is None:
            return True
        while not await self._unless_stopped(self.market.check()):
            if self._stop.is_set():
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, self.market.retry_in_s())):
                    await self._stop.wait()
            if self._stop.is_set():
                return False
        return True

    async def _unless_stopped(self, probe: Coroutine[Any, Any, bool]) -> bool:
        """`probe`'s answer, or False when `stop()` comes first (the probe is cancelled: a shutdown never waits
        for a venue that does not answer)."""
        asking = asyncio.create_task(probe)
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({asking, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not asking.done():
                asking.cancel()
        if asking.cancelled() or not asking.done():
            await asyncio.wait({asking})  # its connections are released before the shutdown goes on
            return False
        return asking.result()

    def _data_ended(self, candle: datetime) -> None:
        assert self.data_end is not None
        self.heartbeat.stopped = (
            f"the market data ends with the cycle of {self.data_end:%Y-%m-%d %H:%M} and the clock is at "
            f"{candle:%Y-%m-%d %H:%M}: there is no candle left to decide on, so the loop makes no more decisions "
            "(the API stays up). To replay the data again, start on a new database (DATABASE_URL); to go on, "
            "give REPLAY_DIR data that runs past this time"
        )
        log.warning("replay finished: %s", self.heartbeat.stopped)

    # -------------------------------------------------------------------------------------- accounts
    async def _one(self, account_id: int) -> tuple[bool, bool]:
        """(a decision was stored, the account's cycle failed)."""
        beat = self.heartbeat
        async with self._semaphore:
            try:
                result = await self.engine.make_trading_decision(None, account_id, trigger="loop")
            except Exception as exc:  # isolate accounts: log, count, carry on
                if isinstance(exc, TemporaryError):  # an outage (the venue, the network): its reason, no traceback
                    log.warning("decision cycle failed for account %s: %s", account_id, exc)
                else:
                    log.exception("decision cycle failed for account %s", account_id)
                beat.failures += 1
                beat.last_error = f"account {account_id}: {type(exc).__name__}: {exc}"
                beat.per_account_errors[account_id] = beat.last_error
                return False, True
            beat.decisions += 1
            if result.status == "error":  # stored, but nothing was decided (e.g. no market data)
                beat.failures += 1
                beat.last_error = f"account {account_id}: decision {result.id}: {result.error}"
                beat.per_account_errors[account_id] = beat.last_error
                log.warning("decision %s account %s failed: %s", result.id, account_id, result.error)
                return True, True
            beat.per_account_errors.pop(account_id, None)
            acted = [d for d in (result.decision.decisions if result.decision else []) if d.action != "hold"]
            log.info(
                "decision %s account %s: %s (%s)",
                result.id,
                account_id,
                result.status,
                ", ".join(f"{d.action} {d.asset}" for d in acted) or "hold all",
            )
            return True, False
