"""The candle store on SQLite and PostgreSQL: idempotent upserts, closed candles only, loads, gaps, incremental
sync with back-fill, staleness and funding."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import delete

from app.db.migrate import ensure_migrated
from app.db.models import CandleRow
from app.db.session import create_engine, create_session_factory
from app.services.market_data.base import CandleSeries, FundingRate
from app.services.market_data.candle_store import CandleStore, CandleSync, StoredMarketData, stale_symbol
from app.services.market_data.simulator import MarketSimulator

pytestmark = pytest.mark.db

T0 = datetime(2025, 3, 6, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
M5 = timedelta(minutes=5)
M5_MS = 300_000


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CandleStore]:
    engine = create_engine(database_url)
    await ensure_migrated(engine)
    try:
        yield CandleStore(create_session_factory(engine), chunk_rows=7)  # small chunks: several per upsert
    finally:
        await engine.dispose()


def series(count: int, *, start: int = 0, symbol: str = "BTC", timeframe: str = "5m") -> CandleSeries:
    """`count` candles from T0 + `start` candles; values depend on the index only."""
    step = 300_000 if timeframe == "5m" else 3_600_000
    index = np.arange(start, start + count, dtype=np.int64)
    close = (100.0 + index * 0.5).astype(np.float64)
    volume = (10.0 + index).astype(np.float64)
    return CandleSeries(symbol, timeframe, T0_MS + index * step, close - 0.25, close + 1.0, close - 1.0, close, volume)


def assert_same(a: CandleSeries, b: CandleSeries) -> None:
    for column in ("open_time_ms", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), column)


async def test_upsert_is_idempotent_and_updates_changed_values(store: CandleStore) -> None:
    now = T0 + timedelta(days=1)
    assert await store.upsert_candles("replay", "BTC", "5m", series(30), now=now) == 30
    assert await store.upsert_candles("replay", "BTC", "5m", series(30), now=now) == 0
    assert await store.count_candles("replay", "BTC", "5m") == 30
    # overlapping batch: 10 old, 5 new
    assert await store.upsert_candles("replay", "BTC", "5m", series(15, start=20), now=now) == 5
    assert await store.count_candles("replay", "BTC", "5m") == 35
    # the same key under another source, asset or timeframe is another row
    assert await store.upsert_candles("other", "BTC", "5m", series(3), now=now) == 3
    assert await store.upsert_candles("replay", "ETH", "5m", series(3, symbol="ETH"), now=now) == 3
    assert await store.count_candles("replay", "BTC", "5m") == 35

    revised = series(35)
    revised.close[-1] += 7.0
    revised.volume[3] = 0.0
    assert await store.upsert_candles("replay", "BTC", "5m", revised, now=now) == 0
    loaded = await store.load_candles("replay", "BTC", "5m", limit=100, until=now)
    assert_same(loaded, revised)
    assert loaded.close[-1] == series(35).close[-1] + 7.0 and loaded.volume[3] == 0.0


async def test_unclosed_candles_are_skipped_and_counted(store: CandleStore) -> None:
    candles = series(10)  # the last one opens at T0 + 45 min and closes at T0 + 50 min
    almost = T0 + timedelta(minutes=49, seconds=59)
    assert await store.upsert_candles("replay", "BTC", "5m", candles, now=almost) == 9
    assert store.skipped_unclosed == 1
    assert await store.latest_open_time("replay", "BTC", "5m") == T0 + 8 * M5
    assert await store.upsert_candles("replay", "BTC", "5m", candles, now=T0 + 2 * M5) == 0  # all stored or open
    assert store.skipped_unclosed == 1 + 8
    assert await store.upsert_candles("replay", "BTC", "5m", candles, now=T0 + 50 * timedelta(minutes=1)) == 1
    with pytest.raises(ValueError, match="naive"):
        await store.upsert_candles("replay", "BTC", "5m", candles, now=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="1h series"):
        await store.upsert_candles("replay", "BTC", "5m", series(2, timeframe="1h"), now=almost)


async def test_load_order_limits_and_utc(store: CandleStore) -> None:
    await store.upsert_candles("replay", "BTC", "5m", series(50), now=T0 + timedelta(days=1))
    until = T0 + 20 * M5 + timedelta(minutes=3)  # candles 0..19 closed; 20 is open
    loaded = await store.load_candles("replay", "BTC", "5m", limit=5, until=until)
    assert_same(loaded, series(5, start=15))
    assert (loaded.symbol, loaded.timeframe) == ("BTC", "5m")
    assert len(await store.load_candles("replay", "BTC", "5m", limit=500, until=until)) == 20
    assert len(await store.load_candles("replay", "BTC", "5m", limit=0, until=until)) == 0
    assert len(await store.load_candles("replay", "BTC", "5m", limit=5, until=T0 + timedelta(minutes=4))) == 0
    assert len(await store.load_candles("replay", "SOL", "5m", limit=5, until=until)) == 0
    first, last = await store.span("replay", "BTC", "5m") or (None, None)
    assert first == T0 and last == T0 + 49 * M5
    assert first is not None and first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert await store.latest_open_time("replay", "ETH", "5m") is None


async def test_find_gaps(store: CandleStore) -> None:
    now = T0 + timedelta(days=1)
    for start, count in ((0, 10), (12, 3), (20, 5)):  # missing 10-11 and 15-19
        await store.upsert_candles("replay", "BTC", "5m", series(count, start=start), now=now)
    gaps = await store.find_gaps("replay", "BTC", "5m", T0, T0 + 25 * M5)
    assert gaps == [(T0 + 10 * M5, T0 + 12 * M5), (T0 + 15 * M5, T0 + 20 * M5)]
    # the range counts candles lying wholly inside it: leading and trailing holes too
    wider = await store.find_gaps("replay", "BTC", "5m", T0 - 2 * M5 - timedelta(minutes=1), T0 + 27 * M5)
    assert wider == [(T0 - 2 * M5, T0), *gaps, (T0 + 25 * M5, T0 + 27 * M5)]
    assert await store.find_gaps("replay", "BTC", "5m", T0, T0 + 10 * M5) == []
    assert await store.find_gaps("replay", "BTC", "5m", T0, T0 + timedelta(minutes=4)) == []


class FlakySource:
    """The simulator, except that it leaves out `missing` (open times in ms) the first `times` times it is asked
    for them, can stop at `end` (no newer candles) and can fail outright."""

    def __init__(self, missing: range = range(0), *, times: int = 1, end: datetime | None = None) -> None:
        self.sim = MarketSimulator(["BTC"], epoch=T0 - timedelta(days=2))
        self.name, self.is_simulated = "flaky", True
        self.missing, self.times, self.end = missing, times, end
        self.calls: list[tuple[int, datetime]] = []
        self.fail = False

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        self.calls.append((limit, until))
        if self.fail:
            raise ConnectionError("venue down")
        candles = self.sim.candles(symbol, timeframe, limit=limit, until=min(until, self.end or until))
        keep = np.ones(len(candles), dtype=bool)
        if self.times > 0:
            keep = ~np.isin(candles.open_time_ms, np.array(self.missing, dtype=np.int64))
            self.times -= int(not keep.all())
        return replace(candles, **{c: getattr(candles, c)[keep] for c in ("open_time_ms", *VALUES)})

    def __getattr__(self, name: str) -> object:
        return getattr(self.sim, name)


VALUES = ("open", "high", "low", "close", "volume")


async def test_sync_back_fills_a_gap_the_source_missed(store: CandleStore) -> None:
    hole = range(T0_MS + 40 * M5_MS, T0_MS + 46 * M5_MS, M5_MS)  # 6 candles
    source = FlakySource(hole)
    sync = CandleSync(store, source, source_name="flaky")  # type: ignore[arg-type]
    until = T0 + 100 * M5 + timedelta(seconds=30)

    report = await sync.sync("BTC", "5m", until=until, lookback=80)
    assert (report.gaps_found, report.gaps_filled, report.errors) == (1, 1, [])
    assert report.inserted == 80 and report.fetched == 74 + 6 and not report.stale
    assert source.calls[1] == (6, T0 + 46 * M5)  # the back-fill asks for exactly the hole
    stored = await store.load_candles("flaky", "BTC", "5m", limit=1000, until=until)
    assert_same(stored, source.sim.candles("BTC", "5m", limit=80, until=until))

    # incremental: 3 more candles closed; the newest stored candle is fetched again (revisions)
    later = until + 3 * M5
    report = await sync.sync("BTC", "5m", until=later, lookback=80)
    assert source.calls[-1] == (4, later)
    assert (report.fetched, report.inserted, report.gaps_found) == (4, 3, 0)
    assert report.latest == T0 + 102 * M5
    # nothing new: one candle re-read, nothing inserted
    report = await sync.sync("BTC", "5m", until=later, lookback=80)
    assert (report.fetched, report.inserted) == (1, 0)


async def test_sync_reports_a_gap_it_cannot_fill(store: CandleStore) -> None:
    hole = range(T0_MS + 10 * M5_MS, T0_MS + 12 * M5_MS, M5_MS)
    source = FlakySource(hole, times=99)
    sync = CandleSync(store, source, source_name="flaky")  # type: ignore[arg-type]
    report = await sync.sync("BTC", "5m", until=T0 + 30 * M5, lookback=30)
    assert (report.gaps_found, report.gaps_filled, report.inserted) == (1, 0, 28)
    assert len(report.errors) == 1 and "not back-filled" in report.errors[0]


async def test_stale_detection_and_fetch_errors(store: CandleStore) -> None:
    source = FlakySource(end=T0 + 50 * M5)  # the venue's data stops at T0 + 50 candles
    sync = CandleSync(store, source, source_name="flaky")  # type: ignore[arg-type]
    stored = StoredMarketData(store, source, source_name="flaky")  # type: ignore[arg-type]

    fresh = await sync.sync("BTC", "5m", until=T0 + 52 * M5, lookback=20)  # newest closed 2 candles ago
    assert not fresh.stale and fresh.errors == []
    assert await stored.freshness("BTC", "5m", T0 + 52 * M5) is None
    stale = await sync.sync("BTC", "5m", until=T0 + 52 * M5 + timedelta(seconds=1), lookback=20)
    assert stale.stale and stale.inserted == 0
    message = await stored.freshness("btc", "5m", T0 + 60 * M5)
    assert message is not None and "stale" in message and "BTC" in message
    assert stale_symbol(message) == "BTC" and stale_symbol("BTC: funding rate unavailable") is None
    assert await stored.freshness("BTC", "1h", T0 + 60 * M5) == "BTC: stale data: no stored 1h candles"

    source.fail = True
    failed = await sync.sync("BTC", "5m", until=T0 + 60 * M5, lookback=20)
    assert failed.stale and failed.errors == ["BTC 5m: fetch failed: ConnectionError: venue down"]
    empty = await CandleSync(store, source, source_name="other").sync("BTC", "5m", until=T0, lookback=5)  # type: ignore[arg-type]
    assert empty.stale and empty.latest is None and len(empty.errors) == 1


async def test_stored_market_data_serves_the_store(store: CandleStore) -> None:
    source = FlakySource()
    await CandleSync(store, source, source_name="sim").sync("BTC", "5m", until=T0 + 40 * M5, lookback=40)  # type: ignore[arg-type]
    stored = StoredMarketData(store, source, source_name="sim")  # type: ignore[arg-type]
    assert stored.name == "stored:sim" and stored.is_simulated
    now = T0 + 40 * M5 + timedelta(minutes=2)
    candles = await stored.fetch_candles("BTC", "5m", limit=12, until=now)
    assert_same(candles, source.sim.candles("BTC", "5m", limit=12, until=now))
    later = await stored.fetch_candles("BTC", "5m", limit=12, until=now + timedelta(hours=2))
    assert_same(later, candles)  # what the store has, however old: the freshness check says it is stale
    assert await stored.fetch_funding_rate("BTC", now) == source.sim.funding_rate("BTC", now)
    assert await stored.fetch_ticker_24h("BTC", now) == source.sim.ticker_24h("BTC", now)
    assert await stored.fetch_open_interest("BTC", now) == source.sim.open_interest("BTC", now)
    assert (await stored.market_rules("BTC")).market_symbol == "BTC/USDT:USDT"
    await stored.close()


async def test_funding_upsert_and_load(store: CandleStore) -> None:
    h8 = 8 * 3_600_000
    rates = [FundingRate(T0_MS + i * h8, 0.0001 * (i + 1)) for i in range(6)]
    assert await store.upsert_funding("replay", "BTC", rates) == 6
    assert await store.upsert_funding("replay", "BTC", rates[2:]) == 0
    assert await store.upsert_funding("replay", "BTC", []) == 0
    changed = [FundingRate(rates[5].funding_time_ms, -0.0003), FundingRate(T0_MS + 6 * h8, 0.0002)]
    assert await store.upsert_funding("replay", "BTC", changed) == 1
    assert await store.upsert_funding("replay", "ETH", rates[:2]) == 2
    loaded = await store.load_funding("replay", "BTC")
    assert loaded == [*rates[:5], *changed]
    until = T0 + timedelta(hours=24)  # settlements 0..3
    assert await store.load_funding("replay", "BTC", until=until, limit=2) == rates[2:4]
    assert await store.load_funding("replay", "BTC", since=T0 + timedelta(hours=40), until=until) == []
    assert await store.load_funding("replay", "BTC", since=T0 + timedelta(hours=1)) == [*rates[1:5], *changed]


async def test_sync_at_an_earlier_time_never_looks_ahead(store: CandleStore) -> None:
    source = FlakySource()
    sync = CandleSync(store, source, source_name="sim")  # type: ignore[arg-type]
    await sync.sync("BTC", "5m", until=T0 + 100 * M5, lookback=100)
    async with store.sessions.begin() as session:  # punch a hole at candles 40..44
        await session.execute(
            delete(CandleRow).where(CandleRow.open_time >= T0 + 40 * M5, CandleRow.open_time < T0 + 45 * M5)
        )
    source.calls.clear()
    earlier = T0 + 60 * M5
    report = await sync.sync("btc", "5m", until=earlier, lookback=30)
    assert all(until <= earlier for _, until in source.calls)
    assert (report.gaps_found, report.gaps_filled, report.latest, report.stale) == (1, 1, T0 + 59 * M5, False)
    stored = StoredMarketData(store, source, source_name="sim")  # type: ignore[arg-type]
    assert await stored.freshness("BTC", "5m", earlier) is None
