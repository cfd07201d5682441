"""The stop watchdog in the loop: at start-up for every account, and every cycle for the accounts the loop does not
decide for (paused, halted) that still hold positions; on the real engine, database and paper venue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.bootstrap import Agent
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.services.exchange.base import OrderRequest
from app.services.llm.llm_exceptions import ContextBuildingError
from app.services.llm.strategy_manager import StrategyUnavailableError

pytestmark = pytest.mark.db


async def _bare_position(agent: Agent, account_id: int = 1) -> None:
    """A long BTC position with no stop on the account's venue, mirrored in the database."""
    await agent.engine.sync_account(account_id)  # the venue sees the market
    venue = await agent.venues.exchange_for(account_id)
    await venue.set_leverage("BTC", 2)
    order = await venue.place_order(OrderRequest("by-hand-1", "BTC", "buy", "market", 0.05))
    assert order.status == "filled"
    async with agent.sessions.begin() as session:
        await agent.engine.reconciler.sync(session, account_id, venue, placed=[order])


async def _stops(agent: Agent, account_id: int = 1) -> list[models.Order]:
    async with agent.sessions() as session:
        query = select(models.Order).where(
            models.Order.account_id == account_id, models.Order.kind == "stop_loss", models.Order.status == "open"
        )
        return list((await session.scalars(query)).all())


async def test_start_up_gives_a_bare_position_its_stop(agent: Agent) -> None:
    await _bare_position(agent)
    assert await _stops(agent) == []
    await agent.loop._check_accounts()
    [stop] = await _stops(agent)
    assert stop.client_order_id.startswith("a1-w") and stop.client_order_id.endswith("-BTC-sl")
    assert stop.quantity == pytest.approx(0.05) and stop.reduce_only
    venue = await agent.venues.exchange_for(1)
    assert [o.client_order_id for o in await venue.fetch_open_orders("BTC")] == [stop.client_order_id]
    async with agent.sessions() as session:
        [position] = (await session.scalars(select(models.Position).where(models.Position.status == "open"))).all()
    assert position.stop_loss == stop.trigger_price
    assert position.entry_rationale is not None and position.entry_rationale.startswith("adopted")


async def test_a_paused_account_with_a_position_is_still_guarded_every_cycle(agent: Agent) -> None:
    await _bare_position(agent)
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, 1)
        assert account is not None
        await AccountRepository(session).set_status(account, "PAUSED", reason="test", now=agent.wall_clock.now())
    decisions = await agent.loop.run_cycle()
    assert decisions == 0, "a paused account is not decided for"
    [stop] = await _stops(agent)
    assert stop.client_order_id.startswith("a1-w")


async def test_a_stop_cancelled_by_hand_comes_back_at_its_own_level(agent: Agent) -> None:
    await _bare_position(agent)
    venue = await agent.venues.exchange_for(1)
    [position] = await venue.fetch_positions()
    level = round(position.entry_price * 0.9, 1)  # far from the strategy's default distance
    first = await venue.place_order(
        OrderRequest("a1-d7-BTC-sl", "BTC", "sell", "stop_market", position.size, level, True, "stop_loss")
    )
    async with agent.sessions.begin() as session:
        await agent.engine.reconciler.sync(session, 1, venue, placed=[first])
    await venue.cancel_order("BTC", first.client_order_id)  # by hand, at the venue
    await agent.engine.sync_account(1)  # the next read mirrors it: no stop open at the venue, none on the position
    await agent.loop._check_accounts()
    [second] = await _stops(agent)
    assert second.client_order_id != first.client_order_id
    assert second.trigger_price == level, "the level last placed, not the strategy's default distance"


@pytest.mark.parametrize("failure", ["context", "strategy"])
async def test_an_account_whose_decision_ends_before_the_model_still_gets_its_stop_every_cycle(
    agent: Agent, failure: str
) -> None:
    """An active account's decision stored as an error before any model call (the market context cannot be built,
    or its strategy was deactivated) still gives its positions the watchdog's pass, each cycle."""
    await _bare_position(agent)
    if failure == "context":

        async def unusable(*_args: object, **_kwargs: object) -> None:
            raise ContextBuildingError("no usable market data")

        agent.engine.context_builder.build_with_history = unusable  # type: ignore[method-assign,assignment]
    else:

        async def unavailable(strategy_id: str) -> None:
            raise StrategyUnavailableError(strategy_id, "deactivated")

        agent.engine.strategies.runnable_strategy = unavailable  # type: ignore[method-assign,assignment]
    assert await agent.loop.run_cycle() == 1
    [stop] = await _stops(agent)
    assert stop.client_order_id.startswith("a1-w") and stop.quantity == pytest.approx(0.05)
    async with agent.sessions() as session:
        [decision] = (await session.scalars(select(models.Decision))).all()
    assert decision.status == "error" and failure in (decision.error or "")

    venue = await agent.venues.exchange_for(1)
    await venue.cancel_order("BTC", stop.client_order_id)  # cancelled by hand: the next cycle puts it back
    agent.clock.advance(timedelta(minutes=5))
    await agent.loop.run_cycle()
    [again] = await _stops(agent)
    assert again.client_order_id != stop.client_order_id and again.trigger_price == stop.trigger_price
