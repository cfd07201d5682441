"""IndicatorCache: no recompute while the candles are unchanged; a fresh compute on any change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.services.market_data.base import CandleSeries
from app.services.market_data.simulator import MarketSimulator
from app.services.technical_analysis.incremental import IndicatorCache
from app.services.technical_analysis.indicators import compute_indicators

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> MarketSimulator:
    return MarketSimulator(["BTC", "ETH"], epoch=datetime(2025, 1, 1, tzinfo=UTC))


def candles(sim: MarketSimulator, symbol: str, timeframe: str, until: datetime) -> CandleSeries:
    return sim.candles(symbol, timeframe, limit=120, until=until)


def test_hits_while_unchanged_and_equal_to_a_fresh_compute(sim: MarketSimulator) -> None:
    cache = IndicatorCache()
    series = candles(sim, "BTC", "5m", NOW)
    first = cache.compute(series, 10)
    assert (cache.hits, cache.misses) == (0, 1)
    assert first == compute_indicators(series, 10)
    assert first.ema_50 is not None and len(first.ema_50) == 10

    again = cache.compute(candles(sim, "BTC", "5m", NOW + timedelta(minutes=4)), 10)  # same window, new object
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    assert cache.last_open_time_ms("BTC", "5m") == int(series.open_time_ms[-1])

    newer = candles(sim, "BTC", "5m", NOW + timedelta(minutes=5))  # one more candle closed
    updated = cache.compute(newer, 10)
    assert updated is not first and updated == compute_indicators(newer, 10) != first
    assert (cache.hits, cache.misses) == (1, 2)
    assert cache.last_open_time_ms("BTC", "5m") == int(newer.open_time_ms[-1])


def test_any_change_recomputes(sim: MarketSimulator) -> None:
    cache = IndicatorCache()
    series = candles(sim, "BTC", "1h", NOW)
    base = cache.compute(series, 5)
    revised_close = series.close.copy()
    revised_close[-1] *= 1.01  # the venue revised the newest candle: same open time, other values
    revised = replace(series, close=revised_close)
    assert cache.compute(revised, 5) == compute_indicators(revised, 5) != base
    assert cache.compute(series, 3) == compute_indicators(series, 3)  # another series length
    shorter = replace(
        series, **{c: getattr(series, c)[1:] for c in ("open_time_ms", "open", "high", "low", "close", "volume")}
    )
    assert cache.compute(shorter, 3) == compute_indicators(shorter, 3)  # a shorter window, same newest candle
    assert (cache.hits, cache.misses) == (0, 4)


def test_keys_are_per_symbol_and_timeframe(sim: MarketSimulator) -> None:
    cache = IndicatorCache()
    for _ in range(3):
        for symbol in ("BTC", "ETH"):
            for timeframe in ("5m", "4h"):
                assert cache.compute(candles(sim, symbol, timeframe, NOW), 10) == compute_indicators(
                    candles(sim, symbol, timeframe, NOW), 10
                )
    assert (cache.hits, cache.misses, len(cache)) == (8, 4, 4)
    # a whole day of 5m cycles: the 4h indicators are recomputed only when a 4h candle closes
    four_hour = IndicatorCache()
    for step in range(1, 24 * 12 + 1):
        four_hour.compute(candles(sim, "BTC", "4h", NOW + timedelta(minutes=5 * step)), 10)
    assert four_hour.misses == 1 + 6 and four_hour.hits == 24 * 12 - 7  # the first, then one per 4h close
    cache.clear()
    assert len(cache) == 0 and cache.last_open_time_ms("BTC", "5m") is None


def test_few_candles(sim: MarketSimulator) -> None:
    cache = IndicatorCache()
    series = sim.candles("BTC", "1h", limit=10, until=NOW)
    short = cache.compute(series, 10)
    assert short.ema_50 is None and short == compute_indicators(series, 10)
    empty = sim.candles("BTC", "1h", limit=0, until=NOW)
    assert cache.compute(empty, 10) == compute_indicators(empty, 10)
    assert cache.last_open_time_ms("BTC", "1h") is None
