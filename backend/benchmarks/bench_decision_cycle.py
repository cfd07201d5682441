"""One decision cycle end to end (context, baseline model, validation, execution, persistence) on a fresh
SQLite file with the market simulator: wall time per cycle and CPU time per cycle.

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_decision_cycle.py)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.bootstrap import build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings

CYCLES = 200


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = ExplicitSettings(database_url=f"sqlite:///{Path(tmp) / 'bench.db'}")
        clock = ManualClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
        agent = await build_agent(settings, clock=clock)
        walls: list[float] = []
        cpus: list[float] = []
        try:
            await agent.loop.run_cycle()  # warm-up: simulator blocks, first restore
            for _ in range(CYCLES):
                clock.advance(timedelta(minutes=5))
                wall, cpu = time.perf_counter(), time.process_time()
                await agent.loop.run_cycle()
                walls.append((time.perf_counter() - wall) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
        finally:
            await agent.close()
    walls.sort()
    print(f"decision cycle, 3 assets, 1 account, SQLite, baseline model, {CYCLES} cycles")
    print(f"  wall ms: median {statistics.median(walls):.1f}  p95 {walls[int(0.95 * len(walls)) - 1]:.1f}")
    print(f"  cpu  ms: median {statistics.median(cpus):.1f}  mean {statistics.mean(cpus):.1f}")


if __name__ == "__main__":
    asyncio.run(main())
