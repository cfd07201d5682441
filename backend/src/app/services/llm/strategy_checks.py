"""What makes a strategy definition acceptable, and a stored one runnable, on this agent.

A custom strategy is checked in full when it is created or edited: the schema (finite, bounded numbers;
valid text), its id and type, a template that renders, and timeframes the agent can serve. Candles are
built on the agent's `INTERVAL` (the simulator's base candle, the replay's aggregation, the venue's own
candles), so a timeframe must be one both venues offer and a whole multiple of `INTERVAL`; `7m` or `90m`
could never be served and would make every cycle fail.

A stored strategy (a built-in, or one written by an older version) is runnable when it is active and each
timeframe is either servable or finer than `INTERVAL` (the context builder raises it to `INTERVAL` and says
so)."""

from __future__ import annotations

import re

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from app.core.timeframes import timeframe_seconds
from app.db.repositories.strategies import validation_summary
from app.schemas.trading_decision import MAX_TEMPLATE_CHARS, STRATEGY_ID_PATTERN, TradingStrategy
from app.services.llm.prompts.builder import PromptBuilder

# Candles that Binance USD-M and Hyperliquid both offer, aligned on the Unix epoch like the agent's own.
VENUE_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d")
MAX_RENDERED_CHARS = 16_000  # the strategy's part of every system prompt
_ID = re.compile(STRATEGY_ID_PATTERN)
# Schema problems that the checks below state in their own words: (field, error type), None for any type.
_OWN_WORDS = {
    ("strategy_id", None),
    ("strategy_type", None),
    ("prompt_template", "string_too_long"),
    ("timeframe_preference", "too_long"),
}


def _restated(error: ErrorDetails) -> bool:
    loc = error.get("loc") or ("",)
    return (loc[0], None) in _OWN_WORDS or (loc[0], error.get("type")) in _OWN_WORDS


def servable(timeframe: str, interval: str) -> bool:
    return timeframe in VENUE_TIMEFRAMES and timeframe_seconds(timeframe) % timeframe_seconds(interval) == 0


def timeframe_problems(timeframes: list[str], *, interval: str, long_interval: str) -> list[str]:
    """Why (decision, trend) timeframes cannot be served as given; [] when they can."""
    if not timeframes or len(timeframes) > 2:
        return ["timeframe_preference lists one or two timeframes (decision, trend)"]
    problems: list[str] = []
    seconds: list[int] = []
    for timeframe in timeframes:
        try:
            seconds.append(timeframe_seconds(timeframe))
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if not servable(timeframe, interval):
            problems.append(
                f"timeframe {timeframe!r} cannot be served: the agent's candles are whole multiples of INTERVAL "
                f"({interval}) among {', '.join(VENUE_TIMEFRAMES)}"
            )
    if problems:
        return problems
    if len(seconds) == 2 and seconds[1] <= seconds[0]:
        problems.append(
            f"the trend timeframe ({timeframes[1]}) must be longer than the decision timeframe ({timeframes[0]})"
        )
    if len(seconds) == 1 and timeframe_seconds(long_interval) <= seconds[0]:
        problems.append(
            f"with one timeframe the trend timeframe is LONG_INTERVAL ({long_interval}), which must be longer than "
            f"{timeframes[0]}: give a longer trend timeframe as the second"
        )
    return problems


def runnable_problem(strategy: TradingStrategy, *, interval: str) -> str | None:
    """Why a stored, valid strategy cannot run now (deactivated, or a timeframe that cannot be served)."""
    if not strategy.is_active:
        return f"strategy {strategy.strategy_id!r} is deactivated"
    for timeframe in strategy.timeframe_preference:
        try:
            finer = timeframe_seconds(timeframe) < timeframe_seconds(interval)
        except ValueError as exc:
            return f"strategy {strategy.strategy_id!r} cannot be served: {exc}"
        if not finer and not servable(timeframe, interval):
            return (
                f"strategy {strategy.strategy_id!r} cannot be served: its timeframe {timeframe!r} is not a whole "
                f"multiple of INTERVAL ({interval}) among {', '.join(VENUE_TIMEFRAMES)}"
            )
    return None


def definition_problems(
    strategy: TradingStrategy, *, prompts: PromptBuilder, interval: str, long_interval: str
) -> list[str]:
    """Everything wrong with a custom strategy's definition, each with its reason; [] when it is acceptable.
    The strategy is checked against the schema again: one built without validation (`model_construct`,
    `model_copy(update=...)`) is held to the same rules as a request body."""
    problems: list[str] = []
    try:
        TradingStrategy.model_validate(strategy.model_dump())
    except ValidationError as exc:
        others = [e for e in exc.errors() if not _restated(e)]
        if others:
            problems.append(validation_summary(others))
    if not isinstance(strategy.strategy_id, str) or not _ID.match(strategy.strategy_id):
        problems.append("strategy_id must be 3-64 characters of a-z, 0-9, '_' or '-'")
    if strategy.strategy_type != "custom":
        problems.append("a custom strategy has strategy_type 'custom'")
    problems.extend(
        timeframe_problems(list(strategy.timeframe_preference), interval=interval, long_interval=long_interval)
    )
    if len(strategy.prompt_template) > MAX_TEMPLATE_CHARS:
        problems.append(f"prompt_template is longer than {MAX_TEMPLATE_CHARS} characters")
    elif not problems:  # render only a definition that is otherwise sound (its numbers are in the prompt)
        try:
            rendered = prompts.render_strategy(strategy)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if not rendered.strip():
                problems.append("prompt_template renders to nothing")
            elif len(rendered) > MAX_RENDERED_CHARS:
                problems.append(f"prompt_template renders to more than {MAX_RENDERED_CHARS} characters")
    return problems
