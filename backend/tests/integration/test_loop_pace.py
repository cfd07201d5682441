"""The loop's pace: on a simulated clock no candle is ever skipped, however slow a cycle; on the wall clock a
late cycle is counted, logged (naming the candles skipped) and reported in `/metrics` and `/health`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import AcceleratedClock, Clock, ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.schemas.decision_result import DecisionResult
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, START
from tests.e2e.server import serve

pytestmark = pytest.mark.db
FIVE_MIN = timedelta(minutes=5)


async def _agent(settings: Settings, clock: Clock) -> Agent:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    return await build_agent(settings, clock=clock, market=market)


def _slow_decisions(agent: Agent, after: Callable[[int], Awaitable[None]]) -> None:
    """Every loop decision then awaits `after(n)` (n: the decision's number, from 1)."""
    decide = agent.engine.make_trading_decision
    count = 0

    async def slow(*args: Any, **kwargs: Any) -> DecisionResult:
        nonlocal count
        count += 1
        result = await decide(*args, **kwargs)
        await after(count)
        return result

    agent.engine.make_trading_decision = slow  # type: ignore[method-assign]


async def _cycle_times(agent: Agent) -> list[Any]:
    async with agent.sessions() as session:
        return list((await session.scalars(select(models.Decision.cycle_time).order_by(models.Decision.id))).all())


async def _run_until(agent: Agent, cycles: int) -> None:
    task = asyncio.create_task(agent.loop.run_forever())
    try:
        async with asyncio.timeout(120):  # a hang guard, not a performance assertion
            while agent.loop.heartbeat.cycles < cycles:
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
    finally:
        agent.loop.stop()
        await task


async def test_a_simulated_clock_waits_for_a_slow_cycle_and_no_candle_is_skipped(settings: Settings) -> None:
    # A 5m candle every 0.05 s; each decision takes 0.25 s: five candles would close during every cycle.
    clock = AcceleratedClock(START, speed=6000)
    agent = await _agent(settings, clock)
    _slow_decisions(agent, lambda _n: asyncio.sleep(0.25))
    try:
        await _run_until(agent, 6)
        times = await _cycle_times(agent)
        beat = agent.loop.heartbeat
    finally:
        await agent.close()
    assert len(times) >= 6
    first = times[0]
    assert [t - first for t in times] == [FIVE_MIN * i for i in range(len(times))], "every candle, in order"
    assert beat.failures == 0 and beat.late_cycles == 0 and beat.candles_skipped == 0


async def test_a_late_cycle_on_the_wall_clock_is_counted_logged_and_reported(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(START)  # moves only when told: here, like the wall clock during a slow first cycle
    agent = await _agent(settings, clock)

    async def after(n: int) -> None:
        if n == 1:  # the first cycle takes 17 minutes of real time
            clock.advance(timedelta(minutes=17))
        if n == 3:
            agent.loop.stop()

    _slow_decisions(agent, after)

    async def prebuilt(_s: Settings) -> Agent:
        return agent

    caplog.set_level(logging.WARNING, logger="app.trading.loop")
    async with (
        serve(create_app(settings, agent_factory=prebuilt)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        await agent.loop.run_forever()
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    times = await _cycle_times(agent)
    # 12:00 decided; by its end the clock is at 12:17: 12:05 and 12:10 are skipped, 12:15 is decided at once.
    assert [t.strftime("%H:%M") for t in times[:3]] == ["12:00", "12:15", "12:20"]
    assert health["loop"]["late_cycles"] == 1 and health["loop"]["candles_skipped"] == 2
    assert [t[11:16] for t in health["loop"]["last_skipped"]] == ["12:05", "12:10"]
    assert "trading_loop_candles_skipped_total 2.0" in metrics and "trading_loop_late_cycles_total 1.0" in metrics
    late = [r.getMessage() for r in caplog.records if "late cycle" in r.getMessage()]
    assert len(late) == 1 and "2026-03-02 12:05, 2026-03-02 12:10" in late[0], late


class RealSeconds:
    """A stand-in for time.monotonic that moves only when told (no test waits on, or races with, real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_held_clock_runs_on_from_where_it_waited() -> None:
    real = RealSeconds()
    clock = AcceleratedClock(START, speed=6000, monotonic=real)
    limit = START + FIVE_MIN - timedelta(microseconds=1)
    clock.hold(limit)
    real.now += 0.1  # 10 simulated minutes
    assert clock.now() == limit
    clock.release()
    assert clock.now() == limit
    real.now += 0.01  # one simulated minute
    assert clock.now() == limit + timedelta(minutes=1)


async def test_a_busy_event_loop_between_cycles_neither_skips_a_candle_nor_turns_the_clock_back(
    settings: Settings,
) -> None:
    """The loop's task is kept from running for three candles' worth of real time while it waits for the next
    close: the simulated clock waits at that close (no candle is skipped) and never shows an earlier time."""
    real = RealSeconds()
    clock = AcceleratedClock(START, speed=6000, monotonic=real)  # a 5m candle every 0.05 real seconds
    agent = await _agent(settings, clock)
    seen: list[Any] = []
    sleep_until = clock.sleep_until

    async def stalled(moment: Any) -> None:
        real.now += 0.15  # the event loop was busy elsewhere for three candles
        seen.append(clock.now())
        await sleep_until(moment)

    clock.sleep_until = stalled  # type: ignore[method-assign]
    _slow_decisions(agent, lambda _n: _record(seen, clock))
    try:
        await _run_until(agent, 4)
        times = await _cycle_times(agent)
    finally:
        await agent.close()
    assert seen == sorted(seen), "the simulated clock went back"
    first = times[0]
    assert [t - first for t in times] == [FIVE_MIN * i for i in range(len(times))], "every candle, in order"
    assert agent.loop.heartbeat.candles_skipped == 0


async def test_a_slow_start_up_does_not_use_up_simulated_time(settings: Settings) -> None:
    """The start-up check of the accounts takes an hour of simulated time's worth of real seconds (a busy CI
    machine, a slow venue): the first cycle is still the candle the clock started on, not one an hour later (a
    short replay was skipped whole that way)."""
    real = RealSeconds()
    clock = AcceleratedClock(START, speed=6000, monotonic=real)
    agent = await _agent(settings, clock)
    check = agent.engine.check_account

    async def slow_check(account_id: int) -> None:
        real.now += 0.6  # one simulated hour
        await check(account_id)

    agent.engine.check_account = slow_check  # type: ignore[method-assign]
    try:
        await _run_until(agent, 1)
        times = await _cycle_times(agent)
    finally:
        await agent.close()
    assert times[0].replace(tzinfo=START.tzinfo) == START, times
    assert agent.loop.heartbeat.candles_skipped == 0


async def _record(seen: list[Any], clock: AcceleratedClock) -> None:
    seen.append(clock.now())


def test_metrics_name_the_pace_counters() -> None:
    from app.core.metrics import AgentMetrics

    text = generate_latest(AgentMetrics().registry).decode()
    assert "trading_loop_late_cycles_total" in text and "trading_loop_candles_skipped_total" in text
