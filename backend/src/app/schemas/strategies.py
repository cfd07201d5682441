"""Request bodies of the strategy endpoints beyond the seed's: a partial edit of a custom strategy and the
reason for (de)activating one. Every field follows the bounds of `TradingStrategy`; the edited strategy as a
whole is checked like a new one."""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from app.schemas.text import CleanLine, CleanText
from app.schemas.trading_decision import MAX_STRATEGY_NAME_CHARS, MAX_TEMPLATE_CHARS, StrategyRiskParameters


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The same field with its bounds, optional (None: left as it is)."""
    partial = copy.copy(info)
    partial.default = None
    return Optional[info.annotation], partial  # noqa: UP045 (the annotation is a runtime value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


StrategyRiskPatch = create_model(  # type: ignore[call-overload]
    "StrategyRiskPatch",
    __base__=_Strict,
    __doc__="Risk parameters to change; the others stay.",
    **{name: _optional(info) for name, info in StrategyRiskParameters.model_fields.items()},
)


class StrategyPatch(_Strict):
    """The fields of a custom strategy to change; those left out stay as they are."""

    strategy_name: CleanLine | None = Field(None, min_length=1, max_length=MAX_STRATEGY_NAME_CHARS)
    prompt_template: CleanText | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    risk_parameters: StrategyRiskPatch | None = None
    timeframe_preference: list[str] | None = Field(None, min_length=1, max_length=2)
    max_positions: int | None = Field(None, ge=1, le=50, strict=True)
    position_sizing: Literal["fixed", "percentage", "kelly", "volatility_adjusted"] | None = None
    reason: CleanLine | None = Field(None, max_length=500, description="Why, for the audit log")

    def changes(self) -> dict[str, Any]:
        """The fields given, risk parameters key by key (an explicit null is kept: it is refused later)."""
        out = self.model_dump(exclude_unset=True, exclude={"reason"})
        if self.risk_parameters is not None:
            out["risk_parameters"] = self.risk_parameters.model_dump(exclude_unset=True)
        return out


class StrategyActivation(_Strict):
    """The optional body of deactivate and activate."""

    reason: CleanLine | None = Field(None, min_length=1, max_length=500, description="Why, for the audit log")
