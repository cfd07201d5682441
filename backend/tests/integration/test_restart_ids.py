"""Order and fill ids stay unique across restarts, and the rebuilt paper venue equals the database.

A paper venue rebuilt at start-up used to restart its order counter from the *open* orders only: once every
order of an account had filled or been cancelled, the next order reused number 1, its fill id "1-1" collided
with the stored one, and the account failed every cycle while the venue held a position the database did
not have.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.schemas.trading_decision import AssetDecision, TradingDecision
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.market_data.simulator import MarketSimulator
from tests.fakes.scripted_model import answer

pytestmark = pytest.mark.db


class OpenThenClose:
    """Opens a BTC long with a stop on one call and closes it on the next, again and again."""

    name = "test/open-then-close"
    is_simulated = True

    async def complete(self, request: ModelRequest) -> ModelResponse:
        price = request.context.market_data.assets["BTC"].current_price
        has_position = any(p.symbol == "BTC" for p in request.context.account_state.open_positions)
        common = {"asset": "BTC", "exit_plan": "test", "rationale": "test", "confidence": 60.0, "risk_level": "low"}
        if has_position:
            chosen = AssetDecision(**common, action="close_position", allocation_usd=0.0)
            total = 0.0
        else:
            chosen = AssetDecision(
                **common, action="buy", allocation_usd=200.0, sl_price=price * 0.99, tp_price=price * 1.04
            )
            total = 200.0
        others = [
            AssetDecision(**{**common, "asset": a}, action="hold", allocation_usd=0.0)
            for a in request.symbols
            if a != "BTC"
        ]
        decision = TradingDecision(
            decisions=[chosen, *others],
            portfolio_rationale="test",
            total_allocation_usd=total,
            portfolio_risk_level="low",
        )
        return answer(request, decision, served_by=self.name)


async def _cycle(agent: Agent, clock: ManualClock) -> None:
    clock.advance(timedelta(minutes=5))
    assert await agent.loop.run_cycle() == 1, agent.loop.heartbeat.last_error


async def _stored(agent: Agent) -> tuple[list[models.Order], list[models.Fill], list[models.Position]]:
    async with agent.sessions() as session:
        orders = list((await session.scalars(select(models.Order).where(models.Order.account_id == 1))).all())
        fills = list((await session.scalars(select(models.Fill).where(models.Fill.account_id == 1))).all())
        positions = list(
            (
                await session.scalars(
                    select(models.Position).where(models.Position.account_id == 1, models.Position.status == "open")
                )
            ).all()
        )
    return orders, fills, positions


async def _venue_equals_database(agent: Agent) -> None:
    venue = await agent.venues.exchange_for(1)
    _orders, _fills, positions = await _stored(agent)
    held = sorted((p.symbol, p.side, round(p.size, 9)) for p in await venue.fetch_positions())
    assert held == sorted((p.symbol, p.side, round(p.size, 9)) for p in positions)


async def test_ids_stay_unique_when_every_order_was_closed_before_the_restart(
    settings: Settings, clock: ManualClock
) -> None:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    first = await build_agent(settings, clock=clock, market=market, provider=OpenThenClose())
    try:
        await _cycle(first, clock)  # opens BTC with a stop (and a target)
        await _cycle(first, clock)  # closes it: every order is now filled or cancelled
        orders, _fills, positions = await _stored(first)
        assert not positions and orders and all(o.status != "open" for o in orders)
    finally:
        await first.close()

    for restart in range(3):
        agent = await build_agent(settings, clock=clock, market=market, provider=OpenThenClose())
        try:
            await _venue_equals_database(agent)
            await _cycle(agent, clock)  # opens again: new ids
            await _venue_equals_database(agent)
            await _cycle(agent, clock)  # and closes
            await _venue_equals_database(agent)
            assert agent.loop.heartbeat.failures == 0, (restart, agent.loop.heartbeat.last_error)
        finally:
            await agent.close()

    orders, fills, _positions = await _stored(agent)
    venue_ids = Counter(o.venue_order_id for o in orders)
    assert max(venue_ids.values()) == 1, venue_ids
    assert max(Counter(f.venue_fill_id for f in fills).values()) == 1
    # Every filled order's fills are stored with it, and add up to what it says was filled.
    for order in orders:
        own = [f for f in fills if f.order_id == order.id]
        assert abs(sum(f.quantity for f in own) - order.filled_quantity) < 1e-9, order.client_order_id
        if order.status == "filled":
            assert own, f"order {order.client_order_id} is filled with no fill row"
    assert sum(1 for o in orders if o.kind == "entry" and o.status == "filled") == 4


async def test_a_liquidation_fill_id_is_not_reused_after_a_restart(settings: Settings, clock: ManualClock) -> None:
    """Venue-made orders (liquidations) are stored only as fills: their numbers count too."""
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=OpenThenClose())
    try:
        async with agent.sessions.begin() as session:
            session.add(
                models.Fill(
                    account_id=1,
                    order_id=None,
                    client_order_id="paper-liquidation-41",
                    venue_fill_id="41-1",
                    symbol="ETH",
                    side="sell",
                    reason="liquidation",
                    quantity=0.1,
                    price=1000.0,
                    fee=0.0,
                    realized_pnl=0.0,
                    liquidity="taker",
                    filled_at=clock.now(),
                )
            )
    finally:
        await agent.close()
    agent = await build_agent(settings, clock=clock, market=market, provider=OpenThenClose())
    try:
        await _cycle(agent, clock)
        orders, fills, _ = await _stored(agent)
    finally:
        await agent.close()
    assert orders and all(int(o.venue_order_id or 0) > 41 for o in orders), [o.venue_order_id for o in orders]
    assert len({f.venue_fill_id for f in fills}) == len(fills)
