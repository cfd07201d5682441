"""Timeframe strings (`5m`, `4h`, `1d`) and candle-boundary arithmetic, all in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def timeframe_seconds(timeframe: str) -> int:
    """Length of a timeframe in seconds; raises ValueError on anything but `<n><m|h|d|w>`."""
    tf = timeframe.strip()
    if len(tf) < 2 or tf[-1] not in _UNITS or not tf[:-1].isdigit() or int(tf[:-1]) <= 0:
        raise ValueError(f"not a timeframe: {timeframe!r} (expected e.g. 1m, 5m, 1h, 4h, 1d)")
    return int(tf[:-1]) * _UNITS[tf[-1]]


def timeframe_delta(timeframe: str) -> timedelta:
    return timedelta(seconds=timeframe_seconds(timeframe))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """A naive datetime is read as UTC (never as the machine's local time)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def floor_time(moment: datetime, timeframe: str) -> datetime:
    """Open time of the candle that contains `moment` (candles are aligned to the Unix epoch)."""
    seconds = timeframe_seconds(timeframe)
    epoch = int(_utc(moment).timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def last_closed_open_time(now: datetime, timeframe: str) -> datetime:
    """Open time of the newest candle that has closed by `now`."""
    return floor_time(now, timeframe) - timeframe_delta(timeframe)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float on the way)."""
    return (_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
