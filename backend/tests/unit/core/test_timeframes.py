"""Timeframes and candle boundaries, all in UTC."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.core.timeframes import (
    floor_time,
    from_ms,
    last_closed_open_time,
    timeframe_delta,
    timeframe_seconds,
    to_ms,
)


def utc(hour: int, minute: int = 0, second: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("timeframe", "seconds"),
    [
        ("1m", 60),
        ("5m", 300),
        ("15m", 900),
        ("1h", 3_600),
        ("4h", 14_400),
        ("1d", 86_400),
        ("1w", 604_800),
        (" 5m ", 300),
    ],
)
def test_timeframe_seconds(timeframe: str, seconds: int) -> None:
    assert timeframe_seconds(timeframe) == seconds
    assert timeframe_delta(timeframe) == timedelta(seconds=seconds)


@pytest.mark.parametrize("junk", ["", "m", "5", "0m", "-5m", "1.5h", "5s", "5M", "5 m", "h5", "5mm"])
def test_timeframe_seconds_refuses_junk(junk: str) -> None:
    with pytest.raises(ValueError, match="not a timeframe"):
        timeframe_seconds(junk)


@pytest.mark.parametrize(
    ("moment", "timeframe", "expected"),
    [
        (utc(12, 7, 30), "5m", utc(12, 5)),
        (utc(12, 5), "5m", utc(12, 5)),  # a boundary is its own candle's open
        (utc(12, 4, 59), "5m", utc(12, 0)),
        (utc(13, 0), "4h", utc(12, 0)),
        (utc(11, 59), "4h", utc(8, 0)),
        (utc(23, 59), "1d", utc(0, 0)),
        (utc(12, 59, 59), "1h", utc(12, 0)),
    ],
)
def test_floor_time(moment: datetime, timeframe: str, expected: datetime) -> None:
    floored = floor_time(moment, timeframe)
    assert floored == expected
    assert floored.tzinfo == UTC


def test_floor_time_of_an_aware_non_utc_moment_is_in_utc() -> None:
    moment = datetime(2026, 3, 2, 14, 7, tzinfo=timezone(timedelta(hours=2)))  # 12:07 UTC
    assert floor_time(moment, "5m") == utc(12, 5)
    assert floor_time(moment, "4h") == utc(12, 0)  # 4h candles open at 00, 04, 08, 12 UTC


@pytest.fixture
def new_york_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york_local_time")
def test_a_naive_moment_is_read_as_utc_whatever_the_machines_time_zone() -> None:
    naive = datetime(2026, 3, 2, 12, 7)
    assert floor_time(naive, "5m") == utc(12, 5)
    assert last_closed_open_time(naive, "1h") == utc(11, 0)
    assert to_ms(naive) == to_ms(utc(12, 7))


@pytest.mark.parametrize(
    ("now", "timeframe", "expected"),
    [
        (utc(12, 7), "5m", utc(12, 0)),  # the 12:05 candle is still open; 12:00 closed at 12:05
        (utc(12, 5), "5m", utc(12, 0)),  # at 12:05 sharp the 12:00 candle has just closed
        (utc(12, 0), "4h", utc(8, 0)),
        (utc(12, 0, 1), "4h", utc(8, 0)),
        (utc(0, 30, day=3), "1d", utc(0, 0, day=2)),
    ],
)
def test_last_closed_open_time(now: datetime, timeframe: str, expected: datetime) -> None:
    opened = last_closed_open_time(now, timeframe)
    assert opened == expected
    assert opened + timeframe_delta(timeframe) <= now  # it has closed
    assert opened + 2 * timeframe_delta(timeframe) > now  # and it is the newest that has


def test_epoch_milliseconds_round_trip() -> None:
    moment = datetime(2026, 3, 2, 12, 7, 30, 125_000, tzinfo=UTC)
    assert to_ms(moment) == 1_772_453_250_125
    assert from_ms(to_ms(moment)) == moment
    assert from_ms(0) == datetime(1970, 1, 1, tzinfo=UTC)
