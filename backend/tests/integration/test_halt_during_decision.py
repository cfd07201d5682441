"""A halt that comes while a decision waits for its model: the decision sends no order (the status is read again
under the account's execution lock, which the halt's flattening takes too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.market_data.simulator import MarketSimulator
from tests import factories as f
from tests.fakes.scripted_model import answer

pytestmark = pytest.mark.db


class GatedBuyer:
    """Buys BTC with a stop, once let through."""

    name = "test/gated-buyer"
    is_simulated = True

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.go = asyncio.Event()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.asked.set()
        await self.go.wait()
        price = request.context.market_data.assets["BTC"].current_price
        items = [
            f.decision("BTC", "buy", allocation_usd=500.0, sl_price=price * 0.95, tp_price=price * 1.1)
            if asset == "BTC"
            else f.decision(asset)
            for asset in request.context.market_data.assets
        ]
        return answer(request, f.trading_decision(items), served_by=self.name)


@pytest.fixture
async def gated(settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[Agent, GatedBuyer]]:
    model = GatedBuyer()
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=model)
    try:
        yield agent, model
    finally:
        await agent.close()


async def test_a_halt_while_the_model_thinks_sends_no_order(gated: tuple[Agent, GatedBuyer]) -> None:
    agent, model = gated
    deciding = asyncio.create_task(agent.engine.make_trading_decision(None, 1, trigger="test"))
    await asyncio.wait_for(model.asked.wait(), 30)
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, 1)
        assert account is not None
        await AccountRepository(session).set_status(account, "HALTED", reason="test", now=agent.wall_clock.now())
    model.go.set()
    result = await asyncio.wait_for(deciding, 30)
    assert result.status == "skipped" and "HALTED" in (result.execution_errors or [""])[0]
    venue = await agent.venues.exchange_for(1)
    assert await venue.fetch_positions() == [] and await venue.fetch_open_orders() == []
    async with agent.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(models.Order)) == 0


async def test_without_a_halt_the_same_decision_trades(gated: tuple[Agent, GatedBuyer]) -> None:
    """The control: the model's answer does open a position with its stop when nobody halts."""
    agent, model = gated
    model.go.set()
    result = await agent.engine.make_trading_decision(None, 1, trigger="test")
    assert result.status == "executed", result.execution_errors
    venue = await agent.venues.exchange_for(1)
    [position] = await venue.fetch_positions()
    assert position.symbol == "BTC" and any(o.type == "stop_market" for o in await venue.fetch_open_orders("BTC"))
