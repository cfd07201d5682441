"""`trading-agent outcomes backfill` on a database of older decisions (no `asset_state`: what they saw is read from
their stored context), some of whose candles are missing: it measures what is due and stored, says what it left and
why, honours --since and --account-id, and a second run writes nothing. `outcomes show` prints one decision's."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner, Result

from app.bootstrap import Agent, build_agent
from app.cli import app
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.services.market_data.simulator import MarketSimulator
from tests.fakes.scripted_model import ScriptedModel

pytestmark = pytest.mark.db
runner = CliRunner()
FIVE = timedelta(minutes=5)
CYCLES = 30


async def _invoke(settings: Settings, *args: str) -> Result:
    env = {"DATABASE_URL": settings.database_url, "LOG_LEVEL": "WARNING", "ADMIN_API_KEY": "", "COLUMNS": "200"}

    def invoke() -> Result:
        return runner.invoke(app, ["outcomes", *args], env=env)

    return await asyncio.to_thread(invoke)  # the command runs its own event loop


async def _older_decisions(settings: Settings, clock: ManualClock) -> tuple[Agent, datetime]:
    """A database where a trading agent made CYCLES decisions before outcomes were recorded; SOL's candles from
    the 20th cycle on are missing. Returns the agent (closed) and that cycle's time."""
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=ScriptedModel(seed=3))
    try:
        for _ in range(CYCLES):
            clock.advance(FIVE)
            await agent.loop.run_cycle()
        cut = clock.now() - (CYCLES - 20) * FIVE
        async with agent.sessions.begin() as session:  # as a database from before outcomes were recorded
            await session.execute(delete(models.DecisionOutcome))
            await session.execute(delete(models.DecisionTradeOutcome))
            await session.execute(update(models.Decision).values(asset_state=None))
            candles = models.CandleRow
            await session.execute(
                delete(candles).where(
                    candles.symbol == "SOL", candles.timeframe == settings.interval, candles.open_time >= cut
                )
            )
    finally:
        await agent.close()
    return agent, cut


async def _rows(agent: Agent) -> set[tuple[int, str, int]]:
    async with agent.sessions() as session:
        rows = (
            await session.execute(
                select(models.DecisionOutcome.decision_id, models.DecisionOutcome.asset, models.DecisionOutcome.horizon)
            )
        ).all()
    return {(d, a, h) for d, a, h in rows}


async def _expected(
    agent: Agent, now: datetime, cut: datetime, since: datetime | None = None
) -> set[tuple[int, str, int]]:
    """Every asset decision at horizons 1 and 4 due by `now` (SOL only while its candles are stored)."""
    async with agent.sessions() as session:
        decisions = (await session.scalars(select(models.Decision))).all()
    found = set()
    for d in decisions:
        if d.validation_result is None or d.status in ("error", "interrupted") or (since and d.cycle_time < since):
            continue
        for verdict in d.validation_result["verdicts"]:
            for h in (1, 4):
                end = d.cycle_time + h * FIVE
                if end <= now and (verdict["asset"] != "SOL" or end <= cut):
                    found.add((d.id, verdict["asset"], h))
    return found


async def test_backfill_measures_older_decisions_and_says_what_it_left(settings: Settings, clock: ManualClock) -> None:
    agent, cut = await _older_decisions(settings, clock)
    try:
        await _backfill_and_show(settings, agent, clock.now(), cut)
    finally:
        await agent.db.dispose()  # the closed agent's engine, read again by the checks


async def _backfill_and_show(settings: Settings, agent: Agent, now: datetime, cut: datetime) -> None:
    # `now`: the last cycle's time, when the newest stored candle (BTC, ETH) closed
    since = now - 10 * FIVE

    later = await _invoke(settings, "backfill", "--horizons", "1,4", "--since", since.isoformat())
    assert later.exit_code == 0, later.output
    assert await _rows(agent) == await _expected(agent, now, cut, since)

    everything = await _invoke(settings, "backfill", "--horizons", "1,4")
    assert everything.exit_code == 0, everything.output
    expected = await _expected(agent, now, cut)
    assert await _rows(agent) == expected
    out = everything.output
    assert "SOL:" in out and "candles are not stored" in out and "trading-agent data download" in out, out
    assert "not due yet" in out, out  # the last decisions' horizon of 4 candles is still open
    async with agent.sessions() as session:
        closed = set(
            await session.scalars(
                select(models.Position.id).where(
                    models.Position.status == "closed", models.Position.decision_id.is_not(None)
                )
            )
        )
        measured = set(await session.scalars(select(models.DecisionTradeOutcome.position_id)))
    assert closed and measured == closed

    again = await _invoke(settings, "backfill", "--horizons", "1,4")
    assert again.exit_code == 0 and again.output.startswith("0 outcome row(s) written"), again.output
    other = await _invoke(settings, "backfill", "--account-id", "2")
    assert other.output.startswith("0 outcome row(s) written from 0 decision(s)"), other.output

    first = min(d for d, _, _ in expected)
    shown = await _invoke(settings, "show", str(first))
    assert shown.exit_code == 0 and "BTC" in shown.output and "1 x 5m" in shown.output, shown.output


async def test_bad_options_exit_2(settings: Settings) -> None:
    for args, message in (
        (["--horizons", "0,4"], "at least one horizon"),
        (["--horizons", "1,x"], "whole numbers"),
        (["--since", "yesterday"], "not an ISO 8601 time"),
    ):
        done = await _invoke(settings, "backfill", *args)
        assert done.exit_code == 2 and message in done.output, done.output
