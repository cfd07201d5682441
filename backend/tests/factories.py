"""Builders of the canonical schemas with sensible defaults, for unit tests.

Every builder takes keyword overrides for what a test cares about and fills in the rest, so a test reads as
"a long BTC position with its stop at 95k" rather than forty lines of constructor calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.schemas.trading_decision import (
    AccountContext,
    Action,
    AssetDecision,
    AssetMarketData,
    MarketContext,
    OrderAdjustment,
    PerformanceMetrics,
    PositionAdjustment,
    PositionSummary,
    PricePoint,
    RiskMetrics,
    StrategyRiskParameters,
    TechnicalIndicators,
    TechnicalIndicatorsSet,
    TradeHistory,
    TradingContext,
    TradingDecision,
    TradingStrategy,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DEFAULT_PRICES = {"BTC": 100_000.0, "ETH": 3_000.0, "SOL": 150.0}
STRATEGY_TEMPLATE = (
    "You trade crypto perpetual futures. Risk at most {{ risk.max_risk_per_trade }}% of equity per trade; "
    "leverage {{ risk.max_leverage }}x at most; at most {{ max_positions }} positions."
)


def price_of(symbol: str) -> float:
    return DEFAULT_PRICES.get(symbol, 10.0)


def series(last: float, length: int = 10, step: float = 0.0) -> list[float]:
    """A series of `length` values, oldest first, ending at `last` and moving by `step` per point."""
    return [last - step * (length - 1 - i) for i in range(length)]


def indicator_set(
    *,
    price: float = 100_000.0,
    ema_20: float | None = None,
    ema_50: float | None = None,
    macd: float | None = None,
    macd_signal: float | None = None,
    rsi: float | None = 55.0,
    atr: float | None = None,
    length: int = 10,
    empty: bool = False,
) -> TechnicalIndicatorsSet:
    """Indicators whose last values are the given ones (defaults: a neutral market around `price`).

    `empty=True` gives the all-None set of a timeframe without enough candles.
    """
    if empty:
        return TechnicalIndicatorsSet(
            ema_20=None,
            ema_50=None,
            macd=None,
            macd_signal=None,
            rsi=None,
            bb_upper=None,
            bb_middle=None,
            bb_lower=None,
            atr=None,
        )

    def s(value: float | None) -> list[float] | None:
        return None if value is None else series(value, length)

    return TechnicalIndicatorsSet(
        ema_20=s(price if ema_20 is None else ema_20),
        ema_50=s(price if ema_50 is None else ema_50),
        macd=s(0.0 if macd is None else macd),
        macd_signal=s(0.0 if macd_signal is None else macd_signal),
        rsi=s(rsi),
        bb_upper=s(price * 1.02),
        bb_middle=s(price),
        bb_lower=s(price * 0.98),
        atr=s(price * 0.005 if atr is None else atr),
    )


def trending_set(
    price: float, direction: int, *, rsi: float | None = None, atr: float | None = None
) -> TechnicalIndicatorsSet:
    """Indicators of an up (+1), down (-1) or flat (0) trend: EMA20 vs EMA50 and MACD vs signal agree."""
    if rsi is None:
        rsi = {1: 60.0, -1: 40.0, 0: 50.0}[direction]
    return indicator_set(
        price=price,
        ema_20=price * (1 + 0.01 * direction),
        ema_50=price,
        macd=price * 0.001 * direction,
        macd_signal=0.0,
        rsi=rsi,
        atr=atr,
    )


def price_history(price: float, count: int = 24, *, start: datetime = NOW, step_pct: float = 0.0) -> list[PricePoint]:
    """`count` closed 5m candles ending just before `start`, oldest first, the last closing at `price`."""
    points = []
    for i in range(count):
        close = price * (1 + step_pct / 100 * (i - count + 1))
        points.append(
            PricePoint(
                timestamp=start - timedelta(minutes=5 * (count - i)),
                open=close,
                high=close * 1.001,
                low=close * 0.999,
                close=close,
                volume=10.0 + i,
            )
        )
    return points


def asset_market_data(
    symbol: str = "BTC",
    *,
    price: float | None = None,
    interval: TechnicalIndicatorsSet | None = None,
    long_interval: TechnicalIndicatorsSet | None = None,
    history: int = 24,
    funding_rate: float | None = 0.0001,
) -> AssetMarketData:
    price = price_of(symbol) if price is None else price
    return AssetMarketData(
        symbol=symbol,
        current_price=price,
        price_change_24h=1.5,
        volume_24h=1_000_000_000.0,
        funding_rate=funding_rate,
        open_interest=50_000.0,
        price_history=price_history(price, history),
        volatility=2.5,
        technical_indicators=TechnicalIndicators(
            interval=interval or indicator_set(price=price),
            long_interval=long_interval or indicator_set(price=price),
        ),
    )


def risk_parameters(**overrides: float) -> StrategyRiskParameters:
    values: dict[str, float] = {
        "max_risk_per_trade": 1.0,
        "max_daily_loss": 3.0,
        "stop_loss_percentage": 2.0,
        "take_profit_ratio": 2.0,
        "max_leverage": 3.0,
        "cooldown_period": 0,
    }
    values.update(overrides)
    return StrategyRiskParameters(**values)  # type: ignore[arg-type]


def strategy(
    *,
    max_positions: int = 3,
    prompt_template: str = STRATEGY_TEMPLATE,
    strategy_id: str = "test",
    **risk: float,
) -> TradingStrategy:
    return TradingStrategy(
        strategy_id=strategy_id,
        strategy_name="Test strategy",
        strategy_type="custom",
        prompt_template=prompt_template,
        risk_parameters=risk_parameters(**risk),
        timeframe_preference=["5m", "4h"],
        max_positions=max_positions,
    )


def position(
    symbol: str = "BTC",
    side: Literal["long", "short"] = "long",
    *,
    size: float | None = None,
    entry_price: float | None = None,
    current_price: float | None = None,
    leverage: float = 3.0,
    stop_loss: float | None = None,
    take_profit: float | None = None,
    exit_plan: str | None = None,
) -> PositionSummary:
    """An open position; by default 1000 USD notional entered 1% away from the current price, in profit."""
    current = price_of(symbol) if current_price is None else current_price
    direction = 1.0 if side == "long" else -1.0
    entry = current * (1 - 0.01 * direction) if entry_price is None else entry_price
    qty = 1000.0 / entry if size is None else size
    margin = qty * entry / leverage
    pnl = direction * (current - entry) * qty
    return PositionSummary(
        symbol=symbol,
        side=side,
        size=qty,
        entry_price=entry,
        current_price=current,
        unrealized_pnl=pnl,
        percentage_pnl=pnl / margin * 100,
        leverage=leverage,
        margin_usd=margin,
        liquidation_price=entry * (1 - direction * 0.3),
        stop_loss=current * (1 - 0.03 * direction) if stop_loss is None else stop_loss,
        take_profit=current * (1 + 0.06 * direction) if take_profit is None else take_profit,
        exit_plan=f"Stop below structure, target 2R on {symbol}." if exit_plan is None else exit_plan,
        entry_rationale="Trend and momentum aligned.",
        opened_at=NOW - timedelta(hours=2),
    )


def performance() -> PerformanceMetrics:
    return PerformanceMetrics(
        total_pnl=0.0, win_rate=0.0, avg_win=0.0, avg_loss=0.0, max_drawdown=0.0, sharpe_ratio=0.0
    )


def account_context(
    *,
    balance: float = 10_000.0,
    available: float | None = None,
    positions: Sequence[PositionSummary] = (),
    max_position_size: float = 2_500.0,
    taker_fee_bps: float = 5.0,
    maker_fee_bps: float = 2.0,
    active_strategy: TradingStrategy | None = None,
) -> AccountContext:
    """An account; `available` defaults to the balance minus the margin of `positions`."""
    if available is None:
        available = balance - sum(p.margin_usd for p in positions)
    return AccountContext(
        account_id=1,
        balance_usd=balance,
        available_balance=available,
        total_pnl=balance - 10_000.0,
        open_positions=list(positions),
        recent_performance=performance(),
        risk_exposure=0.0,
        max_position_size=max_position_size,
        active_strategy=active_strategy or strategy(),
        maker_fee_bps=maker_fee_bps,
        taker_fee_bps=taker_fee_bps,
    )


def risk_metrics() -> RiskMetrics:
    return RiskMetrics(var_95=0.01, max_drawdown=0.02, correlation_risk=0.5, concentration_risk=1.0)


def trading_context(
    symbols: Sequence[str] = ("BTC", "ETH", "SOL"),
    *,
    account: AccountContext | None = None,
    market: dict[str, AssetMarketData] | None = None,
    recent_trades: dict[str, list[TradeHistory]] | None = None,
    errors: Sequence[str] = (),
    timestamp: datetime = NOW,
) -> TradingContext:
    """A context over `symbols`; market data defaults to a neutral market at each asset's default price."""
    market = {s: asset_market_data(s) for s in symbols} if market is None else market
    return TradingContext(
        symbols=list(symbols),
        account_id=1,
        market_data=MarketContext(assets=market, market_sentiment="neutral", timestamp=timestamp),
        account_state=account or account_context(),
        recent_trades=recent_trades if recent_trades is not None else {s: [] for s in symbols},
        risk_metrics=risk_metrics(),
        timestamp=timestamp,
        errors=list(errors),
    )


def decision(
    asset: str = "BTC",
    action: Action = "hold",
    *,
    allocation_usd: float = 0.0,
    sl_price: float | None = None,
    tp_price: float | None = None,
    order_adjustment: OrderAdjustment | None = None,
    position_adjustment: PositionAdjustment | None = None,
    rationale: str = "test",
) -> AssetDecision:
    return AssetDecision(
        asset=asset,
        action=action,
        allocation_usd=allocation_usd,
        position_adjustment=position_adjustment,
        order_adjustment=order_adjustment,
        tp_price=tp_price,
        sl_price=sl_price,
        exit_plan="Stop and target as given.",
        rationale=rationale,
        confidence=60.0,
        risk_level="medium",
    )


def buy(asset: str = "BTC", allocation_usd: float = 1_000.0, *, price: float | None = None) -> AssetDecision:
    """A well-formed long entry: stop 2% below, target 4% above the price."""
    p = price_of(asset) if price is None else price
    return decision(asset, "buy", allocation_usd=allocation_usd, sl_price=p * 0.98, tp_price=p * 1.04)


def sell(asset: str = "BTC", allocation_usd: float = 1_000.0, *, price: float | None = None) -> AssetDecision:
    """A well-formed short entry: stop 2% above, target 4% below the price."""
    p = price_of(asset) if price is None else price
    return decision(asset, "sell", allocation_usd=allocation_usd, sl_price=p * 1.02, tp_price=p * 0.96)


def trading_decision(decisions: Sequence[AssetDecision], *, total: float | None = None) -> TradingDecision:
    """A decision whose `total_allocation_usd` is the sum of the buy/sell allocations unless `total` is given."""
    if total is None:
        total = round(sum(d.allocation_usd for d in decisions if d.action in ("buy", "sell")), 2)
    return TradingDecision(
        decisions=list(decisions),
        portfolio_rationale="test portfolio",
        total_allocation_usd=total,
        portfolio_risk_level="medium",
        timestamp=NOW,
    )
