"""`/metrics` counts every stored decision by the status it ended with, the failed ones too: the counter
matches the database whichever way a cycle ended (decided, no market data for the context, failed after its
pending row)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.errors import TemporaryError
from app.db import models
from app.services.market_data.base import Ticker24h
from app.services.market_data.simulator import MarketSimulator

pytestmark = pytest.mark.db


class TickerOutage(MarketSimulator):
    """The simulator, whose 24 h ticker fails while `down` (candles still come: the venue keeps up, but no
    asset's context can be built)."""

    down = False

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        if self.down:
            raise TemporaryError("ticker endpoint unreachable")
        return await super().fetch_ticker_24h(symbol, at)


def _counted(agent: Agent) -> dict[str, float]:
    families = text_string_to_metric_families(generate_latest(agent.metrics.registry).decode())
    family = next(f for f in families if f.name == "trading_decisions")
    return {s.labels["status"]: s.value for s in family.samples if s.name == "trading_decisions_total"}


async def _stored(agent: Agent) -> dict[str, float]:
    async with agent.sessions() as session:
        rows = await session.execute(select(models.Decision.status, func.count()).group_by(models.Decision.status))
        return {status: float(n) for status, n in rows.all()}


async def test_the_decision_counter_matches_the_database(settings: Settings, clock: ManualClock) -> None:
    market = TickerOutage(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market)
    try:

        async def cycle() -> None:
            clock.advance(timedelta(minutes=5))
            await agent.loop.run_cycle()

        await cycle()
        market.down = True  # two cycles without a usable context: stored as error, returned without an outcome
        await cycle()
        await cycle()
        market.down = False
        snapshot = agent.engine.reconciler.snapshot_equity
        failures = {"left": 1}

        async def broken_snapshot(*args: Any, **kwargs: Any) -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("disk full")
            await snapshot(*args, **kwargs)

        agent.engine.reconciler.snapshot_equity = broken_snapshot  # type: ignore[method-assign,assignment]
        await cycle()  # fails after its pending row: stored as error
        await cycle()
        # the account's strategy is deactivated: the account holds, stored as error without a model call
        own = (await agent.strategies.get_strategy("conservative")).model_copy(
            update={"strategy_id": "metrics-custom", "strategy_type": "custom", "name": "Metrics custom"}
        )
        await agent.strategies.create_custom_strategy(own)
        assert await agent.strategies.update_account_strategy(1, "metrics-custom")
        await agent.strategies.set_strategy_active("metrics-custom", False)
        await cycle()
        stored, counted = await _stored(agent), _counted(agent)
    finally:
        await agent.close()
    assert stored.get("error") == 4.0, stored
    assert sum(stored.values()) == 6.0 and "pending" not in stored
    assert counted == stored
