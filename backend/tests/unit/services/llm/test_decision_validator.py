"""The decision validator: the model proposes, the validator disposes. Every rule, then properties."""

from __future__ import annotations

from typing import Literal

import pytest

from app.schemas.trading_decision import (
    AssetDecision,
    OrderAdjustment,
    PositionAdjustment,
    TradingContext,
)
from app.schemas.validation import AssetVerdict, ValidationResult
from app.services.llm.decision_validator import DecisionValidator
from tests import factories as f

SYMBOLS = ("BTC", "ETH", "SOL")


def validate(decisions: list[AssetDecision], context: TradingContext | None = None, **kw: float) -> ValidationResult:
    return DecisionValidator().validate(f.trading_decision(decisions, **kw), context or f.trading_context())


def verdict(result: ValidationResult, asset: str) -> AssetVerdict:
    return next(v for v in result.verdicts if v.asset == asset)


def context_with(*positions: object, **account: float) -> TradingContext:
    return f.trading_context(account=f.account_context(positions=positions, **account))  # type: ignore[arg-type]


# ---- the happy path ------------------------------------------------------------------------------------


def test_a_well_formed_decision_is_accepted_unchanged() -> None:
    decisions = [f.buy("BTC", 1_000.0), f.sell("ETH", 500.0), f.decision("SOL", "hold")]
    result = validate(decisions)

    assert result.is_valid
    assert [v.status for v in result.verdicts] == ["accepted"] * 3
    assert result.errors == []
    assert result.final_decision.decisions == decisions
    assert result.final_decision.total_allocation_usd == pytest.approx(1_500.0)
    assert not result.has_fallback


async def test_validate_decision_counts_verdicts() -> None:
    validator = DecisionValidator()
    context = f.trading_context()
    await validator.validate_decision(f.trading_decision([f.buy("BTC"), f.decision("ETH", "close_position")]), context)

    assert await validator.get_validation_metrics() == {"accepted": 2, "adjusted": 0, "rejected": 1}


# ---- symbols -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BTCUSDT", "btc", "BTC/USDT:USDT", "BTC-PERP", " BTC "])
def test_venue_style_symbols_are_normalised_and_the_original_is_kept(name: str) -> None:
    original = f.buy("BTC").model_copy(update={"asset": name})
    result = validate([original])

    btc = verdict(result, "BTC")
    assert btc.status == "accepted"
    assert btc.final.asset == "BTC"
    assert btc.final.action == "buy"
    assert btc.original == original
    assert btc.original is not None and btc.original.asset == name
    assert result.final_decision.decisions[0].asset == "BTC"


@pytest.mark.parametrize("name", ["DOGE", "DOGEUSDT", "!!!", ""])
def test_a_decision_for_an_asset_outside_the_context_is_dropped(name: str) -> None:
    result = validate([f.buy("BTC"), f.decision(name, "buy", allocation_usd=100.0, sl_price=1.0)])

    assert [d.asset for d in result.final_decision.decisions] == list(SYMBOLS)
    assert any("dropped" in e for e in result.errors)
    assert result.final_decision.total_allocation_usd == pytest.approx(1_000.0)
    assert not result.is_valid, "an answer naming an asset outside the request is not valid as given"
    assert all(v.status != "rejected" for v in result.verdicts), "the requested assets keep their own verdicts"


def test_a_second_decision_for_the_same_asset_is_dropped_the_first_wins() -> None:
    first = f.buy("BTC", 1_000.0)
    second = f.sell("BTC", 2_000.0).model_copy(update={"asset": "BTCUSDT"})
    result = validate([first, second])

    assert verdict(result, "BTC").final == first
    assert [d.asset for d in result.final_decision.decisions].count("BTC") == 1
    assert any("second decision for BTC" in e for e in result.errors)
    assert not result.is_valid


def test_assets_the_model_left_out_become_fallback_holds_that_keep_the_exit_plan() -> None:
    eth = f.position("ETH", exit_plan="Trail the stop under the 4h EMA20.")
    result = validate([f.buy("BTC")], context_with(eth))

    for asset in ("ETH", "SOL"):
        v = verdict(result, asset)
        assert v.original is None
        assert v.is_fallback
        assert v.final.action == "hold"
        assert v.final.allocation_usd == 0
        assert v.reasons
    assert verdict(result, "ETH").final.exit_plan == "Trail the stop under the 4h EMA20."
    assert result.has_fallback
    assert [d.asset for d in result.final_decision.decisions] == list(SYMBOLS)


# ---- new positions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["buy", "sell"])
def test_an_entry_needs_a_positive_allocation(action: Literal["buy", "sell"]) -> None:
    price = f.price_of("BTC")
    sl = price * (0.98 if action == "buy" else 1.02)
    result = validate([f.decision("BTC", action, allocation_usd=0.0, sl_price=sl)])

    btc = verdict(result, "BTC")
    assert btc.status == "rejected"
    assert btc.final.action == "hold"
    assert btc.is_fallback
    assert "positive allocation" in " ".join(btc.reasons)


@pytest.mark.parametrize("action", ["buy", "sell"])
def test_an_entry_needs_a_stop_loss(action: Literal["buy", "sell"]) -> None:
    result = validate([f.decision("BTC", action, allocation_usd=1_000.0, sl_price=None)])

    btc = verdict(result, "BTC")
    assert btc.status == "rejected"
    assert btc.final.action == "hold"
    assert "stop-loss" in " ".join(btc.reasons)
    assert not result.is_valid


@pytest.mark.parametrize(
    ("action", "sl_factor", "tp_factor", "bad"),
    [
        ("buy", 1.01, 1.04, "stop-loss"),  # a long's stop above the price
        ("buy", 1.00, 1.04, "stop-loss"),  # ... or at it
        ("buy", 0.98, 0.97, "take-profit"),  # a long's target below the price
        ("sell", 0.99, 0.96, "stop-loss"),  # a short's stop below the price
        ("sell", 1.02, 1.03, "take-profit"),  # a short's target above the price
        ("sell", 1.02, 1.00, "take-profit"),  # ... or at it
    ],
)
def test_stops_and_targets_on_the_wrong_side_are_rejected(
    action: Literal["buy", "sell"], sl_factor: float, tp_factor: float, bad: str
) -> None:
    price = f.price_of("BTC")
    item = f.decision("BTC", action, allocation_usd=1_000.0, sl_price=price * sl_factor, tp_price=price * tp_factor)
    result = validate([item])

    btc = verdict(result, "BTC")
    assert btc.status == "rejected"
    assert f"{bad} " in btc.reasons[0] and "wrong side" in btc.reasons[0]
    assert btc.original == item
    assert btc.final.action == "hold"
    assert result.final_decision.total_allocation_usd == 0


@pytest.mark.parametrize(("action", "target"), [("buy", 104_000.0), ("sell", 96_000.0)])
def test_an_entry_without_a_target_gets_one_at_the_strategys_reward_to_risk(
    action: Literal["buy", "sell"], target: float
) -> None:
    # the stop is 2% (2000) away and the strategy's take_profit_ratio is 2: the target goes 4000 away
    item = (f.buy("BTC") if action == "buy" else f.sell("BTC")).model_copy(update={"tp_price": None})
    btc = verdict(validate([item]), "BTC")

    assert btc.status == "adjusted"
    assert btc.final.action == action
    assert btc.final.tp_price == pytest.approx(target)
    assert btc.final.sl_price == item.sl_price
    assert btc.final.allocation_usd == item.allocation_usd
    assert "no take-profit given; set at 2R" in btc.reasons[0]


@pytest.mark.parametrize(
    ("side", "action", "why"),
    [
        ("long", "buy", "already open"),
        ("long", "sell", "close it before"),
        ("short", "sell", "already open"),
        ("short", "buy", "close it before"),
    ],
)
def test_an_entry_on_an_asset_with_an_open_position_is_rejected(
    side: Literal["long", "short"], action: Literal["buy", "sell"], why: str
) -> None:
    context = context_with(f.position("BTC", side))
    item = f.buy("BTC") if action == "buy" else f.sell("BTC")
    result = validate([item], context)

    btc = verdict(result, "BTC")
    assert btc.status == "rejected"
    assert why in btc.reasons[0]
    assert btc.final.action == "hold"


def test_an_entry_for_an_asset_without_market_data_is_rejected() -> None:
    market = {s: f.asset_market_data(s) for s in ("ETH", "SOL")}
    context = f.trading_context(market=market)
    result = validate([f.buy("BTC")], context)

    assert verdict(result, "BTC").status == "rejected"
    assert "market data" in verdict(result, "BTC").reasons[0]


# ---- actions on an open position -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        f.decision("BTC", "close_position"),
        f.decision("BTC", "adjust_orders", order_adjustment=OrderAdjustment(adjust_sl=True, new_sl_price=95_000.0)),
        f.decision(
            "BTC",
            "adjust_position",
            position_adjustment=PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=100.0),
        ),
    ],
    ids=["close_position", "adjust_orders", "adjust_position"],
)
def test_position_actions_without_a_position_are_rejected(item: AssetDecision) -> None:
    result = validate([item])

    btc = verdict(result, "BTC")
    assert btc.status == "rejected"
    assert "no" in btc.reasons[0] and "position" in btc.reasons[0]
    assert btc.original == item


def test_close_position_on_an_open_position_is_accepted() -> None:
    result = validate([f.decision("BTC", "close_position")], context_with(f.position("BTC", "long")))
    assert verdict(result, "BTC").status == "accepted"
    assert verdict(result, "BTC").final.action == "close_position"


def test_a_position_action_that_commits_money_gets_its_allocation_set_to_zero() -> None:
    item = f.decision("BTC", "close_position", allocation_usd=700.0)
    result = validate([item], context_with(f.position("BTC", "long")))

    btc = verdict(result, "BTC")
    assert btc.status == "adjusted"
    assert btc.final.action == "close_position"
    assert btc.final.allocation_usd == 0
    assert btc.original is not None and btc.original.allocation_usd == 700.0


def test_adjust_orders_that_cancels_the_stop_without_a_new_one_is_rejected() -> None:
    adj = OrderAdjustment(cancel_sl=True, adjust_tp=True, new_tp_price=110_000.0)
    result = validate([f.decision("BTC", "adjust_orders", order_adjustment=adj)], context_with(f.position("BTC")))

    btc = verdict(result, "BTC")
    assert btc.status == "rejected"
    assert "unprotected" in btc.reasons[0]
    assert btc.final.action == "hold"


def test_adjust_orders_that_replaces_the_stop_is_accepted() -> None:
    adj = OrderAdjustment(cancel_sl=True, adjust_sl=True, new_sl_price=99_500.0)
    result = validate([f.decision("BTC", "adjust_orders", order_adjustment=adj)], context_with(f.position("BTC")))
    assert verdict(result, "BTC").status == "accepted"


@pytest.mark.parametrize(
    ("side", "adj"),
    [
        ("long", OrderAdjustment(adjust_sl=True, new_sl_price=100_500.0)),  # long stop above the price
        ("long", OrderAdjustment(adjust_tp=True, new_tp_price=99_000.0)),  # long target below the price
        ("short", OrderAdjustment(adjust_sl=True, new_sl_price=99_000.0)),  # short stop below the price
        ("short", OrderAdjustment(adjust_tp=True, new_tp_price=101_000.0)),  # short target above the price
        ("long", OrderAdjustment(adjust_sl=True)),  # adjust_sl without a price
        ("long", OrderAdjustment(adjust_tp=True)),  # adjust_tp without a price
    ],
)
def test_adjust_orders_with_a_bad_new_level_is_rejected(side: Literal["long", "short"], adj: OrderAdjustment) -> None:
    context = context_with(f.position("BTC", side))
    result = validate([f.decision("BTC", "adjust_orders", order_adjustment=adj)], context)
    assert verdict(result, "BTC").status == "rejected"


def test_adjust_orders_without_details_is_rejected() -> None:
    result = validate([f.decision("BTC", "adjust_orders")], context_with(f.position("BTC")))
    assert verdict(result, "BTC").status == "rejected"


def test_adjust_position_with_a_new_stop_on_the_wrong_side_is_rejected() -> None:
    adj = PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=100.0, new_sl_price=101_000.0)
    result = validate([f.decision("BTC", "adjust_position", position_adjustment=adj)], context_with(f.position("BTC")))
    assert verdict(result, "BTC").status == "rejected"


def test_adjust_position_increase_is_capped_at_the_max_position_size() -> None:
    # 1000 USD notional at 3x: about 333 USD of margin already committed
    btc = f.position("BTC", "long", leverage=3.0)
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=5_000.0)
    result = validate(
        [f.decision("BTC", "adjust_position", position_adjustment=adj)],
        context_with(btc, max_position_size=1_000.0),
    )

    v = verdict(result, "BTC")
    assert v.status == "adjusted"
    final = v.final.position_adjustment
    assert final is not None
    assert btc.margin_usd + final.adjustment_amount_usd <= 1_000.0 + 0.01
    assert final.adjustment_amount_usd == pytest.approx(1_000.0 - btc.margin_usd, abs=0.01)


def test_adjust_position_increase_on_a_full_position_is_rejected() -> None:
    btc = f.position("BTC", "long", leverage=1.0)  # 1000 USD of margin
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=100.0)
    result = validate(
        [f.decision("BTC", "adjust_position", position_adjustment=adj)],
        context_with(btc, max_position_size=1_000.0),
    )
    assert verdict(result, "BTC").status == "rejected"


# ---- hold ----------------------------------------------------------------------------------------------


def test_a_hold_with_an_allocation_is_adjusted_to_zero() -> None:
    result = validate([f.decision("BTC", "hold", allocation_usd=250.0)])

    btc = verdict(result, "BTC")
    assert btc.status == "adjusted"
    assert btc.final.action == "hold"
    assert btc.final.allocation_usd == 0
    assert btc.original is not None and btc.original.allocation_usd == 250.0
    assert result.final_decision.total_allocation_usd == 0


# ---- money ---------------------------------------------------------------------------------------------


def roomy(**risk: float) -> TradingContext:
    """An account whose strategy risks up to 50% of equity per trade, so the risk-per-trade rule does not bind
    (5000 USD at 10x with a 2% stop risks 1050 USD, fees included, of the 5000 allowed)."""
    return f.trading_context(account=f.account_context(active_strategy=f.strategy(max_risk_per_trade=50.0), **risk))


def test_an_allocation_above_the_max_position_size_is_clamped() -> None:
    result = validate([f.buy("BTC", 5_000.0)], roomy(max_position_size=2_000.0))

    btc = verdict(result, "BTC")
    assert btc.status == "adjusted"
    assert btc.final.allocation_usd == 2_000.0
    assert btc.final.sl_price == btc.original.sl_price  # type: ignore[union-attr]
    assert "max position size" in btc.reasons[0]
    assert len(btc.reasons) == 1
    assert result.final_decision.total_allocation_usd == pytest.approx(2_000.0)


def test_the_risk_per_trade_rule_reduces_an_allocation_before_the_max_position_size_clamp() -> None:
    # 1% of 10000 = 100 USD may be lost at the stop: 100 / (3 x (2% + 2 x 5 bps)) = 1587.30 USD of margin
    result = validate([f.buy("BTC", 5_000.0)], context_with(max_position_size=2_000.0))

    btc = verdict(result, "BTC")
    assert btc.status == "adjusted"
    assert btc.final.allocation_usd == pytest.approx(1_587.30)
    assert len(btc.reasons) == 1 and "allocation reduced from 5000 to 1587.3" in btc.reasons[0]
    assert "fees included" in btc.reasons[0]
    assert result.final_decision.total_allocation_usd == pytest.approx(1_587.30)


def test_no_new_position_when_the_max_position_size_is_zero() -> None:
    result = validate([f.buy("BTC", 500.0)], context_with(max_position_size=0.0))

    assert verdict(result, "BTC").status == "rejected"
    assert result.final_decision.decisions[0].action == "hold"
    assert result.final_decision.total_allocation_usd == 0


@pytest.mark.parametrize("leverage", [1.0, 3.0, 10.0])
def test_allocations_are_scaled_to_the_available_balance_fees_included(leverage: float) -> None:
    # a strategy that risks up to 50% per trade: 800 USD at 10x risks 168 USD, within 5000, so only the
    # available balance binds
    account = f.account_context(
        available=1_000.0,
        taker_fee_bps=5.0,
        active_strategy=f.strategy(max_leverage=leverage, max_risk_per_trade=50.0),
    )
    context = f.trading_context(account=account)
    result = validate([f.buy("BTC", 800.0), f.sell("ETH", 800.0)], context)

    factor = 1 + leverage * 5.0 / 10_000
    finals = [verdict(result, a).final.allocation_usd for a in ("BTC", "ETH")]
    assert all(v.status == "adjusted" for v in result.verdicts[:2])
    assert sum(a * factor for a in finals) <= 1_000.0 + 0.01
    assert sum(a * factor for a in finals) >= 1_000.0 - 0.03  # scaled, not slashed
    assert finals[0] == pytest.approx(finals[1])  # scaled in proportion
    assert any("available" in e for e in result.errors)


def test_an_allocation_of_the_whole_balance_leaves_room_for_the_entry_fee() -> None:
    account = f.account_context(
        available=1_000.0,
        taker_fee_bps=5.0,
        active_strategy=f.strategy(max_leverage=10.0, max_risk_per_trade=50.0),
    )
    result = validate([f.buy("BTC", 1_000.0)], f.trading_context(account=account))

    allocation = verdict(result, "BTC").final.allocation_usd
    # margin + taker fee on the notional (allocation x 10 x 5 bps) must fit in 1000 USD
    assert allocation * (1 + 10 * 0.0005) <= 1_000.0 + 1e-9
    assert allocation == pytest.approx(1_000.0 / 1.005, abs=0.011)


def test_allocations_that_fit_are_not_scaled() -> None:
    account = f.account_context(available=2_000.0, taker_fee_bps=5.0)
    result = validate([f.buy("BTC", 1_000.0), f.sell("ETH", 990.0)], f.trading_context(account=account))
    assert [v.status for v in result.verdicts] == ["accepted", "accepted", "accepted"]
    assert result.errors == []


def test_no_available_balance_rejects_every_entry_but_not_the_closes() -> None:
    context = context_with(f.position("SOL"), available=0.0)
    result = validate([f.buy("BTC"), f.sell("ETH"), f.decision("SOL", "close_position")], context)

    assert [v.status for v in result.verdicts] == ["rejected", "rejected", "accepted"]
    assert [d.action for d in result.final_decision.decisions] == ["hold", "hold", "close_position"]
    assert result.final_decision.total_allocation_usd == 0


def test_a_total_allocation_mismatch_is_noted_and_recomputed() -> None:
    result = validate([f.buy("BTC", 1_000.0), f.sell("ETH", 500.0)], total=9_999.0)

    assert result.final_decision.total_allocation_usd == pytest.approx(1_500.0)
    assert any("total_allocation_usd" in e for e in result.errors)
    assert result.is_valid  # a wrong sum is a note, not a reason to reject the assets


def test_the_final_total_is_the_sum_of_the_executable_entries() -> None:
    context = context_with(f.position("SOL"), max_position_size=1_200.0)
    decisions = [
        f.buy("BTC", 2_000.0),  # clamped to 1200
        f.decision("ETH", "buy", allocation_usd=700.0, sl_price=3_100.0),  # rejected: stop above the price
        f.decision("SOL", "close_position", allocation_usd=300.0),  # not an entry
    ]
    result = validate(decisions, context)

    entries = [d for d in result.final_decision.decisions if d.action in ("buy", "sell")]
    assert result.final_decision.total_allocation_usd == pytest.approx(sum(d.allocation_usd for d in entries))
    assert result.final_decision.total_allocation_usd == pytest.approx(1_200.0)


def test_every_verdict_keeps_the_models_original_decision() -> None:
    decisions = [
        f.buy("BTC", 5_000.0),  # adjusted
        f.decision("ETH", "sell", allocation_usd=100.0),  # rejected: no stop
        f.decision("SOL", "hold"),  # accepted
    ]
    result = validate(decisions)

    assert [v.status for v in result.verdicts] == ["adjusted", "rejected", "accepted"]
    assert [v.original for v in result.verdicts] == decisions
    assert result.verdicts[1].final != decisions[1]


async def test_apply_risk_checks_clamps_and_scales() -> None:
    account = f.account_context(available=1_000.0, max_position_size=900.0)
    result = await DecisionValidator().apply_risk_checks(
        f.trading_decision([f.buy("BTC", 2_000.0), f.sell("ETH", 900.0)]), account
    )

    assert result.passed
    total = sum(v.final.allocation_usd for v in result.verdicts)
    assert total * (1 + 3 * 0.0005) <= 1_000.0 + 0.01
    assert all(v.final.allocation_usd <= 900.0 for v in result.verdicts)


# ---- properties ----------------------------------------------------------------------------------------
# The properties (nothing in the final decision breaks a rule; a decision that satisfies every rule is
# accepted) live in test_validator_properties.py, under every built-in strategy and random risk states.


def test_a_close_is_accepted_even_without_market_data() -> None:
    """A stale feed must not lock a position in: closing reduces risk and needs no price of ours."""
    account = f.account_context(positions=[f.position("BTC", "long")])
    context = f.trading_context(["BTC", "ETH"], account=account, market={"ETH": f.asset_market_data("ETH")})
    decision = f.trading_decision([f.decision("BTC", "close_position"), f.decision("ETH")])
    result = DecisionValidator().validate(decision, context)
    btc = next(v for v in result.verdicts if v.asset == "BTC")
    assert btc.status == "accepted" and btc.final.action == "close_position"
    buy = f.trading_decision([f.buy("BTC", 500.0), f.decision("ETH")])
    rejected = next(v for v in DecisionValidator().validate(buy, context).verdicts if v.asset == "BTC")
    assert rejected.status == "rejected" and "no usable market data" in rejected.reasons[0]


# ---- stops moved and positions grown ------------------------------------------------------------------


def test_a_moved_stop_wider_than_the_strategy_allows_is_tightened() -> None:
    context = context_with(f.position("BTC"))
    widest = context.account_state.active_strategy.risk_parameters.stop_loss_percentage
    price = context.market_data.assets["BTC"].current_price
    adj = OrderAdjustment(adjust_sl=True, new_sl_price=price * (1 - 2 * widest / 100))
    result = validate([f.decision("BTC", "adjust_orders", order_adjustment=adj)], context)

    v = verdict(result, "BTC")
    assert v.status == "adjusted"
    assert v.final.order_adjustment is not None
    assert v.final.order_adjustment.new_sl_price == pytest.approx(price * (1 - widest / 100))
    assert "widest stop" in v.reasons[0]


def test_a_stop_tightened_on_an_increase_stays_tightened_when_the_increase_is_capped() -> None:
    """Both rules change one `position_adjustment`: capping the amount must keep the tightened stop (it used to
    start again from the model's, so a stop wider than the strategy allows went through)."""
    sol = f.position("SOL", "short", leverage=1.0, stop_loss=None)
    context = context_with(sol, max_position_size=sol.margin_usd + 50.0)
    widest = context.account_state.active_strategy.risk_parameters.stop_loss_percentage
    price = context.market_data.assets["SOL"].current_price
    adj = PositionAdjustment(
        adjustment_type="increase", adjustment_amount_usd=5_000.0, new_sl_price=price * (1 + 1.5 * widest / 100)
    )
    result = validate([f.decision("SOL", "adjust_position", position_adjustment=adj)], context)

    v = verdict(result, "SOL")
    final = v.final.position_adjustment
    assert v.status == "adjusted" and final is not None, v.reasons
    assert final.adjustment_amount_usd <= 50.0
    assert final.new_sl_price == pytest.approx(price * (1 + widest / 100))


def test_a_moved_stop_beyond_the_liquidation_price_is_rejected() -> None:
    btc = f.position("BTC").model_copy(update={"liquidation_price": 99_800.0})  # a stop at 99,500 never fires
    adj = PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=100.0, new_sl_price=99_500.0)
    result = validate([f.decision("BTC", "adjust_position", position_adjustment=adj)], context_with(btc))

    v = verdict(result, "BTC")
    assert v.status == "rejected"
    assert "liquidation price" in v.reasons[0]
    assert v.final.action == "hold"


def test_an_increase_without_any_stop_is_rejected() -> None:
    btc = f.position("BTC").model_copy(update={"stop_loss": None})
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=100.0)
    result = validate([f.decision("BTC", "adjust_position", position_adjustment=adj)], context_with(btc))

    v = verdict(result, "BTC")
    assert v.status == "rejected"
    assert "no stop-loss" in v.reasons[0]


def test_an_increase_is_reduced_to_the_risk_per_trade_of_the_grown_position() -> None:
    # 1000 USD notional with its stop 1% away: 10 USD at risk; the budget is max_risk_per_trade of 10,000 USD
    btc = f.position("BTC", stop_loss=99_000.0)
    context = context_with(btc, max_position_size=10_000.0)
    risk = context.account_state.active_strategy.risk_parameters
    budget = 10_000.0 * risk.max_risk_per_trade / 100
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=9_000.0)
    result = validate([f.decision("BTC", "adjust_position", position_adjustment=adj)], context)

    v = verdict(result, "BTC")
    assert v.status == "adjusted"
    final = v.final.position_adjustment
    assert final is not None and 0 < final.adjustment_amount_usd < 9_000.0
    leverage = min(risk.max_leverage, context.account_state.active_strategy.risk_parameters.max_leverage)
    added = final.adjustment_amount_usd * leverage / 100_000.0
    fee = context.account_state.taker_fee_bps / 10_000
    at_risk = btc.size * 1_000.0 + added * (1_000.0 + 2 * fee * 100_000.0)
    assert at_risk <= budget * 1.0001
    assert at_risk > budget * 0.95  # reduced to the budget, not to nothing
    assert "at risk" in v.reasons[-1]
