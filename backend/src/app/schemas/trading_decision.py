"""The canonical schemas of the LLM decision engine (the seed's "Data Models", field for field).

Every service uses these classes; there is no second `TradingContext`. Timestamps are timezone-aware UTC:
naive datetimes given to any model here are read as UTC.

Units: prices in the quote currency (USD/USDT), `allocation_usd` is the margin (collateral) committed to a
position in USD; the position's notional is `allocation_usd x leverage`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.schemas.text import CleanLine, CleanText


def utc_now() -> datetime:
    """Timezone-aware now, the default for schema timestamps."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Read a naive datetime as UTC and convert an aware one to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UTCTimestamp = Annotated[datetime, AfterValidator(ensure_utc)]
"""A datetime read as UTC (`ensure_utc`): the type of every datetime field here. A validator on these fields only,
not one on every field of every model (a decision cycle validates ~900 field values, a handful of them times)."""


class _UTCModel(BaseModel):
    """Base that normalises every datetime field to aware UTC."""

    # Its datetime fields are `UTCTimestamp`; a test holds that no model here has a plain `datetime` field.


# --------------------------------------------------------------------------------------------- decisions


class _DecisionModel(_UTCModel):
    """A decision's numbers are finite: a model answering `Infinity`, `NaN` or `1e400` (which JSON parsers read
    as infinite) gets a clear validation error, not an infinite allocation. Stored JSON could not hold one
    either: it is written with NaN and infinities as null."""

    model_config = ConfigDict(allow_inf_nan=False)


class PositionAdjustment(_DecisionModel):
    """Position adjustment details."""

    adjustment_type: Literal["increase", "decrease"] = Field(..., description="Type of position adjustment")
    adjustment_amount_usd: float = Field(..., gt=0, description="Amount to adjust position by (in USD)")
    adjustment_percentage: float | None = Field(
        None, ge=0, le=100, description="Percentage of current position to adjust"
    )
    new_tp_price: float | None = Field(None, gt=0, description="New take-profit price after adjustment")
    new_sl_price: float | None = Field(None, gt=0, description="New stop-loss price after adjustment")


class OrderAdjustment(_DecisionModel):
    """Order adjustment details for TP/SL modifications."""

    adjust_tp: bool = Field(default=False, description="Whether to adjust take-profit")
    adjust_sl: bool = Field(default=False, description="Whether to adjust stop-loss")
    new_tp_price: float | None = Field(None, gt=0, description="New take-profit price")
    new_sl_price: float | None = Field(None, gt=0, description="New stop-loss price")
    cancel_tp: bool = Field(default=False, description="Cancel existing take-profit order")
    cancel_sl: bool = Field(default=False, description="Cancel existing stop-loss order")


Action = Literal["buy", "sell", "hold", "adjust_position", "close_position", "adjust_orders"]
RiskLevel = Literal["low", "medium", "high"]


class AssetDecision(_DecisionModel):
    """Trading decision for a single asset."""

    asset: str = Field(..., description="Trading pair symbol")
    action: Action = Field(..., description="Trading action")
    allocation_usd: float = Field(..., ge=0, description="Allocation amount in USD")
    position_adjustment: PositionAdjustment | None = Field(
        None, description="Position adjustment details (for adjust_position action)"
    )
    order_adjustment: OrderAdjustment | None = Field(
        None, description="Order adjustment details (for adjust_orders action)"
    )
    tp_price: float | None = Field(None, gt=0, description="Take-profit price")
    sl_price: float | None = Field(None, gt=0, description="Stop-loss price")
    exit_plan: str = Field(..., description="Exit strategy description")
    rationale: str = Field(..., description="Decision reasoning")
    confidence: float = Field(..., ge=0, le=100, description="Confidence score")
    risk_level: RiskLevel = Field(..., description="Risk assessment")


class TradingDecision(_DecisionModel):
    """Multi-asset structured trading decision from LLM for perpetual futures."""

    decisions: list[AssetDecision] = Field(..., description="Trading decisions for each asset")
    portfolio_rationale: str = Field(..., description="Overall trading strategy and reasoning across assets")
    total_allocation_usd: float = Field(..., ge=0, description="Total allocation across all assets")
    portfolio_risk_level: RiskLevel = Field(..., description="Overall portfolio risk assessment")
    timestamp: UTCTimestamp = Field(default_factory=utc_now)


# ------------------------------------------------------------------------------------------------ market


class PricePoint(_UTCModel):
    """One closed candle of the price history (`timestamp` is the candle's open time)."""

    timestamp: UTCTimestamp
    open: float
    high: float
    low: float
    close: float
    volume: float


class TechnicalIndicatorsSet(_UTCModel):
    """Set of technical indicators for a specific timeframe (series ordered oldest to newest)."""

    ema_20: list[float] | None
    ema_50: list[float] | None
    macd: list[float] | None
    macd_signal: list[float] | None
    rsi: list[float] | None
    bb_upper: list[float] | None
    bb_middle: list[float] | None
    bb_lower: list[float] | None
    atr: list[float] | None


class TechnicalIndicators(_UTCModel):
    """Technical indicators for market analysis."""

    interval: TechnicalIndicatorsSet
    long_interval: TechnicalIndicatorsSet


class AssetMarketData(_UTCModel):
    """Market data for a single asset."""

    symbol: str
    current_price: float
    price_change_24h: float
    volume_24h: float
    funding_rate: float | None
    open_interest: float | None
    price_history: list[PricePoint]
    volatility: float
    technical_indicators: TechnicalIndicators


class MarketContext(_UTCModel):
    """Multi-asset market data context for perpetual futures trading decisions."""

    assets: dict[str, AssetMarketData] = Field(..., description="Market data for each asset symbol")
    market_sentiment: str | None = Field(None, description="Overall market sentiment (bullish/bearish/neutral)")
    timestamp: UTCTimestamp = Field(default_factory=utc_now)
    timeframes: list[str] | None = Field(
        None,
        description="The (decision, trend) timeframes of price_history and technical_indicators "
        "(interval, long_interval); None in contexts made before it was recorded",
    )


# ----------------------------------------------------------------------------------------------- account


STRATEGY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"
MAX_STRATEGY_NAME_CHARS = 200
MAX_TEMPLATE_CHARS = 8_000
MAX_COOLDOWN_S = 7 * 86_400


class _StrategyModel(_UTCModel):
    """A strategy's numbers are finite and bounded (`Infinity`, `NaN`, `1e400` or a 50-digit integer is a
    validation error, not a value that breaks the database or every later read) and never booleans."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        field = cls.model_fields[info.field_name] if info.field_name else None
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError("a number is expected, not a boolean")
        return value


class StrategyRiskParameters(_StrategyModel):
    """Risk management parameters for trading strategies."""

    max_risk_per_trade: float = Field(..., ge=0, le=100, description="Max risk per trade (%)")
    max_daily_loss: float = Field(..., ge=0, le=100, description="Max daily loss (%)")
    stop_loss_percentage: float = Field(..., ge=0, le=50, description="Default stop loss (%)")
    take_profit_ratio: float = Field(default=2.0, ge=1.0, le=100.0, description="Risk/reward ratio")
    max_leverage: float = Field(default=2.0, ge=1.0, le=10.0, description="Maximum leverage")
    cooldown_period: int = Field(
        default=300, ge=0, le=MAX_COOLDOWN_S, description="Cooldown between trades (seconds, at most a week)"
    )


StrategyType = Literal["conservative", "aggressive", "scalping", "swing", "dca", "custom"]


class TradingStrategy(_StrategyModel):
    """Trading strategy configuration."""

    strategy_id: str = Field(
        ...,
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="Unique strategy identifier: 3-64 characters of a-z, 0-9, '_' or '-'",
    )
    strategy_name: CleanLine = Field(
        ..., min_length=1, max_length=MAX_STRATEGY_NAME_CHARS, description="Human-readable strategy name"
    )
    strategy_type: StrategyType = Field(..., description="Strategy type classification")
    prompt_template: CleanText = Field(
        ..., max_length=MAX_TEMPLATE_CHARS, description="LLM prompt template for this strategy (Jinja2)"
    )
    risk_parameters: StrategyRiskParameters = Field(..., description="Risk management parameters")
    timeframe_preference: list[Annotated[str, Field(max_length=8)]] = Field(
        default=["1h", "4h"],
        max_length=8,
        description="Preferred timeframes for analysis: (decision, trend); a custom strategy's must be candles the "
        "agent can serve (whole multiples of INTERVAL among 1m 3m 5m 15m 30m 1h 2h 4h 8h 12h 1d)",
    )
    max_positions: int = Field(default=3, ge=1, le=50, description="Maximum concurrent positions")
    position_sizing: Literal["fixed", "percentage", "kelly", "volatility_adjusted"] = Field(
        default="percentage", description="Position sizing method"
    )
    is_active: bool = Field(default=True, description="Whether strategy is active")


class PositionSummary(_UTCModel):
    """An open position as the model sees it."""

    symbol: str
    side: Literal["long", "short"]
    size: float = Field(..., description="Position size in base units (always positive)")
    entry_price: float
    current_price: float
    unrealized_pnl: float
    percentage_pnl: float = Field(..., description="Unrealized PnL as % of the margin committed")
    leverage: float
    margin_usd: float
    liquidation_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    exit_plan: str | None = None
    entry_rationale: str | None = None
    opened_at: UTCTimestamp | None = None


class TradeHistory(_UTCModel):
    """A closed (or partially closed) trade."""

    symbol: str
    side: Literal["long", "short"]
    size: float
    entry_price: float
    exit_price: float
    realized_pnl: float
    fees: float
    exit_reason: str
    opened_at: UTCTimestamp | None = None
    closed_at: UTCTimestamp


class RiskMetrics(_UTCModel):
    """Portfolio risk figures (fractions, e.g. 0.05 = 5%)."""

    var_95: float = Field(..., description="One-period 95% value at risk as a fraction of equity")
    max_drawdown: float = Field(..., description="Largest peak-to-trough equity drop as a fraction")
    correlation_risk: float = Field(..., description="Mean absolute return correlation of held assets")
    concentration_risk: float = Field(..., description="Largest single position's share of gross exposure")


class PerformanceMetrics(_UTCModel):
    """Trading performance over the account's history."""

    total_pnl: float
    win_rate: float = Field(..., description="Winning closed trades / closed trades (0..1)")
    avg_win: float
    avg_loss: float
    max_drawdown: float
    sharpe_ratio: float


class AccountContext(_UTCModel):
    """Account state context for decisions."""

    account_id: int
    balance_usd: float
    available_balance: float
    total_pnl: float
    open_positions: list[PositionSummary]
    recent_performance: PerformanceMetrics
    risk_exposure: float
    max_position_size: float
    active_strategy: TradingStrategy
    maker_fee_bps: float
    taker_fee_bps: float


class TradingContext(_UTCModel):
    """Complete multi-asset context for trading decisions."""

    symbols: list[str] = Field(..., description="List of asset symbols to analyze")
    account_id: int
    market_data: MarketContext = Field(..., description="Multi-asset market data")
    account_state: AccountContext
    recent_trades: dict[str, list[TradeHistory]] = Field(..., description="Recent trades grouped by asset symbol")
    risk_metrics: RiskMetrics
    timestamp: UTCTimestamp
    errors: list[str] = Field(default_factory=list, description="Errors encountered during context building")
