"""The strategy's risk parameters as rules on new exposure (entries and increases).

Each rule enforces one parameter the strategy declares, so none of them is decoration:

* `max_daily_loss`: once the day's loss reaches it, only reducing actions pass.
* `cooldown_period`: no new exposure in an asset until that long after its last entry or increase.
* `max_leverage` (with the account's and the venue's maximum): the leverage used; the liquidation price at
  that leverage must lie beyond the stop.
* `stop_loss_percentage`: the widest stop allowed; a wider one is tightened to it (also when a stop is moved).
* `take_profit_ratio`: the target must be at least this many times the stop distance away (a missing
  target is set there); round-trip fees and one funding period must leave the target worth taking.
* `max_risk_per_trade`: allocation x leverage x stop distance stays within this share of equity; a larger
  allocation is reduced. An increase counts the whole grown position to its stop.
* `max_positions`: entries beyond it are refused (see the validator, which counts across assets).
* `position_sizing`: `volatility_adjusted` needs a stop at least one ATR away; `kelly` caps the allocation
  at half the Kelly fraction of equity once the record has both wins and losses; `fixed` and `percentage`
  size by the risk rule above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.schemas.trading_decision import AccountContext, AssetMarketData, PositionSummary, TradingStrategy
from app.schemas.validation import RiskState
from app.services.execution.executor import entry_leverage

MIN_REWARD_TO_COSTS = 3.0  # the target's gain must be at least 3x round-trip fees plus funding


@dataclass
class EntryCheck:
    """The outcome of the rules for one entry: a refusal, or changes with their reasons."""

    reject: str | None = None
    changes: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def effective_leverage(strategy: TradingStrategy, asset: str, state: RiskState | None) -> float:
    """The leverage the executor will use (one rule, `entry_leverage`), from what the risk state knows."""
    if state is None:
        return entry_leverage(strategy, strategy.risk_parameters.max_leverage, None)
    account_max = state.account_max_leverage or strategy.risk_parameters.max_leverage
    return entry_leverage(strategy, account_max, None, state.venue_max_leverage.get(asset))


def liquidation_price(price: float, leverage: float, is_long: bool, mmr: float) -> float:
    """Isolated-margin liquidation price of a fresh position (Binance's formula, no cumulative amount)."""
    if is_long:
        return price * (1 - 1 / leverage) / (1 - mmr)
    return price * (1 + 1 / leverage) / (1 + mmr)


def daily_loss_reached(strategy: TradingStrategy, state: RiskState) -> str | None:
    """Why the day's loss stops new exposure (`max_daily_loss` reached), or None."""
    risk = strategy.risk_parameters
    if not state.day_start_equity or state.day_start_equity <= 0:
        return None
    loss_pct = -state.day_pnl_usd / state.day_start_equity * 100
    if loss_pct < risk.max_daily_loss:
        return None
    return (
        f"daily loss limit reached: down {loss_pct:.2f}% today, the strategy allows {risk.max_daily_loss:g}%; "
        "only reducing actions until tomorrow (UTC)"
    )


def exposure_block(asset: str, strategy: TradingStrategy, state: RiskState | None) -> str | None:
    """Why no new exposure may be added in `asset` now (daily loss, reduce-only, cooldown), or None."""
    if state is None:
        return None
    if state.reduce_only_reason:
        return f"only reducing actions are allowed: {state.reduce_only_reason}"
    risk = strategy.risk_parameters
    daily = daily_loss_reached(strategy, state)
    if daily is not None:
        return daily
    last = state.last_trade_at.get(asset)
    if last is not None and risk.cooldown_period > 0:
        elapsed = (state.now - last).total_seconds()
        if elapsed < risk.cooldown_period:
            return (
                f"cooldown: the last {asset} trade was {elapsed:.0f} s ago and the strategy waits "
                f"{risk.cooldown_period} s"
            )
    return None


def check_entry(
    *,
    asset: str,
    is_long: bool,
    allocation: float,
    sl: float,
    tp: float | None,
    market: AssetMarketData,
    account: AccountContext,
    strategy: TradingStrategy,
    state: RiskState | None,
) -> EntryCheck:
    """Apply the strategy's rules to a new position (the validator has checked sides and the stop)."""
    check = EntryCheck()
    risk = strategy.risk_parameters
    price = market.current_price
    leverage = effective_leverage(strategy, asset, state)
    sign = 1 if is_long else -1

    max_distance = price * risk.stop_loss_percentage / 100
    distance = abs(price - sl)
    if risk.stop_loss_percentage > 0 and distance > max_distance * 1.0001:
        sl = price - sign * max_distance
        distance = max_distance
        check.changes["sl_price"] = sl
        check.reasons.append(f"stop tightened to the strategy's widest stop of {risk.stop_loss_percentage:g}%")
    if distance <= 0:
        check.reject = "the stop is at the price"
        return check

    atr_series = market.technical_indicators.interval.atr
    if strategy.position_sizing == "volatility_adjusted" and atr_series and distance < atr_series[-1]:
        check.reject = (
            f"volatility-adjusted sizing needs a stop at least one ATR ({atr_series[-1]:.6g}) away; "
            f"this one is {distance:.6g}"
        )
        return check

    mmr = state.maintenance_margin_rates.get(asset, state.maintenance_margin_rate) if state else 0.005
    liquidation = liquidation_price(price, leverage, is_long, mmr)
    if (is_long and sl <= liquidation) or (not is_long and sl >= liquidation):
        check.reject = (
            f"the stop {sl:.6g} lies beyond the liquidation price {liquidation:.6g} at {leverage:g}x: "
            "the position would be liquidated before it is stopped"
        )
        return check

    if tp is None:
        tp = price + sign * distance * risk.take_profit_ratio
        check.changes["tp_price"] = tp
        check.reasons.append(f"no take-profit given; set at {risk.take_profit_ratio:g}R")
    reward = abs(tp - price)
    if reward < distance * risk.take_profit_ratio * 0.999:
        check.reject = (
            f"reward/risk {reward / distance:.2f} is below the strategy's {risk.take_profit_ratio:g} "
            f"(target {reward:.6g} away, stop {distance:.6g} away)"
        )
        return check
    fee_rate = account.taker_fee_bps / 10_000
    funding = market.funding_rate or 0.0
    adverse_funding = max(0.0, funding if is_long else -funding)
    costs = price * (2 * fee_rate + adverse_funding)
    if reward < MIN_REWARD_TO_COSTS * costs:
        check.reject = (
            f"the target's gain ({reward / price * 100:.3f}%) is not worth the round-trip fees and one funding "
            f"period ({costs / price * 100:.3f}%)"
        )
        return check

    budget = account.balance_usd * risk.max_risk_per_trade / 100
    at_risk = allocation * leverage * distance / price + allocation * leverage * 2 * fee_rate
    if at_risk > budget * 1.0001:
        reduced = max(0.0, budget / (leverage * (distance / price + 2 * fee_rate)))
        reduced = float(int(reduced * 100) / 100)
        if reduced <= 0:
            check.reject = "no allocation fits the strategy's risk per trade"
            return check
        check.changes["allocation_usd"] = reduced
        check.reasons.append(
            f"allocation reduced from {allocation:g} to {reduced:g} USD: {at_risk:.2f} USD at risk (fees included) "
            f"exceeds {risk.max_risk_per_trade:g}% of equity ({budget:.2f} USD)"
        )
        allocation = reduced

    if strategy.position_sizing == "kelly":
        perf = account.recent_performance
        if perf.avg_loss < 0 < perf.avg_win:  # both wins and losses on record
            payoff = perf.avg_win / -perf.avg_loss
            kelly = perf.win_rate - (1 - perf.win_rate) / payoff if payoff > 0 else 0.0
            cap = float(int(max(0.0, kelly / 2) * account.balance_usd / leverage * 100) / 100)  # to the cent
            if allocation > cap:
                if cap <= 0:
                    check.reject = (
                        "the Kelly fraction from the recent trades is not positive: no new position"
                        if kelly <= 0
                        else "half the Kelly fraction of equity is less than a cent of margin: no new position"
                    )
                    return check
                check.changes["allocation_usd"] = cap
                check.reasons.append(f"allocation capped at half-Kelly ({kelly / 2:.3f} of equity)")
    return check


def check_stop_change(
    *, asset: str, is_long: bool, price: float, sl: float, liquidation: float | None, strategy: TradingStrategy
) -> EntryCheck:
    """A stop moved on an open position: no wider than the strategy's widest stop from the price now (a wider
    one is tightened to it), and never beyond the position's liquidation price."""
    check = EntryCheck()
    risk = strategy.risk_parameters
    sign = 1 if is_long else -1
    max_distance = price * risk.stop_loss_percentage / 100
    if risk.stop_loss_percentage > 0 and abs(price - sl) > max_distance * 1.0001:
        sl = price - sign * max_distance
        check.changes["new_sl_price"] = sl
        check.reasons.append(
            f"new stop tightened to the strategy's widest stop of {risk.stop_loss_percentage:g}% from the price"
        )
    if liquidation is not None and ((is_long and sl <= liquidation) or (not is_long and sl >= liquidation)):
        check.reject = (
            f"the new stop {sl:.6g} lies beyond the {asset} position's liquidation price {liquidation:.6g}: "
            "it would be liquidated before it is stopped"
        )
    return check


def check_increase(
    *,
    asset: str,
    position: PositionSummary,
    amount: float,
    sl: float | None,
    market: AssetMarketData,
    account: AccountContext,
    strategy: TradingStrategy,
    state: RiskState | None,
) -> EntryCheck:
    """Margin added to an open position at the strategy's leverage: the grown position must keep a stop (the
    new one or the standing one) inside its liquidation price, and what the whole position loses if stopped,
    from the price now (fees on the addition included), stays within `max_risk_per_trade` of equity; a larger
    addition is reduced."""
    check = EntryCheck()
    if sl is None:
        check.reject = f"the {asset} position has no stop-loss; set one (adjust_orders) before increasing it"
        return check
    risk = strategy.risk_parameters
    price = market.current_price
    is_long = position.side == "long"
    leverage = effective_leverage(strategy, asset, state)
    fee_rate = account.taker_fee_bps / 10_000
    distance = abs(price - sl)
    added_qty = amount * leverage / price
    size = position.size + added_qty
    entry = (position.entry_price * position.size + price * added_qty) / size
    margin = position.margin_usd + amount
    mmr = state.maintenance_margin_rates.get(asset, state.maintenance_margin_rate) if state else 0.005
    liquidation = liquidation_price(entry, max(1.0, entry * size / margin), is_long, mmr)
    if (is_long and sl <= liquidation) or (not is_long and sl >= liquidation):
        check.reject = (
            f"after the increase the {asset} position would liquidate at about {liquidation:.6g}, beyond its stop "
            f"{sl:.6g}: it would be liquidated before it is stopped"
        )
        return check
    budget = account.balance_usd * risk.max_risk_per_trade / 100
    standing = position.size * distance
    at_risk = standing + added_qty * (distance + 2 * fee_rate * price)
    if at_risk > budget * 1.0001:
        room_qty = (budget - standing) / (distance + 2 * fee_rate * price)
        reduced = float(int(max(0.0, room_qty) * price / leverage * 100) / 100)  # margin, floored to the cent
        if reduced <= 0:
            check.reject = (
                f"the {asset} position already has {standing:.2f} USD at risk to its stop; the strategy allows "
                f"{risk.max_risk_per_trade:g}% of equity ({budget:.2f} USD) per trade: no increase"
            )
            return check
        check.changes["adjustment_amount_usd"] = reduced
        check.reasons.append(
            f"increase reduced from {amount:g} to {reduced:g} USD: the grown position would have {at_risk:.2f} USD "
            f"at risk to its stop, above {risk.max_risk_per_trade:g}% of equity ({budget:.2f} USD)"
        )
    return check
