"""What the validator says about a decision: a verdict per asset, and the decision that may execute."""

from __future__ import annotations

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
    is_valid: bool = Field(..., description="True when no asset was rejected")
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
