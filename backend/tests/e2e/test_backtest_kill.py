"""Kill a real backtest job (`trading-agent backtest --job ID`, as the API starts it) at random moments with SIGKILL
or SIGTERM, and check the main database: a killed run is never `done`, has no half-stored records (a run's
decisions, orders, fills and funding are stored in one transaction with its `done`), is marked failed as interrupted
once its process is gone, and a new run of the same settings completes with the trades of an uninterrupted run.

The moments come from a seeded generator (KILL_TEST_SEED, printed on failure) so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.backtest.results import BacktestConfig
from app.backtest.runner import Backtester, config_json
from app.backtest.store import INTERRUPTED, create_queued, get_run, mark_interrupted, set_pid
from app.db.models import BacktestRecord, BacktestRun
from tests.conftest import IsolatedSettings

pytestmark = pytest.mark.db

ROUNDS = 5
START = datetime(2025, 3, 3, tzinfo=UTC)
CONFIG = BacktestConfig(
    assets=("BTC", "ETH"),
    interval="1h",
    long_interval="4h",
    start=START,
    end=START + timedelta(days=3),
    data="simulated",
    seed=3,
    strategy="aggressive",
)


def _job(run_id: int, database_url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("OPENROUTER_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "backtest", "--job", str(run_id), "--out", str(tmp_path / "reports")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _records(sessions: async_sessionmaker[AsyncSession], run_id: int) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(BacktestRecord).where(BacktestRecord.run_id == run_id)
            )
            or 0
        )


async def _complete_job(sessions: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path) -> BacktestRun:
    run_id = await create_queued(sessions, config_json(CONFIG), now=datetime.now(UTC))
    process = _job(run_id, database_url, tmp_path)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()[-2000:]
    run = await get_run(sessions, run_id)
    assert run is not None and run.status == "done" and run.trade_fingerprint
    assert (tmp_path / "reports" / f"run-{run_id}" / "report.html").is_file()
    return run


async def test_a_killed_job_leaves_no_half_run_and_a_new_run_trades_the_same(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    # A job left alone: how long one lives on this machine (the kills land within it), and the trades to expect.
    started = time.monotonic()
    reference = await _complete_job(sessions, database_url, tmp_path)
    lifetime = time.monotonic() - started
    settings = IsolatedSettings(database_url=database_url, secret_key_file=str(tmp_path / "secret.key"))
    in_process = await Backtester(settings, sessions).run(CONFIG, with_baseline=False)
    assert reference.trade_fingerprint == in_process.result.trade_fingerprint

    killed = 0
    for round_ in range(ROUNDS):
        run_id = await create_queued(sessions, config_json(CONFIG), now=datetime.now(UTC))
        process = _job(run_id, database_url, tmp_path)
        await set_pid(sessions, run_id, process.pid, now=datetime.now(UTC))  # as the API records the job it starts
        # a moment anywhere in the job's life: the imports, the cycles, the final store
        await asyncio.sleep(rng.uniform(0.05, 0.95) * lifetime)
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        finished = process.poll() is not None
        process.send_signal(sig)
        process.wait(timeout=30)
        run = await get_run(sessions, run_id)
        assert run is not None
        records = await _records(sessions, run_id)
        context = f"seed {seed} round {round_} {sig.name} status {run.status} records {records}"
        if run.status == "done":  # it ended first (a slow start of the reference, a fast one here)
            assert finished or process.returncode in (0, -sig), context
            assert records > 0 and run.trade_fingerprint == reference.trade_fingerprint, context
            continue
        killed += 1
        assert run.status in ("queued", "running"), context
        assert records == 0, f"a killed run stored part of its records: {context}"
        assert await mark_interrupted(sessions, now=datetime.now(UTC)) == [run_id], context
        run = await get_run(sessions, run_id)
        assert run is not None and run.status == "failed" and run.error == INTERRUPTED, context
    assert killed, f"seed {seed}: every job ended before its kill; the test killed nothing"

    # After the kills, a new job of the same settings completes with the same trades.
    again = await _complete_job(sessions, database_url, tmp_path)
    assert again.trade_fingerprint == reference.trade_fingerprint
