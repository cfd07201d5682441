"""File replay: closed candles only, epoch-aligned aggregation, funding at or before (with the exchange's ms
jitter), CSV validation with file and line, on small hand-written files and on the real Binance data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from app.services.market_data.base import UnknownSymbolError
from app.services.market_data.replay import ReplayDataError, ReplaySource, aggregate

HEADER = "timestamp_ms,open,high,low,close,volume"
T0 = datetime(2025, 3, 6, 10, 0, tzinfo=UTC)  # on a 1h boundary
T0_MS = int(T0.timestamp() * 1000)
M5 = 300_000
H8 = 8 * 3_600_000


def write(folder: Path, name: str, lines: list[str], header: str = HEADER) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def candle_lines(start_ms: int, count: int, step_ms: int = M5, price: float = 100.0) -> list[str]:
    """Candles rising by 1 each: open p, high p+1.5, low p-0.5, close p+1, volume 10+i."""
    return [
        f"{start_ms + i * step_ms},{price + i},{price + i + 1.5},{price + i - 0.5},{price + i + 1},{10 + i}"
        for i in range(count)
    ]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "BTC_USDT-5m.csv", candle_lines(T0_MS, 36))  # 10:00 .. 12:55
    write(tmp_path, "ETH-5m.csv", candle_lines(T0_MS + M5, 12, price=3000.0))  # 10:05 .. 11:00
    write(tmp_path, "BTC_USDT-mark-8h.csv", ["not,even,parsed"])  # ignored
    write(tmp_path, "README.txt", ["ignored"])
    jittered = [f"{T0_MS + 1},0.0001", f"{T0_MS + H8 + 17},-0.0002", f"{T0_MS + 2 * H8 + 3},0.0003"]
    write(tmp_path, "BTC_USDT-funding.csv", jittered, header="timestamp_ms,funding_rate")
    return tmp_path


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def test_only_closed_candles(folder: Path) -> None:
    replay = ReplaySource(folder)
    assert replay.name == "replay" and replay.is_simulated
    assert replay.assets == ["BTC", "ETH"]

    series = await replay.fetch_candles("BTC", "5m", limit=100, until=at(17))
    assert [int(t) for t in series.open_time_ms] == [T0_MS, T0_MS + M5, T0_MS + 2 * M5]  # 10:15 closes 10:20
    exact = await replay.fetch_candles("btc", "5m", limit=100, until=at(20))
    assert len(exact) == 4  # a candle closing exactly at `until` is closed
    last_two = await replay.fetch_candles("BTC", "5m", limit=2, until=at(20))
    assert list(last_two.close) == [103.0, 104.0]
    assert len(await replay.fetch_candles("BTC", "5m", limit=5, until=at(4))) == 0
    assert len(await replay.fetch_candles("BTC", "5m", limit=0, until=at(60))) == 0
    assert len(await replay.fetch_candles("BTC", "5m", limit=1000, until=at(10_000))) == 36
    with pytest.raises(ValueError, match="limit"):
        await replay.fetch_candles("BTC", "5m", limit=-1, until=at(60))


async def test_aggregation_is_epoch_aligned_and_complete_buckets_only(folder: Path) -> None:
    replay = ReplaySource(folder)
    hour = await replay.fetch_candles("BTC", "1h", limit=10, until=at(600))
    assert [int(t) for t in hour.open_time_ms] == [T0_MS, T0_MS + 12 * M5, T0_MS + 24 * M5]
    assert (hour.open[0], hour.high[0], hour.low[0], hour.close[0]) == (100.0, 112.5, 99.5, 112.0)
    assert hour.volume[0] == sum(10 + i for i in range(12))
    # ETH starts at 10:05: the 10:00 hour is incomplete and left out; 11:00 has only its first candle.
    assert len(await replay.fetch_candles("ETH", "1h", limit=10, until=at(600))) == 0
    fifteen = await replay.fetch_candles("ETH", "15m", limit=10, until=at(600))
    assert [int(t) for t in fifteen.open_time_ms] == [T0_MS + 3 * M5, T0_MS + 6 * M5, T0_MS + 9 * M5]
    # an aggregated candle is closed only when its whole bucket is
    assert len(await replay.fetch_candles("BTC", "1h", limit=10, until=at(119))) == 1
    with pytest.raises(ValueError, match="no BTC 7m candles"):
        await replay.fetch_candles("BTC", "7m", limit=1, until=at(600))


def test_aggregates_from_the_finest_dividing_file(tmp_path: Path) -> None:
    write(tmp_path, "SOL-5m.csv", candle_lines(T0_MS, 24))
    # a 20m file with other volumes: the 1h candle must come from the finer 5m file
    write(tmp_path, "SOL-20m.csv", [f"{T0_MS + i * 4 * M5},100,200,50,150,1" for i in range(6)])
    replay = ReplaySource(tmp_path)
    hour = replay.series("SOL", "1h")
    assert len(hour) == 2 and hour.volume[0] == sum(10 + i for i in range(12))
    assert replay.timeframes("SOL") == ["5m", "20m"]
    assert replay.series("SOL", "20m").volume[0] == 1  # a file is used as is when present


async def test_funding_at_or_before_with_jitter(folder: Path) -> None:
    replay = ReplaySource(folder)
    assert await replay.fetch_funding_rate("BTC", T0 - timedelta(milliseconds=1)) is None
    first = await replay.fetch_funding_rate("BTC", T0)  # reported at T0 + 1 ms; settled at T0
    assert first is not None and first.funding_time_ms == T0_MS and first.rate == 0.0001
    just_before = await replay.fetch_funding_rate("BTC", T0 + timedelta(hours=8) - timedelta(milliseconds=1))
    assert just_before == first
    second = await replay.fetch_funding_rate("BTC", T0 + timedelta(hours=8))  # reported 17 ms late
    assert second is not None and (second.funding_time_ms, second.rate) == (T0_MS + H8, -0.0002)
    latest = await replay.fetch_funding_rate("BTC", T0 + timedelta(days=30))
    assert latest is not None and latest.rate == 0.0003
    assert await replay.fetch_funding_rate("ETH", T0 + timedelta(days=1)) is None  # no funding file
    assert [r.funding_time_ms for r in replay.funding_history("BTC")] == [T0_MS, T0_MS + H8, T0_MS + 2 * H8]


async def test_ticker_rules_open_interest_and_range(folder: Path) -> None:
    replay = ReplaySource(folder)
    ticker = await replay.fetch_ticker_24h("BTC", at(60))  # 12 candles closed
    assert ticker.symbol == "BTC" and ticker.last_price == 112.0
    assert ticker.price_change_pct == pytest.approx((112.0 / 100.0 - 1) * 100)
    assert ticker.base_volume == sum(10 + i for i in range(12))
    assert ticker.quote_volume == pytest.approx(sum((101 + i) * (10 + i) for i in range(12)))
    day_later = await replay.fetch_ticker_24h("BTC", at(180 + 24 * 60 - 5))  # only the last 5m candle is in 24 h
    assert day_later.base_volume == 10 + 35
    with pytest.raises(ValueError, match="no BTC 5m candle closed"):
        await replay.fetch_ticker_24h("BTC", at(3))
    rules = await replay.market_rules("BTC")
    assert (rules.symbol, rules.market_symbol, rules.tick_size, rules.lot_size) == ("BTC", "BTC/USDT:USDT", 0.1, 0.001)
    assert (await replay.market_rules("ETH")).market_symbol == "ETH/USDT:USDT"  # no quote in the name
    assert await replay.fetch_open_interest("BTC", at(60)) is None
    assert replay.first_time == T0 and replay.last_time == at(180)
    assert replay.span("ETH", "5m") == (at(5), at(65))
    await replay.close()


def test_price_derived_rules_for_other_assets(tmp_path: Path) -> None:
    write(tmp_path, "XRP_USDT-5m.csv", candle_lines(T0_MS, 3, price=1.1))
    rules = ReplaySource(tmp_path).rules("XRP")
    assert rules.market_symbol == "XRP/USDT:USDT"
    assert rules.tick_size == pytest.approx(0.0001) and rules.lot_size == 1.0 and rules.min_notional == 5.0


async def test_unknown_symbol(folder: Path) -> None:
    replay = ReplaySource(folder)
    with pytest.raises(UnknownSymbolError, match="DOGE"):
        await replay.fetch_candles("DOGE", "5m", limit=1, until=at(60))
    for call in (replay.fetch_funding_rate, replay.fetch_ticker_24h, replay.fetch_open_interest):
        with pytest.raises(UnknownSymbolError):
            await call("DOGE", at(60))
    with pytest.raises(UnknownSymbolError):
        await replay.market_rules("DOGE")


def test_asset_and_quote_filters(tmp_path: Path) -> None:
    write(tmp_path, "BTC_USDT-5m.csv", candle_lines(T0_MS, 3))
    write(tmp_path, "BTC_USD-5m.csv", candle_lines(T0_MS, 4))
    write(tmp_path, "ETH_USDT-5m.csv", candle_lines(T0_MS, 2))
    with pytest.raises(ReplayDataError, match="two files for BTC 5m"):
        ReplaySource(tmp_path)
    usd = ReplaySource(tmp_path, quote="usd")
    assert usd.assets == ["BTC"] and len(usd.series("BTC", "5m")) == 4
    assert usd.rules("BTC").market_symbol == "BTC/USD:USD"
    assert ReplaySource(tmp_path, assets=["eth"]).assets == ["ETH"]
    with pytest.raises(ReplayDataError, match="no CSV files for SOL"):
        ReplaySource(tmp_path, assets=["ETH", "SOL"])


GOOD = candle_lines(T0_MS, 3)


@pytest.mark.parametrize(
    ("lines", "header", "expected"),
    [
        (GOOD, "time,open,high,low,close,volume", "line 1: expected the header"),
        ([GOOD[0], f"{T0_MS + M5},100,101,99,abc,1"], HEADER, "line 3: 'abc' is not a number"),
        ([GOOD[0], f"{T0_MS + M5},100,101,99,100"], HEADER, "line 3: expected 6 fields, found 5"),
        ([GOOD[0], f"{T0_MS + M5},100,101,99,nan,1"], HEADER, "line 3: not a finite number"),
        ([GOOD[0], GOOD[1], GOOD[1]], HEADER, f"line 4: duplicate timestamp {T0_MS + M5}"),
        ([GOOD[1], GOOD[0], GOOD[2]], HEADER, "line 3: timestamp is not after"),
        ([GOOD[0], f"{T0_MS + M5},100,99.5,99,100,1"], HEADER, "line 3: OHLC violation: high"),
        ([GOOD[0], GOOD[1], f"{T0_MS + 2 * M5},100,101,100.5,101,1"], HEADER, "line 4: OHLC violation: low"),
        ([GOOD[0], f"{T0_MS + M5},100,101,99,100,-1"], HEADER, "line 3: volume is negative"),
        ([GOOD[0], f"{T0_MS + M5 + 60_000},100,101,99,100,1"], HEADER, "line 3: open time is not on a 5m boundary"),
        ([f"{T0_MS // 1000},100,101,99,100,1"], HEADER, "look like seconds"),
        ([f"{T0_MS}.5,100,101,99,100,1"], HEADER, "line 2: timestamp_ms is not a whole number"),
        ([], HEADER, "no data rows"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, lines: list[str], header: str, expected: str) -> None:
    write(tmp_path, "BTC_USDT-5m.csv", lines, header=header)
    with pytest.raises(ReplayDataError, match=r"BTC_USDT-5m\.csv") as info:
        ReplaySource(tmp_path)
    assert expected in str(info.value)


def test_bad_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "BTC-5m.csv"
    path.write_text(f"{HEADER}\r\n{GOOD[0]}\r\n\r\n{GOOD[1]}\r\n{GOOD[1]}\r\n", encoding="utf-8")
    with pytest.raises(ReplayDataError, match=r"BTC-5m.csv: line 5: duplicate timestamp"):
        ReplaySource(tmp_path)


def test_bad_funding_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ReplayDataError, match="no such folder"):
        ReplaySource(tmp_path / "missing")
    with pytest.raises(ReplayDataError, match="no candle CSV files"):
        ReplaySource(tmp_path)
    write(tmp_path, "BTC-5m.csv", GOOD)
    # two reports of one settlement, a few ms apart, are one settlement twice
    write(tmp_path, "BTC-funding.csv", [f"{T0_MS},0.0001", f"{T0_MS + 4},0.0001"], header="timestamp_ms,funding_rate")
    with pytest.raises(ReplayDataError, match=r"BTC-funding.csv: line 3: duplicate timestamp"):
        ReplaySource(tmp_path)
    write(tmp_path, "BTC-funding.csv", [f"{T0_MS},0.0001"], header="timestamp_ms,rate")
    with pytest.raises(ReplayDataError, match="expected the header 'timestamp_ms,funding_rate'"):
        ReplaySource(tmp_path)


# ------------------------------------------------------------------------------------------ real data

MIT = "market/binance_usdm_typhonun_mit"


@pytest.fixture
def binance(shared_data: Path) -> ReplaySource:
    return ReplaySource(shared_data / MIT)


def test_real_files_load(binance: ReplaySource) -> None:
    assert binance.assets == ["BTC", "ETH", "SOL"]
    assert binance.timeframes("BTC") == ["5m", "15m", "1h", "1d"]
    assert len(binance.series("BTC", "5m")) == 10906 and len(binance.series("SOL", "5m")) == 8639
    assert binance.first_time == datetime(2025, 3, 6, 10, 30, tzinfo=UTC)
    assert binance.last_time == datetime(2025, 4, 15, tzinfo=UTC)  # the 1d files reach further than the 5m ones


@pytest.mark.parametrize("asset", ["BTC", "ETH", "SOL"])
@pytest.mark.parametrize(("timeframe", "base"), [("15m", "5m"), ("1h", "5m"), ("1h", "15m"), ("1d", "1h")])
def test_aggregated_equals_the_exchange_file(binance: ReplaySource, asset: str, timeframe: str, base: str) -> None:
    real = binance.series(asset, timeframe)
    built = aggregate(binance.series(asset, base), timeframe)
    common, real_at, built_at = np.intersect1d(real.open_time_ms, built.open_time_ms, return_indices=True)
    assert len(common) >= min(len(real), len(built)) - 10 > 0
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(built, column)[built_at], getattr(real, column)[real_at], column)
    np.testing.assert_allclose(built.volume[built_at], real.volume[real_at], rtol=1e-9)


async def test_real_closed_only_and_limits(binance: ReplaySource) -> None:
    until = datetime(2025, 3, 20, 12, 7, 30, tzinfo=UTC)
    five = await binance.fetch_candles("BTC", "5m", limit=120, until=until)
    assert len(five) == 120
    assert five.open_time_ms[-1] == int(datetime(2025, 3, 20, 12, 0, tzinfo=UTC).timestamp() * 1000)
    assert (np.diff(five.open_time_ms) == M5).all()
    four_hours = await binance.fetch_candles("ETH", "4h", limit=3, until=until)  # no 4h file: from 5m
    assert four_hours.open_time_ms[-1] == int(datetime(2025, 3, 20, 8, tzinfo=UTC).timestamp() * 1000)
    ticker = await binance.fetch_ticker_24h("BTC", until)
    assert ticker.last_price == five.close[-1] and ticker.base_volume > 0
    assert 50_000 < ticker.quote_volume / ticker.base_volume < 150_000  # a BTC price


async def test_real_funding_jitter(binance: ReplaySource, shared_data: Path) -> None:
    raw = np.loadtxt(shared_data / MIT / "BTC_USDT-funding.csv", delimiter=",", skiprows=1)
    jittered = raw[raw[:, 0] % 1000 != 0]
    assert len(jittered) > 0  # the exchange's reports really carry ms jitter
    reported = int(jittered[0, 0])
    settlement = datetime.fromtimestamp(reported // 1000, tz=UTC)
    rate = await binance.fetch_funding_rate("BTC", settlement)  # at the boundary, before the reported ms
    assert rate is not None and rate.funding_time_ms == reported // 1000 * 1000 and rate.rate == jittered[0, 1]
    history = binance.funding_history("BTC")
    assert len(history) == 266 and all(r.funding_time_ms % H8 == 0 for r in history)
