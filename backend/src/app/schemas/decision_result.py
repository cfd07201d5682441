"""What one decision cycle produced, as the API and the CLI show it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.trading_decision import TradingDecision
from app.schemas.validation import ValidationResult

DecisionStatus = Literal[
    "pending", "executed", "partial", "no_action", "fallback", "skipped", "error", "interrupted", "shadow"
]


class OrderSummary(BaseModel):
    client_order_id: str
    symbol: str
    side: str
    type: str
    kind: str
    status: str
    quantity: float
    trigger_price: float | None = None
    filled_quantity: float = 0.0
    avg_fill_price: float | None = None
    reject_reason: str | None = None


class UsageSummary(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None


class DecisionResult(BaseModel):
    """A stored decision with its provenance summary (the full context and prompt stay in the database)."""

    id: int
    account_id: int
    cycle_time: datetime = Field(
        ...,
        description="The cycle's time: the market clock (simulated, replayed or real) floored to INTERVAL, the close "
        "of the last closed candle",
    )
    created_at: datetime = Field(..., description="When the cycle began, by the market clock")
    trigger: str
    status: DecisionStatus = Field(
        description="pending: the model is being asked (never left so: a stopped agent marks it); executed, "
        "partial, no_action, fallback (every asset held), skipped (account not tradable): finished; error: the "
        "cycle failed (reason in `error`); interrupted: the agent stopped or crashed before the decision "
        "completed (reason in `error`; the candle is decided again while it is the current one)"
    )
    symbols: list[str]
    strategy_id: str | None
    decision: TradingDecision | None = Field(None, description="The decision that was executed (after validation)")
    model_decision: TradingDecision | None = Field(None, description="The model's own decision as parsed")
    validation: ValidationResult | None = None
    orders: list[OrderSummary] = Field(default_factory=list)
    is_fallback: bool = False
    error: str | None = None
    failure: str | None = None
    context_errors: list[str] = Field(default_factory=list)
    execution_errors: list[str] = Field(default_factory=list)
    model_requested: str | None = None
    model_served: str | None = None
    provider: str | None = None
    finish_reason: str | None = None
    usage: UsageSummary = Field(default_factory=UsageSummary)
    latency_ms: float | None = None
    raw_response: str | None = None
    first_raw_response: str | None = Field(None, description="The first answer, when it was re-asked once")
    experiment_id: int | None = Field(None, description="The A/B experiment this decision was made in, if any")
    variant_id: int | None = Field(None, description="The experiment's variant that made it")
    shadow_of: int | None = Field(
        None,
        description="For a shadow decision (status `shadow`: an experiment's variant, recorded, never executed): the "
        "executed decision whose context it was made on",
    )
    provenance: dict[str, Any] | None = Field(None, description="Context snapshot and prompt, when asked for")
