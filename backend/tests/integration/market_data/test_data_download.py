"""`data download` through Typer's test runner, against the fake venues over a real socket, into SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from app.commands import data_download
from app.commands.data_download import download
from app.db.session import create_engine, create_session_factory
from app.services.market_data.base import CandleSeries, FundingRate
from app.services.market_data.candle_store import CandleStore
from tests.fakes.exchange_servers import FakeBinance, FakeHyperliquid, FakeVenue

runner = CliRunner()
app = typer.Typer()
app.command()(download)
MIN5, H4, H8, H1 = 300_000, 14_400_000, 28_800_000, 3_600_000


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'candles.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr(data_download, "BACKOFF_S", 0.01)
    monkeypatch.setattr(data_download, "ATTEMPTS", 2)
    return url


@pytest.fixture
def binance() -> Iterator[FakeBinance]:
    with FakeBinance(["BTC", "ETH", "SOL"], history_days=10) as venue:
        yield venue


def run(fake: FakeVenue | None, *args: str, base_url: str | None = None) -> Any:
    url = base_url or (fake.base_url if fake else "http://127.0.0.1:9")
    return runner.invoke(app, [*args, "--base-url", url])


def stored(db_url: str, venue: str, asset: str, timeframe: str) -> tuple[CandleSeries, list[FundingRate]]:
    async def _load() -> tuple[CandleSeries, list[FundingRate]]:
        engine = create_engine(db_url)
        try:
            store = CandleStore(create_session_factory(engine))
            now = datetime.now(UTC)
            return (
                await store.load_candles(venue, asset, timeframe, limit=100_000, until=now),
                await store.load_funding(venue, asset, until=now),
            )
        finally:
            await engine.dispose()

    return asyncio.run(_load())


def assert_equal_to_fake(series: CandleSeries, fake: FakeVenue, asset: str, timeframe: str, tf_ms: int) -> None:
    first, last = int(series.open_time_ms[0]), int(series.open_time_ms[-1])
    assert set(int(d) for d in series.open_time_ms[1:] - series.open_time_ms[:-1]) <= {tf_ms}
    rows = [(int(c.open_time_ms), c.open, c.high, c.low, c.close, c.volume) for c in series.candles()]
    assert rows == [tuple(r) for r in fake.candles(asset, timeframe, first, last)]


def test_download_stores_the_venues_candles_and_funding_idempotently(db_url: str, binance: FakeBinance) -> None:
    result = run(binance, "--source", "binanceusdm", "--assets", "BTC,eth", "--timeframes", "5m,4h", "--days", "2")
    assert result.exit_code == 0, result.output
    assert "download complete" in result.output
    for asset in ("BTC", "ETH"):
        candles, funding = stored(db_url, "binanceusdm", asset, "5m")
        assert len(candles) in (575, 576)  # every 5m candle wholly inside the two days
        assert_equal_to_fake(candles, binance, asset, "5m", MIN5)
        four_hourly, _ = stored(db_url, "binanceusdm", asset, "4h")
        assert len(four_hourly) in (11, 12)
        assert_equal_to_fake(four_hourly, binance, asset, "4h", H4)
        served = binance.funding_settlements(asset, funding[0].funding_time_ms, funding[-1].funding_time_ms, H8)
        assert [(r.funding_time_ms, r.rate) for r in funding] == served and len(funding) in (6, 7)
    assert stored(db_url, "binanceusdm", "SOL", "5m")[0].open_time_ms.size == 0

    before = {asset: stored(db_url, "binanceusdm", asset, "5m") for asset in ("BTC", "ETH")}
    again = run(binance, "--source", "binanceusdm", "--assets", "BTC,ETH", "--timeframes", "5m,4h", "--days", "2")
    assert again.exit_code == 0, again.output
    for asset, (candles, funding) in before.items():
        now_candles, now_funding = stored(db_url, "binanceusdm", asset, "5m")
        # the same rows (plus at most the one candle that closed between the two runs)
        assert len(now_candles) - len(candles) in (0, 1) and now_funding[: len(funding)] == funding
        assert list(now_candles.open_time_ms[: len(candles)]) == list(candles.open_time_ms)


def test_hyperliquid_download_says_what_the_venue_no_longer_serves(db_url: str) -> None:
    with FakeHyperliquid(["BTC"], history_days=10, history_limit=300) as fake:
        result = run(fake, "--source", "hyperliquid", "--assets", "BTC", "--timeframes", "5m", "--days", "2")
    assert result.exit_code == 0, result.output
    candles, funding = stored(db_url, "hyperliquid", "BTC", "5m")
    assert len(candles) in (299, 300)  # only the latest 300 are served
    assert_equal_to_fake(candles, fake, "BTC", "5m", MIN5)
    assert len(funding) in (47, 48, 49) and {f.funding_time_ms % H1 for f in funding} == {0}
    assert "missing" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "kraken"], "unknown source 'kraken'"),
        (["--assets", "BTC,DOGE"], "no perpetual for DOGE"),
        (["--timeframes", "5m,7m"], "no 7m candles"),
        (["--timeframes", "five"], "not a timeframe"),
        (["--days", "0"], "greater than or equal to 1"),
    ],
)
def test_bad_input_exits_2(db_url: str, binance: FakeBinance, args: list[str], message: str) -> None:
    result = run(binance, *args, "--days", "1") if "--days" not in args else run(binance, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unreachable_venue_exits_1_with_the_reason(db_url: str) -> None:
    result = run(None, "--assets", "BTC", "--days", "1", base_url="http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cannot read binanceusdm's markets" in result.output and "ExchangeNotAvailable" in result.output


def test_a_failure_midway_keeps_what_was_fetched_and_says_what_is_missing(db_url: str, binance: FakeBinance) -> None:
    binance.fail(503, b"Service Unavailable", match="fundingRate", times=5)
    result = run(binance, "--assets", "BTC,ETH", "--timeframes", "5m", "--days", "1")
    assert result.exit_code == 1
    assert "download incomplete: BTC funding: binanceusdm: funding history of BTC" in result.output
    assert "failed after 2 attempts: ExchangeNotAvailable" in result.output
    btc, funding = stored(db_url, "binanceusdm", "BTC", "5m")
    assert len(btc) in (287, 288) and funding == []
    assert len(stored(db_url, "binanceusdm", "ETH", "5m")[0]) == 0  # not fetched, and the summary says so
    assert "not fetched" in result.output
