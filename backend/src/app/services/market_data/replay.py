"""File replay: a `MarketDataSource` over a folder of CSV files (the `../shared/data/market/` format).

Files are named `<ASSET>[_<QUOTE>]-<timeframe>.csv` (`BTC_USDT-5m.csv`, `BTC-1h.csv`) with the header
`timestamp_ms,open,high,low,close,volume` (candle open time, UTC epoch ms), and `<ASSET>[_<QUOTE>]-funding.csv`
with `timestamp_ms,funding_rate`. Mark-price files (`*-mark-*.csv`) and other names are ignored.

Every file is read and validated when the source is built: a bad header, a non-number, a non-ascending,
duplicate or misaligned timestamp, or an OHLC violation raises `ReplayDataError` naming the file and line.
A timeframe without a file is aggregated on Unix-epoch-aligned boundaries from the finest file whose
timeframe divides it; only complete buckets become candles (a bucket with a missing base candle is left out,
as a gap). Funding times are rounded to the whole second: the exchange reports settlements with a few ms of
jitter (`...000001`), and a settlement belongs to its boundary.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from app.core.errors import TradingAgentError
from app.core.timeframes import timeframe_seconds
from app.services.market_data.base import (
    CandleSeries,
    FloatArray,
    FundingRate,
    IntArray,
    MarketRules,
    Ticker24h,
    UnknownSymbolError,
)

CANDLE_HEADER = "timestamp_ms,open,high,low,close,volume"
FUNDING_HEADER = "timestamp_ms,funding_rate"
FUNDING = "funding"
DEFAULT_QUOTE = "USDT"
_DAY_MS = 86_400_000
_MIN_EPOCH_MS = 10**11  # 1973-03: smaller "ms" timestamps are almost surely seconds
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIMULATOR_ASSETS = frozenset({"BTC", "ETH", "SOL"})  # assets the simulator has Binance-style rules for


class ReplayDataError(TradingAgentError):
    """A replay folder or CSV file is missing, malformed or inconsistent."""


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return _UNIX_EPOCH + timedelta(milliseconds=ms)


def parse_file_name(path: Path) -> tuple[str, str | None, str] | None:
    """(asset, quote or None, timeframe or "funding") for a replay CSV name; None for files to ignore."""
    if path.suffix.lower() != ".csv":
        return None
    pair, sep, kind = path.stem.partition("-")
    if not sep or not pair or "mark" in kind.lower().split("-"):
        return None
    asset, _, quote = pair.partition("_")
    if kind != FUNDING:
        try:
            timeframe_seconds(kind)
        except ValueError:
            return None
    return asset.upper(), quote.upper() or None, kind


# ------------------------------------------------------------------------------------------ reading


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based file line, text) of every data row (empty lines are skipped, as numpy skips them)."""
    with path.open(encoding="utf-8-sig") as fh:
        return [(n, line.rstrip("\r\n")) for n, line in enumerate(fh, start=1) if n > 1 and line.rstrip("\r\n")]


def _fail(path: Path, rows: np.ndarray, reason: str) -> ReplayDataError:
    """An error naming the file line of the first offending data row (`rows`: boolean mask or indices)."""
    indices = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
    more = f" ({len(indices) - 1} more such rows)" if len(indices) > 1 else ""
    line = _data_lines(path)[int(indices[0])][0]
    return ReplayDataError(f"{path}: line {line}: {reason}{more}")


def _scan_for_bad_line(path: Path, columns: int) -> ReplayDataError:
    """Find the first line numpy could not read and say why."""
    for number, line in _data_lines(path):
        fields = line.split(",")
        if len(fields) != columns:
            return ReplayDataError(f"{path}: line {number}: expected {columns} fields, found {len(fields)}")
        for field in fields:
            try:
                float(field)
            except ValueError:
                return ReplayDataError(f"{path}: line {number}: {field.strip()!r} is not a number")
    return ReplayDataError(f"{path}: cannot be read as CSV numbers")


def _read_table(path: Path, header: str) -> tuple[IntArray, FloatArray]:
    """Validated (timestamps, values) of a CSV with the given header: finite numbers, integral ascending
    timestamps without duplicates."""
    with path.open(encoding="utf-8-sig") as fh:
        found = fh.readline().strip()
    if found.replace(" ", "") != header:
        raise ReplayDataError(f"{path}: line 1: expected the header {header!r}, found {found!r}")
    columns = header.count(",") + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64, encoding="utf-8-sig")
    except ValueError:
        raise _scan_for_bad_line(path, columns) from None
    if table.shape[0] == 0:
        raise ReplayDataError(f"{path}: no data rows after the header")
    if table.shape[1] != columns:
        raise _scan_for_bad_line(path, columns)
    if not np.isfinite(table).all():
        raise _fail(path, ~np.asarray(np.isfinite(table).all(axis=1)), "not a finite number")
    raw = table[:, 0]
    if (raw != np.floor(raw)).any() or (raw < 0).any():
        raise _fail(path, (raw != np.floor(raw)) | (raw < 0), "timestamp_ms is not a whole number of ms")
    times = raw.astype(np.int64)
    if times[-1] < _MIN_EPOCH_MS:
        raise ReplayDataError(f"{path}: timestamps look like seconds, not milliseconds ({times[-1]})")
    _check_ascending(path, times)
    return times, np.ascontiguousarray(table[:, 1:])


def _check_ascending(path: Path, times: IntArray) -> None:
    step = np.diff(times)
    if (step == 0).any():
        first = int(np.flatnonzero(step == 0)[0]) + 1
        raise _fail(path, np.flatnonzero(step == 0) + 1, f"duplicate timestamp {times[first]}")
    if (step < 0).any():
        raise _fail(path, np.flatnonzero(step < 0) + 1, "timestamp is not after the previous row's")


def read_candles(path: Path, symbol: str, timeframe: str) -> CandleSeries:
    """Read and validate one OHLCV CSV."""
    times, values = _read_table(path, CANDLE_HEADER)
    tf_ms = timeframe_seconds(timeframe) * 1000
    if _DAY_MS % tf_ms == 0 and (times % tf_ms).any():
        raise _fail(path, times % tf_ms != 0, f"open time is not on a {timeframe} boundary")
    open_, high, low, close, volume = (np.ascontiguousarray(values[:, i]) for i in range(5))
    bad_high = high < np.maximum(open_, close)
    bad_low = low > np.minimum(open_, close)
    if bad_high.any():
        raise _fail(path, bad_high, "OHLC violation: high is below the open or the close")
    if bad_low.any():
        raise _fail(path, bad_low, "OHLC violation: low is above the open or the close")
    if (low <= 0).any():
        raise _fail(path, low <= 0, "price is not positive")
    if (volume < 0).any():
        raise _fail(path, volume < 0, "volume is negative")
    return CandleSeries(symbol, timeframe, times, open_, high, low, close, volume)


def read_funding(path: Path) -> tuple[IntArray, FloatArray]:
    """Read and validate one funding CSV: (settlement times rounded to the second, rates)."""
    times, values = _read_table(path, FUNDING_HEADER)
    rounded = (times + 500) // 1000 * 1000
    _check_ascending(path, rounded)
    return rounded, np.ascontiguousarray(values[:, 0])


# ------------------------------------------------------------------------------------------ candles


def aggregate(series: CandleSeries, timeframe: str) -> CandleSeries:
    """Aggregate candles to a multiple of their timeframe on epoch-aligned buckets; complete buckets only."""
    src_ms, tf_ms = timeframe_seconds(series.timeframe) * 1000, timeframe_seconds(timeframe) * 1000
    if tf_ms % src_ms:
        raise ValueError(f"{timeframe} is not a multiple of {series.timeframe}")
    n = len(series)
    if n == 0:
        return replace(series, timeframe=timeframe)
    bucket = series.open_time_ms // tf_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    counts = np.diff(np.r_[starts, n])
    keep = counts == tf_ms // src_ms
    return CandleSeries(
        symbol=series.symbol,
        timeframe=timeframe,
        open_time_ms=(bucket[starts] * tf_ms)[keep].astype(np.int64),
        open=series.open[starts][keep],
        high=np.maximum.reduceat(series.high, starts)[keep],
        low=np.minimum.reduceat(series.low, starts)[keep],
        close=series.close[starts + counts - 1][keep],
        volume=np.add.reduceat(series.volume, starts)[keep],
    )


def slice_series(series: CandleSeries, start: int, stop: int) -> CandleSeries:
    """Candles [start, stop) of a series, as views."""
    return CandleSeries(
        series.symbol,
        series.timeframe,
        series.open_time_ms[start:stop],
        series.open[start:stop],
        series.high[start:stop],
        series.low[start:stop],
        series.close[start:stop],
        series.volume[start:stop],
    )


def _price_rules(asset: str, market_symbol: str, price: float) -> MarketRules:
    digits = math.floor(math.log10(price)) if price > 0 else 0
    return MarketRules(asset, market_symbol, 10.0 ** (digits - 4), 10.0 ** min(0, -digits), 5.0, 20.0)


class ReplaySource:
    """Historical candles and funding from CSV files, served as a `MarketDataSource`."""

    name = "replay"
    is_simulated = True  # historical data replayed, never the live market

    def __init__(self, folder: Path | str, *, assets: Iterable[str] | None = None, quote: str | None = None) -> None:
        """Read and validate the folder's files (only `assets` when given; only pairs quoted in `quote`, plus
        names without a quote, when given)."""
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ReplayDataError(f"{self.folder}: no such folder")
        wanted = {a.strip().upper() for a in assets if a.strip()} if assets is not None else None
        quote = quote.strip().upper() if quote else None
        paths: dict[str, dict[str, Path]] = {}
        self._quotes: dict[str, str] = {}
        for path in sorted(p for p in self.folder.iterdir() if p.is_file()):
            parsed = parse_file_name(path)
            if parsed is None or (wanted is not None and parsed[0] not in wanted):
                continue
            if quote and parsed[1] not in (None, quote):
                continue
            asset, pair_quote, kind = parsed
            if kind in paths.setdefault(asset, {}):
                raise ReplayDataError(
                    f"two files for {asset} {kind}: {paths[asset][kind].name} and {path.name} (choose one with a quote)"
                )
            if pair_quote and self._quotes.setdefault(asset, pair_quote) != pair_quote:
                raise ReplayDataError(f"{path}: {asset} is quoted in both {self._quotes[asset]} and {pair_quote}")
            paths[asset][kind] = path
        if wanted is not None and (missing := sorted(wanted - paths.keys())):
            raise ReplayDataError(f"{self.folder}: no CSV files for {', '.join(missing)}")
        if not any(kind != FUNDING for kinds in paths.values() for kind in kinds):
            raise ReplayDataError(f"{self.folder}: no candle CSV files (expected names like BTC_USDT-5m.csv)")
        self.paths = paths
        self._files: dict[str, dict[str, CandleSeries]] = {}
        self._funding: dict[str, tuple[IntArray, FloatArray]] = {}
        for asset, kinds in paths.items():
            for kind, path in kinds.items():
                if kind == FUNDING:
                    self._funding[asset] = read_funding(path)
                else:
                    self._files.setdefault(asset, {})[kind] = read_candles(path, asset, kind)
        self._derived: dict[tuple[str, str], CandleSeries] = {}
        self._rules: dict[str, MarketRules] = {}
        self._derive_rules = False

    @classmethod
    def from_series(
        cls,
        series: dict[str, dict[str, CandleSeries]],
        funding: dict[str, tuple[IntArray, FloatArray]] | None = None,
        *,
        name: str = "replay",
        quotes: dict[str, str] | None = None,
        derive_rules: bool = False,
    ) -> ReplaySource:
        """A replay over candles already in memory (asset -> timeframe -> series; funding as (ms, rate) columns):
        the candle store's, the simulator's, or masked ones. `derive_rules`: tick and lot from the prices, never the
        simulator's per-asset table (masked prices are not the asset's)."""
        source = cls.__new__(cls)
        source.folder = Path(f"<{name}>")
        source.name = name
        source.paths = {asset: {} for asset in series}
        source._quotes = dict(quotes or {})
        source._files = {asset: dict(by_tf) for asset, by_tf in series.items()}
        source._funding = dict(funding or {})
        source._derived = {}
        source._rules = {}
        source._derive_rules = derive_rules
        if not any(len(s) for by_tf in series.values() for s in by_tf.values()):
            raise ReplayDataError(f"{source.folder}: no candles")
        return source

    @property
    def files(self) -> dict[str, dict[str, CandleSeries]]:
        """The candles as read (asset -> timeframe -> series), before any aggregation."""
        return self._files

    @property
    def funding(self) -> dict[str, tuple[IntArray, FloatArray]]:
        """Each asset's funding settlements as (ms, rate) columns."""
        return self._funding

    # -------------------------------------------------------------------------------- introspection

    @property
    def assets(self) -> list[str]:
        return sorted(self.paths)

    def timeframes(self, symbol: str) -> list[str]:
        """The timeframes with a file for this asset, shortest first."""
        return sorted(self._files.get(self._asset(symbol), {}), key=timeframe_seconds)

    def series(self, symbol: str, timeframe: str) -> CandleSeries:
        """Every candle of an asset and timeframe: the file's, or aggregated from the finest divisor file."""
        asset = self._asset(symbol)
        files = self._files.get(asset, {})
        if timeframe in files:
            return files[timeframe]
        key = (asset, timeframe)
        if key not in self._derived:
            tf_s = timeframe_seconds(timeframe)
            divisors = [tf for tf in files if tf_s % timeframe_seconds(tf) == 0]
            if not divisors:
                have = ", ".join(self.timeframes(asset)) or "none"
                raise ValueError(f"no {asset} {timeframe} candles in {self.folder}: files have {have}")
            self._derived[key] = aggregate(files[min(divisors, key=timeframe_seconds)], timeframe)
        return self._derived[key]

    def funding_history(self, symbol: str) -> list[FundingRate]:
        """Every funding settlement of an asset, oldest first (empty without a funding file)."""
        times, rates = self._funding.get(self._asset(symbol), (np.empty(0, np.int64), np.empty(0)))
        return [FundingRate(int(t), float(r)) for t, r in zip(times, rates, strict=True)]

    def span(self, symbol: str, timeframe: str) -> tuple[datetime, datetime] | None:
        """(open time of the first candle, close time of the last) of an asset and timeframe."""
        series = self.series(symbol, timeframe)
        if len(series) == 0:
            return None
        tf_ms = timeframe_seconds(timeframe) * 1000
        return _dt(int(series.open_time_ms[0])), _dt(int(series.open_time_ms[-1]) + tf_ms)

    @property
    def first_time(self) -> datetime:
        """Open time of the earliest candle in any file."""
        return min(span[0] for span in self._file_spans())

    @property
    def last_time(self) -> datetime:
        """Close time of the newest candle in any file: replaying past it yields no new candles."""
        return max(span[1] for span in self._file_spans())

    def data_end(self, timeframe: str) -> datetime | None:
        """Close time of the newest `timeframe` candle of any asset: the last cycle time with a new candle to decide
        on (None when no asset has such candles)."""
        ends = []
        for asset in self.assets:
            try:
                span = self.span(asset, timeframe)
            except ValueError:  # no file this timeframe can be built from
                continue
            if span is not None:
                ends.append(span[1])
        return max(ends, default=None)

    def _file_spans(self) -> list[tuple[datetime, datetime]]:
        return [s for a, files in self._files.items() for tf in files if (s := self.span(a, tf)) is not None]

    # ---------------------------------------------------------------------------------------- sync API

    def candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        """The last `limit` candles whose close time is at or before `until`, oldest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        series = self.series(symbol, timeframe)
        tf_ms = timeframe_seconds(timeframe) * 1000
        stop = int(np.searchsorted(series.open_time_ms, _ms(until) - tf_ms, side="right"))
        return slice_series(series, max(0, stop - limit), stop)

    def funding_rate(self, symbol: str, at: datetime) -> FundingRate | None:
        """The last settlement at or before `at` (None before the first one or without a funding file)."""
        asset = self._asset(symbol)
        if asset not in self._funding:
            return None
        times, rates = self._funding[asset]
        index = int(np.searchsorted(times, _ms(at), side="right")) - 1
        return FundingRate(int(times[index]), float(rates[index])) if index >= 0 else None

    def ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        """Summarise the finest candles that closed by `at` and opened within the 24 h before it."""
        asset = self._asset(symbol)
        if asset not in self._files:
            raise ValueError(f"no {asset} candles in {self.folder}")
        finest = self.timeframes(asset)[0]
        series = self.series(asset, finest)
        tf_ms, at_ms = timeframe_seconds(finest) * 1000, _ms(at)
        stop = int(np.searchsorted(series.open_time_ms, at_ms - tf_ms, side="right"))
        start = int(np.searchsorted(series.open_time_ms, at_ms - _DAY_MS, side="left"))
        if stop <= start:
            raise ValueError(f"no {asset} {finest} candle closed in the 24 h before {at.isoformat()}")
        close, volume = series.close[start:stop], series.volume[start:stop]
        return Ticker24h(
            symbol=asset,
            last_price=float(close[-1]),
            price_change_pct=(float(close[-1]) / float(series.open[start]) - 1.0) * 100.0,
            base_volume=float(np.sum(volume)),
            quote_volume=float(np.sum(close * volume)),
        )

    def rules(self, symbol: str) -> MarketRules:
        """Offline Binance-style rules: the simulator's for BTC/ETH/SOL in USDT, derived from the price otherwise."""
        asset = self._asset(symbol)
        if asset not in self._rules:
            quote = self._quotes.get(asset, DEFAULT_QUOTE)
            market_symbol = f"{asset}/{quote}:{quote}"
            if asset in _SIMULATOR_ASSETS and quote == DEFAULT_QUOTE and not self._derive_rules:
                from app.services.market_data.simulator import MarketSimulator

                self._rules[asset] = replace(MarketSimulator([asset]).rules(asset), market_symbol=market_symbol)
            else:
                files = self._files.get(asset, {})
                price = float(files[self.timeframes(asset)[0]].close[-1]) if files else 0.0
                self._rules[asset] = _price_rules(asset, market_symbol, price)
        return self._rules[asset]

    # ------------------------------------------------------------------------------- MarketDataSource

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        """The last `limit` candles closed by `until`, oldest first."""
        return self.candles(symbol, timeframe, limit=limit, until=until)

    async def fetch_funding_rate(self, symbol: str, at: datetime) -> FundingRate | None:
        """The last funding settlement at or before `at`."""
        return self.funding_rate(symbol, at)

    async def fetch_open_interest(self, symbol: str, at: datetime) -> float | None:
        """Open interest is not in the files."""
        self._asset(symbol)
        return None

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        """The 24 h ticker as of `at`, from the candles."""
        return self.ticker_24h(symbol, at)

    async def market_rules(self, symbol: str) -> MarketRules:
        """The offline market rules of an asset."""
        return self.rules(symbol)

    async def close(self) -> None:
        """Nothing to release: the files are read into memory."""

    def _asset(self, symbol: str) -> str:
        asset = symbol.strip().upper()
        if asset not in self.paths:
            raise UnknownSymbolError(f"unknown symbol {symbol!r}: {self.folder} has {', '.join(self.assets)}")
        return asset
