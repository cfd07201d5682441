"""Every risk parameter a strategy declares is enforced somewhere, and a test here proves it.

One section per rule of `app.services.llm.risk_rules` (daily loss, cooldown, leverage, liquidation, widest
stop, reward/risk, fees and funding, risk per trade, positions, sizing, reduce-only), each driven through the
validator as the decision engine drives it (`validate(decision, context, risk_state)`). `ENFORCED` at the end
maps every parameter of `StrategyRiskParameters` (plus `max_positions` and `position_sizing`) to its test, so a
new parameter without a rule fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import pytest

from app.core.clock import ManualClock
from app.schemas.trading_decision import (
    AssetDecision,
    OrderAdjustment,
    PositionAdjustment,
    PositionSummary,
    StrategyRiskParameters,
    TradingContext,
    TradingStrategy,
)
from app.schemas.validation import AssetVerdict, RiskState, ValidationResult
from app.services.exchange.base import FEE_PROFILES
from app.services.exchange.paper import PaperVenue
from app.services.execution.executor import Executor, entry_leverage
from app.services.llm.decision_validator import DecisionValidator
from app.services.llm.risk_rules import effective_leverage, liquidation_price
from app.services.market_data.base import MarketRules
from tests import factories as f

NOW = f.NOW
BTC = f.price_of("BTC")
ETH = f.price_of("ETH")


def state(**overrides: Any) -> RiskState:
    """A state with no pressure unless told: no loss today, no recent trade, no leverage caps."""
    return RiskState(now=NOW, **overrides)


def kind(position_sizing: str, **risk: float) -> TradingStrategy:
    return f.strategy(**risk).model_copy(update={"position_sizing": position_sizing})


def context(
    strategy: TradingStrategy | None = None,
    *,
    positions: tuple[PositionSummary, ...] = (),
    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL"),
    funding: float | None = 0.0001,
    atr: float | None = None,
    **account: Any,
) -> TradingContext:
    market = {
        s: f.asset_market_data(
            s,
            history=1,
            funding_rate=funding,
            interval=f.indicator_set(price=f.price_of(s), atr=None if atr is None else atr * f.price_of(s)),
        )
        for s in symbols
    }
    acct = f.account_context(positions=positions, active_strategy=strategy or f.strategy(), **account)
    return f.trading_context(symbols, account=acct, market=market)


def validate(items: list[AssetDecision], ctx: TradingContext, risk: RiskState | None = None) -> ValidationResult:
    return DecisionValidator().validate(f.trading_decision(items), ctx, risk)


def verdict(result: ValidationResult, asset: str = "BTC") -> AssetVerdict:
    return next(v for v in result.verdicts if v.asset == asset)


def entry(
    action: Literal["buy", "sell"],
    *,
    stop_pct: float,
    reward_r: float | None = 2.0,
    allocation: float = 500.0,
    asset: str = "BTC",
    confidence: float = 60.0,
) -> AssetDecision:
    """An entry with its stop `stop_pct` % away and its target `reward_r` times as far (None: no target)."""
    price = f.price_of(asset)
    sign = 1 if action == "buy" else -1
    distance = price * stop_pct / 100
    tp = None if reward_r is None else price + sign * distance * reward_r
    item = f.decision(asset, action, allocation_usd=allocation, sl_price=price - sign * distance, tp_price=tp)
    return item.model_copy(update={"confidence": confidence})


def increase(asset: str = "BTC", amount: float = 100.0) -> AssetDecision:
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=amount)
    return f.decision(asset, "adjust_position", position_adjustment=adj)


def decrease(asset: str = "BTC", amount: float = 100.0) -> AssetDecision:
    adj = PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=amount)
    return f.decision(asset, "adjust_position", position_adjustment=adj)


def move_stop(asset: str = "BTC") -> AssetDecision:
    """Raise a long's stop to 1% below the price."""
    level = f.price_of(asset) * 0.99
    return f.decision(asset, "adjust_orders", order_adjustment=OrderAdjustment(adjust_sl=True, new_sl_price=level))


def at_risk(item: AssetDecision, leverage: float, fee_bps: float = 5.0) -> float:
    """The validator's measure: the loss at the stop plus the round trip's taker fees."""
    assert item.sl_price is not None
    price = f.price_of(item.asset)
    return item.allocation_usd * leverage * (abs(price - item.sl_price) / price + 2 * fee_bps / 10_000)


# ---- max_daily_loss ------------------------------------------------------------------------------------


def daily_loss_case() -> tuple[list[AssetDecision], TradingContext]:
    """A new BTC long, an increase of the ETH long and, on the SOL long, a close."""
    positions = (f.position("ETH", "long"), f.position("SOL", "long"))
    ctx = context(f.strategy(max_daily_loss=3.0), positions=positions)
    return [entry("buy", stop_pct=1.0), increase("ETH"), f.decision("SOL", "close_position")], ctx


def test_max_daily_loss_reached_blocks_entries_and_increases_but_not_closes() -> None:
    items, ctx = daily_loss_case()
    result = validate(items, ctx, state(day_start_equity=10_000.0, day_pnl_usd=-300.0))  # down exactly 3%

    assert [v.status for v in result.verdicts] == ["rejected", "rejected", "accepted"]
    for asset in ("BTC", "ETH"):
        reason = verdict(result, asset).reasons[0]
        assert "daily loss limit reached: down 3.00% today, the strategy allows 3%" in reason
        assert verdict(result, asset).final.action == "hold"
    assert verdict(result, "SOL").final.action == "close_position"


@pytest.mark.parametrize(
    "item",
    [move_stop("ETH"), decrease("ETH"), f.decision("ETH", "close_position"), f.decision("ETH", "hold")],
    ids=["adjust_orders", "decrease", "close_position", "hold"],
)
def test_max_daily_loss_reached_still_lets_reducing_actions_pass(item: AssetDecision) -> None:
    ctx = context(f.strategy(max_daily_loss=3.0), positions=(f.position("ETH", "long"),))
    result = validate([item], ctx, state(day_start_equity=10_000.0, day_pnl_usd=-1_000.0))
    assert verdict(result, "ETH").status == "accepted", verdict(result, "ETH").reasons


@pytest.mark.parametrize(
    ("day_start", "pnl"),
    [(10_000.0, -299.0), (10_000.0, 500.0), (None, -5_000.0)],
    ids=["just-below-the-limit", "a-winning-day", "no-snapshot-today"],
)
def test_max_daily_loss_not_reached_lets_entries_and_increases_pass(day_start: float | None, pnl: float) -> None:
    items, ctx = daily_loss_case()
    result = validate(items, ctx, state(day_start_equity=day_start, day_pnl_usd=pnl))
    assert [v.status for v in result.verdicts] == ["accepted"] * 3, [v.reasons for v in result.verdicts]


# ---- cooldown_period -----------------------------------------------------------------------------------


def test_cooldown_blocks_new_exposure_in_the_same_asset_only() -> None:
    ctx = context(f.strategy(cooldown_period=600), positions=(f.position("SOL", "long"),))
    recent = {"BTC": NOW - timedelta(seconds=599), "SOL": NOW - timedelta(seconds=30)}
    items = [entry("buy", stop_pct=1.0), entry("sell", stop_pct=1.0, asset="ETH"), increase("SOL")]
    result = validate(items, ctx, state(last_trade_at=recent))

    assert [v.status for v in result.verdicts] == ["rejected", "accepted", "rejected"]
    assert "cooldown: the last BTC trade was 599 s ago and the strategy waits 600 s" in verdict(result).reasons[0]
    assert "cooldown" in verdict(result, "SOL").reasons[0]


def test_cooldown_lets_reducing_actions_pass() -> None:
    ctx = context(f.strategy(cooldown_period=600), positions=(f.position("BTC", "long"),))
    recent = {"BTC": NOW - timedelta(seconds=1)}
    for item in (move_stop(), decrease(), f.decision("BTC", "close_position")):
        assert verdict(validate([item], ctx, state(last_trade_at=recent))).status == "accepted"


@pytest.mark.parametrize(("cooldown", "elapsed"), [(600, 600), (600, 3_600), (0, 0)])
def test_after_the_cooldown_the_asset_may_trade_again(cooldown: int, elapsed: int) -> None:
    ctx = context(f.strategy(cooldown_period=cooldown))
    recent = {"BTC": NOW - timedelta(seconds=elapsed)}
    assert verdict(validate([entry("buy", stop_pct=1.0)], ctx, state(last_trade_at=recent))).status == "accepted"


# ---- max_leverage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy_max", "account_max", "venue_max", "expected"),
    [
        (3.0, None, None, 3.0),  # the strategy alone
        (8.0, 5.0, None, 5.0),  # the account's cap is lower
        (8.0, 20.0, 2.0, 2.0),  # the venue's cap for the asset is lower
        (2.0, 20.0, 125.0, 2.0),  # the strategy is the lowest
        (3.0, 0.5, None, 1.0),  # never below 1x
    ],
)
def test_effective_leverage_is_the_lowest_of_strategy_account_and_venue(
    strategy_max: float, account_max: float | None, venue_max: float | None, expected: float
) -> None:
    strategy = f.strategy(max_leverage=strategy_max)
    venue = {"BTC": venue_max} if venue_max is not None else {}
    risk = state(account_max_leverage=account_max, venue_max_leverage=venue)

    assert effective_leverage(strategy, "BTC", risk) == expected
    rules = MarketRules("BTC", "BTC/USDT:USDT", 0.1, 0.001, 5.0, venue_max if venue_max is not None else 1_000.0)
    # the executor opens at the same leverage the validator sized with
    assert entry_leverage(strategy, account_max if account_max is not None else 1_000.0, rules) == expected


@pytest.mark.parametrize(
    "capped",
    [state(account_max_leverage=2.0), state(venue_max_leverage={"BTC": 2.0})],
    ids=["account-cap", "venue-cap"],
)
def test_risk_per_trade_is_sized_at_the_effective_leverage(capped: RiskState) -> None:
    # strategy 10x, capped at 2x: 1% of 10000 at a 1% stop and 2 x 5 bps fees allows 100 / (2 x 1.1%) = 4545.45
    ctx = context(f.strategy(max_leverage=10.0, max_risk_per_trade=1.0), max_position_size=100_000.0)
    item = entry("buy", stop_pct=1.0, allocation=4_000.0)
    assert verdict(validate([item], ctx, capped)).status == "accepted"
    # at the strategy's own 10x the same allocation risks 440 USD: reduced to 909.09
    reduced = verdict(validate([item], ctx, state()))
    assert reduced.status == "adjusted"
    assert reduced.final.allocation_usd == pytest.approx(909.09)


async def test_the_executor_opens_at_the_effective_leverage() -> None:
    strategy = f.strategy(max_leverage=8.0, max_risk_per_trade=5.0)
    rules = {"BTC": MarketRules("BTC", "BTC/USDT:USDT", 0.1, 0.001, 5.0, 4.0)}
    ctx = context(strategy, symbols=("BTC",))
    risk = state(account_max_leverage=6.0, venue_max_leverage={"BTC": 4.0})
    result = validate([entry("buy", stop_pct=1.0, allocation=500.0)], ctx, risk)
    assert verdict(result).status == "accepted"

    venue = PaperVenue(initial_balance=10_000.0, rules=rules, fees=FEE_PROFILES["binanceusdm"], clock=ManualClock(NOW))
    venue.set_mark_price("BTC", BTC)
    report = await Executor(rules).execute(
        venue,
        result.verdicts,
        account_id=1,
        decision_id=1,
        strategy=strategy,
        account_max_leverage=6.0,
        prices={"BTC": BTC},
    )
    assert report.errors == []
    [position] = await venue.fetch_positions()
    assert position.leverage == effective_leverage(strategy, "BTC", risk) == 4.0
    assert position.size * BTC / position.leverage == pytest.approx(500.0, rel=2e-3)  # margin = the allocation


# ---- liquidation beyond the stop -----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["buy", "sell"])
def test_a_stop_beyond_the_liquidation_price_is_rejected(action: Literal["buy", "sell"]) -> None:
    # at 10x (MMR 0.5%) a long is liquidated 9.55% below the price, a short 9.45% above: a 9.6% stop comes too late
    ctx = context(f.strategy(max_leverage=10.0, stop_loss_percentage=20.0, max_risk_per_trade=50.0))
    result = validate([entry(action, stop_pct=9.6, reward_r=2.0)], ctx, state())

    btc = verdict(result)
    assert btc.status == "rejected"
    liquidation = liquidation_price(BTC, 10.0, action == "buy", 0.005)
    assert f"beyond the liquidation price {liquidation:.6g} at 10x" in btc.reasons[0]


@pytest.mark.parametrize("action", ["buy", "sell"])
@pytest.mark.parametrize(
    "capped",
    [state(account_max_leverage=5.0), state(venue_max_leverage={"BTC": 5.0})],
    ids=["account-cap", "venue-cap"],
)
def test_the_same_stop_at_a_lower_effective_leverage_is_accepted(
    action: Literal["buy", "sell"], capped: RiskState
) -> None:
    ctx = context(f.strategy(max_leverage=10.0, stop_loss_percentage=20.0, max_risk_per_trade=50.0))
    result = validate([entry(action, stop_pct=9.6, reward_r=2.0)], ctx, capped)
    assert verdict(result).status == "accepted", verdict(result).reasons


def test_the_liquidation_check_uses_the_assets_own_maintenance_margin_rate() -> None:
    # 10x long: liquidated at 90452 with an MMR of 0.5%, at 92308 with Hyperliquid's 2.5% (an asset allowing 20x);
    # a stop at 91000 is fine for the first and too late for the second
    ctx = context(f.strategy(max_leverage=10.0, stop_loss_percentage=20.0, max_risk_per_trade=50.0))
    item = entry("buy", stop_pct=9.0, reward_r=2.0)
    assert verdict(validate([item], ctx, state(maintenance_margin_rate=0.005))).status == "accepted"
    per_asset = state(maintenance_margin_rate=0.005, maintenance_margin_rates={"BTC": 0.025})
    assert verdict(validate([item], ctx, per_asset)).status == "rejected"


# ---- stop_loss_percentage ------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "tightened"), [("buy", BTC * 0.98), ("sell", BTC * 1.02)])
def test_a_stop_wider_than_the_strategys_widest_is_tightened(action: Literal["buy", "sell"], tightened: float) -> None:
    ctx = context(f.strategy(stop_loss_percentage=2.0, take_profit_ratio=2.0))
    item = entry(action, stop_pct=5.0, reward_r=2.0)  # target 10% away: still at least 2R of the tightened stop
    btc = verdict(validate([item], ctx, state()))

    assert btc.status == "adjusted"
    assert btc.final.sl_price == pytest.approx(tightened)
    assert btc.final.tp_price == item.tp_price
    assert "stop tightened to the strategy's widest stop of 2%" in btc.reasons[0]


def test_a_stop_within_the_widest_is_left_alone() -> None:
    ctx = context(f.strategy(stop_loss_percentage=2.0))
    item = entry("buy", stop_pct=2.0)
    btc = verdict(validate([item], ctx, state()))
    assert btc.status == "accepted"
    assert btc.final == item


# ---- take_profit_ratio ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["buy", "sell"])
@pytest.mark.parametrize("reward_r", [1.5, 1.9, 1.99])
def test_a_target_closer_than_the_reward_to_risk_ratio_is_rejected(
    action: Literal["buy", "sell"], reward_r: float
) -> None:
    ctx = context(f.strategy(take_profit_ratio=2.0))
    btc = verdict(validate([entry(action, stop_pct=1.0, reward_r=reward_r)], ctx, state()))
    assert btc.status == "rejected"
    assert f"reward/risk {reward_r:.2f} is below the strategy's 2" in btc.reasons[0]


def test_a_target_at_the_ratio_is_accepted() -> None:
    ctx = context(f.strategy(take_profit_ratio=2.5))
    assert verdict(validate([entry("buy", stop_pct=1.0, reward_r=2.5)], ctx, state())).status == "accepted"


@pytest.mark.parametrize(("action", "target"), [("buy", BTC * 1.03), ("sell", BTC * 0.97)])
def test_a_missing_target_is_set_at_the_ratio(action: Literal["buy", "sell"], target: float) -> None:
    ctx = context(f.strategy(take_profit_ratio=3.0))
    btc = verdict(validate([entry(action, stop_pct=1.0, reward_r=None)], ctx, state()))
    assert btc.status == "adjusted"
    assert btc.final.tp_price == pytest.approx(target)
    assert "no take-profit given; set at 3R" in btc.reasons[0]


def test_a_missing_target_is_set_from_the_tightened_stop() -> None:
    ctx = context(f.strategy(stop_loss_percentage=1.0, take_profit_ratio=2.0))
    btc = verdict(validate([entry("buy", stop_pct=4.0, reward_r=None)], ctx, state()))
    assert btc.final.sl_price == pytest.approx(BTC * 0.99)
    assert btc.final.tp_price == pytest.approx(BTC * 1.02)


# ---- fees and funding ----------------------------------------------------------------------------------


def scalp(action: Literal["buy", "sell"]) -> AssetDecision:
    # a 0.3% stop at 1.5R: a 0.45% target
    return entry(action, stop_pct=0.3, reward_r=1.5)


@pytest.mark.parametrize(("action", "funding"), [("buy", 0.001), ("sell", -0.001)])
def test_a_target_not_worth_the_fees_and_an_adverse_funding_period_is_rejected(
    action: Literal["buy", "sell"], funding: float
) -> None:
    # costs: 2 x 5 bps + 0.1% funding against the position = 0.2%; 3 x 0.2% = 0.6% > the 0.45% target
    ctx = context(f.strategy(take_profit_ratio=1.5, stop_loss_percentage=0.5), funding=funding)
    btc = verdict(validate([scalp(action)], ctx, state()))
    assert btc.status == "rejected"
    assert "not worth the round-trip fees and one funding period (0.200%)" in btc.reasons[0]


@pytest.mark.parametrize(("action", "funding"), [("buy", -0.001), ("sell", 0.001), ("buy", None)])
def test_the_same_trade_with_favourable_or_no_funding_is_accepted(
    action: Literal["buy", "sell"], funding: float | None
) -> None:
    # funding in the position's favour is not counted: costs 0.1%, 3 x 0.1% = 0.3% <= the 0.45% target
    ctx = context(f.strategy(take_profit_ratio=1.5, stop_loss_percentage=0.5), funding=funding)
    assert verdict(validate([scalp(action)], ctx, state())).status == "accepted"


def test_a_target_not_worth_three_round_trips_of_fees_is_rejected_even_without_funding() -> None:
    # a 0.1% stop at 2R: a 0.2% target, below 3 x 2 x 5 bps = 0.3%; at 2 bps fees (0.12%) it is worth it
    ctx = context(f.strategy(take_profit_ratio=2.0), funding=0.0)
    assert verdict(validate([entry("buy", stop_pct=0.1)], ctx, state())).status == "rejected"
    cheap = context(f.strategy(take_profit_ratio=2.0), funding=0.0, taker_fee_bps=2.0)
    assert verdict(validate([entry("buy", stop_pct=0.1)], cheap, state())).status == "accepted"


# ---- max_risk_per_trade --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("risk_pct", "stop_pct", "leverage", "fee_bps", "expected"),
    [
        (1.0, 2.0, 3.0, 5.0, 1_587.30),  # 100 / (3 x (2% + 0.1%))
        (1.0, 2.0, 3.0, 0.0, 1_666.66),  # without fees 100 / (3 x 2%) = 1666.67, floored to the cent
        (0.5, 1.0, 10.0, 5.0, 454.54),  # 50 / (10 x 1.1%)
    ],
)
def test_an_allocation_above_the_risk_budget_is_reduced_to_it_fees_included(
    risk_pct: float, stop_pct: float, leverage: float, fee_bps: float, expected: float
) -> None:
    strategy = f.strategy(max_risk_per_trade=risk_pct, max_leverage=leverage, stop_loss_percentage=5.0)
    ctx = context(strategy, max_position_size=100_000.0, taker_fee_bps=fee_bps, funding=0.0)
    btc = verdict(validate([entry("buy", stop_pct=stop_pct, allocation=5_000.0)], ctx, state()))

    assert btc.status == "adjusted"
    assert btc.final.allocation_usd == pytest.approx(expected)
    budget = 10_000.0 * risk_pct / 100
    assert at_risk(btc.final, leverage, fee_bps) <= budget
    assert at_risk(btc.final, leverage, fee_bps) >= budget - 0.01 * leverage * (stop_pct / 100 + 2 * fee_bps / 1e4)
    assert f"exceeds {risk_pct:g}% of equity ({budget:.2f} USD)" in btc.reasons[0]


def test_the_round_trip_fees_count_towards_the_risk() -> None:
    # 1650 USD at 3x with a 2% stop loses 99 USD at the stop, within the 100 allowed; with 2 x 5 bps of fees
    # it loses 103.95: reduced to 1587.30. Without fees (a venue charging none) it fits.
    item = entry("buy", stop_pct=2.0, allocation=1_650.0)
    btc = verdict(validate([item], context(f.strategy(max_risk_per_trade=1.0)), state()))
    assert btc.status == "adjusted"
    assert btc.final.allocation_usd == pytest.approx(1_587.30)
    assert "103.95 USD at risk (fees included)" in btc.reasons[0]
    free = context(f.strategy(max_risk_per_trade=1.0), taker_fee_bps=0.0)
    assert verdict(validate([item], free, state())).status == "accepted"


def test_an_allocation_within_the_risk_budget_is_not_touched() -> None:
    ctx = context(f.strategy(max_risk_per_trade=1.0))
    item = entry("buy", stop_pct=2.0, allocation=1_587.30)
    btc = verdict(validate([item], ctx, state()))
    assert btc.status == "accepted"
    assert btc.final == item


def test_the_risk_budget_is_a_share_of_equity() -> None:
    # 2500 USD at 3x with a 2% stop risks 157.50 USD with fees: above 1% of 10000, within 1% of 20000
    item = entry("buy", stop_pct=2.0, allocation=2_500.0)
    small = context(f.strategy(max_risk_per_trade=1.0), balance=10_000.0)
    assert verdict(validate([item], small, state())).status == "adjusted"
    large = context(f.strategy(max_risk_per_trade=1.0), balance=20_000.0)
    assert verdict(validate([item], large, state())).status == "accepted"


# ---- max_positions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("open_now", "accepted"),
    [(0, {"BTC", "ETH", "SOL"}), (1, {"ETH", "SOL"}), (2, {"ETH"}), (3, set())],
)
def test_with_n_open_only_the_max_minus_n_most_confident_entries_pass(open_now: int, accepted: set[str]) -> None:
    symbols = ("BTC", "ETH", "SOL", "DOT", "ADA", "XRP")
    held = tuple(f.position(s, "long") for s in ("DOT", "ADA", "XRP")[:open_now])
    ctx = context(f.strategy(max_positions=3), positions=held, symbols=symbols, max_position_size=100.0)
    items = [
        entry("buy", stop_pct=1.0, allocation=50.0, asset="BTC", confidence=50.0),
        entry("buy", stop_pct=1.0, allocation=50.0, asset="ETH", confidence=90.0),
        entry("sell", stop_pct=1.0, allocation=50.0, asset="SOL", confidence=70.0),
    ]
    result = validate(items, ctx, state())

    passed = {v.asset for v in result.verdicts if v.final.action in ("buy", "sell")}
    assert passed == accepted
    for v in result.verdicts:
        if v.asset in {"BTC", "ETH", "SOL"} - accepted:
            assert v.status == "rejected"
            assert "the strategy allows 3 open positions" in v.reasons[0]
    assert open_now + len(passed) <= 3


def test_max_positions_does_not_limit_actions_on_open_positions() -> None:
    held = tuple(f.position(s, "long") for s in ("BTC", "ETH"))
    ctx = context(f.strategy(max_positions=1), positions=held)
    result = validate([f.decision("BTC", "close_position"), move_stop("ETH")], ctx, state())
    assert [v.status for v in result.verdicts[:2]] == ["accepted", "accepted"]


# ---- position_sizing -----------------------------------------------------------------------------------


def test_volatility_adjusted_sizing_needs_a_stop_at_least_one_atr_away() -> None:
    # ATR 2.5% of the price: a 2% stop is inside the noise, a 3% stop is not
    ctx = context(kind("volatility_adjusted", stop_loss_percentage=4.0), atr=0.025)
    close = verdict(validate([entry("buy", stop_pct=2.0)], ctx, state()))
    assert close.status == "rejected"
    assert "volatility-adjusted sizing needs a stop at least one ATR (2500) away" in close.reasons[0]
    assert verdict(validate([entry("buy", stop_pct=3.0)], ctx, state())).status == "accepted"


def test_the_one_atr_rule_is_only_for_volatility_adjusted_sizing() -> None:
    for sizing in ("fixed", "percentage", "kelly"):
        ctx = context(kind(sizing, stop_loss_percentage=4.0), atr=0.025)
        assert verdict(validate([entry("buy", stop_pct=2.0)], ctx, state())).status == "accepted", sizing


def with_record(ctx: TradingContext, win_rate: float, avg_win: float, avg_loss: float) -> TradingContext:
    account = ctx.account_state
    perf = account.recent_performance.model_copy(
        update={"win_rate": win_rate, "avg_win": avg_win, "avg_loss": avg_loss}
    )
    return ctx.model_copy(update={"account_state": account.model_copy(update={"recent_performance": perf})})


def test_kelly_sizing_caps_the_allocation_at_half_kelly() -> None:
    # 60% wins at 1:1 -> Kelly 0.2; half of it is 10% of 10000 = 1000 USD of notional, 333.33 of margin at 3x
    ctx = with_record(context(kind("kelly", max_risk_per_trade=50.0)), 0.6, 100.0, -100.0)
    btc = verdict(validate([entry("buy", stop_pct=1.0, allocation=1_000.0)], ctx, state()))
    assert btc.status == "adjusted"
    assert btc.final.allocation_usd == pytest.approx(333.33)
    assert "allocation capped at half-Kelly (0.100 of equity)" in btc.reasons[0]
    below = verdict(validate([entry("buy", stop_pct=1.0, allocation=300.0)], ctx, state()))
    assert below.status == "accepted"


@pytest.mark.parametrize(("win_rate", "avg_win", "avg_loss"), [(0.5, 100.0, -100.0), (0.3, 100.0, -50.0)])
def test_kelly_sizing_refuses_entries_while_the_kelly_fraction_is_not_positive(
    win_rate: float, avg_win: float, avg_loss: float
) -> None:
    ctx = with_record(context(kind("kelly")), win_rate, avg_win, avg_loss)
    btc = verdict(validate([entry("buy", stop_pct=1.0)], ctx, state()))
    assert btc.status == "rejected"
    assert "Kelly fraction from the recent trades is not positive" in btc.reasons[0]


def test_kelly_sizing_never_leaves_an_entry_with_no_money() -> None:
    # half-Kelly of 0.0001 x 100 USD at 3x is a fraction of a cent: the entry is refused, not sized to 0 USD
    ctx = with_record(context(kind("kelly"), balance=100.0), 0.5001, 100.0, -100.0)
    btc = verdict(validate([entry("buy", stop_pct=1.0, allocation=1.0)], ctx, state()))
    assert btc.status == "rejected"
    assert btc.final.action == "hold"
    assert "less than a cent" in btc.reasons[0]


def test_kelly_sizing_without_both_wins_and_losses_sizes_by_the_risk_rule() -> None:
    for record in ((0.0, 0.0, 0.0), (1.0, 100.0, 0.0), (0.0, 0.0, -100.0)):
        ctx = with_record(context(kind("kelly")), *record)
        assert verdict(validate([entry("buy", stop_pct=1.0)], ctx, state())).status == "accepted", record


@pytest.mark.parametrize("sizing", ["fixed", "percentage"])
def test_fixed_and_percentage_sizing_size_by_the_risk_rule(sizing: str) -> None:
    ctx = context(kind(sizing, max_risk_per_trade=1.0))
    btc = verdict(validate([entry("buy", stop_pct=2.0, allocation=5_000.0)], ctx, state()))
    assert btc.final.allocation_usd == pytest.approx(1_587.30)


# ---- reduce-only ---------------------------------------------------------------------------------------


def test_a_reducing_account_lets_only_reducing_actions_pass() -> None:
    symbols = ("BTC", "ETH", "SOL", "DOT", "ADA", "XRP")
    held = tuple(f.position(s, "long") for s in ("SOL", "DOT", "ADA", "XRP"))
    ctx = context(positions=held, symbols=symbols)
    items = [
        entry("buy", stop_pct=1.0),
        entry("sell", stop_pct=1.0, asset="ETH"),
        increase("SOL"),
        decrease("DOT"),
        f.decision("ADA", "close_position"),
        move_stop("XRP"),
    ]
    result = validate(items, ctx, state(reduce_only_reason="the account is REDUCING"))

    assert [v.status for v in result.verdicts] == ["rejected"] * 3 + ["accepted"] * 3
    for v in result.verdicts[:3]:
        assert v.reasons == ["only reducing actions are allowed: the account is REDUCING"]
        assert v.final.action == "hold"
    assert result.final_decision.total_allocation_usd == 0


# ---- every parameter has its rule ----------------------------------------------------------------------

ENFORCED: dict[str, Callable[..., object]] = {
    "max_risk_per_trade": test_an_allocation_above_the_risk_budget_is_reduced_to_it_fees_included,
    "max_daily_loss": test_max_daily_loss_reached_blocks_entries_and_increases_but_not_closes,
    "stop_loss_percentage": test_a_stop_wider_than_the_strategys_widest_is_tightened,
    "take_profit_ratio": test_a_target_closer_than_the_reward_to_risk_ratio_is_rejected,
    "max_leverage": test_the_executor_opens_at_the_effective_leverage,
    "cooldown_period": test_cooldown_blocks_new_exposure_in_the_same_asset_only,
    "max_positions": test_with_n_open_only_the_max_minus_n_most_confident_entries_pass,
    "position_sizing": test_volatility_adjusted_sizing_needs_a_stop_at_least_one_atr_away,
}


def test_every_risk_parameter_a_strategy_declares_has_a_rule_and_a_test() -> None:
    declared = {*StrategyRiskParameters.model_fields, "max_positions", "position_sizing"}
    assert declared == set(ENFORCED)
    assert set(TradingStrategy.model_fields["position_sizing"].annotation.__args__) == {  # type: ignore[union-attr]
        "fixed",
        "percentage",
        "kelly",
        "volatility_adjusted",
    }
