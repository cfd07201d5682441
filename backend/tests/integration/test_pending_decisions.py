"""No decision is left `pending` forever: a failed cycle ends as `error`, a stop lets the cycle in flight
finish for a grace period and marks what is left `interrupted`, and a start after a crash marks the orphans
and decides their candle again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.schemas.trading_decision import TradingDecision
from app.services.llm.providers.base import DecisionModel, ModelRequest, ModelResponse
from app.services.llm.providers.baseline import BaselineModel
from app.services.market_data.simulator import MarketSimulator
from tests.fakes.openrouter_server import hold_all
from tests.fakes.scripted_model import answer

pytestmark = pytest.mark.db


class HeldClock(ManualClock):
    """A manual clock on which the loop's wait for the next candle never ends (one cycle per test)."""

    async def sleep_until(self, moment: datetime) -> None:
        await asyncio.Event().wait()


class GatedModel:
    """Answers "hold everything" once `release` is set; `called` says a call is in flight."""

    name = "test/gated"
    is_simulated = True

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.called.set()
        await self.release.wait()
        return answer(
            request, TradingDecision.model_validate_json(hold_all(tuple(request.symbols))), served_by=self.name
        )


class FailingModel:
    name = "test/failing"
    is_simulated = True

    async def complete(self, request: ModelRequest) -> ModelResponse:
        raise RuntimeError("the provider client broke")


def _factory(clock: ManualClock, model: DecisionModel) -> Callable[[Settings], Awaitable[Agent]]:
    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market, provider=model)

    return factory


async def _decisions(agent_or_settings: Agent) -> list[models.Decision]:
    async with agent_or_settings.sessions() as session:
        return list((await session.scalars(select(models.Decision).order_by(models.Decision.id))).all())


@contextlib.asynccontextmanager
async def _running(settings: Settings, clock: ManualClock, model: DecisionModel) -> AsyncIterator[Agent]:
    """The served app's lifespan with the trading loop: start-up on entry, the shutdown path on exit."""
    app = create_app(settings, run_loop=True, agent_factory=_factory(clock, model))
    async with app.router.lifespan_context(app):
        yield app.state.agent


async def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):  # a hang guard, not a timing assertion
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_cycle_that_fails_after_its_pending_row_ends_as_error(settings: Settings, clock: ManualClock) -> None:
    agent = await _factory(clock, FailingModel())(settings)
    try:
        with pytest.raises(RuntimeError):
            await agent.engine.make_trading_decision(None, 1)
        (row,) = await _decisions(agent)
        assert row.status == "error"
        assert row.error == "cycle failed: RuntimeError: the provider client broke"
    finally:
        await agent.close()


async def test_a_stop_lets_the_cycle_in_flight_finish_within_the_grace_period(
    settings: Settings, clock: ManualClock
) -> None:
    model = GatedModel()
    held = HeldClock(clock.now())
    settings = settings.model_copy(update={"shutdown_grace_s": 30.0})
    async with _running(settings, held, model) as agent:
        await asyncio.wait_for(model.called.wait(), 10)
        (row,) = await _decisions(agent)
        assert row.status == "pending"
        stopping = asyncio.get_running_loop().call_later(0.2, model.release.set)  # answers during the shutdown
    stopping.cancel()
    agent2 = await _factory(held, BaselineModel())(settings)
    try:
        (row,) = await _decisions(agent2)
    finally:
        await agent2.close()
    assert row.status == "no_action", (row.status, row.error)


async def test_a_stop_past_the_grace_period_marks_the_decision_interrupted(
    settings: Settings, clock: ManualClock
) -> None:
    model = GatedModel()  # never answers
    held = HeldClock(clock.now())
    settings = settings.model_copy(update={"shutdown_grace_s": 0.2})
    async with _running(settings, held, model) as agent:
        await asyncio.wait_for(model.called.wait(), 10)
    agent = await _factory(held, BaselineModel())(settings)
    try:
        (row,) = await _decisions(agent)
    finally:
        await agent.close()
    assert row.status == "interrupted"
    assert row.error == "interrupted: the agent was stopped before this decision completed"


async def test_a_start_after_a_crash_marks_the_orphan_and_decides_its_candle_again(
    settings: Settings, clock: ManualClock
) -> None:
    held = HeldClock(clock.now())
    model = GatedModel()
    crashed = await _factory(held, model)(settings)
    cycle = asyncio.create_task(crashed.engine.make_trading_decision(None, 1, trigger="loop"))
    await asyncio.wait_for(model.called.wait(), 10)
    cycle.cancel()  # the process dies mid-cycle: nothing marks the row
    with contextlib.suppress(asyncio.CancelledError):
        await cycle
    await crashed.db.dispose()
    (orphan,) = await _decisions(crashed)
    assert orphan.status == "pending"

    async with _running(settings, held, BaselineModel()) as agent:
        await _wait_for(lambda: agent.loop.heartbeat.cycles >= 1, "the first cycle")
        rows = await _decisions(agent)
    assert rows[0].id == orphan.id and rows[0].status == "interrupted"
    assert rows[0].error == (
        "interrupted: the agent stopped or crashed before this decision completed (found at start-up)"
    )
    # The candle is still the current one: it is decided again, and that decision finished.
    assert len(rows) == 2 and rows[1].cycle_time == rows[0].cycle_time
    assert rows[1].status not in ("pending", "interrupted", "error"), rows[1].error


async def test_closing_the_agent_marks_what_it_left_pending_whoever_stops_it(
    settings: Settings, clock: ManualClock
) -> None:
    """`decide` stopped with Ctrl-C, a test, the served app: one path (`Agent.close`) marks the cancelled cycle."""
    model = GatedModel()
    agent = await _factory(clock, model)(settings)
    cycle = asyncio.create_task(agent.engine.make_trading_decision(None, 1, trigger="cli"))
    await asyncio.wait_for(model.called.wait(), 10)
    cycle.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cycle
    await agent.close()
    reopened = await _factory(clock, BaselineModel())(settings)
    try:
        (row,) = await _decisions(reopened)
    finally:
        await reopened.close()
    assert row.status == "interrupted"
    assert row.error == "interrupted: the agent was stopped before this decision completed"
