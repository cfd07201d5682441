"""What the dashboard costs the agent: the time to answer the poll every open page makes every 2 s (`/events`) and
each page, in-process and one request at a time (the server's own cost, no network, no client in the way).

* data: a fresh SQLite file set up as `make run` does it (`build_agent`), 4 paper accounts, BENCH_CYCLES real
  decision cycles of every account (simulated market on a manual clock, baseline model): decisions with their
  provenance, orders, fills, equity snapshots.
* requests: the real app (`create_app`) through httpx's ASGI transport, logged in as the admin (a session
  cookie, as a browser). Each path: BENCH_WARMUP requests not counted, then BENCH_REQUESTS timed ones.
* printed per path: p50 / p99 / max wall time and the mean CPU time per request of this process (the same
  thing here: one event loop, nothing else running in it), and the page's size.

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_dashboard.py)
Knobs: BENCH_CYCLES (150), BENCH_REQUESTS (200), BENCH_WARMUP (10).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings, Settings
from app.db.repositories.accounts import AccountRepository
from app.main import create_app
from app.services.account.new_account import new_account
from app.services.market_data.simulator import MarketSimulator

CYCLES = int(os.environ.get("BENCH_CYCLES", "150"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))
ADMIN_KEY = "ta_admin_bench_dashboard_0123456789abcdefghijklmnop"
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ACCOUNTS = 4


async def _fill(agent: Agent, clock: ManualClock) -> None:
    async with agent.sessions.begin() as session:
        repo = AccountRepository(session)
        for i in range(2, ACCOUNTS + 1):
            await repo.add(
                new_account(
                    f"paper-{i}", now=START, venue="binanceusdm", strategy_id="aggressive", initial_balance=1e4
                ),
                reason="benchmark",
                now=clock.now(),
            )
    for _ in range(CYCLES):
        await agent.loop.run_cycle()
        clock.advance(timedelta(minutes=5))


async def _measure(client: httpx.AsyncClient, path: str) -> tuple[list[float], float, int]:
    for _ in range(WARMUP):
        assert (await client.get(path)).status_code == 200, path
    walls: list[float] = []
    cpu0 = time.process_time()
    size = 0
    for _ in range(REQUESTS):
        t0 = time.perf_counter()
        answer = await client.get(path)
        walls.append(time.perf_counter() - t0)
        assert answer.status_code == 200, (path, answer.status_code)
        size = len(answer.content)
    return walls, (time.process_time() - cpu0) / REQUESTS, size


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings: Settings = ExplicitSettings(
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
            admin_api_key=ADMIN_KEY,
            secret_key=Fernet.generate_key().decode(),
        )
        clock = ManualClock(START)
        market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
        agent = await build_agent(settings, clock=clock, market=market)
        started = time.perf_counter()
        await _fill(agent, clock)
        print(f"{CYCLES} cycles x {ACCOUNTS} accounts stored in {time.perf_counter() - started:.1f} s")

        async def prebuilt(_s: Settings) -> Agent:
            return agent

        app = create_app(settings, agent_factory=prebuilt)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client,
        ):
            assert (await client.post("/login", data={"api_key": ADMIN_KEY})).status_code == 303
            newest = (
                await client.get("/api/v1/decisions/history?account_id=1&limit=1", headers={"X-API-Key": ADMIN_KEY})
            ).json()
            paths = [
                "/events",
                "/",
                "/accounts/1",
                "/accounts/1/decisions",
                f"/decisions/{newest[0]['id']}",
                "/models",
                "/alerts",
            ]
            print(f"{'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'CPU ms':>9}{'bytes':>10}")
            for path in paths:
                walls, cpu, size = await _measure(client, path)
                ms = sorted(w * 1000 for w in walls)
                p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                print(f"{path:<28}{statistics.median(ms):>9.2f}{p99:>9.2f}{ms[-1]:>9.2f}{cpu * 1000:>9.2f}{size:>10}")
        print(f"({REQUESTS} requests a path, one at a time, in-process; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
