"""What the validator says about a decision: a verdict per asset, and the decision that may execute."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.trading_decision import AssetDecision, TradingDecision

VerdictStatus = Literal["accepted", "adjusted", "rejected"]


class AssetVerdict(BaseModel):
    """The verdict on one asset. `final` is what may execute: the original, an adjusted copy, or the
    conservative fallback (hold, keep protective orders) when rejected."""

    asset: str
    status: VerdictStatus
    reasons: list[str] = Field(default_factory=list)
    original: AssetDecision | None = Field(None, description="The model's decision (None if it gave none)")
    final: AssetDecision
    is_fallback: bool = False


class ValidationResult(BaseModel):
    is_valid: bool = Field(
        ...,
        description="True when no asset was rejected and no decision was dropped (an asset outside the request "
        "or not a symbol, a second decision for one asset: each is listed in `errors`)",
    )
    verdicts: list[AssetVerdict]
    errors: list[str] = Field(default_factory=list, description="Decision-level findings")
    final_decision: TradingDecision

    @property
    def has_fallback(self) -> bool:
        return any(v.is_fallback for v in self.verdicts)


class RiskValidationResult(BaseModel):
    """The outcome of the account-level risk checks on a decision."""

    passed: bool
    verdicts: list[AssetVerdict]
    errors: list[str] = Field(default_factory=list)


class RiskState(BaseModel):
    """What the rules need beyond the context: the account's day, its recent trades and its limits."""

    now: datetime
    reduce_only_reason: str | None = Field(None, description="Set when only reducing actions may pass")
    day_start_equity: float | None = Field(None, description="Equity at the first snapshot of the UTC day")
    day_pnl_usd: float = Field(0.0, description="Equity now minus equity at the start of the UTC day")
    last_trade_at: dict[str, datetime] = Field(default_factory=dict, description="Last entry/increase per asset")
    account_max_leverage: float | None = None
    venue_max_leverage: dict[str, float] = Field(default_factory=dict)
    maintenance_margin_rate: float = Field(0.005, description="The venue's rate, for assets not in the map below")
    maintenance_margin_rates: dict[str, float] = Field(
        default_factory=dict, description="Per asset, where the venue's rate depends on it (Hyperliquid)"
    )
