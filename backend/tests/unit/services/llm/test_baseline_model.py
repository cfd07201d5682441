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
from app.schemas.validation import RiskState
from app.services.llm.decision_validator import DecisionValidator
from app.services.llm.providers.base import ModelRequest
from app.services.llm.providers.baseline import BASELINE_MODEL_NAME, BaselineModel
from app.services.llm.strategy_manager import builtin_strategies
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


def risk_at_stop(item: AssetDecision, leverage: float, price: float = BTC, fee_bps: float = 5.0) -> float:
    """What the position loses at its stop, the round trip's taker fees included (the validator's measure)."""
    assert item.sl_price is not None
    return item.allocation_usd * leverage * (abs(price - item.sl_price) / price + 2 * fee_bps / 10_000)


@pytest.mark.parametrize(
    ("risk_pct", "stop_pct", "ratio", "leverage", "atr", "fee_bps", "distance"),
    [
        # 2 x ATR (2 x 500) lies between a quarter of the widest stop (500) and the widest (2000)
        (1.0, 2.0, 2.0, 3.0, None, 5.0, 1_000.0),
        # 2 x ATR (200) is narrower than a quarter of the widest stop (1500 / 4): the quarter
        (0.5, 1.5, 2.0, 2.0, 100.0, 5.0, 375.0),
        # 2 x ATR (4000) is wider than the strategy's widest stop: clamped to it (1% = 1000)
        (1.0, 1.0, 2.0, 5.0, BTC * 0.02, 5.0, 1_000.0),
        # the target (1R) must be worth 3x (fees 2 x 10 bps + 1 bp funding) with 5% to spare: 3 x 210 x 1.05
        (1.0, 2.0, 1.0, 3.0, 100.0, 10.0, 661.5),
    ],
)
def test_the_position_risks_max_risk_per_trade_of_equity_at_the_stop_fees_included(
    risk_pct: float, stop_pct: float, ratio: float, leverage: float, atr: float | None, fee_bps: float, distance: float
) -> None:
    strategy = f.strategy(
        max_risk_per_trade=risk_pct, stop_loss_percentage=stop_pct, take_profit_ratio=ratio, max_leverage=leverage
    )
    ind = f.trending_set(BTC, 1, atr=atr)
    ctx = context(
        {"BTC": market(ind, ind)},
        strategy=strategy,
        balance=10_000.0,
        max_position_size=10_000.0,
        taker_fee_bps=fee_bps,
    )
    item = only(ctx)

    assert item.action == "buy"
    assert item.sl_price is not None and item.tp_price is not None
    assert BTC - item.sl_price == pytest.approx(distance)
    assert item.tp_price - BTC == pytest.approx(distance * ratio)
    # allocation floored to the cent: the risk is exact within a cent of margin, and never above the budget
    budget = 10_000.0 * risk_pct / 100
    assert risk_at_stop(item, leverage, fee_bps=fee_bps) <= budget + 1e-9
    assert risk_at_stop(item, leverage, fee_bps=fee_bps) == pytest.approx(budget, abs=0.01 * leverage)
    result = DecisionValidator().validate(decide(ctx), ctx)
    assert [v.status for v in result.verdicts] == ["accepted"], [v.reasons for v in result.verdicts]


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


def test_a_huge_atr_puts_the_stop_at_the_strategys_widest_stop() -> None:
    # 2 x ATR would be 120% of the price; the strategy allows a 2% stop at most, and that is where it goes
    ind = f.trending_set(BTC, 1, atr=BTC * 0.6)
    item = only(context({"BTC": market(ind, ind)}, strategy=f.strategy(stop_loss_percentage=2.0)))
    assert item.action == "buy"
    assert item.sl_price == pytest.approx(BTC * 0.98)


def test_volatility_adjusted_sizing_holds_when_one_atr_is_wider_than_the_widest_stop() -> None:
    # volatility-adjusted sizing needs a stop at least one ATR away: 3% > the 2% allowed, so no trade
    strategy = f.strategy(stop_loss_percentage=2.0).model_copy(update={"position_sizing": "volatility_adjusted"})
    ind = f.trending_set(BTC, 1, atr=BTC * 0.03)
    item = only(context({"BTC": market(ind, ind)}, strategy=strategy))
    assert item.action == "hold"
    assert "No stop fits" in item.rationale


def test_volatility_adjusted_sizing_keeps_the_stop_at_least_one_atr_away() -> None:
    # 2 x ATR (3.6%) lies within the 4% widest stop: the stop is 2 x ATR, so the validator's one-ATR rule passes
    strategy = f.strategy(stop_loss_percentage=4.0).model_copy(update={"position_sizing": "volatility_adjusted"})
    ind = f.trending_set(BTC, 1, atr=BTC * 0.018)  # 2 x ATR = 3.6%, within the 4% stop
    ctx = context({"BTC": market(ind, ind)}, strategy=strategy)
    item = only(ctx)
    assert item.action == "buy" and item.sl_price is not None
    assert BTC - item.sl_price == pytest.approx(BTC * 0.036)
    result = DecisionValidator().validate(decide(ctx), ctx)
    assert result.verdicts[0].status == "accepted", result.verdicts[0].reasons


def test_holds_when_the_target_would_not_pay_for_its_fees_within_the_widest_stop() -> None:
    # a 0.1% widest stop at 1R: the target (0.1%) cannot be worth 3 x (2 x 10 bps + 1 bp) = 0.63%
    strategy = f.strategy(stop_loss_percentage=0.1, take_profit_ratio=1.0)
    item = only(context({"BTC": market(UP, UP)}, strategy=strategy, taker_fee_bps=10.0))
    assert item.action == "hold"
    assert "No stop fits" in item.rationale


@pytest.mark.parametrize("direction", [1, -1])
def test_the_stop_stays_inside_the_liquidation_price_at_high_leverage(direction: int) -> None:
    # a 10% widest stop at 10x would lie beyond the liquidation price (about 9.5% away): the baseline keeps its
    # stop inside it, and the validator accepts the trade
    strategy = f.strategy(stop_loss_percentage=10.0, max_leverage=10.0)
    ind = f.trending_set(BTC, direction, atr=BTC * 0.06)
    ctx = context({"BTC": market(ind, ind)}, strategy=strategy)
    item = only(ctx)

    assert item.action == ("buy" if direction > 0 else "sell")
    assert item.sl_price is not None
    assert abs(BTC - item.sl_price) < BTC * 0.09
    result = DecisionValidator().validate(decide(ctx), ctx)
    assert result.verdicts[0].status == "accepted", result.verdicts[0].reasons


def test_a_short_target_that_would_be_below_zero_means_no_trade() -> None:
    # a 40% stop (2 x ATR, within the strategy's 40%) at 3R puts a short's target at -20%; at 1x the liquidation
    # price is far enough away that the stop is not pulled in
    strategy = f.strategy(stop_loss_percentage=40.0, take_profit_ratio=3.0, max_leverage=1.0)
    ind = f.trending_set(BTC, -1, atr=BTC * 0.2)
    assert only(context({"BTC": market(ind, ind)}, strategy=strategy)).action == "hold"


def kelly_strategy() -> TradingStrategy:
    return f.strategy().model_copy(update={"position_sizing": "kelly"})


def with_record(ctx: TradingContext, win_rate: float, avg_win: float, avg_loss: float) -> TradingContext:
    account = ctx.account_state
    perf = account.recent_performance.model_copy(
        update={"win_rate": win_rate, "avg_win": avg_win, "avg_loss": avg_loss}
    )
    return ctx.model_copy(update={"account_state": account.model_copy(update={"recent_performance": perf})})


def test_kelly_sizing_caps_the_margin_at_half_kelly() -> None:
    # win 60% at 1:1 -> Kelly 0.2, half-Kelly 10% of 10000 = 1000 notional, 333.33 margin at 3x
    ctx = with_record(context({"BTC": market(UP, UP)}, strategy=kelly_strategy()), 0.6, 100.0, -100.0)
    item = only(ctx)
    assert item.action == "buy"
    assert item.allocation_usd == pytest.approx(333.33)
    result = DecisionValidator().validate(decide(ctx), ctx)
    assert result.verdicts[0].status == "accepted", result.verdicts[0].reasons


def test_kelly_sizing_holds_when_the_kelly_fraction_is_not_positive() -> None:
    ctx = with_record(context({"BTC": market(UP, UP)}, strategy=kelly_strategy()), 0.5, 100.0, -100.0)
    assert only(ctx).action == "hold"


def test_kelly_sizing_holds_when_the_average_win_vanishes_against_the_loss() -> None:
    # found by the property test below: the payoff 5e-324 / 1e10 underflows to 0 (it divided by zero)
    ctx = with_record(context({"BTC": market(UP, UP)}, strategy=kelly_strategy()), 0.9, 5e-324, -1e10)
    assert only(ctx).action == "hold"


def test_kelly_sizing_without_a_record_sizes_by_the_risk_rule() -> None:
    ctx = context({"BTC": market(UP, UP)}, strategy=kelly_strategy())
    plain = context({"BTC": market(UP, UP)})
    assert only(ctx).allocation_usd == only(plain).allocation_usd > 0


async def test_complete_returns_the_decision_and_its_raw_json() -> None:
    ctx = context({"BTC": market(UP)})
    response = await BaselineModel().complete(request_for(ctx))

    assert response.decision is not None
    assert response.decision.decisions[0].action == "buy"
    assert response.model_served == BASELINE_MODEL_NAME
    assert response.failure is None
    assert TradingDecision.model_validate(json.loads(response.raw_text or "")) == response.decision


# ---- property: the validator never has to reject the baseline ------------------------------------------


def risk_state(draw: st.DrawFn, ctx: TradingContext) -> RiskState:
    """A state with no daily-loss, cooldown or reduce-only pressure, but with leverage caps and a venue MMR."""
    return RiskState(
        now=f.NOW,
        account_max_leverage=draw(st.one_of(st.none(), st.floats(1.0, 20.0))),
        venue_max_leverage={s: draw(st.floats(1.0, 125.0)) for s in ctx.symbols if draw(st.booleans())},
        maintenance_margin_rate=draw(st.floats(0.0, 0.025)),
    )


@st.composite
def baseline_contexts(draw: st.DrawFn) -> tuple[TradingContext, RiskState]:
    symbols = ("BTC", "ETH", "SOL")
    markets = {}
    for s in symbols:
        price = f.price_of(s)
        direction = draw(st.sampled_from([1, -1, 1, -1, 0]))
        in_band = draw(st.floats(50.5, 69.5))  # an RSI that confirms the trend
        confirming = in_band if direction > 0 else 100 - in_band
        rsi = draw(st.sampled_from([confirming, confirming, confirming, draw(st.floats(1.0, 99.0))]))
        atr = draw(st.one_of(st.floats(0.0, 0.05), st.floats(0.0, 0.7))) * price
        interval = f.trending_set(price, direction, rsi=rsi, atr=atr)
        long_interval = f.trending_set(price, draw(st.sampled_from([direction, direction, direction, 1, -1, 0])))
        markets[s] = f.asset_market_data(
            s,
            price=price,
            interval=interval,
            long_interval=long_interval,
            history=2,
            funding_rate=draw(st.one_of(st.none(), st.floats(-0.003, 0.003))),
        )
    strategy = f.strategy(
        max_risk_per_trade=draw(st.floats(0.1, 5.0)),
        stop_loss_percentage=draw(st.one_of(st.floats(0.1, 10.0), st.floats(0.1, 50.0))),
        take_profit_ratio=draw(st.floats(1.0, 5.0)),
        max_leverage=draw(st.floats(1.0, 10.0)),
        max_positions=draw(st.integers(1, 3)),
    ).model_copy(
        update={"position_sizing": draw(st.sampled_from(["fixed", "percentage", "kelly", "volatility_adjusted"]))}
    )
    positions = [
        f.position(s, draw(st.sampled_from(["long", "short"]))) for s in symbols if draw(st.integers(0, 3)) == 0
    ]
    balance = draw(st.floats(100.0, 100_000.0))
    ctx = context(
        markets,
        strategy=strategy,
        positions=positions,
        balance=balance,
        available=balance * draw(st.one_of(st.floats(0.0, 0.3), st.floats(0.0, 1.0))),
        max_position_size=draw(st.floats(1.0, 50_000.0)),
        taker_fee_bps=draw(st.floats(0.0, 10.0)),
    )
    if draw(st.booleans()):  # a trading record, for Kelly sizing
        ctx = with_record(ctx, draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 500.0)), -draw(st.floats(0.0, 500.0)))
    return ctx, risk_state(draw, ctx)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baseline_contexts())
def test_property_the_baseline_always_passes_the_validator(case: tuple[TradingContext, RiskState]) -> None:
    ctx, state = case
    decision = decide(ctx)
    result = DecisionValidator().validate(decision, ctx, state)

    assert [v.status for v in result.verdicts] == ["accepted"] * len(ctx.symbols), [v.reasons for v in result.verdicts]
    assert result.errors == []
    assert result.final_decision.decisions == decision.decisions


# ---- the built-in strategies ---------------------------------------------------------------------------

BUILTINS = {s.strategy_id: s for s in builtin_strategies()}


@st.composite
def builtin_cases(draw: st.DrawFn, strategy: TradingStrategy) -> tuple[TradingContext, RiskState]:
    """Realistic markets and accounts (Binance fees, funding within +-0.1%) under one built-in strategy."""
    markets = {}
    for s in ("BTC", "ETH", "SOL"):
        price = f.price_of(s)
        direction = draw(st.sampled_from([1, -1, 1, -1, 0]))
        rsi = draw(st.floats(50.5, 69.5)) if direction >= 0 else draw(st.floats(30.5, 49.5))
        atr = draw(st.floats(0.0005, 0.05)) * price
        interval = f.trending_set(price, direction, rsi=rsi, atr=atr)
        markets[s] = f.asset_market_data(
            s,
            price=price,
            interval=interval,
            long_interval=f.trending_set(price, direction),
            history=2,
            funding_rate=draw(st.floats(-0.001, 0.001)),
        )
    positions = [
        f.position(s, draw(st.sampled_from(["long", "short"]))) for s in markets if draw(st.integers(0, 4)) == 0
    ]
    balance = draw(st.floats(500.0, 200_000.0))
    ctx = context(
        markets,
        strategy=strategy,
        positions=positions,
        balance=balance,
        max_position_size=balance * draw(st.floats(0.05, 1.0)),
        taker_fee_bps=draw(st.sampled_from([4.5, 5.0])),
    )
    state = RiskState(
        now=f.NOW,
        day_start_equity=balance,
        day_pnl_usd=0.0,
        account_max_leverage=draw(st.sampled_from([2.0, 5.0, 10.0, 20.0])),
        venue_max_leverage={s: 20.0 for s in markets},
        maintenance_margin_rate=draw(st.sampled_from([0.004, 0.005, 1 / 80, 1 / 40])),
    )
    return ctx, state


@pytest.mark.parametrize("strategy_id", list(BUILTINS))
def test_property_the_baseline_passes_the_validator_under_every_builtin_strategy(strategy_id: str) -> None:
    strategy = BUILTINS[strategy_id]
    entries = 0

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(builtin_cases(strategy))
    def check(case: tuple[TradingContext, RiskState]) -> None:
        nonlocal entries
        ctx, state = case
        decision = decide(ctx)
        result = DecisionValidator().validate(decision, ctx, state)
        assert [v.status for v in result.verdicts] == ["accepted"] * 3, [v.reasons for v in result.verdicts]
        assert result.final_decision.decisions == decision.decisions
        entries += sum(d.action in ("buy", "sell") for d in decision.decisions)

    check()
    assert entries > 0  # the strategy does trade: the property is not vacuous


@pytest.mark.parametrize("strategy_id", list(BUILTINS))
@pytest.mark.parametrize("direction", [1, -1])
def test_the_baseline_trades_every_builtin_strategy_within_its_parameters(strategy_id: str, direction: int) -> None:
    strategy = BUILTINS[strategy_id]
    risk = strategy.risk_parameters
    ind = f.trending_set(BTC, direction, atr=BTC * 0.004)
    ctx = context({"BTC": market(ind, ind)}, strategy=strategy, balance=10_000.0, max_position_size=10_000.0)
    item = only(ctx)

    assert item.action == ("buy" if direction > 0 else "sell")
    assert item.sl_price is not None and item.tp_price is not None
    distance = abs(BTC - item.sl_price)
    assert distance <= BTC * risk.stop_loss_percentage / 100 + 1e-6
    assert abs(item.tp_price - BTC) == pytest.approx(distance * risk.take_profit_ratio)
    assert risk_at_stop(item, risk.max_leverage) <= 10_000.0 * risk.max_risk_per_trade / 100 + 1e-9
    state = RiskState(now=f.NOW, account_max_leverage=10.0)
    assert DecisionValidator().validate(decide(ctx), ctx, state).verdicts[0].status == "accepted"
