"""Issue 14, measured (never asserted): a shadow A/B experiment must not delay the decisions that trade.

One cycle of 200 accounts against a model that answers in 1 s (no CPU while it waits), first without an
experiment, then with a shadow experiment on every account whose two extra variants (another strategy, the lean
prompt) triple the model calls. Printed: when the executed decisions finished after the cycle began (median, p95,
last), the cycle's wall time with its shadows, and the CPU per decision. The model-call concurrency cap is set to
the number of accounts, so the shadows have to wait for slots the executed decisions do not need.

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_shadow_experiment.py)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_context_and_accounts import ACCOUNTS, MODEL_SECONDS, many_accounts_agent
from sqlalchemy import func, select

from app.bootstrap import Agent
from app.core.clock import ManualClock
from app.db import models

ROUNDS = 5


async def _start_shadow_experiment(agent: Agent, accounts: list[int], now: datetime) -> None:
    async with agent.sessions.begin() as session:
        experiment = models.Experiment(
            name="bench shadow",
            status="running",
            assignment="shadow",
            metric="mean_return",
            horizon=1,
            interval=agent.settings.interval,
            min_samples=100,
            confidence_level=0.95,
            seed=1,
            accounts=accounts,
            expected_daily_cost_usd=0.0,
            started_cycle=now,
            created_at=now,
        )
        session.add(experiment)
        await session.flush()
        session.add_all(
            [
                models.ExperimentVariant(experiment_id=experiment.id, name="control", is_control=True, weight=1),
                models.ExperimentVariant(experiment_id=experiment.id, name="aggressive", strategy_id="aggressive"),
                models.ExperimentVariant(experiment_id=experiment.id, name="lean", prompt_version="lean"),
            ]
        )
    agent.experiments.plans.invalidate()


async def _timed_cycle(agent: Agent, clock: ManualClock) -> dict[str, Any]:
    """One cycle; when each executed decision finished (s after the cycle began), wall time, CPU per decision."""
    finished: list[float] = []
    decide = agent.engine.make_trading_decision

    async def timed(*args: Any, **kwargs: Any) -> Any:
        result = await decide(*args, **kwargs)
        finished.append(time.perf_counter() - started)
        return result

    agent.engine.make_trading_decision = timed  # type: ignore[method-assign]
    clock.advance(timedelta(minutes=5))
    cpu, started = time.process_time(), time.perf_counter()
    try:
        decided = await agent.loop.run_cycle()
    finally:
        agent.engine.make_trading_decision = decide  # type: ignore[method-assign]
    wall, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    finished.sort()
    return {
        "decided": decided,
        "median": statistics.median(finished),
        "p95": finished[int(0.95 * len(finished)) - 1],
        "last": finished[-1],
        "wall": wall,
        "cpu_ms": cpu_s / decided * 1000,
    }


async def _run(tmp: Path, shadowed: bool) -> tuple[list[dict[str, Any]], int]:
    """ROUNDS cycles of a fresh agent (the same seed: the executed decisions are the same in both runs, since
    shadows never trade), with or without the shadow experiment; the figures per cycle and the shadows stored."""
    agent, clock = await many_accounts_agent(tmp / f"shadow-{shadowed}.db", tmp / "k")
    try:
        if shadowed:
            await _start_shadow_experiment(agent, list(range(1, ACCOUNTS + 1)), clock.now())
        runs = [await _timed_cycle(agent, clock) for _ in range(ROUNDS)]
        async with agent.sessions() as session:
            shadows = await session.scalar(
                select(func.count()).select_from(models.Decision).where(models.Decision.status == "shadow")
            )
        return runs, int(shadows or 0)
    finally:
        await agent.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        alone, _ = await _run(Path(tmp), shadowed=False)
        shadowed, shadows = await _run(Path(tmp), shadowed=True)
    print(
        f"{ACCOUNTS} accounts, model answering in {MODEL_SECONDS:g} s, model-call cap {ACCOUNTS}, SQLite, the same "
        f"{ROUNDS} cycles with and without the experiment (medians over the cycles); executed decisions finished "
        "after the cycle began:"
    )
    for label, runs in (("no experiment", alone), ("shadow experiment, 2 extra variants", shadowed)):
        figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(
            f"  {label:<36} median {figures['median']:.2f} s  p95 {figures['p95']:.2f} s  last "
            f"{figures['last']:.2f} s; cycle wall {figures['wall']:.2f} s; CPU per executed decision "
            f"{figures['cpu_ms']:.1f} ms"
        )
    print(f"  shadow decisions stored: {shadows} ({ROUNDS} cycles x {ACCOUNTS} accounts x 2 variants expected)")


if __name__ == "__main__":
    asyncio.run(main())
