"""Stored backtests read back: a finished run rebuilt from its rows equals the result the run returned (its trade
fingerprint recomputed from the loaded fills is the stored one), listing and reading runs, queued runs, and runs
whose process is gone marked failed at start-up while live ones are left alone."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from app.backtest import store
from app.backtest.results import BacktestConfig
from app.backtest.runner import Backtester, StoredBacktest, config_json, trade_fingerprint
from app.bootstrap import Agent
from app.core.config import Settings
from app.db.models import BacktestRun

pytestmark = pytest.mark.db

CONFIG = BacktestConfig(
    assets=("BTC", "ETH"),
    interval="1h",
    long_interval="4h",
    start=datetime(2025, 3, 1, tzinfo=UTC),
    end=datetime(2025, 3, 3, tzinfo=UTC),
    strategy="aggressive",
    model="baseline",
    data="simulated",
    seed=5,
)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def stored(agent: Agent, settings: Settings, tmp_path: Path) -> AsyncIterator[StoredBacktest]:
    backtester = Backtester(settings, agent.sessions, workspace_dir=str(tmp_path))
    yield await backtester.run(CONFIG)


async def test_a_finished_run_loads_as_it_ran(agent: Agent, stored: StoredBacktest) -> None:
    ran = stored.result
    assert ran.fills and ran.decisions and ran.orders and len(ran.equity) == 49  # something to compare
    loaded = await store.load_result(agent.sessions, stored.run_id)

    assert loaded.config == ran.config
    assert loaded.equity == ran.equity
    assert loaded.fills == ran.fills
    assert loaded.orders == ran.orders
    assert loaded.decisions == ran.decisions
    assert loaded.funding == ran.funding
    assert loaded.funding_rates == ran.funding_rates and any(loaded.funding_rates.values())
    assert trade_fingerprint(loaded.fills) == loaded.trade_fingerprint == ran.trade_fingerprint
    assert loaded == ran  # every other field too (counts, fingerprints, code version, cost)


async def test_runs_are_listed_newest_first_and_read_back(agent: Agent, stored: StoredBacktest) -> None:
    queued = await store.create_queued(agent.sessions, config_json(replace(CONFIG, label="next")), now=NOW)
    assert queued > stored.run_id
    assert [r.id for r in await store.list_runs(agent.sessions)] == [queued, stored.run_id]
    assert [r.id for r in await store.list_runs(agent.sessions, kind="arena")] == []
    assert [r.id for r in await store.list_runs(agent.sessions, parent_id=stored.run_id)] == []
    assert [r.id for r in await store.list_runs(agent.sessions, top_level=True, limit=1)] == [queued]

    row = await store.get_run(agent.sessions, queued)
    assert row is not None
    assert (row.status, row.label, row.cycles_done, row.pid, row.created_at) == ("queued", "next", 0, None, NOW)
    assert store.config_from_json(row.config) == replace(CONFIG, label="next")
    assert await store.get_run(agent.sessions, 424242) is None

    with pytest.raises(store.RunNotFinishedError, match="is queued") as refused:
        await store.load_result(agent.sessions, queued)
    assert refused.value.status == "queued"
    with pytest.raises(store.RunNotFoundError, match="backtest 424242 does not exist"):
        await store.load_result(agent.sessions, 424242)


async def test_runs_whose_process_is_gone_are_marked_failed(agent: Agent) -> None:
    ended = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await ended.wait()
    living = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        fresh = NOW - timedelta(seconds=30)
        rows = {
            "dead pid": ("running", ended.pid, fresh),
            "live pid": ("running", living.pid, fresh),
            "live pid, silent": ("running", living.pid, NOW - timedelta(seconds=121)),
            "queued": ("queued", None, fresh),
            "queued, never started": ("queued", None, NOW - timedelta(seconds=121)),
            "done": ("done", ended.pid, fresh),
        }
        ids = {}
        for name, (status, pid, updated) in rows.items():
            run_id = await store.create_queued(agent.sessions, config_json(CONFIG), now=updated)
            async with agent.sessions.begin() as session:
                await session.execute(
                    update(BacktestRun).where(BacktestRun.id == run_id).values(status=status, pid=pid)
                )
            ids[name] = run_id

        marked = await store.mark_interrupted(agent.sessions, now=NOW, stale_after_s=120)

        assert marked == sorted([ids["dead pid"], ids["live pid, silent"], ids["queued, never started"]])
        for name, run_id in ids.items():
            row = await store.get_run(agent.sessions, run_id)
            assert row is not None
            if run_id in marked:
                assert (row.status, row.error, row.finished_at) == ("failed", store.INTERRUPTED, NOW), name
            else:
                assert (row.status, row.error) == (rows[name][0], None), name
        assert await store.mark_interrupted(agent.sessions, now=NOW) == []  # nothing left to mark
    finally:
        living.kill()
        await living.wait()
