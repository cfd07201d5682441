"""The trading loop: one decision cycle per active account on every closed `INTERVAL` candle.

Accounts run concurrently up to a bound; one account's failure is logged and never stops the others or
the loop. The loop keeps a heartbeat that the health endpoint reports.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.timeframes import floor_time, timeframe_delta
from app.db.repositories.accounts import AccountRepository
from app.services.llm.decision_engine import DecisionEngine

log = logging.getLogger(__name__)


@dataclass
class Heartbeat:
    cycles: int = 0
    last_cycle_at: datetime | None = None  # the clock's time of the last finished cycle
    last_error: str | None = None
    decisions: int = 0
    failures: int = 0
    running: bool = False
    per_account_errors: dict[int, str] = field(default_factory=dict)


class TradingLoop:
    def __init__(
        self,
        *,
        engine: DecisionEngine,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        interval: str,
        max_concurrency: int,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.clock = clock
        self.interval = interval
        self.heartbeat = Heartbeat()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run_forever(self) -> None:
        """Run a cycle now, then one at every candle close, until `stop()`."""
        self.heartbeat.running = True
        try:
            await self.run_cycle()
            while not self._stop.is_set():
                next_close = floor_time(self.clock.now(), self.interval) + timeframe_delta(self.interval)
                sleeper = asyncio.create_task(self.clock.sleep_until(next_close))
                stopper = asyncio.create_task(self._stop.wait())
                _done, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if self._stop.is_set():
                    break
                await self.run_cycle()
        finally:
            self.heartbeat.running = False

    async def run_cycle(self) -> int:
        """One decision for every tradable account; returns how many decisions were stored."""
        async with self.sessions() as session:
            accounts = [a.id for a in await AccountRepository(session).list_tradable()]
        results = await asyncio.gather(*(self._one(account_id) for account_id in accounts))
        self.heartbeat.cycles += 1
        self.heartbeat.last_cycle_at = self.clock.now()
        return sum(results)

    async def _one(self, account_id: int) -> int:
        async with self._semaphore:
            try:
                result = await self.engine.make_trading_decision(None, account_id, trigger="loop")
            except Exception as exc:  # isolate accounts: log, count, carry on
                log.exception("decision cycle failed for account %s", account_id)
                self.heartbeat.failures += 1
                self.heartbeat.last_error = f"account {account_id}: {type(exc).__name__}: {exc}"
                self.heartbeat.per_account_errors[account_id] = self.heartbeat.last_error
                return 0
            self.heartbeat.decisions += 1
            self.heartbeat.per_account_errors.pop(account_id, None)
            acted = [d for d in (result.decision.decisions if result.decision else []) if d.action != "hold"]
            log.info(
                "decision %s account %s: %s (%s)",
                result.id,
                account_id,
                result.status,
                ", ".join(f"{d.action} {d.asset}" for d in acted) or "hold all",
            )
            return 1
