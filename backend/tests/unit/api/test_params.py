"""The patterns the OpenAPI schema states are the server's own rules: every string a pattern allows is served
(so a client that follows the schema is never refused), and what the server refuses is outside the pattern."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.api.openapi import servable_timeframe_lists
from app.api.params import WINDOW_PATTERN
from app.core.symbols import SYMBOL_PATTERN, normalise_asset
from app.services.llm.strategy_checks import timeframe_problems
from app.services.llm.strategy_manager import parse_window


@given(st.from_regex(SYMBOL_PATTERN, fullmatch=True))
def test_every_symbol_the_pattern_allows_names_an_asset(symbol: str) -> None:
    assert normalise_asset(symbol)


@given(st.from_regex(WINDOW_PATTERN, fullmatch=True))
def test_every_window_the_pattern_allows_can_be_computed(window: str) -> None:
    assert datetime(2000, 1, 1, tzinfo=UTC) - parse_window(window) > datetime(1, 1, 1, tzinfo=UTC)


def test_what_the_server_refuses_is_outside_the_patterns() -> None:
    for symbol in ["0" * 40, "$$$", "BTC USDT", ""]:
        assert not re.match(SYMBOL_PATTERN, symbol), symbol
        try:
            normalise_asset(symbol)
        except ValueError:
            continue
        raise AssertionError(f"the server takes {symbol!r}")
    for window in ["0h", "0000000", "24", "24 h", "7m", "9999999w"]:
        assert not re.match(WINDOW_PATTERN, window), window
        try:
            datetime(2000, 1, 1, tzinfo=UTC) - parse_window(window)
        except (ValueError, OverflowError):
            continue
        raise AssertionError(f"the server takes {window!r}")


def test_the_schema_lists_exactly_the_timeframes_the_agent_serves() -> None:
    lists = servable_timeframe_lists("5m", "4h")
    assert ["5m", "4h"] in lists and ["1h"] in lists
    assert ["1m"] not in lists, "finer than INTERVAL"
    assert ["4h", "1h"] not in lists, "the trend must be the longer"
    assert ["4h"] not in lists, "alone, LONG_INTERVAL is the trend and must be longer"
    assert all(not timeframe_problems(timeframes, interval="5m", long_interval="4h") for timeframes in lists)
    assert servable_timeframe_lists("1h", "1d") != lists, "the list follows INTERVAL and LONG_INTERVAL"
