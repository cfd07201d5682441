"""One asset's market data goes stale while the market still answers: the decision's context says so, and one
alert per asset and quiet period reaches the webhook (its repeats counted on the stored alert)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.bootstrap import build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.services.alerts.events import AlertKind
from app.services.market_data.base import CandleSeries
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import START
from tests.fakes.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.db
FROZEN = START + timedelta(minutes=5)


class EthStopsAt(MarketSimulator):
    """The simulator, but ETH's candles stop coming after FROZEN (the other assets go on)."""

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        return await super().fetch_candles(
            symbol, timeframe, limit=limit, until=min(until, FROZEN) if symbol == "ETH" else until
        )


async def test_a_stale_asset_is_alerted_once_across_cycles(settings: Settings, clock: ManualClock) -> None:
    async with webhook_receiver() as receiver:
        configured: Any = settings.model_copy(update={"alert_urls": SecretStr(receiver.url())})
        market = EthStopsAt(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
        agent = await build_agent(configured, clock=clock, market=market)
        try:
            await agent.engine.make_trading_decision(None, 1, trigger="api")  # fresh: no alert
            await agent.alerts.flush()
            assert not receiver.received
            clock.advance(timedelta(minutes=30))
            first = await agent.engine.make_trading_decision(None, 1, trigger="api")
            clock.advance(timedelta(minutes=5))
            await agent.engine.make_trading_decision(None, 1, trigger="api")
            await agent.alerts.flush()
            async with agent.sessions() as session:
                rows = (await session.scalars(select(models.Alert))).all()
        finally:
            await agent.close()
    assert any("ETH: stale data" in e for e in first.context_errors), first.context_errors
    stale = [r for r in rows if r.kind == AlertKind.MARKET_STALE]
    assert len(stale) == 1 and stale[0].subject.endswith(f"{market.name} ETH"), [r.subject for r in stale]
    assert stale[0].repeats == 1 and stale[0].delivery == "delivered"
    assert len(receiver.received) == 1 and "ETH" in receiver.received[0].raw
