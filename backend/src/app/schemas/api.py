"""Request and response bodies of the HTTP API (beyond the canonical decision schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.trading_decision import TradingContext, TradingDecision, TradingStrategy
from app.schemas.validation import RiskState

AccountStatus = Literal["ACTIVE", "REDUCING", "HALTED", "PAUSED"]
# Database ids are 32-bit integers (PostgreSQL INTEGER): a larger id in a request is refused with a 422
# instead of overflowing in the database driver.
MAX_DB_ID = 2_147_483_647


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(StrictBody):
    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    mode: Literal["paper", "live"] = "paper"
    venue: Literal["binanceusdm", "hyperliquid"] = "binanceusdm"
    initial_balance: float = Field(10_000.0, gt=0, le=1e9, description="USD")
    strategy_id: str = Field("conservative", min_length=1, max_length=64)
    max_position_size: float | None = Field(None, gt=0, le=1e9, description="Margin per position (USD)")
    max_leverage: float = Field(5.0, ge=1, le=125)
    model: str | None = Field(None, min_length=1, max_length=200)
    daily_llm_budget_usd: float | None = Field(None, ge=0, le=1e6)


class AccountView(BaseModel):
    id: int
    name: str
    mode: str
    venue: str
    status: AccountStatus
    model: str | None
    strategy_id: str
    initial_balance: float
    max_position_size: float
    max_leverage: float
    maker_fee_bps: float
    taker_fee_bps: float
    daily_llm_budget_usd: float | None
    has_credentials: bool
    created_at: datetime
    updated_at: datetime


class StatusChange(StrictBody):
    reason: str = Field("", max_length=500)


class ModelAssignment(StrictBody):
    model: str | None = Field(..., max_length=200, description="None: use LLM_MODEL")


class StrategySwitch(StrictBody):
    strategy_id: str = Field(..., min_length=1, max_length=64)
    reason: str = Field("switched through the API", max_length=500)


class CustomStrategyRequest(StrictBody):
    strategy: TradingStrategy


class ModelSwitchRequest(StrictBody):
    model: str = Field(..., min_length=1, max_length=200, pattern=r"^\S+$")
    account_id: int | None = Field(
        None, ge=1, le=MAX_DB_ID, description="Only this account; without it, the default model"
    )


class ValidateRequest(StrictBody):
    decision: TradingDecision
    context: TradingContext
    risk_state: RiskState | None = None


class CredentialsRequest(StrictBody):
    api_key: str = Field(..., min_length=1, max_length=500)
    api_secret: str = Field(..., min_length=1, max_length=500)


class ApiKeyCreated(BaseModel):
    id: int = Field(..., description="The key's id, to revoke it")
    key: str = Field(..., description="Shown once; only its hash is stored")
    prefix: str
    role: str
    account_id: int | None


class ApiKeyView(BaseModel):
    """A stored key as operators see it: never the key, nor its hash."""

    id: int
    prefix: str = Field(..., description="The key's first characters, to tell keys apart")
    role: str
    account_id: int | None
    name: str
    created_at: datetime
    revoked_at: datetime | None = Field(None, description="Set once the key is revoked: it is refused from then on")


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
    opened_at: datetime
    closed_at: datetime | None
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
    created_at: datetime
    updated_at: datetime


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
    filled_at: datetime


class DecisionMetrics(BaseModel):
    account_id: int
    timeframe: str
    since: datetime
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
    created_at: datetime
