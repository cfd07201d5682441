"""A backtest with the full engine (context, prompt, baseline model, validator, executor, paper venue, persistence)
over one year of 1h candles for BTC, ETH and SOL (8,760 cycles) of the seeded simulator, stored in a fresh SQLite
main database: wall time, cycles per second, time to the first cycle (setup) and where the time goes (cProfile of
a shorter run, so the headline figure is not slowed by the profiler). Then an LLM backtest whose every answer is
cached (a first run on a shorter period with an instant fake model fills the cache, the rerun asks nothing): its
cycles per second beside the baseline's. The issue's goal: the year in under 30 s.

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_backtest.py)
     BENCH_CYCLES=1000 shortens the headline run for a quick check.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.backtest.results import BacktestConfig
from app.backtest.runner import Backtester, Progress
from app.core.config import ExplicitSettings
from app.db.migrate import ensure_migrated
from app.db.session import create_engine, create_session_factory
from app.services.llm.providers.base import DecisionModel
from app.services.llm.providers.baseline import BaselineModel
from app.services.llm.providers.model_catalog import ModelCatalog

YEAR_CYCLES = 365 * 24
CYCLES = int(os.environ.get("BENCH_CYCLES", YEAR_CYCLES))
PROFILE_CYCLES = 500
CACHED_CYCLES = 300
START = datetime(2025, 1, 1, tzinfo=UTC)
FAKE_MODEL = "openai/gpt-4o-mini"  # any slug the offline catalog knows (for the cost estimate)
PROFILE_LINES = 25


class InstantModel(BaselineModel):
    """A remote model stand-in that answers at once, as the rule baseline would (so the cached run makes the
    baseline's trades: like for like); it fills the answer cache without a network."""

    name = "bench/instant"
    is_simulated = False


@dataclass
class Timing:
    """Wall times of one run: when it started, when each cycle ended (from the progress callback), when it ended."""

    started: float = 0.0
    cycle_ends: list[float] = field(default_factory=list)
    ended: float = 0.0

    def progress(self, update: Progress) -> None:
        self.cycle_ends.append(time.perf_counter())

    @property
    def total_s(self) -> float:
        return self.ended - self.started

    @property
    def setup_s(self) -> float:
        """Start to the end of the first cycle (history, workspace database, agent, first cycle)."""
        return self.cycle_ends[0] - self.started

    @property
    def cycles_per_s(self) -> float:
        """Cycles after the first, per second of their own time."""
        span = self.cycle_ends[-1] - self.cycle_ends[0]
        return (len(self.cycle_ends) - 1) / span if span > 0 else float("nan")


def config(cycles: int, model: str = "baseline") -> BacktestConfig:
    return BacktestConfig(
        assets=("BTC", "ETH", "SOL"),
        interval="1h",
        long_interval="4h",
        start=START,
        end=START + timedelta(hours=cycles - 1),
        data="simulated",
        model=model,
    )


async def run(
    tmp: Path, name: str, backtest: BacktestConfig, provider: DecisionModel | None = None, profiler: bool = False
) -> tuple[Timing, pstats.Stats | None, int]:
    """One run in a fresh main database; the timing, the profile when asked, and the trades it made."""
    settings = ExplicitSettings(database_url=f"sqlite:///{tmp / name}.db")
    engine = create_engine(settings.database_url)
    try:
        await ensure_migrated(engine)
        backtester = Backtester(
            settings, create_session_factory(engine), provider=provider, catalog=ModelCatalog(), workspace_dir=str(tmp)
        )
        return await _timed(backtester, backtest, profiler)
    finally:
        await engine.dispose()


async def cached_rerun(tmp: Path, backtest: BacktestConfig) -> tuple[Timing, Timing, int]:
    """The same LLM backtest twice in one main database: the first fills the answer cache, the rerun asks nothing."""
    # the instant model needs no rate limit (the cache keeps LLM_REQUESTS_PER_MINUTE for the calls it makes)
    settings = ExplicitSettings(database_url=f"sqlite:///{tmp / 'cached'}.db", llm_requests_per_minute=1e9)
    engine = create_engine(settings.database_url)
    try:
        await ensure_migrated(engine)
        sessions = create_session_factory(engine)
        first, _, _ = await _timed(
            Backtester(settings, sessions, provider=InstantModel(), catalog=ModelCatalog(), workspace_dir=str(tmp)),
            backtest,
        )
        backtester = Backtester(settings, sessions, provider=None, catalog=ModelCatalog(), workspace_dir=str(tmp))
        timing = Timing(started=time.perf_counter())
        stored = await backtester.run(backtest, progress=timing.progress, with_baseline=False)
        timing.ended = time.perf_counter()
        return first, timing, stored.result.cached_answers
    finally:
        await engine.dispose()


async def _timed(
    backtester: Backtester, backtest: BacktestConfig, profiler: bool = False
) -> tuple[Timing, pstats.Stats | None, int]:
    timing = Timing(started=time.perf_counter())
    profile = cProfile.Profile() if profiler else None
    if profile is not None:
        profile.enable()
    stored = await backtester.run(backtest, progress=timing.progress, with_baseline=False)
    if profile is not None:
        profile.disable()
    timing.ended = time.perf_counter()
    return timing, pstats.Stats(profile) if profile is not None else None, len(stored.result.fills)


def print_profile(stats: pstats.Stats, cycles: int) -> None:
    """The engine's own functions (app/) by cumulative time, then by time spent in themselves (any code)."""
    for order, restrict in (("cumulative", r"/app/"), ("tottime", "")):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(order).print_stats(*((restrict,) if restrict else ()), PROFILE_LINES)
        lines = out.getvalue().splitlines()
        header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        print(f"  profile of {cycles} cycles, top {PROFILE_LINES} by {order}{' within app/' if restrict else ''}:")
        for line in lines[header : header + PROFILE_LINES + 1]:
            print("    " + line.replace(str(Path(__file__).resolve().parents[1] / "src") + "/", "")[:150])


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as folder:
        tmp = Path(folder)
        timing, _, trades = await run(tmp, "year", config(CYCLES))
        cycles = len(timing.cycle_ends)
        print(f"backtest, full engine, baseline model, BTC ETH SOL, 1h/4h simulated candles, SQLite: {cycles} cycles")
        print(
            f"  total {timing.total_s:.1f} s  |  {timing.cycles_per_s:.0f} cycles/s "
            f"({1000 / timing.cycles_per_s:.2f} ms a cycle)  |  setup to the first cycle {timing.setup_s:.2f} s  "
            f"|  {trades} fills"
        )
        if cycles != YEAR_CYCLES:
            year = timing.setup_s + YEAR_CYCLES / timing.cycles_per_s
            print(f"  the year (8,760 cycles) at this rate, extrapolated: ~{year:.0f} s")

        first, rerun, hits = await cached_rerun(tmp, config(CACHED_CYCLES, FAKE_MODEL))
        print(
            f"  LLM backtest with cached answers ({CACHED_CYCLES} cycles, {hits} answers from the cache): "
            f"{rerun.cycles_per_s:.0f} cycles/s (first run, filling the cache from an instant model: "
            f"{first.cycles_per_s:.0f} cycles/s; baseline above: {timing.cycles_per_s:.0f})"
        )

        _, stats, _ = await run(tmp, "profiled", config(PROFILE_CYCLES), profiler=True)
        assert stats is not None
        print_profile(stats, PROFILE_CYCLES)


if __name__ == "__main__":
    asyncio.run(main())
