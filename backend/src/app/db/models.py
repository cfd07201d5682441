"""SQLAlchemy 2 models: accounts, strategies, decisions (with provenance), orders, fills, positions,
equity snapshots, candles and funding rates. The schema is created by the Alembic migrations only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.types import UTCDateTime

LOOP_CYCLE = "trigger = 'loop' AND shadow_of IS NULL AND status <> 'interrupted'"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Strategy(Base):
    __tablename__ = "strategies"

    strategy_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    strategy_name: Mapped[str] = mapped_column(String(200))
    strategy_type: Mapped[str] = mapped_column(String(32))
    prompt_template: Mapped[str] = mapped_column(Text)
    risk_parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    timeframe_preference: Mapped[list[str]] = mapped_column(JSONType)
    max_positions: Mapped[int] = mapped_column(Integer)
    position_sizing: Mapped[str] = mapped_column(String(32))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    mode: Mapped[str] = mapped_column(String(16))  # paper | live
    venue: Mapped[str] = mapped_column(String(32))
    network: Mapped[str | None] = mapped_column(String(16), nullable=True)  # live: testnet | mainnet; paper: None
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")  # ACTIVE REDUCING HALTED PAUSED
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.strategy_id"))
    initial_balance: Mapped[float] = mapped_column(Float)
    max_position_size: Mapped[float] = mapped_column(Float)
    max_leverage: Mapped[float] = mapped_column(Float)
    maker_fee_bps: Mapped[float] = mapped_column(Float)
    taker_fee_bps: Mapped[float] = mapped_column(Float)
    daily_llm_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: LLM_DAILY_BUDGET_USD
    credentials_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)  # Fernet token, never clear
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StrategyAssignment(Base):
    __tablename__ = "strategy_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.strategy_id"))
    reason: Mapped[str] = mapped_column(Text)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Decision(Base):
    """One decision cycle of one account, with everything needed to explain and replay it."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_account_cycle", "account_id", "cycle_time"),
        Index("ix_decisions_account_id", "account_id", "id"),  # history: newest first per account
        # the loop decides a (account, candle) at most once, whichever process runs its job (an interrupted candle
        # may be decided again; shadows and API decisions are not the loop's)
        Index(
            "uq_decisions_loop_cycle",
            "account_id",
            "cycle_time",
            unique=True,
            postgresql_where=text(LOOP_CYCLE),
            sqlite_where=text(LOOP_CYCLE),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    cycle_time: Mapped[datetime] = mapped_column(UTCDateTime)  # the clock's time of the cycle
    trigger: Mapped[str] = mapped_column(String(16))  # loop | api | cli
    status: Mapped[str] = mapped_column(String(16))  # executed | partial | no_action | fallback | error
    symbols: Mapped[list[str]] = mapped_column(JSONType)
    symbols_key: Mapped[str] = mapped_column(String(1000))  # ",BTC,ETH," for the symbol filter
    strategy_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    context_errors: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    model_requested: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_served: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(100), nullable=True)
    raw_response: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_raw_response: Mapped[str | None] = mapped_column(Text, nullable=True)  # before a schema re-ask
    parsed_decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    validation_result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    final_decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure: Mapped[str | None] = mapped_column(String(32), nullable=True)  # class of a model failure
    execution_errors: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # What each asset was when the decision was made, as its context showed it: {asset: {"price": the current
    # price, "position": "long" | "short" | None, "stop": its stop or None, "target": its target or None}}.
    # Outcomes are measured from it (a hold keeps the position's direction and its stop and target).
    asset_state: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # A/B experiments (plain integers, no foreign keys: SQLite adds a column with a key only by rebuilding the
    # table). `shadow_of`: a shadow decision (status `shadow`, never executed) names the executed decision whose
    # stored context it was made on.
    experiment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    variant_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    shadow_of: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class DecisionProvenance(Base):
    """What a decision was made from: the context the model saw and the prompt it was sent. Kept apart from
    the decision's row (they are most of its size) because lists of decisions never read them."""

    __tablename__ = "decision_provenance"

    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), primary_key=True)
    context_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)


class LLMCall(Base):
    """One call to a model (its HTTP retries and re-ask included), successful or not."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_account_time", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), nullable=True, index=True)
    model_requested: Mapped[str] = mapped_column(String(200))
    model_served: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(100), nullable=True)
    generation_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))  # ok | empty | truncated | no_json | invalid_json | schema
    # | api_error | circuit_open
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    reasked: Mapped[bool] = mapped_column(Boolean, default=False)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_account_status", "account_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), nullable=True, index=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    venue_order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # entry increase decrease close stop_loss take_profit
    reduce_only: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[float] = mapped_column(Float)
    trigger_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    price: Mapped[float | None] = mapped_column(Float, nullable=True)  # limit price
    filled_quantity: Mapped[float] = mapped_column(Float, default=0.0)
    avg_fill_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    reject_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Fill(Base):
    __tablename__ = "fills"
    __table_args__ = (UniqueConstraint("account_id", "venue_fill_id", name="uq_fills_account_venue_fill"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, index=True)
    client_order_id: Mapped[str] = mapped_column(String(64))
    venue_fill_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[float] = mapped_column(Float)
    price: Mapped[float] = mapped_column(Float)
    fee: Mapped[float] = mapped_column(Float)
    realized_pnl: Mapped[float] = mapped_column(Float)
    liquidity: Mapped[str] = mapped_column(String(8))
    filled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (Index("ix_positions_account_status", "account_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), nullable=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))  # open | closed
    size: Mapped[float] = mapped_column(Float)
    entry_price: Mapped[float] = mapped_column(Float)
    leverage: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    liquidation_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    take_profit: Mapped[float | None] = mapped_column(Float, nullable=True)
    entry_rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    exit_plan: Mapped[str | None] = mapped_column(Text, nullable=True)
    realized_pnl: Mapped[float] = mapped_column(Float, default=0.0)  # gross of fees
    fees: Mapped[float] = mapped_column(Float, default=0.0)
    exit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EquitySnapshot(Base):
    __tablename__ = "equity_snapshots"
    __table_args__ = (Index("ix_equity_snapshots_account_time", "account_id", "taken_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    wallet_balance: Mapped[float] = mapped_column(Float)
    unrealized_pnl: Mapped[float] = mapped_column(Float)
    equity: Mapped[float] = mapped_column(Float)
    margin_used: Mapped[float] = mapped_column(Float)
    realized_pnl: Mapped[float] = mapped_column(Float)
    fees_paid: Mapped[float] = mapped_column(Float)
    funding_net: Mapped[float] = mapped_column(Float, default=0.0)  # received - paid


class FundingPayment(Base):
    """Funding settled on a position: `amount` > 0 received, < 0 paid."""

    __tablename__ = "funding_payments"
    __table_args__ = (UniqueConstraint("account_id", "symbol", "funding_time", name="uq_funding_payments_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(32))
    funding_time: Mapped[datetime] = mapped_column(UTCDateTime)
    rate: Mapped[float] = mapped_column(Float)
    position_side: Mapped[str] = mapped_column(String(8))
    position_size: Mapped[float] = mapped_column(Float)
    mark_price: Mapped[float] = mapped_column(Float)
    amount: Mapped[float] = mapped_column(Float)


class DecisionOutcome(Base):
    """What followed one asset decision after `horizon` closed candles of `interval`: the mark-to-market return
    of the direction the decision left (`direction`: +1 long, -1 short, 0 flat) from the decision's price, the
    excursions, and whether its stop or its target would have been hit first. One row per (decision, asset,
    horizon), written once that horizon's last candle has closed; `model`, `strategy_id`, the experiment and the
    variant are copied from the decision so that figures group without a join."""

    __tablename__ = "decision_outcomes"
    __table_args__ = (
        UniqueConstraint("decision_id", "asset", "horizon", name="uq_decision_outcomes_key"),
        Index("ix_decision_outcomes_account_cycle", "account_id", "cycle_time"),
        Index("ix_decision_outcomes_experiment", "experiment_id", "variant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    asset: Mapped[str] = mapped_column(String(32))
    interval: Mapped[str] = mapped_column(String(8))
    horizon: Mapped[int] = mapped_column(Integer)  # candles of `interval`
    cycle_time: Mapped[datetime] = mapped_column(UTCDateTime)  # the decision's (market clock)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)  # served, else requested
    strategy_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    experiment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    variant_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    action: Mapped[str] = mapped_column(String(32))  # the model's proposed action (a fallback's hold)
    verdict: Mapped[str] = mapped_column(String(16))  # accepted | adjusted | rejected | fallback
    direction: Mapped[int] = mapped_column(Integer)  # the exposure the decision leaves: +1, -1, 0
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)  # 0..100
    entry_price: Mapped[float] = mapped_column(Float)
    stop_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    target_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_price: Mapped[float] = mapped_column(Float)  # the close of the horizon's last candle
    market_return: Mapped[float] = mapped_column(Float)  # exit / entry - 1
    direction_return: Mapped[float] = mapped_column(Float)  # direction x market_return (0 when flat)
    max_adverse: Mapped[float | None] = mapped_column(Float, nullable=True)  # >= 0, fraction of entry; None flat
    max_favourable: Mapped[float | None] = mapped_column(Float, nullable=True)
    first_hit: Mapped[str | None] = mapped_column(String(8), nullable=True)  # stop | target | none; None flat
    first_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # that candle's open time
    hit: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # direction_return > 0; None when flat
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock


class DecisionTradeOutcome(Base):
    """A position a decision opened, once closed: its realized PnL with fees and funding, attributed to that
    decision (one row per position)."""

    __tablename__ = "decision_trade_outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    position_id: Mapped[int] = mapped_column(ForeignKey("positions.id"), unique=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    asset: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    strategy_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    experiment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    variant_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    realized_pnl: Mapped[float] = mapped_column(Float)  # gross
    fees: Mapped[float] = mapped_column(Float)
    funding: Mapped[float] = mapped_column(Float)  # received - paid
    net_pnl: Mapped[float] = mapped_column(Float)  # realized - fees + funding
    margin: Mapped[float] = mapped_column(Float)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock


class Experiment(Base):
    """An A/B experiment: variants, the metric at a horizon, the sample size fixed when it started, and how
    decisions are assigned (`accounts`: each account runs one variant; `shadow`: every variant decides on each
    cycle of every account, only the control's decision is executed)."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # running | stopped
    assignment: Mapped[str] = mapped_column(String(16))  # accounts | shadow
    metric: Mapped[str] = mapped_column(String(32))  # mean_return | hit_rate | brier
    horizon: Mapped[int] = mapped_column(Integer)  # candles of `interval`
    interval: Mapped[str] = mapped_column(String(8))
    min_samples: Mapped[int] = mapped_column(Integer)  # per variant, in cycles; fixed at start
    confidence_level: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)  # the bootstrap's
    accounts: Mapped[list[int]] = mapped_column(JSONType)
    owner_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)  # None: admin
    expected_daily_cost_usd: Mapped[float] = mapped_column(Float)
    started_cycle: Mapped[datetime] = mapped_column(UTCDateTime)  # the first candle it decides (market clock)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)


class ExperimentVariant(Base):
    """One arm of an experiment. A field left None keeps the account's own setting."""

    __tablename__ = "experiment_variants"
    __table_args__ = (UniqueConstraint("experiment_id", "name", name="uq_experiment_variants_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    strategy_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    daily_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    expected_daily_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class ExperimentAssignment(Base):
    """Which variant an account runs in an `accounts` experiment: drawn once when it starts, never changed."""

    __tablename__ = "experiment_assignments"
    __table_args__ = (UniqueConstraint("experiment_id", "account_id", name="uq_experiment_assignments_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("experiment_variants.id"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock


class CandleRow(Base):
    __tablename__ = "candles"
    __table_args__ = (UniqueConstraint("source", "symbol", "timeframe", "open_time", name="uq_candles_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(32))
    timeframe: Mapped[str] = mapped_column(String(8))
    open_time: Mapped[datetime] = mapped_column(UTCDateTime)
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)


class FundingRateRow(Base):
    __tablename__ = "funding_rates"
    __table_args__ = (UniqueConstraint("source", "symbol", "funding_time", name="uq_funding_rates_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(32))
    funding_time: Mapped[datetime] = mapped_column(UTCDateTime)
    rate: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored. `account_id` None means an admin key."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart in lists
    role: Mapped[str] = mapped_column(String(16))  # admin | account
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEntry(Base):
    """Every mutating API request: who, what, when, and the result."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_time", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    key_prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    status_code: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccountStatusChange(Base):
    """An account's status history: every pause, resume, reduce and halt through the API, with its reason."""

    __tablename__ = "account_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its audit entry's
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock


class LLMSetting(Base):
    """An LLM setting changed at run time: `default_model` (the switched default model) or
    `openrouter_api_key` (a rotated key, stored encrypted: `value` is a Fernet token, never the key)."""

    __tablename__ = "llm_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock
    updated_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BacktestRun(Base):
    """A backtest or an arena: its settings, the data's and the code's fingerprints, its progress while it runs,
    and its figures once done. An arena's backtests point at it (`parent_id`)."""

    __tablename__ = "backtest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # backtest | arena
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("backtest_runs.id"), nullable=True, index=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed | stopped
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    data_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trade_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cycles_total: Mapped[int] = mapped_column(Integer, default=0)
    cycles_done: Mapped[int] = mapped_column(Integer, default=0)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # figures and benchmarks
    # after every cycle: [[time (ISO), equity, wallet, gross exposure, {asset: last close}], ...]
    equity: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the process running it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock: progress heartbeat
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BacktestRecord(Base):
    """One decision (per asset), order, fill or funding payment of a backtest, in the order it happened, and the
    funding settlements of its period (`rate`: what buy-and-hold paid)."""

    __tablename__ = "backtest_records"
    __table_args__ = (Index("ix_backtest_records_run_kind", "run_id", "kind", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("backtest_runs.id"))
    kind: Mapped[str] = mapped_column(String(16))  # decision | order | fill | funding | rate (a funding settlement)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # market clock
    asset: Mapped[str | None] = mapped_column(String(32), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)


class ModelAnswer(Base):
    """A model's answer kept for backtests, by (model, prompt, parameters): a rerun asks no model again."""

    __tablename__ = "model_answers"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of model, prompt and parameters
    model: Mapped[str] = mapped_column(String(200))
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock


class Alert(Base):
    """An alert (see services/alerts): stored once per (kind, subject) and quiet period; a repeat inside the period
    is counted on the row (`repeats`, `last_at`) and not sent again. `delivery` says what became of sending it:
    `pending`, `delivered`, `not configured` or `failed: <reason>` (never a URL's secret parts). A pending alert is
    claimed by the process sending it (`sending_by`) until `sending_until` (wall clock, renewed while the send runs):
    another process sends it again only once that has passed (its sender was killed)."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_kind_subject_first", "kind", "subject", "first_at"),
        Index("ix_alerts_first_at", "first_at"),
        # what a resender looks at: the pending alerts, by the end of their claim
        Index(
            "ix_alerts_pending",
            "sending_until",
            postgresql_where=text("delivery = 'pending'"),
            sqlite_where=text("delivery = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))  # critical | warning | info
    title: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    # no foreign key: an alert is stored whatever it names (an account being created, or gone)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)  # wall clock: the last repeat
    repeats: Mapped[int] = mapped_column(Integer, default=0)
    delivery: Mapped[str] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sending_by: Mapped[str | None] = mapped_column(String(120), nullable=True)  # host:pid:id of the sending center
    sending_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # wall clock


class AccountLease(Base):
    """Who decides for an account, or sends its orders, now (`purpose`), across processes: taken by one process until
    `until` (wall clock) and given back when done; a lease whose holder was killed ends at `until`."""

    __tablename__ = "account_leases"

    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)  # decide | execute
    holder: Mapped[str] = mapped_column(String(120))
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer)  # counts the takes: a holder sees whether anyone held it between


class RateBucket(Base):
    """A leaky bucket every process shares: `level` requests counted at `at` (wall clock), draining at its rate."""

    __tablename__ = "rate_buckets"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    level: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class LLMSlot(Base):
    """One of the model calls allowed in flight at once across processes: free when `until` (wall clock) has passed."""

    __tablename__ = "llm_slots"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(120), nullable=True)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WorkerStats(Base):
    """A worker process's counters and heartbeat (`last_seen`, wall clock), for `/metrics` and `/health`."""

    __tablename__ = "worker_stats"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(120))
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    jobs: Mapped[int] = mapped_column(Integer, default=0)
    decisions: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    cpu_s: Mapped[float] = mapped_column(Float, default=0.0)  # the process's CPU time (user + system)
    decisions_per_s: Mapped[float] = mapped_column(Float, default=0.0)  # over the last heartbeat interval
