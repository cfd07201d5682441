"""The arena's windows: regimes covered, no overlaps, the same prices give the same windows, clear refusals."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from app.backtest.windows import Window, WindowError, choose_windows
from app.core.timeframes import from_ms, to_ms
from app.services.market_data.base import CandleSeries

HOUR_MS = 3_600_000
START = datetime(2024, 1, 1, tzinfo=UTC)
SEGMENT_H = 30 * 24  # 30 days of 1h candles each


def _series(log_prices: np.ndarray) -> CandleSeries:
    opens = to_ms(START) + HOUR_MS * np.arange(len(log_prices), dtype=np.int64)
    close = 100.0 * np.exp(log_prices)
    return CandleSeries("BTC", "1h", opens, close, close, close, close, np.ones(len(close)))


def _three_markets() -> CandleSeries:
    """30 days rising 20%, 30 days falling 20%, 30 days flat; a daily swing of 0.5% throughout, so a flat week
    returns exactly nothing and the hourly returns have a spread."""
    hours = np.arange(3 * SEGMENT_H)
    drift = 0.2 / SEGMENT_H
    trend = np.where(
        hours < SEGMENT_H, drift * hours, np.where(hours < 2 * SEGMENT_H, drift * (2 * SEGMENT_H - hours), 0.0)
    )
    return _series(trend + 0.005 * np.sin(2 * np.pi * hours / 24))


def _span(series: CandleSeries) -> tuple[datetime, datetime]:
    """First and last cycle times: the first and last candle closes."""
    return from_ms(int(series.open_time_ms[0]) + HOUR_MS), from_ms(int(series.open_time_ms[-1]) + HOUR_MS)


def _close_at(series: CandleSeries, cycle: datetime) -> float:
    (index,) = np.flatnonzero(series.open_time_ms == to_ms(cycle) - HOUR_MS)
    return float(series.close[index])


def _assert_apart(windows: list[Window], first: datetime, last: datetime, days: int) -> None:
    assert windows == sorted(windows, key=lambda w: w.start)
    for window in windows:
        assert first <= window.start and window.end <= last
        assert window.end - window.start == timedelta(days=days) - timedelta(hours=1)
    for before, after in pairwise(windows):
        assert after.start > before.end


def test_three_windows_are_one_of_each_regime_and_measure_the_reference() -> None:
    series = _three_markets()
    first, last = _span(series)
    windows = choose_windows(series, first=first, last=last, count=3, days=7, interval="1h")

    assert sorted(w.regime for w in windows) == ["down", "sideways", "up"]
    _assert_apart(windows, first, last, 7)
    for window in windows:
        expected = _close_at(series, window.end) / _close_at(series, window.start) - 1
        assert window.reference_return == pytest.approx(expected, rel=1e-12)
        if window.regime == "up":
            assert window.reference_return > 0.03
        elif window.regime == "down":
            assert window.reference_return < -0.03
        else:
            assert abs(window.reference_return) < 0.001  # a flat week: the daily swing alone


def test_regimes_take_turns_with_typical_windows_of_each_market() -> None:
    series = _three_markets()
    first, last = _span(series)
    windows = choose_windows(series, first=first, last=last, count=9, days=7, interval="1h")

    assert [w.regime for w in windows] == ["up"] * 3 + ["down"] * 3 + ["sideways"] * 3
    _assert_apart(windows, first, last, 7)
    segment = timedelta(hours=SEGMENT_H)
    bounds = {"up": (START, START + segment), "down": (START + segment, START + 2 * segment)}
    bounds["sideways"] = (START + 2 * segment, last)
    for window in windows:  # each inside its own market, none across a turn
        low, high = bounds[window.regime]
        assert low <= window.start and window.end <= high + timedelta(hours=1)


def test_the_same_prices_give_the_same_windows_as_a_series_or_as_columns() -> None:
    series = _three_markets()
    first, last = _span(series)
    once = choose_windows(series, first=first, last=last, count=6, days=5, interval="1h")
    again = choose_windows(series, first=first, last=last, count=6, days=5, interval="1h")
    shuffled = np.random.default_rng(3).permutation(len(series))
    columns = (series.open_time_ms[shuffled].tolist(), series.close[shuffled].tolist())
    as_columns = choose_windows(columns, first=first, last=last, count=6, days=5, interval="1h")
    assert once == again == as_columns


def test_one_regime_only_spreads_its_windows_over_the_span() -> None:
    series = _series(0.001 * np.arange(60 * 24) + 0.002 * np.sin(np.arange(60 * 24)))
    first, last = _span(series)
    windows = choose_windows(series, first=first, last=last, count=3, days=7, interval="1h")

    assert [w.regime for w in windows] == ["up", "up", "up"]
    _assert_apart(windows, first, last, 7)
    assert windows[-1].start - windows[0].start >= timedelta(days=35)  # spread over the 60 days, not bunched


def test_windows_start_inside_first_and_last_on_the_interval_grid() -> None:
    series = _three_markets()
    first = START + timedelta(days=10, minutes=20)  # not on the grid: the first start is the next full hour
    last = START + timedelta(days=80)
    windows = choose_windows(series, first=first, last=last, count=4, days=7, interval="1h")
    assert windows and min(w.start for w in windows) >= START + timedelta(days=10, hours=1)
    assert all(w.start.minute == 0 and w.end <= last for w in windows)


def test_no_window_holds_a_gap_in_the_data() -> None:
    series = _three_markets()
    first, last = _span(series)
    gap = (series.open_time_ms >= to_ms(START + timedelta(days=20))) & (
        series.open_time_ms < to_ms(START + timedelta(days=21))
    )
    kept = ~gap
    holed = CandleSeries(
        "BTC",
        "1h",
        series.open_time_ms[kept],
        series.open[kept],
        series.high[kept],
        series.low[kept],
        series.close[kept],
        series.volume[kept],
    )
    windows = choose_windows(holed, first=first, last=last, count=12, days=5, interval="1h")
    hole_from, hole_to = START + timedelta(days=20, hours=1), START + timedelta(days=21)
    assert windows
    assert all(w.end < hole_from or w.start > hole_to for w in windows)


def test_fewer_windows_than_asked_are_returned_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    series = _three_markets()
    first, last = _span(series)
    with caplog.at_level(logging.WARNING, logger="app.backtest.windows"):
        windows = choose_windows(series, first=first, last=last, count=20, days=14, interval="1h")
    assert 1 <= len(windows) <= 6  # 90 days hold six 14-day windows at most
    _assert_apart(windows, first, last, 14)
    assert f"only {len(windows)} of 20 windows" in caplog.text


@pytest.mark.parametrize(
    ("count", "days", "interval", "message"),
    [
        (3, 100, "1h", "no window of 100 days"),
        (3, 3, "1w", "not a whole number of 1w cycles"),
        (3, 1, "1d", "single 1d cycle"),
        (0, 7, "1h", "at least 1"),
    ],
)
def test_what_cannot_fit_is_refused_with_the_reason(count: int, days: int, interval: str, message: str) -> None:
    series = _three_markets()
    first, last = _span(series)
    with pytest.raises(WindowError, match=message):
        choose_windows(series, first=first, last=last, count=count, days=days, interval=interval)


def test_no_candles_in_the_period_is_refused() -> None:
    series = _three_markets()
    later = START + timedelta(days=200)
    with pytest.raises(WindowError, match="no window of 2 days"):
        choose_windows(series, first=later, last=later + timedelta(days=30), count=2, days=2, interval="1h")
