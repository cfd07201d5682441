"""The rule-based baseline model: a trend-following decision maker behind the same port as the LLM.

It is what the agent uses offline and when no LLM key is configured, and the yardstick any model has to
beat. Rules per asset, from the context only:

* flat: buy when EMA20 > EMA50 and MACD > signal on the decision timeframe, RSI14 in (50, 70) and the long
  timeframe does not disagree (EMA20 >= EMA50 there, when known); sell on the mirror image (RSI in (30, 50));
  otherwise hold. At most the strategy's `max_positions` positions are open at once.
* open position: close it when the decision timeframe's trend has turned against it (EMA and MACD both
  flipped); otherwise hold and keep the protective orders.
* sizing: the stop sits 2 x ATR14 from the price, kept within the strategy's widest stop
  (`stop_loss_percentage`) and far enough for the target to be worth its fees (at least one ATR for
  volatility-adjusted sizing) and well inside the liquidation price at the strategy's leverage; the target is
  `take_profit_ratio` times as far; the position risks `max_risk_per_trade` % of equity at the stop (round-trip
  fees included), at the strategy's maximum leverage, within `max_position_size` and the available balance
  (margin plus the entry's taker fee, as the validator counts it), and, for `kelly` sizing, within half the
  Kelly fraction of equity (no entry while that fraction is not positive). No trade when the stop or target
  would fall to zero or below.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from app.schemas.trading_decision import (
    AccountContext,
    AssetDecision,
    AssetMarketData,
    PositionSummary,
    TechnicalIndicatorsSet,
    TradingDecision,
    TradingStrategy,
)
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.llm.risk_rules import MIN_REWARD_TO_COSTS, liquidation_price

BASELINE_MODEL_NAME = "baseline/trend-following-v1"
# The baseline does not know the venue's maintenance margin rate: it assumes a high one (Hyperliquid's at 20x)
# and keeps its stop within 90% of the distance to that liquidation price.
LIQUIDATION_MMR_ALLOWANCE = 0.025
LIQUIDATION_ROOM = 0.9


def _last(series: list[float] | None) -> float | None:
    return series[-1] if series else None


@dataclass(frozen=True)
class _Signal:
    direction: int  # +1 long, -1 short, 0 none
    strength: float  # 0..1


def _trend(ind: TechnicalIndicatorsSet) -> int:
    ema20, ema50 = _last(ind.ema_20), _last(ind.ema_50)
    macd, signal = _last(ind.macd), _last(ind.macd_signal)
    if None in (ema20, ema50, macd, signal):
        return 0
    assert ema20 is not None and ema50 is not None and macd is not None and signal is not None
    if ema20 > ema50 and macd > signal:
        return 1
    if ema20 < ema50 and macd < signal:
        return -1
    return 0


def _entry_signal(data: AssetMarketData) -> _Signal:
    ind = data.technical_indicators
    trend = _trend(ind.interval)
    rsi = _last(ind.interval.rsi)
    if trend == 0 or rsi is None:
        return _Signal(0, 0.0)
    long_ema20, long_ema50 = _last(ind.long_interval.ema_20), _last(ind.long_interval.ema_50)
    if long_ema20 is not None and long_ema50 is not None:
        long_trend = 1 if long_ema20 >= long_ema50 else -1
        if long_trend != trend:
            return _Signal(0, 0.0)
    if trend == 1 and 50 < rsi < 70:
        return _Signal(1, min(1.0, (rsi - 50) / 20))
    if trend == -1 and 30 < rsi < 50:
        return _Signal(-1, min(1.0, (50 - rsi) / 20))
    return _Signal(0, 0.0)


def _half_kelly_margin(strategy: TradingStrategy, account: AccountContext, leverage: float) -> float | None:
    """For `kelly` sizing with both wins and losses on record: the margin whose notional is half the Kelly
    fraction of equity (the validator's cap), floored to the cent; None when Kelly sizing does not apply."""
    perf = account.recent_performance
    if strategy.position_sizing != "kelly" or not perf.avg_loss < 0 < perf.avg_win:
        return None
    payoff = perf.avg_win / -perf.avg_loss  # can underflow to 0 (a vanishing win): then no edge, like the validator
    kelly = perf.win_rate - (1 - perf.win_rate) / payoff if payoff > 0 else 0.0
    return math.floor(max(0.0, kelly / 2) * account.balance_usd / leverage * 100) / 100


def _hold(asset: str, rationale: str, position: PositionSummary | None) -> AssetDecision:
    plan = position.exit_plan if position and position.exit_plan else "No position; wait for a trend signal."
    return AssetDecision(
        asset=asset,
        action="hold",
        allocation_usd=0.0,
        exit_plan=plan,
        rationale=rationale,
        confidence=50.0,
        risk_level="low",
    )


class BaselineModel:
    """Deterministic trend follower; answers instantly, costs nothing."""

    name = BASELINE_MODEL_NAME
    is_simulated = True

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        decision = self.decide(request)
        raw = decision.model_dump_json()
        return ModelResponse(
            raw_text=raw,
            decision=TradingDecision.model_validate(json.loads(raw)),
            model_requested=request.model,
            model_served=self.name,
            provider="baseline",
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason="stop",
        )

    def decide(self, request: ModelRequest) -> TradingDecision:
        context, strategy = request.context, request.strategy
        risk = strategy.risk_parameters
        account = context.account_state
        positions = {p.symbol: p for p in account.open_positions}
        equity = account.balance_usd
        available = account.available_balance
        open_slots = max(0, strategy.max_positions - len(positions))
        leverage = risk.max_leverage
        fee_rate = account.taker_fee_bps / 10_000.0
        cost_per_margin = 1.0 + leverage * fee_rate
        kelly_cap = _half_kelly_margin(strategy, account, leverage)

        decisions: list[AssetDecision] = []
        total = 0.0
        for asset in request.symbols:
            data = context.market_data.assets.get(asset)
            position = positions.get(asset)
            if data is None:
                decisions.append(_hold(asset, "No market data for this asset this cycle.", position))
                continue
            if position is not None:
                decisions.append(self._manage(asset, data, position))
                continue
            signal = _entry_signal(data)
            if signal.direction == 0 or open_slots == 0:
                why = "No aligned trend and momentum signal." if signal.direction == 0 else "Position limit reached."
                decisions.append(_hold(asset, why, None))
                continue
            if kelly_cap is not None and kelly_cap <= 0:
                decisions.append(_hold(asset, "The Kelly fraction of the recent trades is not positive.", None))
                continue
            price = data.current_price
            atr = _last(data.technical_indicators.interval.atr) or 0.0
            # the widest stop, kept well inside the liquidation price at the strategy's leverage
            liquidation = liquidation_price(price, leverage, signal.direction > 0, LIQUIDATION_MMR_ALLOWANCE)
            widest = min(price * risk.stop_loss_percentage / 100.0, LIQUIDATION_ROOM * abs(price - liquidation))
            costs = price * (2 * fee_rate + abs(data.funding_rate or 0.0))
            narrowest = max(0.25 * widest, MIN_REWARD_TO_COSTS * costs * 1.05 / risk.take_profit_ratio)
            if strategy.position_sizing == "volatility_adjusted":
                narrowest = max(narrowest, atr * 1.001)
            if narrowest > widest:
                why = "No stop fits: fees and volatility need a wider one than the strategy and leverage allow."
                decisions.append(_hold(asset, why, None))
                continue
            stop_distance = min(max(2.0 * atr, narrowest), widest)
            sl = price - signal.direction * stop_distance
            tp = price + signal.direction * stop_distance * risk.take_profit_ratio
            if sl <= 0 or tp <= 0:
                decisions.append(_hold(asset, "Cannot place the stop and target: the stop is too wide.", None))
                continue
            # risk at the stop, fees for the round trip included, is max_risk_per_trade % of equity
            notional = equity * risk.max_risk_per_trade / 100.0 / (stop_distance / price + 2 * fee_rate)
            # the entry's taker fee on the notional comes out of the available balance too
            margin = min(notional / leverage, account.max_position_size, available * 0.95 / cost_per_margin)
            if kelly_cap is not None:
                margin = min(margin, kelly_cap)
            margin = math.floor(margin * 100) / 100  # to the cent, never above a cap
            if margin <= 0:
                decisions.append(_hold(asset, "No available balance for a new position.", None))
                continue
            side = "buy" if signal.direction > 0 else "sell"
            trend_word = "up" if signal.direction > 0 else "down"
            decisions.append(
                AssetDecision(
                    asset=asset,
                    action=side,
                    allocation_usd=margin,
                    tp_price=tp,
                    sl_price=sl,
                    exit_plan=(
                        f"Stop at {sl:.6g}, target {tp:.6g} ({risk.take_profit_ratio:g}R); close early if EMA20/EMA50 "
                        "and MACD both turn against the position."
                    ),
                    rationale=f"EMA20/EMA50 and MACD point {trend_word}; RSI confirms without being stretched.",
                    confidence=round(50 + 40 * signal.strength, 1),
                    risk_level="medium",
                )
            )
            available -= margin * cost_per_margin
            total += margin
            open_slots -= 1

        acting = [d for d in decisions if d.action != "hold"]
        rationale = (
            f"Rule-based trend following over {len(request.symbols)} assets; "
            f"{len(acting)} action(s), {len(decisions) - len(acting)} hold(s)."
        )
        return TradingDecision(
            decisions=decisions,
            portfolio_rationale=rationale,
            total_allocation_usd=round(total, 2),
            portfolio_risk_level="medium" if acting else "low",
            timestamp=context.timestamp,
        )

    def _manage(self, asset: str, data: AssetMarketData, position: PositionSummary) -> AssetDecision:
        trend = _trend(data.technical_indicators.interval)
        against = (position.side == "long" and trend == -1) or (position.side == "short" and trend == 1)
        if not against:
            return _hold(asset, f"Keep the {position.side}: the trend has not turned against it.", position)
        return AssetDecision(
            asset=asset,
            action="close_position",
            allocation_usd=0.0,
            exit_plan="Close now at market; protective orders are cancelled with the position.",
            rationale=f"EMA20/EMA50 and MACD have both turned against the {position.side}.",
            confidence=70.0,
            risk_level="medium",
        )
