"""Indicators recomputed only when the candles changed.

A decision cycle asks for the indicators of every (asset, timeframe) on each closed base candle, but the trend
timeframe's candles change far less often (one 4h candle per 48 cycles of 5m). `IndicatorCache` keeps the last
result per (symbol, timeframe) with a fingerprint of the candles it was computed from, and recomputes only
when the window or any candle in it changed (a new candle, a revised one, a different length or `last_n`).
The fingerprint hashes the window (a few microseconds for 120 candles), so a revised candle is never served
from the cache; TA-Lib over the same window is cheap too, so "only what changed" means "nothing when nothing
changed".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from app.schemas.trading_decision import TechnicalIndicatorsSet
from app.services.market_data.base import CandleSeries
from app.services.technical_analysis.indicators import compute_indicators


def fingerprint(series: CandleSeries, last_n: int) -> bytes:
    """Identity of what `compute_indicators(series, last_n)` depends on."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(last_n.to_bytes(4, "little", signed=True))
    for column in (series.open_time_ms, series.open, series.high, series.low, series.close, series.volume):
        digest.update(column.tobytes())
    return digest.digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    fingerprint: bytes
    last_open_time_ms: int | None
    indicators: TechnicalIndicatorsSet


class IndicatorCache:
    """The last indicator set per (symbol, timeframe), recomputed only when its candles changed.

    The returned set is shared with the cache: treat it as read-only.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.hits = 0
        self.misses = 0

    def compute(self, series: CandleSeries, last_n: int) -> TechnicalIndicatorsSet:
        """`compute_indicators(series, last_n)`, from the cache when the candles are unchanged."""
        key = (series.symbol, series.timeframe)
        stamp = fingerprint(series, last_n)
        entry = self._entries.get(key)
        if entry is not None and entry.fingerprint == stamp:
            self.hits += 1
            return entry.indicators
        self.misses += 1
        indicators = compute_indicators(series, last_n)
        last_open = int(series.open_time_ms[-1]) if len(series) else None
        self._entries[key] = _Entry(stamp, last_open, indicators)
        return indicators

    def last_open_time_ms(self, symbol: str, timeframe: str) -> int | None:
        """Open time of the newest candle the cached set was computed with (None when nothing is cached)."""
        entry = self._entries.get((symbol, timeframe))
        return entry.last_open_time_ms if entry else None

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
