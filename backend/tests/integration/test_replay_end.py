"""Replay to the end of its data: every candle decided, then the loop says once that the data has ended and
stops deciding (no flood of failed decisions); a restart on the same database (whose last decision is the
data's last candle) has nothing left to replay and says so instead of failing every cycle."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.market_data.factory import WARMUP_TREND_CANDLES
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, IsolatedSettings
from tests.e2e.server import serve

pytestmark = pytest.mark.db
DAY = datetime(2026, 1, 5, tzinfo=UTC)
WARM_UP_END = DAY + timedelta(hours=WARMUP_TREND_CANDLES)  # 60 candles of LONG_INTERVAL=1h
DATA_END = WARM_UP_END + timedelta(minutes=30)  # the last candle closes 30 minutes after the warm-up
CYCLES = 7  # 00:00, 00:05, ..., 00:30 after the warm-up


def _write_replay(folder: Path) -> None:
    series = MarketSimulator(["BTC"], base_timeframe="5m", seed=3).candles_between("BTC", "5m", DAY, DATA_END)
    lines = ["timestamp_ms,open,high,low,close,volume"]
    for c in series.candles():
        lines.append(f"{c.open_time_ms},{c.open},{c.high},{c.low},{c.close},{c.volume}")
    (folder / "BTC_USDT-5m.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def replay_settings(database_url: str, tmp_path: Path) -> Settings:
    folder = tmp_path / "replay"
    folder.mkdir()
    _write_replay(folder)
    return IsolatedSettings(
        database_url=database_url,
        admin_api_key=ADMIN_KEY,
        secret_key_file=str(tmp_path / "secret.key"),
        market_source="replay",
        replay_dir=str(folder),
        assets=["BTC"],
        long_interval="1h",
        sim_speed=3000,  # a 5m candle every 0.1 s
    )


async def _run_to_the_end(agent: Agent) -> None:
    async with asyncio.timeout(120):  # a hang guard: the loop returns by itself when the data ends
        await agent.loop.run_forever()


async def _decisions(agent: Agent) -> list[models.Decision]:
    async with agent.sessions() as session:
        return list((await session.scalars(select(models.Decision).order_by(models.Decision.id))).all())


async def test_replay_decides_every_candle_then_stops_once_the_data_ends(
    replay_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.trading.loop")
    agent = await build_agent(replay_settings)

    async def prebuilt(_s: Settings) -> Agent:
        return agent

    async with (
        serve(create_app(replay_settings, agent_factory=prebuilt)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await _run_to_the_end(agent)
        health = (await client.get("/health")).json()
        decisions = await _decisions(agent)
    times = [d.cycle_time.replace(tzinfo=UTC) for d in decisions]
    assert times == [WARM_UP_END + timedelta(minutes=5 * i) for i in range(CYCLES)]
    assert all(d.status not in ("error", "pending") for d in decisions), [d.error for d in decisions]
    ended = [r.getMessage() for r in caplog.records if "replay finished" in r.getMessage()]
    assert len(ended) == 1 and "no more decisions" in ended[0]
    assert health["status"] == "degraded" and health["loop"]["stopped"]
    assert any("no candle left to decide on" in r for r in health["reasons"])


async def test_a_restart_past_the_data_has_nothing_to_replay_and_says_so(
    replay_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    first = await build_agent(replay_settings)
    try:
        await _run_to_the_end(first)
    finally:
        await first.close()
    caplog.clear()
    second = await build_agent(replay_settings)  # resumes at the candle after the last decision: past the data
    try:
        described = second.describe()
        await _run_to_the_end(second)
        decisions = await _decisions(second)
    finally:
        await second.close()
    assert "NOTHING LEFT TO REPLAY" in described and "new database (DATABASE_URL)" in described
    assert len(decisions) == CYCLES, "no decision made (and none failed) after the data's end"
    assert second.loop.heartbeat.cycles == 0 and second.loop.heartbeat.stopped
    assert len([r for r in caplog.records if "replay finished" in r.getMessage()]) == 1
