"""Indicators match the TA-Lib definitions in FACTS.md, recomputed here by hand in plain Python."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from app.services.market_data.base import CandleSeries
from app.services.technical_analysis.indicators import (
    INDICATOR_NAMES,
    LOOKBACK,
    MIN_CANDLES_FOR_ALL,
    compute_indicators,
    latest_values,
)


def make_series(closes: list[float], spread: float = 0.5) -> CandleSeries:
    """Candles with the given closes, open = previous close, and uneven wicks."""
    n = len(closes)
    opens = [closes[0] - 0.3, *closes[:-1]] if closes else []
    highs = [max(o, c) + spread + 0.2 * (i % 3) for i, (o, c) in enumerate(zip(opens, closes, strict=True))]
    lows = [min(o, c) - spread - 0.1 * (i % 4) for i, (o, c) in enumerate(zip(opens, closes, strict=True))]
    return CandleSeries(
        symbol="BTC",
        timeframe="1h",
        open_time_ms=np.arange(n, dtype=np.int64) * 3_600_000,
        open=np.array(opens, dtype=np.float64),
        high=np.array(highs, dtype=np.float64),
        low=np.array(lows, dtype=np.float64),
        close=np.array(closes, dtype=np.float64),
        volume=np.full(n, 10.0),
    )


KNOWN_CLOSES = [100 + 8 * math.sin(i / 4) + 0.35 * i + 1.5 * math.cos(i * 1.7) for i in range(90)]


# --------------------------------------------------------------------- hand computations (FACTS.md)


def ema(values: list[float], period: int) -> list[float]:
    """EMA seeded with the SMA of the first `period` values; first output at index period - 1."""
    k = 2 / (period + 1)
    out = [sum(values[:period]) / period]
    for value in values[period:]:
        out.append(out[-1] + k * (value - out[-1]))
    return out


def macd(closes: list[float]) -> tuple[list[float], list[float]]:
    """MACD line and signal from bar 33 on (both EMAs aligned on bar 25)."""
    slow = ema(closes, 26)  # index 0 is bar 25
    fast = ema(closes[14:], 12)  # seeded with the 12 closes ending at bar 25
    line = [f - s for f, s in zip(fast, slow, strict=True)]  # bars 25..
    signal = ema(line, 9)  # bars 33..
    return line[8:], signal


def rsi(closes: list[float], period: int = 14) -> list[float]:
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gains, losses = [max(c, 0.0) for c in changes], [max(-c, 0.0) for c in changes]
    avg_gain, avg_loss = sum(gains[:period]) / period, sum(losses[:period]) / period
    out = [100 * avg_gain / (avg_gain + avg_loss)]
    for gain, loss in zip(gains[period:], losses[period:], strict=True):
        avg_gain = (avg_gain * (period - 1) + gain) / period
        avg_loss = (avg_loss * (period - 1) + loss) / period
        out.append(100 * avg_gain / (avg_gain + avg_loss))
    return out


def bollinger(closes: list[float]) -> tuple[list[float], list[float], list[float]]:
    windows = [closes[i - 19 : i + 1] for i in range(19, len(closes))]
    middle = [statistics.fmean(w) for w in windows]
    spread = [2 * statistics.pstdev(w) for w in windows]  # population std, ddof 0
    return (
        [m + s for m, s in zip(middle, spread, strict=True)],
        middle,
        [m - s for m, s in zip(middle, spread, strict=True)],
    )


def atr(series: CandleSeries, period: int = 14) -> list[float]:
    high, low, close = series.high.tolist(), series.low.tolist(), series.close.tolist()
    true_range = [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1])) for i in range(1, len(close))
    ]
    out = [sum(true_range[:period]) / period]
    for tr in true_range[period:]:
        out.append((out[-1] * (period - 1) + tr) / period)
    return out


# ----------------------------------------------------------------------------------------------- tests


def test_indicators_match_hand_computations() -> None:
    series = make_series(KNOWN_CLOSES)
    got = compute_indicators(series, last_n=len(series))
    macd_line, macd_signal = macd(KNOWN_CLOSES)
    bb_upper, bb_middle, bb_lower = bollinger(KNOWN_CLOSES)
    expected = {
        "ema_20": ema(KNOWN_CLOSES, 20),
        "ema_50": ema(KNOWN_CLOSES, 50),
        "macd": macd_line,
        "macd_signal": macd_signal,
        "rsi": rsi(KNOWN_CLOSES),
        "bb_upper": bb_upper,
        "bb_middle": bb_middle,
        "bb_lower": bb_lower,
        "atr": atr(series),
    }
    for name, values in expected.items():
        assert len(values) == len(KNOWN_CLOSES) - LOOKBACK[name], name
        np.testing.assert_allclose(getattr(got, name), values, rtol=1e-9, err_msg=name)


def test_ema_is_seeded_with_the_simple_average() -> None:
    closes = [float(i) for i in range(1, 22)]  # 1..21
    ema_20 = compute_indicators(make_series(closes), last_n=5).ema_20
    assert ema_20 == pytest.approx([10.5, 10.5 + (2 / 21) * (21 - 10.5)], rel=1e-12)


def test_last_n_keeps_the_newest_values_oldest_first() -> None:
    series = make_series(KNOWN_CLOSES)
    full, last = compute_indicators(series, last_n=1000), compute_indicators(series, last_n=7)
    for name in INDICATOR_NAMES:
        assert getattr(last, name) == getattr(full, name)[-7:], name
    assert last.ema_20 == pytest.approx(ema(KNOWN_CLOSES, 20)[-7:], rel=1e-12)


def test_series_run_oldest_to_newest() -> None:
    rising = make_series([100.0 + i for i in range(60)])
    result = compute_indicators(rising, last_n=10)
    assert result.ema_20 is not None and result.bb_middle is not None
    assert result.ema_20 == sorted(result.ema_20)
    assert result.bb_middle == sorted(result.bb_middle)
    assert result.bb_middle[-1] == pytest.approx(sum(range(140, 160)) / 20)  # SMA of the newest 20 closes
    assert result.rsi == [100.0] * 10  # only gains


def test_flat_market_has_zero_rsi_atr_and_band_width() -> None:
    price = np.full(40, 50.0)
    flat = CandleSeries("BTC", "1h", np.arange(40, dtype=np.int64) * 3_600_000, price, price, price, price, price)
    result = compute_indicators(flat, last_n=3)
    assert result.rsi == [0.0, 0.0, 0.0]
    assert result.atr == [0.0, 0.0, 0.0]
    assert result.bb_upper == result.bb_lower == [50.0, 50.0, 50.0]


@pytest.mark.parametrize("name", INDICATOR_NAMES)
def test_an_indicator_is_none_until_enough_candles(name: str) -> None:
    needed = LOOKBACK[name] + 1
    too_few = compute_indicators(make_series(KNOWN_CLOSES[: needed - 1]), last_n=5)
    just_enough = compute_indicators(make_series(KNOWN_CLOSES[:needed]), last_n=5)
    assert getattr(too_few, name) is None
    values = getattr(just_enough, name)
    assert values is not None and len(values) == 1 and not math.isnan(values[0])


def test_min_candles_for_all_fills_every_indicator() -> None:
    assert MIN_CANDLES_FOR_ALL == 50
    enough = compute_indicators(make_series(KNOWN_CLOSES[:MIN_CANDLES_FOR_ALL]), last_n=3)
    assert all(getattr(enough, name) for name in INDICATOR_NAMES)
    short = compute_indicators(make_series(KNOWN_CLOSES[: MIN_CANDLES_FOR_ALL - 1]), last_n=3)
    assert short.ema_50 is None and short.macd is not None


def test_empty_series_gives_no_values() -> None:
    empty = make_series([])
    assert compute_indicators(empty, last_n=5).model_dump() == dict.fromkeys(INDICATOR_NAMES)
    assert latest_values(empty) == dict.fromkeys(INDICATOR_NAMES)


def test_latest_values_are_the_newest_of_each_series() -> None:
    series = make_series(KNOWN_CLOSES[:40])
    latest, sets = latest_values(series), compute_indicators(series, last_n=2)
    assert set(latest) == set(INDICATOR_NAMES)
    assert latest["ema_50"] is None
    for name in INDICATOR_NAMES:
        values = getattr(sets, name)
        assert latest[name] == (values[-1] if values else None), name


def test_last_n_must_be_positive() -> None:
    with pytest.raises(ValueError, match="last_n"):
        compute_indicators(make_series(KNOWN_CLOSES), last_n=0)
