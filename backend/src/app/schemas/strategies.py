"""Request bodies of the strategy endpoints beyond the seed's: a partial edit of a custom strategy and the
reason for (de)activating one. Every field follows the bounds of `TradingStrategy`; the edited strategy as a
whole is checked like a new one."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from app.schemas.text import CleanLine, CleanTemplate
from app.schemas.trading_decision import (
    MAX_STRATEGY_NAME_CHARS,
    MAX_TEMPLATE_CHARS,
    StrategyRiskParameters,
    TradingStrategy,
)

# Marks a request's `timeframe_preference`: the served OpenAPI schema lists the (decision, trend) lists this
# agent can serve (they depend on INTERVAL and LONG_INTERVAL; see app.api.openapi).
SERVABLE_TIMEFRAMES: dict[str, Any] = {"x-servable-timeframes": True}


# A PATCH field's "left out" (None in Python), kept out of the JSON schema: null is not a value to send.
Absent = SkipJsonSchema[None]


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The same field with its bounds, optional (left out: as it is). An explicit null is refused later, so the
    schema does not offer it (`Absent`)."""
    # The bounds go with the type (beside `Absent`, Pydantic would write them in the schema as `ge`/`le`).
    bounded: Any = Annotated.__class_getitem__((info.annotation, *info.metadata))  # type: ignore[attr-defined]
    return Union[bounded, Absent], FieldInfo(default=None, description=info.description)  # noqa: UP007


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

    # `| Absent`: a field may be left out, but an explicit null is refused (later, with the reason), so the
    # schema does not offer null.
    # (The bounds go with the type: beside `Absent`, Pydantic would write them in the schema as `ge`/`le`.)
    strategy_name: Annotated[CleanLine, Field(min_length=1, max_length=MAX_STRATEGY_NAME_CHARS)] | Absent = None
    prompt_template: Annotated[CleanTemplate, Field(max_length=MAX_TEMPLATE_CHARS)] | Absent = None
    risk_parameters: StrategyRiskPatch | Absent = None
    timeframe_preference: Annotated[list[str], Field(min_length=1, max_length=2)] | Absent = Field(
        None, json_schema_extra=SERVABLE_TIMEFRAMES
    )
    # `true` or `"3"` is refused for every JSON body (app.api.protocol.json_body); `3.0` is the integer 3.
    max_positions: Annotated[int, Field(ge=1, le=50)] | Absent = None
    position_sizing: Literal["fixed", "percentage", "kelly", "volatility_adjusted"] | Absent = None
    reason: CleanLine | None = Field(None, max_length=500, description="Why, for the audit log")

    def changes(self) -> dict[str, Any]:
        """The fields given, risk parameters key by key (an explicit null is kept: it is refused later)."""
        out = self.model_dump(exclude_unset=True, exclude={"reason"})
        if self.risk_parameters is not None:
            out["risk_parameters"] = self.risk_parameters.model_dump(exclude_unset=True)
        return out


class StrategyDefinition(_Strict):
    """A custom strategy's whole definition, to replace the stored one (PUT): its id is the path's, its type
    `custom`, and its activity changes only through deactivate and activate."""

    strategy_name: CleanLine = Field(..., min_length=1, max_length=MAX_STRATEGY_NAME_CHARS)
    prompt_template: CleanTemplate = Field(..., min_length=1, max_length=MAX_TEMPLATE_CHARS)
    risk_parameters: StrategyRiskParameters
    timeframe_preference: list[str] = Field(..., min_length=1, max_length=2, json_schema_extra=SERVABLE_TIMEFRAMES)
    max_positions: int = Field(..., ge=1, le=50)
    position_sizing: Literal["fixed", "percentage", "kelly", "volatility_adjusted"] = "percentage"

    def strategy(self, strategy_id: str) -> TradingStrategy:
        """The definition as a strategy of that id (checked in full by the strategy manager)."""
        return TradingStrategy.model_construct(
            strategy_id=strategy_id, strategy_type="custom", is_active=True, **dict(self)
        )


class StrategyReplacement(_Strict):
    """The body of PUT .../custom/{strategy_id}."""

    strategy: StrategyDefinition
    reason: CleanLine | None = Field(None, min_length=1, max_length=500, description="Why, for the audit log")


class StrategyActivation(_Strict):
    """The optional body of deactivate and activate."""

    reason: CleanLine | None = Field(None, min_length=1, max_length=500, description="Why, for the audit log")


class CustomStrategy(TradingStrategy):
    """A custom strategy as a request defines it: the seed's `TradingStrategy`, of type `custom` (the other
    types are the built-in strategies')."""

    strategy_type: Literal["custom"] = Field("custom", description="Always `custom` for a strategy defined here")
    prompt_template: CleanTemplate = Field(
        ...,
        max_length=MAX_TEMPLATE_CHARS,
        description="LLM prompt template for this strategy: Jinja2 (sandboxed) over `risk`, `max_positions` and "
        "`strategy`. It must render to text: one that does not (a syntax error, an unknown variable) answers 400 "
        "with the reason, the one rule the schema cannot state",
    )
    timeframe_preference: list[str] = Field(
        default=["1h", "4h"],
        min_length=1,
        max_length=2,
        json_schema_extra=SERVABLE_TIMEFRAMES,
        description="(decision, trend) timeframes this agent can serve: whole multiples of INTERVAL, the trend "
        "longer than the decision (with one, LONG_INTERVAL is the trend); the schema lists them",
    )
