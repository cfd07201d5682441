"""Each strategy's own timeframes: the context's price history and indicators come from the strategy's decision
and trend timeframes (synced into the candle store on demand), the prompt names them, and a timeframe the agent
cannot serve is adapted with a note in the context's errors."""

from __future__ import annotations

from itertools import pairwise

import pytest

from app.bootstrap import Agent
from app.core.timeframes import timeframe_seconds
from app.schemas.trading_decision import PricePoint

pytestmark = pytest.mark.db


def spacing(history: list[PricePoint]) -> set[float]:
    """The seconds between consecutive candles of a price history."""
    return {(b.timestamp - a.timestamp).total_seconds() for a, b in pairwise(history)}


async def test_a_swing_strategy_sees_hourly_and_daily_data(agent: Agent) -> None:
    swing = await agent.strategies.get_strategy("swing")
    assert swing.timeframe_preference == ["1h", "1d"]
    context = await agent.engine.context_builder.build_trading_context(agent.settings.assets, 1, swing)

    assert context.market_data.timeframes == ["1h", "1d"]
    btc = context.market_data.assets["BTC"]
    assert spacing(btc.price_history) == {timeframe_seconds("1h")}
    assert btc.technical_indicators.long_interval.ema_20  # daily candles were synced and used
    assert not [e for e in context.errors if "timeframes" in e]
    _system, user = agent.llm.prompts.build(context, swing)
    assert "Decision timeframe 1h, trend timeframe 1d" in user

    conservative = await agent.strategies.get_strategy("conservative")
    other = await agent.engine.context_builder.build_trading_context(agent.settings.assets, 1, conservative)
    assert other.market_data.timeframes == ["5m", "4h"]
    assert spacing(other.market_data.assets["BTC"].price_history) == {300.0}


async def test_a_timeframe_finer_than_the_cycle_is_adapted_with_a_note(agent: Agent) -> None:
    scalping = await agent.strategies.get_strategy("scalping")
    fast = scalping.model_copy(update={"strategy_id": "one-minute", "timeframe_preference": ["1m", "5m"]})
    context = await agent.engine.context_builder.build_trading_context(agent.settings.assets, 1, fast)

    assert context.market_data.timeframes == ["5m", "4h"]  # the agent decides every 5m; LONG_INTERVAL for trend
    notes = [e for e in context.errors if "strategy timeframes" in e]
    assert len(notes) == 1 and "['1m', '5m'] adapted to ['5m', '4h']" in notes[0]
    assert set(context.market_data.assets) == {"BTC", "ETH", "SOL"}
