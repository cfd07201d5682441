"""Find and check the decision in what a real model returned (interface; implementation in progress)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.schemas.trading_decision import TradingDecision

Failure = Literal["empty", "truncated", "no_json", "invalid_json"]


@dataclass(frozen=True)
class ParseOutcome:
    """What the parser made of one raw answer. `decision` is set only when the JSON fits the schema."""

    json_found: bool
    failure: Failure | None
    value: Any | None = None
    decision: TradingDecision | None = None
    schema_valid: bool = False
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_decision(
    raw: str | None,
    symbols: list[str],
    *,
    finish_reason: str | None = None,
    reasoning: str | None = None,
) -> ParseOutcome:
    """Parse `raw` into a `TradingDecision` for `symbols`; never raises."""
    raise NotImplementedError
