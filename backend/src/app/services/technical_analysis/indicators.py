"""Technical indicators of one candle series, computed by TA-Lib.

EMA(20), EMA(50), MACD(12, 26, 9) line and signal, RSI(14), Bollinger(20, 2) bands and ATR(14), with
TA-Lib's definitions (EMAs seeded with an SMA, Wilder smoothing for RSI and ATR, population standard
deviation for the bands). Warm-up values are dropped, so each series starts at its first real value.
"""

from __future__ import annotations

import numpy as np
import talib

from app.schemas.trading_decision import TechnicalIndicatorsSet
from app.services.market_data.base import CandleSeries, FloatArray

# Candles each indicator consumes before its first value (TA-Lib's lookback).
LOOKBACK: dict[str, int] = {
    "ema_20": 19,
    "ema_50": 49,
    "macd": 33,
    "macd_signal": 33,
    "rsi": 14,
    "bb_upper": 19,
    "bb_middle": 19,
    "bb_lower": 19,
    "atr": 14,
}
INDICATOR_NAMES: tuple[str, ...] = tuple(LOOKBACK)
# Candles needed for every indicator to have at least one value.
MIN_CANDLES_FOR_ALL: int = max(LOOKBACK.values()) + 1


def _column(values: FloatArray) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def indicator_series(series: CandleSeries) -> dict[str, FloatArray]:
    """Compute every indicator over the whole series, warm-up dropped (oldest first; may be empty)."""
    if len(series) == 0:
        return {name: np.empty(0, dtype=np.float64) for name in INDICATOR_NAMES}
    close, high, low = _column(series.close), _column(series.high), _column(series.low)
    macd, macd_signal, _ = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    bb_upper, bb_middle, bb_lower = talib.BBANDS(
        close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA
    )
    raw: dict[str, FloatArray] = {
        "ema_20": talib.EMA(close, timeperiod=20),
        "ema_50": talib.EMA(close, timeperiod=50),
        "macd": macd,
        "macd_signal": macd_signal,
        "rsi": talib.RSI(close, timeperiod=14),
        "bb_upper": bb_upper,
        "bb_middle": bb_middle,
        "bb_lower": bb_lower,
        "atr": talib.ATR(high, low, close, timeperiod=14),
    }
    return {name: np.asarray(raw[name][LOOKBACK[name] :], dtype=np.float64) for name in INDICATOR_NAMES}


def compute_indicators(series: CandleSeries, last_n: int) -> TechnicalIndicatorsSet:
    """Return the last `last_n` values of each indicator, oldest first; None where there is no value yet."""
    if last_n < 1:
        raise ValueError(f"last_n must be >= 1, got {last_n}")
    values = indicator_series(series)
    return TechnicalIndicatorsSet(
        **{name: [float(v) for v in arr[-last_n:]] if arr.size else None for name, arr in values.items()}
    )


def latest_values(series: CandleSeries) -> dict[str, float | None]:
    """Return the newest value of each indicator (None where there is no value yet)."""
    return {name: float(arr[-1]) if arr.size else None for name, arr in indicator_series(series).items()}
