"""Issue 14, measured (never asserted): what recording decision outcomes costs the loop.

200 accounts on the simulator decide with the baseline for 30 cycles while the tracker is off; then the tracker
back-fills those decisions (a catch-up after downtime), and one more cycle's `update` is timed the way the loop
runs it after every cycle (each horizon that became due: 200 accounts x 3 assets at horizons 1, 4, 12, 24).

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_outcome_tracker.py)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select

from app.bootstrap import build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.services.account.new_account import new_account

ACCOUNTS = 200
CYCLES = 30


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = ExplicitSettings(
            database_url=f"sqlite:///{Path(tmp) / 'outcomes.db'}",
            secret_key_file=str(Path(tmp) / "k"),
            max_concurrent_accounts=ACCOUNTS,
        )
        clock = ManualClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
        agent = await build_agent(settings, clock=clock)
        try:
            async with agent.sessions.begin() as session:
                repo = AccountRepository(session)
                for i in range(2, ACCOUNTS + 1):
                    await repo.add(new_account(f"bench-{i}", now=clock.now()), reason="benchmark", now=clock.now())
            tracker, agent.loop.outcomes = agent.loop.outcomes, None  # decide without measuring
            assert tracker is not None
            for _ in range(CYCLES):
                clock.advance(timedelta(minutes=5))
                await agent.loop.run_cycle()
            started = time.perf_counter()
            report = await tracker.backfill(clock.now())
            catch_up_s = time.perf_counter() - started

            clock.advance(timedelta(minutes=5))
            await agent.loop.run_cycle()
            started = time.perf_counter()
            written = await tracker.update(clock.now())
            cycle_s = time.perf_counter() - started
            started = time.perf_counter()
            again = await tracker.update(clock.now())
            repeat_s = time.perf_counter() - started
            async with agent.sessions() as session:
                stored = await session.scalar(select(func.count()).select_from(models.DecisionOutcome))
        finally:
            await agent.close()
    print(f"decision outcomes, {ACCOUNTS} accounts x 3 assets, horizons 1/4/12/24, SQLite:")
    print(f"  back-fill of {CYCLES} cycles: {report.written} rows in {catch_up_s:.2f} s")
    print(f"  one cycle's update after it: {written} rows in {cycle_s:.2f} s")
    print(f"  the same update again: {again} rows in {repeat_s:.3f} s")
    print(f"  outcome rows stored: {stored}")


if __name__ == "__main__":
    asyncio.run(main())
