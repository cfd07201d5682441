"""Request and response bodies of the HTTP API (beyond the canonical decision schemas).

Two clocks stamp what the API shows: the **wall clock** (real UTC time) stamps operational records (accounts'
`created_at`/`updated_at`, API keys, the audit log, status changes) and times rate limits; the **market clock**
(`agent.clock`: simulated, replayed or real) stamps cycles, candles, decisions, orders, fills and positions.
Every time field says which one it is in.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from app.schemas.strategies import CustomStrategy
from app.schemas.text import CleanLine
from app.schemas.trading_decision import STRATEGY_ID_PATTERN, TradingContext, TradingDecision
from app.schemas.validation import RiskState

AccountStatus = Literal["ACTIVE", "REDUCING", "HALTED", "PAUSED"]
# Database ids are 32-bit integers (PostgreSQL INTEGER): a larger id in a request is refused with a 422
# instead of overflowing in the database driver.
MAX_DB_ID = 2_147_483_647
# An id in a request body: a JSON integer (`true` is not account 1, nor is `"1"`: every JSON body's types are the
# schema's, see app.api.protocol.json_body; `1.0` is the integer 1, as in JSON Schema).
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]

WALL_CLOCK = "wall clock (real UTC time)"
MARKET_CLOCK = "market clock (the agent's clock: simulated, replayed or real)"


def _as_utc(value: datetime) -> datetime:
    """A time without a time zone (or a plain date) is read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _not_a_number(value: object) -> object:
    """Pydantic reads a number (or a numeric text such as `0.5`) as a Unix time; the schema says ISO 8601."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("a time is ISO 8601 (e.g. 2026-01-01T00:00:00Z or 2026-01-01), not a number")
    return value


# A time given in a query: ISO 8601, a plain date, or either without a zone (read as UTC); never a number.
UTCDateTime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_as_utc)]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(StrictBody):
    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    mode: Literal["paper", "live"] = Field(
        "paper",
        description="paper: simulated fills; live: real orders on the venue's `network` once the agent runs with "
        "TRADING_MODE=live and the account's credentials are stored",
    )
    venue: Literal["binanceusdm", "hyperliquid"] = "binanceusdm"
    network: Literal["testnet", "mainnet"] = Field(
        "testnet",
        description="A live account's venue network: testnet (Hyperliquid testnet, Binance USD-M demo trading) or "
        "mainnet (real money: the agent must run with LIVE_MAINNET_CONFIRM=real-money); ignored for paper accounts",
    )
    initial_balance: float = Field(10_000.0, gt=0, le=1e9, description="USD")
    strategy_id: str = Field(
        "conservative",
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="An active strategy's id (an unknown one answers 404)",
    )
    max_position_size: float | None = Field(None, gt=0, le=1e9, description="Margin per position (USD)")
    max_leverage: float = Field(5.0, ge=1, le=125)
    model: str | None = Field(None, min_length=1, max_length=200)
    daily_llm_budget_usd: float | None = Field(None, ge=0, le=1e6)


class AccountView(BaseModel):
    id: int
    name: str
    mode: str
    venue: str
    network: str | None = Field(None, description="A live account's network (testnet or mainnet); null for paper")
    live_refusal: str | None = Field(
        None, description="Why this live account is not traded now, and what would change it; null when it trades"
    )
    status: AccountStatus
    model: str | None
    strategy_id: str
    strategy_notice: str | None = Field(
        None,
        description="Why the account holds instead of deciding: its strategy was deactivated or its stored "
        "definition is invalid (switch it to an available strategy); null when its strategy can run",
    )
    initial_balance: float
    max_position_size: float
    max_leverage: float
    maker_fee_bps: float
    taker_fee_bps: float
    daily_llm_budget_usd: float | None
    has_credentials: bool
    created_at: datetime = Field(..., description=f"When the account was created, by the {WALL_CLOCK}")
    updated_at: datetime = Field(..., description=f"Its last change through the API, by the {WALL_CLOCK}")


class StatusChange(StrictBody):
    """The optional body of pause, resume, reduce and halt."""

    reason: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Why: stored in the audit log and the account's history",
    )


class StatusChangeView(BaseModel):
    """One change of an account's status, as its history shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: int
    from_status: str
    to_status: AccountStatus
    reason: str | None
    key_prefix: str | None = Field(None, description="The first characters of the key that made it")
    changed_at: datetime = Field(..., description=f"By the {WALL_CLOCK}")


class ModelAssignment(StrictBody):
    model: str | None = Field(..., max_length=200, description="None: use LLM_MODEL")


class StrategySwitch(StrictBody):
    strategy_id: str = Field(
        ...,
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="An active strategy's id (an unknown one answers 404, an inactive one 409)",
    )
    reason: CleanLine = Field("switched through the API", max_length=500)


class CustomStrategyRequest(StrictBody):
    strategy: CustomStrategy


class ModelSwitchRequest(StrictBody):
    model: str = Field(..., min_length=1, max_length=200, pattern=r"^\S+$")
    account_id: int | None = Field(
        None, ge=1, le=MAX_DB_ID, description="Only this account; without it, the default model"
    )


class ValidationContext(TradingContext):
    """The context a decision is validated against: its account id names the account the caller must be allowed
    to see, so it is an id like any other (a JSON integer from 1 to MAX_DB_ID; `true` is not account 1)."""

    account_id: DbId


class ValidateRequest(StrictBody):
    decision: TradingDecision
    context: ValidationContext
    risk_state: RiskState | None = None


class CredentialsRequest(StrictBody):
    """A venue account's keys, stored encrypted and never shown again."""

    api_key: str = Field(
        ..., min_length=1, max_length=500, description="Binance: the API key; Hyperliquid: the wallet address (0x...)"
    )
    api_secret: str = Field(
        ...,
        min_length=1,
        max_length=500,
        description="Binance: the API secret; Hyperliquid: the API wallet's private key",
    )


class ApiKeyCreate(StrictBody):
    """The optional body of `POST /accounts/{id}/keys`."""

    name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:@-]*$",
        description="A label to tell the key apart (default: `account <id>`)",
    )


class ApiKeyCreated(BaseModel):
    id: int = Field(..., description="The key's id, to revoke it")
    key: str = Field(..., description="Shown once; only its hash is stored")
    prefix: str
    role: str
    account_id: int | None
    name: str
    created_at: datetime = Field(..., description=f"By the {WALL_CLOCK}")


class ApiKeyView(BaseModel):
    """A stored key as operators see it: never the key, nor its hash."""

    id: int
    prefix: str = Field(..., description="The key's first characters, to tell keys apart")
    role: str
    account_id: int | None
    name: str
    created_at: datetime = Field(..., description=f"By the {WALL_CLOCK}")
    revoked_at: datetime | None = Field(
        None, description=f"Set once the key is revoked (by the {WALL_CLOCK}): it is refused from then on"
    )


class PositionView(BaseModel):
    id: int
    symbol: str
    side: str
    status: str
    size: float
    entry_price: float
    leverage: float
    margin: float
    liquidation_price: float | None
    stop_loss: float | None
    take_profit: float | None
    realized_pnl: float
    fees: float
    exit_price: float | None
    exit_reason: str | None
    entry_rationale: str | None
    exit_plan: str | None
    opened_at: datetime = Field(..., description=f"By the {MARKET_CLOCK}")
    closed_at: datetime | None = Field(..., description=f"By the {MARKET_CLOCK}")
    decision_id: int | None


class OrderView(BaseModel):
    id: int
    client_order_id: str
    decision_id: int | None
    symbol: str
    side: str
    type: str
    kind: str
    reduce_only: bool
    status: str
    quantity: float
    trigger_price: float | None
    filled_quantity: float
    avg_fill_price: float | None
    reject_reason: str | None
    created_at: datetime = Field(..., description=f"By the {MARKET_CLOCK}")
    updated_at: datetime = Field(..., description=f"By the {MARKET_CLOCK}")


class FillView(BaseModel):
    id: int
    client_order_id: str
    symbol: str
    side: str
    reason: str
    quantity: float
    price: float
    fee: float
    realized_pnl: float
    liquidity: str
    filled_at: datetime = Field(..., description=f"By the {MARKET_CLOCK}")


class OutcomeHorizon(IntEnum):
    """The horizons decision outcomes are measured at, in candles of INTERVAL (an enum rather than a Literal: a
    query's text `4` is read as the number)."""

    ONE = 1
    FOUR = 4
    TWELVE = 12
    TWENTY_FOUR = 24


OutcomeGroupBy = Literal["model", "strategy", "asset", "account"]


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: a ratio without a denominator (a profit factor without a loss) is null."""
    return value if value is None or math.isfinite(value) else None


Figure = Annotated[float | None, AfterValidator(_finite)]


class ReliabilityRow(BaseModel):
    """The directional asset decisions whose confidence fell in [low, high) percent: how often they were right
    (a calibrated model's hit rate is close to its mean confidence). Empty buckets are left out."""

    model_config = ConfigDict(from_attributes=True)

    low: float = Field(..., description="Confidence from (percent)")
    high: float = Field(..., description="Confidence below (percent; the last bucket includes 100)")
    decisions: int
    mean_confidence: float = Field(..., description="Their mean confidence (percent)")
    hit_rate: float = Field(..., description="The share of them whose direction made money (0..1)")


class TradeFigures(BaseModel):
    """Positions the decisions of the window opened, once closed (attributed to the decision that opened each);
    summed in the database, so they cover the whole window even when the outcome rows are capped."""

    model_config = ConfigDict(from_attributes=True)

    trades: int
    realized_pnl: float = Field(..., description="Gross realized PnL (USD)")
    fees: float
    funding: float = Field(..., description="Funding received minus paid")
    net_pnl: float = Field(..., description="realized_pnl - fees + funding")


class CostFigures(BaseModel):
    """What the decisions' model calls cost (llm_calls of each decision, retries and re-asks included); a decision
    without a model call (the rule-based baseline) counts with nothing spent. A decision covers all its assets
    with one call: grouped by asset, each decision's whole cost counts for every asset it covered."""

    model_config = ConfigDict(from_attributes=True)

    decisions: int = Field(..., description="Decisions (cycles) these figures cover")
    llm_calls: int
    tokens: int = Field(..., description="Prompt and completion tokens")
    cost_usd: float
    tokens_per_decision: float | None
    cost_usd_per_decision: float | None


class OutcomeFigures(BaseModel):
    """How asset decisions turned out at the horizon. `decisions` counts asset decisions (a cycle deciding three
    assets counts three); `directional` those that left a long or short (the hit rate, returns per directional
    decision, profit factor, Brier score and excursions are over these); a flat one counts in `mean_return_all`
    with a return of 0. Returns are fractions of the entry price (0.01 is 1 %)."""

    model_config = ConfigDict(from_attributes=True)

    decisions: int
    directional: int
    hits: int
    hit_rate: Figure
    mean_return: Figure
    median_return: Figure
    mean_return_all: Figure = Field(..., description="Mean return over every asset decision, flat ones as 0")
    profit_factor: Figure = Field(..., description="Sum of gains / sum of losses; null without a loss")
    brier: Figure = Field(..., description="Mean (confidence/100 - hit)^2 over decisions with a confidence")
    reliability: list[ReliabilityRow]
    mean_adverse: Figure = Field(..., description="Mean maximum adverse excursion (fraction of entry)")
    mean_favourable: Figure = Field(..., description="Mean maximum favourable excursion (fraction of entry)")
    stop_first: int = Field(..., description="Decisions whose stop would have been hit before their target")
    target_first: int = Field(..., description="Decisions whose target would have been hit before their stop")
    trades: TradeFigures
    cost: CostFigures

    @classmethod
    def of(cls, score: object, trades: object, cost: object, **extra: object) -> Self:
        """From a `scoring.OutcomeScore` and the trade and cost totals (each read by attribute), with `extra`
        fields of a subclass."""
        scored = {name: getattr(score, name) for name in OutcomeFigures.model_fields if name not in ("trades", "cost")}
        return cls.model_validate({**scored, "trades": trades, "cost": cost, **extra}, from_attributes=True)


class OutcomeGroup(OutcomeFigures):
    key: str | int | None = Field(
        ..., description="The model, strategy id, asset or account id of the group; null: not recorded"
    )


class OutcomeReport(BaseModel):
    """Outcome figures of the decisions made in the window (by cycle time), at one horizon."""

    horizon: int = Field(..., description="Candles of `interval` after the decision")
    interval: str
    include_shadow: bool = Field(..., description="Whether experiments' shadow decisions (never executed) count")
    group_by: OutcomeGroupBy | None = None
    row_limit: int = Field(..., description="At most this many asset decisions (the newest) are read")
    capped: bool = Field(
        ..., description="The window holds more asset decisions than `row_limit`: the figures are of the newest"
    )
    oldest_cycle: datetime | None = Field(
        ..., description=f"The oldest decision the figures cover (later than `since` when capped), {MARKET_CLOCK}"
    )
    overall: OutcomeFigures
    groups: list[OutcomeGroup] = Field(default_factory=list, description="One entry per `group_by` value")


class DecisionMetrics(BaseModel):
    """Counts leave experiments' shadow decisions out (they were never executed); model calls count all."""

    account_id: int | None = Field(..., description="null: every account")
    timeframe: str
    since: datetime = Field(..., description=f"Start of the window, by the {MARKET_CLOCK}")
    decisions: int
    by_status: dict[str, int]
    fallback_rate: float
    rejected_assets: int
    llm_calls: int
    llm_failures: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    avg_latency_ms: float | None
    outcomes: OutcomeReport


class AuditEntryView(BaseModel):
    """One mutating API request: who (key prefix and role), what (method and path), when and the result."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    request_id: str
    key_prefix: str | None = Field(None, description="The first characters of the key used (never the key)")
    role: str | None = Field(None, description="admin or account; null when no valid key was sent")
    account_id: int | None
    method: str
    path: str
    status_code: int
    detail: str | None = Field(None, description="The reason given with the request, when it has one")
    created_at: datetime = Field(..., description=f"When the request was answered, by the {WALL_CLOCK}")
