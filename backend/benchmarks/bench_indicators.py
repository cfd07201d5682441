"""Indicator computation per cycle: EMA20/50, MACD, RSI, Bollinger, ATR with TA-Lib over 120 candles, for
3 assets x 2 timeframes; cold (every set computed) and with the cache (only the decision timeframe's new
candle changes).

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_indicators.py)
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from app.services.market_data.simulator import MarketSimulator
from app.services.technical_analysis.incremental import IndicatorCache
from app.services.technical_analysis.indicators import compute_indicators

ASSETS = ["BTC", "ETH", "SOL"]
CYCLES = 300


def main() -> None:
    sim = MarketSimulator(ASSETS)
    start = datetime(2026, 3, 2, 12, tzinfo=UTC)
    windows = []
    for i in range(CYCLES):
        until = start + timedelta(minutes=5 * i)
        windows.append([sim.candles(a, tf, limit=120, until=until) for a in ASSETS for tf in ("5m", "4h")])
    cold, cached = [], []
    cache = IndicatorCache()
    for series_set in windows:
        started = time.perf_counter()
        for series in series_set:
            compute_indicators(series, 10)
        cold.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        for series in series_set:
            cache.compute(series, 10)
        cached.append((time.perf_counter() - started) * 1000)
    print(f"indicators per cycle, 3 assets x (5m, 4h), 120 candles each, {CYCLES} cycles:")
    print(f"  every set computed: median {statistics.median(cold):.3f} ms")
    print(f"  with the cache: median {statistics.median(cached):.3f} ms ({cache.hits} hits, {cache.misses} misses)")


if __name__ == "__main__":
    main()
