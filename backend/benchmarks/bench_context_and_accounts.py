"""Issue 5 targets, measured (never asserted):

* context building for 3 assets x 2 timeframes from the database (the candle store): median ms;
* one decision cycle for 200 accounts against a model that answers in 1 s: wall time, and the CPU time
  per decision with the model excluded (the model only sleeps).

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_context_and_accounts.py)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings
from app.core.heap import freeze_startup_objects
from app.db.repositories.accounts import AccountRepository
from app.services.account.new_account import new_account
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.llm.providers.baseline import BaselineModel

ACCOUNTS = 200
MODEL_SECONDS = 1.0


class SlowModel(BaselineModel):
    """The baseline's answers after a 1 s wait, as a remote model would take (it holds no CPU meanwhile)."""

    name = "bench/slow-baseline"
    is_simulated = False

    async def complete(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(MODEL_SECONDS)
        return await super().complete(request)


async def context_benchmark(tmp: Path) -> None:
    settings = ExplicitSettings(database_url=f"sqlite:///{tmp / 'ctx.db'}", secret_key_file=str(tmp / "k"))
    clock = ManualClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    agent = await build_agent(settings, clock=clock)
    try:
        await agent.loop.run_cycle()  # fills the candle store
        builder = agent.engine.context_builder
        cases = (("first account of a candle, market read from the DB", True), ("each further account", False))
        for label, cold in cases:
            timings = []
            for _ in range(50):
                if cold:
                    builder._market_cache.clear()
                started = time.perf_counter()
                await builder.build_trading_context(settings.assets, 1)
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            print(
                f"context build, 3 assets x 2 timeframes, SQLite, {label}: median "
                f"{statistics.median(timings):.1f} ms, p95 {timings[int(0.95 * len(timings)) - 1]:.1f} ms (50 builds)"
            )
    finally:
        await agent.close()


async def many_accounts_agent(database: Path, key_file: Path) -> tuple[Agent, ManualClock]:
    """An agent of ACCOUNTS paper accounts on a fresh SQLite file, the slow model answering, after one warm-up
    cycle (venues restored, candles stored) and the start-up objects frozen as `trading-agent run` does."""
    settings = ExplicitSettings(
        database_url=f"sqlite:///{database}",
        secret_key_file=str(key_file),
        openrouter_api_key="sk-bench-not-used",
        llm_requests_per_minute=100_000,
        llm_max_concurrency=ACCOUNTS,
        max_concurrent_accounts=ACCOUNTS,
        llm_daily_budget_usd=None,
    )
    clock = ManualClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    agent = await build_agent(settings, clock=clock, provider=SlowModel())
    async with agent.sessions.begin() as session:
        accounts = AccountRepository(session)
        for i in range(2, ACCOUNTS + 1):
            await accounts.add(new_account(f"bench-{i}", now=clock.now()), reason="benchmark", now=clock.now())
    await agent.loop.run_cycle()
    freeze_startup_objects()
    return agent, clock


async def accounts_benchmark(tmp: Path) -> None:
    agent, clock = await many_accounts_agent(tmp / "acc.db", tmp / "k2")
    try:
        clock.advance(timedelta(minutes=5))
        cpu, wall = time.process_time(), time.perf_counter()
        decided = await agent.loop.run_cycle()
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"one cycle, {decided} accounts, model answering in {MODEL_SECONDS:g} s, SQLite: wall {wall_s:.2f} s; "
            f"CPU per decision (model excluded) {cpu_s / decided * 1000:.1f} ms"
        )
    finally:
        await agent.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await context_benchmark(Path(tmp))
        await accounts_benchmark(Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
