"""The candle store: closed candles and funding rates in the database, keyed by source, asset and time.

`CandleStore` upserts idempotently on (source, symbol, timeframe, open time) with the dialect's
`INSERT ... ON CONFLICT DO UPDATE` in chunks (rows whose values are unchanged are not rewritten), never stores a
candle that has not closed, and finds gaps. `CandleSync` keeps the store current from a `MarketDataSource`:
it fetches what is missing since the newest stored candle, back-fills gaps inside the lookback window and says
when the data is stale. `StoredMarketData` serves the stored candles as a `MarketDataSource` (everything else
comes from the live source). All times are aware UTC; candles are named by their open time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.timeframes import timeframe_seconds
from app.db.models import CandleRow, FundingRateRow
from app.db.types import epoch_ms
from app.db.upsert import insert_for
from app.services.market_data.base import (
    CandleSeries,
    FundingRate,
    IntArray,
    MarketDataSource,
    MarketRules,
    Ticker24h,
)

log = logging.getLogger(__name__)

CHUNK_ROWS = 5_000  # rows per executemany call
STALE_AFTER_CANDLES = 2
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANDLES = CandleRow.__table__
_FUNDING = FundingRateRow.__table__
_VALUES = ("open", "high", "low", "close", "volume")
# The newest candles closed by a time, newest first: built once, its compiled form is cached by SQLAlchemy.
_LOAD_CANDLES = (
    select(epoch_ms(_CANDLES.c.open_time), *(_CANDLES.c[name] for name in _VALUES))
    .where(
        _CANDLES.c.source == bindparam("source"),
        _CANDLES.c.symbol == bindparam("symbol"),
        _CANDLES.c.timeframe == bindparam("timeframe"),
        _CANDLES.c.open_time <= bindparam("last_open", type_=_CANDLES.c.open_time.type),
    )
    .order_by(_CANDLES.c.open_time.desc())
    .limit(bindparam("limit"))
)


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the candle store works in aware UTC")
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return _UNIX_EPOCH + timedelta(milliseconds=ms)


def _tf_ms(timeframe: str) -> int:
    return timeframe_seconds(timeframe) * 1000


def _empty(symbol: str, timeframe: str) -> CandleSeries:
    nothing = np.empty(0, dtype=np.float64)
    return CandleSeries(symbol, timeframe, np.empty(0, dtype=np.int64), nothing, nothing, nothing, nothing, nothing)


class CandleStore:
    """Candles and funding rates in the `candles` and `funding_rates` tables."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.sessions = sessions
        self.chunk_rows = chunk_rows
        self.skipped_unclosed = 0  # candles refused so far because they had not closed

    # ------------------------------------------------------------------------------------ candles

    async def upsert_candles(
        self, source: str, symbol: str, timeframe: str, series: CandleSeries, *, now: datetime
    ) -> int:
        """Insert or update candles; returns how many rows are new. Candles not closed by `now` are skipped
        (counted in `skipped_unclosed`); changed values of stored candles are updated."""
        if series.timeframe != timeframe:
            raise ValueError(f"a {series.timeframe} series given as {timeframe} candles")
        tf_ms = _tf_ms(timeframe)
        times = series.open_time_ms
        closed = times + tf_ms <= _ms(now)
        skipped = int(len(series) - np.count_nonzero(closed))
        if skipped:
            self.skipped_unclosed += skipped
            log.warning("refused %d unclosed %s %s candle(s) from %s", skipped, symbol, timeframe, source)
        if not closed.any():
            return 0
        open_ms = times[closed]
        n = len(open_ms)
        columns: dict[str, Any] = {
            "source": [source] * n,
            "symbol": [symbol] * n,
            "timeframe": [timeframe] * n,
            "open_time": open_ms,  # epoch ms: converted by `_execute_many`
            **{name: getattr(series, name)[closed].tolist() for name in _VALUES},
        }
        key = self._candle_key(source, symbol, timeframe)
        first, last = _dt(int(open_ms.min())), _dt(int(open_ms.max()))
        in_range = and_(*key, _CANDLES.c.open_time >= first, _CANDLES.c.open_time <= last)
        async with self.sessions.begin() as session:
            before = await self._count(session, _CANDLES, in_range)
            stmt = insert_for(session)(_CANDLES)
            stmt = stmt.on_conflict_do_update(
                index_elements=["source", "symbol", "timeframe", "open_time"],
                set_={name: stmt.excluded[name] for name in _VALUES},
                where=or_(*(_CANDLES.c[name] != stmt.excluded[name] for name in _VALUES)),
            )
            await self._execute_many(session, stmt, _CANDLES, columns)
            return await self._count(session, _CANDLES, in_range) - before

    async def load_candles(
        self, source: str, symbol: str, timeframe: str, *, limit: int, until: datetime
    ) -> CandleSeries:
        """The newest `limit` stored candles closed by `until`, oldest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return _empty(symbol, timeframe)
        params = {
            "source": source,
            "symbol": symbol,
            "timeframe": timeframe,
            "last_open": _dt(_ms(until) - _tf_ms(timeframe)),
            "limit": limit,
        }
        async with self.sessions() as session:
            rows = [tuple(row) for row in (await session.execute(_LOAD_CANDLES, params)).all()]
        if not rows:
            return _empty(symbol, timeframe)
        rows.reverse()
        table = np.array(rows, dtype=np.float64).reshape(len(rows), 6)
        return CandleSeries(
            symbol,
            timeframe,
            np.array([row[0] for row in rows], dtype=np.int64),
            *(np.ascontiguousarray(table[:, i]) for i in range(1, 6)),
        )

    async def latest_open_time(
        self, source: str, symbol: str, timeframe: str, *, until: datetime | None = None
    ) -> datetime | None:
        """Open time of the newest stored candle (closed by `until` when given); None when there is none."""
        span = await self.span(source, symbol, timeframe, until=until)
        return span[1] if span else None

    async def span(
        self, source: str, symbol: str, timeframe: str, *, until: datetime | None = None
    ) -> tuple[datetime, datetime] | None:
        """Open times of the oldest and the newest stored candle (closed by `until` when given)."""
        conditions = self._candle_key(source, symbol, timeframe)
        if until is not None:
            conditions.append(_CANDLES.c.open_time <= _dt(_ms(until) - _tf_ms(timeframe)))
        query = select(func.min(_CANDLES.c.open_time), func.max(_CANDLES.c.open_time)).where(*conditions)
        async with self.sessions() as session:
            first, last = (await session.execute(query)).one()
        return (first, last) if first is not None and last is not None else None

    async def count_candles(self, source: str, symbol: str, timeframe: str) -> int:
        async with self.sessions() as session:
            return await self._count(session, _CANDLES, and_(*self._candle_key(source, symbol, timeframe)))

    async def find_gaps(
        self, source: str, symbol: str, timeframe: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime]]:
        """Missing candles among those lying wholly in [start, end], as half-open ranges
        [open time of the first missing candle, close time of the last missing one), oldest first."""
        tf_ms = _tf_ms(timeframe)
        first = -(-_ms(start) // tf_ms) * tf_ms
        last = _ms(end) // tf_ms * tf_ms - tf_ms
        if last < first:
            return []
        query = (
            select(_CANDLES.c.open_time)
            .where(
                *self._candle_key(source, symbol, timeframe),
                _CANDLES.c.open_time >= _dt(first),
                _CANDLES.c.open_time <= _dt(last),
            )
            .order_by(_CANDLES.c.open_time)
        )
        async with self.sessions() as session:
            stored = np.array([_ms(t) for t in (await session.scalars(query))], dtype=np.int64)
        stored = stored[stored % tf_ms == 0]
        bounds = np.concatenate(([first - tf_ms], stored, [last + tf_ms]))
        holes = np.flatnonzero(np.diff(bounds) > tf_ms)
        return [(_dt(int(bounds[i]) + tf_ms), _dt(int(bounds[i + 1]))) for i in holes]

    # ------------------------------------------------------------------------------------ funding

    async def upsert_funding(self, source: str, symbol: str, rates: Sequence[FundingRate]) -> int:
        """Insert or update funding settlements; returns how many rows are new."""
        if not rates:
            return 0
        funding_ms = np.array([r.funding_time_ms for r in rates], dtype=np.int64)
        columns: dict[str, Any] = {
            "source": [source] * len(rates),
            "symbol": [symbol] * len(rates),
            "funding_time": funding_ms,  # epoch ms: converted by `_execute_many`
            "rate": [float(r.rate) for r in rates],
        }
        first, last = _dt(int(funding_ms.min())), _dt(int(funding_ms.max()))
        key = and_(_FUNDING.c.source == source, _FUNDING.c.symbol == symbol)
        in_range = and_(key, _FUNDING.c.funding_time >= first, _FUNDING.c.funding_time <= last)
        async with self.sessions.begin() as session:
            before = await self._count(session, _FUNDING, in_range)
            stmt = insert_for(session)(_FUNDING)
            stmt = stmt.on_conflict_do_update(
                index_elements=["source", "symbol", "funding_time"],
                set_={"rate": stmt.excluded.rate},
                where=_FUNDING.c.rate != stmt.excluded.rate,
            )
            await self._execute_many(session, stmt, _FUNDING, columns)
            return await self._count(session, _FUNDING, in_range) - before

    async def load_funding(
        self,
        source: str,
        symbol: str,
        *,
        until: datetime | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[FundingRate]:
        """Stored settlements in [since, until] (unbounded when None), the newest `limit` of them, oldest first."""
        conditions = [_FUNDING.c.source == source, _FUNDING.c.symbol == symbol]
        if until is not None:
            conditions.append(_FUNDING.c.funding_time <= until)
        if since is not None:
            conditions.append(_FUNDING.c.funding_time >= since)
        query = select(_FUNDING.c.funding_time, _FUNDING.c.rate).where(*conditions)
        query = query.order_by(_FUNDING.c.funding_time.desc()).limit(limit)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [FundingRate(_ms(t), float(rate)) for t, rate in reversed(rows)]

    # ------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _candle_key(source: str, symbol: str, timeframe: str) -> list[ColumnElement[bool]]:
        c = _CANDLES.c
        return [c.source == source, c.symbol == symbol, c.timeframe == timeframe]

    async def _execute_many(self, session: AsyncSession, stmt: Any, table: Any, columns: dict[str, Any]) -> None:
        """Execute `stmt` once per row, in chunks, at the driver level: the statement is compiled once and each
        column is converted by its type's bind processor (times given as epoch-ms arrays), skipping SQLAlchemy's
        per-row parameter handling (several times faster on SQLite)."""
        conn = await session.connection()
        dialect = conn.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns), for_executemany=True)
        for name, values in columns.items():
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if isinstance(values, np.ndarray):
                columns[name] = _bind_times(values, process)
            elif process is not None:
                columns[name] = [process(v) for v in values]
        if compiled.positiontup is None:  # a named paramstyle
            names = list(columns)
            rows: list[Any] = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        else:
            rows = list(zip(*(columns[name] for name in compiled.positiontup), strict=True))
        for start in range(0, len(rows), self.chunk_rows):
            await conn.exec_driver_sql(compiled.string, rows[start : start + self.chunk_rows])

    @staticmethod
    async def _count(session: AsyncSession, table: Any, condition: ColumnElement[bool]) -> int:
        return int((await session.execute(select(func.count()).select_from(table).where(condition))).scalar_one())


def _bind_times(ms: IntArray, process: Any) -> list[Any]:
    """Epoch ms as the driver takes them. SQLite stores text: formatted by numpy in one go when that gives
    exactly what the column type would (checked on the first and last value), else one by one."""
    if process is not None and len(ms) and isinstance(process(_dt(int(ms[0]))), str):
        as_text = np.datetime_as_string(ms.astype("datetime64[ms]").astype("datetime64[us]"), unit="us")
        fast: list[Any] = np.char.replace(as_text, "T", " ").tolist()
        if fast[0] == process(_dt(int(ms[0]))) and fast[-1] == process(_dt(int(ms[-1]))):
            return fast
    moments = [_dt(int(t)) for t in ms]
    return [process(m) for m in moments] if process is not None else moments


# ---------------------------------------------------------------------------------------------- sync


@dataclass
class SyncReport:
    """What one `CandleSync.sync` did."""

    symbol: str
    timeframe: str
    fetched: int = 0  # candles received from the source
    inserted: int = 0  # rows new in the store
    gaps_found: int = 0
    gaps_filled: int = 0
    stale: bool = False  # the newest stored candle closed more than 2 timeframes before `until`
    latest: datetime | None = None  # open time of the newest stored candle after the sync
    errors: list[str] = field(default_factory=list)


_STALE = ": stale data: "


def stale_message(symbol: str, timeframe: str, latest: datetime | None, until: datetime) -> str | None:
    """Why the data is stale, or None when the newest candle closed within 2 timeframes of `until`."""
    if latest is None:
        return f"{symbol}{_STALE}no stored {timeframe} candles"
    age_s = (until - latest).total_seconds() - timeframe_seconds(timeframe)
    if age_s > STALE_AFTER_CANDLES * timeframe_seconds(timeframe):
        return f"{symbol}{_STALE}the newest stored {timeframe} candle closed {age_s:.0f} s before {until}"
    return None


def stale_symbol(message: str) -> str | None:
    """The symbol a `stale_message` names (a context error about stale data), None for any other message."""
    symbol, found, _ = message.partition(_STALE)
    return symbol if found else None


class CandleSync:
    """Keep the store current from a source: incremental fetches, gap back-fill, freshness."""

    def __init__(self, store: CandleStore, source: MarketDataSource, *, source_name: str) -> None:
        self.store = store
        self.source = source
        self.source_name = source_name

    async def sync(self, symbol: str, timeframe: str, *, until: datetime, lookback: int) -> SyncReport:
        """Bring the last `lookback` candles closed by `until` into the store."""
        if lookback < 1:
            raise ValueError(f"lookback must be >= 1, got {lookback}")
        symbol = symbol.strip().upper()
        report = SyncReport(symbol, timeframe)
        tf_ms = _tf_ms(timeframe)
        newest = _ms(until) // tf_ms * tf_ms - tf_ms  # open time of the newest candle closed by `until`
        window_start = newest - (lookback - 1) * tf_ms
        # Only what has closed by `until` counts (a backtest may sync a store that holds later candles).
        span = await self.store.span(self.source_name, symbol, timeframe, until=until)
        latest = _ms(span[1]) if span else None
        # From the newest stored candle on (refetched, in case the venue revised it), or the whole window.
        missing = lookback if latest is None or latest < window_start else (newest - latest) // tf_ms + 1
        if missing > 0:
            await self._fetch(report, limit=missing, until=until)
        span = await self.store.span(self.source_name, symbol, timeframe, until=until)
        if span is not None:
            # Holes between stored candles inside the window; history before the first stored candle is no gap.
            gap_start = _dt(max(window_start, _ms(span[0])))
            gaps = await self.store.find_gaps(
                self.source_name, symbol, timeframe, gap_start, span[1] + timedelta(milliseconds=tf_ms)
            )
            report.gaps_found = len(gaps)
            for begin, end in gaps:
                count = (_ms(end) - _ms(begin)) // tf_ms
                await self._fetch(report, limit=count, until=end)
                if not await self.store.find_gaps(self.source_name, symbol, timeframe, begin, end):
                    report.gaps_filled += 1
                else:
                    report.errors.append(
                        f"{symbol} {timeframe}: gap {begin} to {end} ({count} candles) not back-filled"
                    )
        report.latest = await self.store.latest_open_time(self.source_name, symbol, timeframe, until=until)
        report.stale = stale_message(symbol, timeframe, report.latest, until) is not None
        return report

    async def _fetch(self, report: SyncReport, *, limit: int, until: datetime) -> None:
        try:
            series = await self.source.fetch_candles(report.symbol, report.timeframe, limit=limit, until=until)
            report.fetched += len(series)
            report.inserted += await self.store.upsert_candles(
                self.source_name, report.symbol, report.timeframe, series, now=until
            )
        except Exception as exc:  # a failed fetch is reported, never raised: the sync is best effort
            report.errors.append(f"{report.symbol} {report.timeframe}: fetch failed: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------- stored source


class StoredMarketData:
    """A `MarketDataSource` whose candles come from the store; funding, open interest, the 24 h ticker and
    the market rules come from the live source. It never syncs: stale data is returned as stored, and
    `freshness` (or the context builder's own age check) says so."""

    def __init__(self, store: CandleStore, live: MarketDataSource, *, source_name: str) -> None:
        self.store = store
        self.live = live
        self.source_name = source_name
        self.name = f"stored:{source_name}"
        self.is_simulated = live.is_simulated

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        """The newest `limit` stored candles closed by `until`, oldest first (possibly stale or empty)."""
        return await self.store.load_candles(self.source_name, symbol.upper(), timeframe, limit=limit, until=until)

    async def freshness(self, symbol: str, timeframe: str, until: datetime) -> str | None:
        """A message when the newest stored candle closed more than 2 timeframes before `until`, else None."""
        latest = await self.store.latest_open_time(self.source_name, symbol.upper(), timeframe, until=until)
        return stale_message(symbol.upper(), timeframe, latest, until)

    async def fetch_funding_rate(self, symbol: str, at: datetime) -> FundingRate | None:
        return await self.live.fetch_funding_rate(symbol, at)

    async def fetch_open_interest(self, symbol: str, at: datetime) -> float | None:
        return await self.live.fetch_open_interest(symbol, at)

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        return await self.live.fetch_ticker_24h(symbol, at)

    async def market_rules(self, symbol: str) -> MarketRules:
        return await self.live.market_rules(symbol)

    async def close(self) -> None:
        """Close the live source (the store's sessions belong to whoever made them)."""
        await self.live.close()
