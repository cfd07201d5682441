"""The history a backtest runs on, frozen in memory before it starts: a CSV folder, the candle store, or the simulator.

Whatever the origin, the candles become one `ReplaySource` (`ReplaySource.from_series` for the store and the
simulator), so the engine reads history through the same `MarketDataSource` as a replay, bounded by the clock: it
cannot see a candle that has not closed. The data's fingerprint (sha256 of every candle and funding settlement the
run can read, warm-up included) is stored with the run: two runs on the same fingerprint saw the same market.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import TradingAgentError
from app.core.timeframes import floor_time, from_ms, timeframe_delta, timeframe_seconds, to_ms
from app.services.llm.context_builder import CANDLES_FOR_INDICATORS
from app.services.market_data.base import CandleSeries, FloatArray, IntArray
from app.services.market_data.candle_store import CandleStore
from app.services.market_data.replay import ReplaySource, slice_series
from app.services.market_data.simulator import MarketSimulator

# The trend timeframe's indicators need this many closed candles before the first cycle (as a replay's start).
WARMUP_LONG_CANDLES = 60
SIMULATOR_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)  # simulated history starts here, whatever the period asked


class BacktestError(TradingAgentError):
    """A backtest cannot run as asked: the reason says what to change."""


@dataclass(frozen=True)
class History:
    source: ReplaySource
    first_cycle: datetime  # the earliest cycle time with a full warm-up
    last_cycle: datetime  # the close of the last INTERVAL candle


def warmup(interval: str, long_interval: str) -> timedelta:
    """History the first cycle needs: the trend indicators' candles, or the decision timeframe's, whichever is more."""
    return max(timeframe_delta(long_interval) * WARMUP_LONG_CANDLES, timeframe_delta(interval) * CANDLES_FOR_INDICATORS)


def from_folder(folder: str | Path, assets: list[str]) -> ReplaySource:
    """The CSV files of a folder (the layouts of `trading-agent data import` and `../shared/data/market/`)."""
    return ReplaySource(Path(folder), assets=assets)


def from_simulator(assets: list[str], interval: str, seed: int, start: datetime, end: datetime) -> ReplaySource:
    """The seeded simulator's candles and 8 h funding from `start` to `end` (a pure function of seed and time)."""
    simulator = MarketSimulator(assets, base_timeframe=interval, seed=seed, epoch=SIMULATOR_EPOCH)
    begin = max(start, simulator.epoch)
    series: dict[str, dict[str, CandleSeries]] = {}
    funding: dict[str, tuple[IntArray, FloatArray]] = {}
    for asset in simulator.assets:
        series[asset] = {interval: simulator.candles_between(asset, interval, begin, end)}
        rates = simulator.funding_history(asset, begin, end)
        funding[asset] = (
            np.array([r.funding_time_ms for r in rates], dtype=np.int64),
            np.array([r.rate for r in rates], dtype=np.float64),
        )
    return ReplaySource.from_series(series, funding, name="simulated")


async def from_store(
    sessions: async_sessionmaker[AsyncSession],
    source_name: str,
    assets: list[str],
    timeframes: list[str],
    start: datetime,
    end: datetime,
) -> ReplaySource:
    """The candles and funding kept in the candle store (`trading-agent data download|import`) from `start` to `end`."""
    store = CandleStore(sessions)
    series: dict[str, dict[str, CandleSeries]] = {}
    funding: dict[str, tuple[IntArray, FloatArray]] = {}
    for asset in assets:
        for timeframe in timeframes:
            count = int((end - start) / timeframe_delta(timeframe)) + 1
            loaded = await store.load_candles(source_name, asset, timeframe, limit=count, until=end)
            keep = loaded.open_time_ms >= to_ms(start)
            if keep.any():
                series.setdefault(asset, {})[timeframe] = slice_series(loaded, int(np.argmax(keep)), len(loaded))
        rates = await store.load_funding(source_name, asset, since=start, until=end)
        funding[asset] = (
            np.array([r.funding_time_ms for r in rates], dtype=np.int64),
            np.array([r.rate for r in rates], dtype=np.float64),
        )
        if asset not in series:
            raise BacktestError(
                f"the candle store has no {asset} candles from {source_name!r} between {start:%Y-%m-%d} and "
                f"{end:%Y-%m-%d}: download them first (trading-agent data download) or use --data DIR"
            )
    return ReplaySource.from_series(series, funding, name=source_name)


def cycle_span(source: ReplaySource, assets: list[str], interval: str, long_interval: str) -> tuple[datetime, datetime]:
    """(first cycle with a full warm-up for every asset, last INTERVAL close common to every asset)."""
    firsts, lasts = [], []
    for asset in assets:
        span = source.span(asset, interval)
        if span is None:
            raise BacktestError(f"no {asset} {interval} candles in {source.folder}")
        firsts.append(span[0])
        lasts.append(span[1])
    first = floor_time(max(firsts) + warmup(interval, long_interval), interval)
    if first < max(firsts) + warmup(interval, long_interval):
        first += timeframe_delta(interval)
    return first, min(lasts)


def check_period(start: datetime, end: datetime, first: datetime, last: datetime, interval: str) -> None:
    """A clear error when the asked period is empty or outside what the data can decide on."""
    if end < start:
        raise BacktestError(f"--to ({end:%Y-%m-%d %H:%M}) is before --from ({start:%Y-%m-%d %H:%M})")
    if start < first:
        raise BacktestError(
            f"--from {start:%Y-%m-%d %H:%M} is too early: the data's first cycle with enough history for the "
            f"indicators is {first:%Y-%m-%d %H:%M}"
        )
    if end > last:
        raise BacktestError(
            f"--to {end:%Y-%m-%d %H:%M} is past the data's last {interval} candle ({last:%Y-%m-%d %H:%M})"
        )


def data_fingerprint(source: ReplaySource, assets: list[str], start: datetime, end: datetime) -> str:
    """sha256 of every candle (every file's timeframe) and funding settlement of `assets` in [start, end]."""
    digest = hashlib.sha256()
    lo, hi = to_ms(start), to_ms(end)
    for asset in sorted(assets):
        for timeframe, series in sorted(source.files.get(asset, {}).items(), key=lambda kv: timeframe_seconds(kv[0])):
            tf_ms = timeframe_seconds(timeframe) * 1000
            keep = (series.open_time_ms >= lo) & (series.open_time_ms + tf_ms <= hi)
            digest.update(f"{asset}|{timeframe}|".encode())
            for column in (series.open_time_ms, series.open, series.high, series.low, series.close, series.volume):
                digest.update(np.ascontiguousarray(column[keep]).astype(column.dtype.newbyteorder("<")).tobytes())
        times, rates = source.funding.get(asset, (np.empty(0, np.int64), np.empty(0)))
        keep = (times >= lo) & (times <= hi)
        digest.update(f"{asset}|funding|".encode())
        digest.update(times[keep].astype("<i8").tobytes() + rates[keep].astype("<f8").tobytes())
    return digest.hexdigest()


def funding_in(source: ReplaySource, asset: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """The settlements of `asset` in [start, end]: (time, rate)."""
    times, rates = source.funding.get(asset, (np.empty(0, np.int64), np.empty(0)))
    lo, hi = to_ms(start), to_ms(end)
    return [(from_ms(int(t)), float(r)) for t, r in zip(times, rates, strict=True) if lo <= t <= hi]
