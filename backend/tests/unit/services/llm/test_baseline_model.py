"""The rule-based baseline model: its signals, its sizing, and that the validator never has to reject it."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.schemas.trading_decision import (
    AssetDecision,
    AssetMarketData,
    PositionSummary,
    TechnicalIndicatorsSet,
    TradingContext,
    TradingDecision,
    TradingStrategy,
)
from app.services.llm.decision_validator import DecisionValidator
from app.services.llm.providers.base import ModelRequest
from app.services.llm.providers.baseline import BASELINE_MODEL_NAME, BaselineModel
from tests import factories as f

BTC = f.price_of("BTC")
UP = f.trending_set(BTC, 1)
DOWN = f.trending_set(BTC, -1)
FLAT = f.trending_set(BTC, 0)


def request_for(context: TradingContext, strategy: TradingStrategy | None = None) -> ModelRequest:
    return ModelRequest(
        symbols=list(context.symbols),
        context=context,
        strategy=strategy or context.account_state.active_strategy,
        system_prompt="",
        user_prompt="",
        model="baseline",
    )


def market(
    interval: TechnicalIndicatorsSet, long_interval: TechnicalIndicatorsSet | None = None, symbol: str = "BTC"
) -> AssetMarketData:
    return f.asset_market_data(
        symbol, price=f.price_of(symbol), interval=interval, long_interval=long_interval or interval, history=2
    )


def context(
    markets: dict[str, AssetMarketData],
    *,
    strategy: TradingStrategy | None = None,
    positions: list[PositionSummary] | None = None,
    **account: float,
) -> TradingContext:
    acct = f.account_context(positions=positions or [], active_strategy=strategy or f.strategy(), **account)
    return f.trading_context(list(markets), account=acct, market=markets)


def decide(ctx: TradingContext) -> TradingDecision:
    return BaselineModel().decide(request_for(ctx))


def only(ctx: TradingContext) -> AssetDecision:
    [item] = decide(ctx).decisions
    return item


# ---- signals -------------------------------------------------------------------------------------------


def test_buys_when_trend_momentum_rsi_and_the_long_timeframe_agree() -> None:
    item = only(context({"BTC": market(UP, UP)}))
    assert item.action == "buy"
    assert item.allocation_usd > 0
    assert item.sl_price is not None and item.sl_price < BTC
    assert item.tp_price is not None and item.tp_price > BTC


def test_sells_on_the_mirror_image() -> None:
    item = only(context({"BTC": market(DOWN, DOWN)}))
    assert item.action == "sell"
    assert item.allocation_usd > 0
    assert item.sl_price is not None and item.sl_price > BTC
    assert item.tp_price is not None and item.tp_price < BTC


@pytest.mark.parametrize(("interval", "long_interval"), [(UP, DOWN), (DOWN, UP)], ids=["long", "short"])
def test_holds_when_the_long_timeframe_disagrees(
    interval: TechnicalIndicatorsSet, long_interval: TechnicalIndicatorsSet
) -> None:
    item = only(context({"BTC": market(interval, long_interval)}))
    assert item.action == "hold"
    assert item.allocation_usd == 0


def test_an_unknown_long_timeframe_does_not_block_an_entry() -> None:
    item = only(context({"BTC": market(UP, f.indicator_set(empty=True))}))
    assert item.action == "buy"


@pytest.mark.parametrize(
    ("direction", "rsi"),
    [(1, 70.0), (1, 75.0), (1, 50.0), (1, 45.0), (-1, 30.0), (-1, 25.0), (-1, 50.0), (-1, 55.0)],
)
def test_holds_when_rsi_is_stretched_or_does_not_confirm(direction: int, rsi: float) -> None:
    ind = f.trending_set(BTC, direction, rsi=rsi)
    assert only(context({"BTC": market(ind, ind)})).action == "hold"


def test_holds_when_ema_and_macd_disagree() -> None:
    mixed = f.indicator_set(price=BTC, ema_20=BTC * 1.01, ema_50=BTC, macd=-10.0, macd_signal=0.0, rsi=60.0)
    assert only(context({"BTC": market(mixed, UP)})).action == "hold"


def test_holds_without_market_data_for_an_asset() -> None:
    ctx = f.trading_context(["BTC", "ETH"], market={"BTC": market(FLAT)})
    decisions = decide(ctx).decisions
    assert [(d.asset, d.action) for d in decisions] == [("BTC", "hold"), ("ETH", "hold")]


# ---- open positions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "trend"), [("long", DOWN), ("short", UP)])
def test_closes_a_position_when_the_trend_turns_against_it(
    side: Literal["long", "short"], trend: TechnicalIndicatorsSet
) -> None:
    item = only(context({"BTC": market(trend)}, positions=[f.position("BTC", side)]))
    assert item.action == "close_position"
    assert item.allocation_usd == 0


@pytest.mark.parametrize(("side", "trend"), [("long", UP), ("long", FLAT), ("short", DOWN), ("short", FLAT)])
def test_keeps_a_position_while_the_trend_has_not_turned(
    side: Literal["long", "short"], trend: TechnicalIndicatorsSet
) -> None:
    pos = f.position("BTC", side, exit_plan="Trail under the 4h EMA20.")
    item = only(context({"BTC": market(trend)}, positions=[pos]))
    assert item.action == "hold"
    assert item.exit_plan == "Trail under the 4h EMA20."


# ---- sizing --------------------------------------------------------------------------------------------


def risk_at_stop(item: AssetDecision, leverage: float, price: float = BTC) -> float:
    assert item.sl_price is not None
    return item.allocation_usd * leverage * abs(price - item.sl_price) / price


@pytest.mark.parametrize(
    ("risk_pct", "stop_pct", "leverage", "atr"),
    [
        (1.0, 2.0, 3.0, None),  # the strategy's stop % sets the distance
        (0.5, 1.5, 2.0, None),
        (1.0, 1.0, 5.0, BTC * 0.02),  # 2 x ATR (4%) is wider than the strategy's stop %
    ],
)
def test_the_position_risks_max_risk_per_trade_of_equity_at_the_stop(
    risk_pct: float, stop_pct: float, leverage: float, atr: float | None
) -> None:
    strategy = f.strategy(max_risk_per_trade=risk_pct, stop_loss_percentage=stop_pct, max_leverage=leverage)
    ind = f.trending_set(BTC, 1, atr=atr)
    item = only(context({"BTC": market(ind, ind)}, strategy=strategy, balance=10_000.0, max_position_size=10_000.0))

    assert item.action == "buy"
    expected_distance = max(2 * atr, BTC * stop_pct / 100) if atr else BTC * stop_pct / 100
    assert BTC - item.sl_price == pytest.approx(expected_distance)  # type: ignore[operator]
    # allocation rounded to the cent: the risk is exact within a cent of margin
    assert risk_at_stop(item, leverage) == pytest.approx(10_000.0 * risk_pct / 100, abs=0.01 * leverage)


def test_sizing_is_capped_by_the_max_position_size() -> None:
    item = only(context({"BTC": market(UP)}, max_position_size=300.0))
    assert item.action == "buy"
    assert item.allocation_usd == 300.0
    assert risk_at_stop(item, 3.0) < 10_000.0 * 1.0 / 100


def test_sizing_is_capped_by_the_available_balance_fees_included() -> None:
    ctx = context({"BTC": market(UP)}, available=500.0)
    item = only(ctx)
    assert item.action == "buy"
    assert 0 < item.allocation_usd * (1 + 3.0 * 5.0 / 10_000) <= 500.0
    assert item.allocation_usd >= 0.9 * 500.0  # uses most of what is there


def test_several_entries_together_fit_the_available_balance() -> None:
    markets = {s: market(f.trending_set(f.price_of(s), 1), symbol=s) for s in ("BTC", "ETH", "SOL")}
    ctx = context(markets, available=2_000.0)
    decision = decide(ctx)

    assert [d.action for d in decision.decisions] == ["buy", "buy", "buy"]
    needed = sum(d.allocation_usd * (1 + 3.0 * 5.0 / 10_000) for d in decision.decisions)
    assert needed <= 2_000.0
    assert decision.total_allocation_usd == pytest.approx(sum(d.allocation_usd for d in decision.decisions))
    result = DecisionValidator().validate(decision, ctx)
    assert [v.status for v in result.verdicts] == ["accepted"] * 3, [v.reasons for v in result.verdicts]


def test_no_entry_without_available_balance() -> None:
    assert only(context({"BTC": market(UP)}, available=0.0)).action == "hold"


@pytest.mark.parametrize(("open_positions", "max_positions", "buys"), [(0, 1, 1), (0, 2, 2), (1, 1, 0), (1, 2, 1)])
def test_respects_max_positions(open_positions: int, max_positions: int, buys: int) -> None:
    markets = {s: market(f.trending_set(f.price_of(s), 1), symbol=s) for s in ("BTC", "ETH", "SOL")}
    markets["DOT"] = market(FLAT, symbol="DOT")
    positions = [f.position("DOT", "long")][:open_positions]
    decision = decide(context(markets, positions=positions, strategy=f.strategy(max_positions=max_positions)))

    entries = [d for d in decision.decisions if d.action in ("buy", "sell")]
    assert len(entries) == buys
    assert len(entries) + open_positions <= max_positions


@pytest.mark.parametrize("ratio", [1.0, 2.0, 3.5])
@pytest.mark.parametrize("direction", [1, -1])
def test_stop_and_target_sit_on_the_right_sides_at_the_strategy_reward_to_risk(ratio: float, direction: int) -> None:
    ind = f.trending_set(BTC, direction)
    item = only(context({"BTC": market(ind, ind)}, strategy=f.strategy(take_profit_ratio=ratio)))

    assert item.sl_price is not None and item.tp_price is not None
    risk = (BTC - item.sl_price) * direction
    reward = (item.tp_price - BTC) * direction
    assert risk > 0 and reward > 0
    assert reward / risk == pytest.approx(ratio)


def test_a_stop_that_would_be_below_zero_means_no_trade() -> None:
    # an ATR of 60% of the price puts a 2 x ATR stop below zero: no long can be protected
    ind = f.trending_set(BTC, 1, atr=BTC * 0.6)
    assert only(context({"BTC": market(ind, ind)})).action == "hold"


def test_a_short_target_that_would_be_below_zero_means_no_trade() -> None:
    # a 40% stop at 3R puts a short's target at -20% of zero
    ind = f.trending_set(BTC, -1, atr=BTC * 0.2)
    assert only(context({"BTC": market(ind, ind)}, strategy=f.strategy(take_profit_ratio=3.0))).action == "hold"


async def test_complete_returns_the_decision_and_its_raw_json() -> None:
    ctx = context({"BTC": market(UP)})
    response = await BaselineModel().complete(request_for(ctx))

    assert response.decision is not None
    assert response.decision.decisions[0].action == "buy"
    assert response.model_served == BASELINE_MODEL_NAME
    assert response.failure is None
    assert TradingDecision.model_validate(json.loads(response.raw_text or "")) == response.decision


# ---- property: the validator never has to reject the baseline ------------------------------------------


@st.composite
def baseline_contexts(draw: st.DrawFn) -> TradingContext:
    symbols = ("BTC", "ETH", "SOL")
    markets = {}
    for s in symbols:
        price = f.price_of(s)
        direction = draw(st.sampled_from([1, -1, 0]))
        in_band = draw(st.floats(50.5, 69.5))  # an RSI that confirms the trend
        rsi = draw(st.sampled_from([in_band if direction > 0 else 100 - in_band, draw(st.floats(1.0, 99.0))]))
        atr = draw(st.one_of(st.floats(0.0, 0.05), st.floats(0.0, 0.7))) * price
        interval = f.trending_set(price, direction, rsi=rsi, atr=atr)
        long_interval = f.trending_set(price, draw(st.sampled_from([direction, 1, -1, 0])))
        markets[s] = market(interval, long_interval, symbol=s)
    strategy = f.strategy(
        max_risk_per_trade=draw(st.floats(0.1, 5.0)),
        stop_loss_percentage=draw(st.floats(0.1, 10.0)),
        take_profit_ratio=draw(st.floats(1.0, 5.0)),
        max_leverage=draw(st.floats(1.0, 10.0)),
        max_positions=draw(st.integers(1, 3)),
    )
    positions = [
        f.position(s, draw(st.sampled_from(["long", "short"]))) for s in symbols if draw(st.integers(0, 3)) == 0
    ]
    balance = draw(st.floats(100.0, 100_000.0))
    return context(
        markets,
        strategy=strategy,
        positions=positions,
        balance=balance,
        available=balance * draw(st.one_of(st.floats(0.0, 0.3), st.floats(0.0, 1.0))),
        max_position_size=draw(st.floats(1.0, 50_000.0)),
        taker_fee_bps=draw(st.floats(0.0, 10.0)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baseline_contexts())
def test_property_the_baseline_always_passes_the_validator(ctx: TradingContext) -> None:
    decision = decide(ctx)
    result = DecisionValidator().validate(decision, ctx)

    assert [v.status for v in result.verdicts] == ["accepted"] * len(ctx.symbols), [v.reasons for v in result.verdicts]
    assert result.errors == []
    assert result.final_decision.decisions == decision.decisions
