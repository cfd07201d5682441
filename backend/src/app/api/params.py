"""Query and path parameters several routes share, with the constraints the server enforces stated in the
OpenAPI schema (a value outside them answers 422; a value inside them is served, or answers 404 when it names
something this agent does not have)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from app.core.symbols import SYMBOL_PATTERN
from app.schemas.trading_decision import STRATEGY_ID_PATTERN

# `24h`, `7d`, `4w`: 1 to 99999 hours, days or weeks (99999 weeks still starts after year 1, so every window the
# pattern allows can be computed).
WINDOW_PATTERN = r"^[1-9][0-9]{0,4}[hdw]$"

Window = Annotated[
    str,
    Query(
        max_length=6, pattern=WINDOW_PATTERN, description="Window back from now: hours, days or weeks, e.g. 24h, 7d, 4w"
    ),
]
SymbolFilter = Annotated[
    str | None,
    Query(
        max_length=62,
        pattern=SYMBOL_PATTERN,
        description="Only decisions covering this asset (BTC, BTCUSDT or BTC/USDT:USDT); an asset this agent does "
        "not trade answers 404",
    ),
]
StrategyIdPath = Annotated[
    str,
    Path(
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="A strategy id: 3-64 characters of a-z, 0-9, '_' or '-'",
    ),
]
