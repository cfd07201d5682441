"""`CcxtMarketData` against fake Binance USD-M and Hyperliquid servers over a real socket."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import ccxt.async_support as ccxt
import pytest

from app.core.clock import ManualClock
from app.core.errors import TemporaryError
from app.services.market_data.base import UnknownSymbolError
from app.services.market_data.ccxt_source import CcxtMarketData, VenueRequestError, local_api_urls
from tests.fakes.exchange_servers import FakeBinance, FakeHyperliquid, FakeVenue, at

NOW = datetime(2026, 3, 2, 12, 2, 30, tzinfo=UTC)  # mid-candle: the 12:00 5m candle is still forming
MIN5 = 300_000
VENUES = ["binanceusdm", "hyperliquid"]
CANDLES = {"binanceusdm": "klines", "hyperliquid": "candleSnapshot"}


def make_fake(venue: str, **kwargs: Any) -> FakeVenue:
    cls = FakeBinance if venue == "binanceusdm" else FakeHyperliquid
    return cls(["BTC", "ETH", "SOL"], now_ms=at(NOW), **kwargs)


def make_source(fake: FakeVenue, venue: str, **kwargs: Any) -> CcxtMarketData:
    options: dict[str, Any] = {"clock": ManualClock(NOW), "rate_limit_ms": 1, "backoff_s": 0.01} | kwargs
    return CcxtMarketData(venue, ["BTC", "ETH"], api_overrides=local_api_urls(venue, fake.base_url), **options)  # type: ignore[arg-type]


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(venue: str) -> Iterator[FakeVenue]:
    with make_fake(venue) as server:
        yield server


@pytest.fixture
async def source(fake: FakeVenue, venue: str) -> AsyncIterator[CcxtMarketData]:
    src = make_source(fake, venue)
    yield src
    await src.close()


def served(fake: FakeVenue, venue: str, kind: str) -> Any:
    """The JSON the fake serves now for a live `kind` of BTC (ticker, funding, open interest)."""
    if venue == "binanceusdm":
        assert isinstance(fake, FakeBinance)
        route = {"ticker": fake._ticker, "funding": fake._premium, "oi": fake._open_interest}[kind]
        return route("BTC", {}, fake.now_ms)
    assert isinstance(fake, FakeHyperliquid)
    return fake._ctx("BTC")


# ------------------------------------------------------------------------------------------ markets


async def test_market_rules(source: CcxtMarketData, fake: FakeVenue, venue: str) -> None:
    btc, eth = await source.market_rules("BTC"), await source.market_rules("eth")
    if venue == "binanceusdm":
        assert (btc.market_symbol, btc.tick_size, btc.lot_size, btc.min_notional) == ("BTC/USDT:USDT", 0.1, 0.001, 100)
        assert (eth.tick_size, eth.lot_size, eth.min_notional) == (0.01, 0.001, 20)
        assert (btc.max_leverage, eth.max_leverage) == (125, 100)  # offline defaults: brackets need keys
    else:
        mark = float(served(fake, venue, "ticker")["markPx"])  # ticks follow 5 significant figures
        decimals = max(0, min(6 - 5, 5 - len(str(int(mark)))))
        assert btc.market_symbol == "BTC/USDC:USDC"
        assert (btc.tick_size, btc.lot_size, btc.min_notional, btc.max_leverage) == (10.0**-decimals, 1e-5, 10, 40)
        assert (eth.lot_size, eth.max_leverage) == (1e-4, 25)
    assert btc.symbol == "BTC"


async def test_symbol_mapping_and_unknown_symbols(source: CcxtMarketData, venue: str) -> None:
    settle = "USDT" if venue == "binanceusdm" else "USDC"
    assert source.market_symbol("btc") == f"BTC/{settle}:{settle}"
    await source.load()
    with pytest.raises(UnknownSymbolError, match=r"DOGE.*lists BTC, ETH, SOL"):
        await source.market_rules("DOGE")
    with pytest.raises(UnknownSymbolError, match="DOGE"):
        await source.fetch_candles("DOGE", "5m", limit=5, until=NOW)
    source.assets.append("XYZ")
    with pytest.raises(UnknownSymbolError, match="no perpetual for XYZ"):
        await source.load()


async def test_a_given_exchange_is_used_and_closed(fake: FakeVenue, venue: str) -> None:
    exchange = getattr(ccxt, venue)({"enableRateLimit": False})
    source = CcxtMarketData(
        venue,  # type: ignore[arg-type]
        ["BTC"],
        exchange=exchange,
        api_overrides=local_api_urls(venue, fake.base_url),
        clock=ManualClock(NOW),
    )
    try:
        assert source.exchange is exchange and source.name == venue and source.is_simulated is False
        series = await source.fetch_candles("BTC", "1h", limit=3, until=NOW + timedelta(hours=5))
    finally:
        await source.close()
    assert int(series.open_time_ms[-1]) == at(NOW) // 3_600_000 * 3_600_000 - 3_600_000  # closed by the clock's now
    assert fake.requests  # the fake answered, not the real venue
    assert exchange.session is None


# ------------------------------------------------------------------------------------------ candles


@pytest.mark.parametrize("until", [NOW, NOW - timedelta(minutes=17, seconds=20)])
async def test_only_closed_candles_up_to_until(
    source: CcxtMarketData, fake: FakeVenue, venue: str, until: datetime
) -> None:
    series = await source.fetch_candles("BTC", "5m", limit=50, until=until)
    last_open = at(until) // MIN5 * MIN5 - MIN5
    assert len(series) == 50
    assert series.open_time_ms.dtype.name == "int64" and series.close.dtype.name == "float64"
    assert int(series.open_time_ms[-1]) == last_open
    assert _rows(series) == [tuple(r) for r in fake.candles("BTC", "5m", last_open - 60 * MIN5, last_open)[-50:]]
    forming = at(NOW) // MIN5 * MIN5
    assert fake.candles("BTC", "5m", forming, forming), "the fake serves the forming candle"
    if until == NOW:
        candle_requests = fake.matching(CANDLES[venue])
        assert candle_requests and all(r.status == 200 for r in candle_requests)


def _rows(series: Any) -> list[tuple[float, ...]]:
    return [(float(c.open_time_ms), c.open, c.high, c.low, c.close, c.volume) for c in series.candles()]


async def test_4h_candles_are_closed_and_aligned(source: CcxtMarketData, fake: FakeVenue) -> None:
    series = await source.fetch_candles("ETH", "4h", limit=10, until=NOW)
    assert int(series.open_time_ms[-1]) == at(datetime(2026, 3, 2, 8, tzinfo=UTC))
    assert _rows(series) == [
        tuple(r) for r in fake.candles("ETH", "4h", at(NOW) - 20 * 14_400_000, int(series.open_time_ms[-1]))[-10:]
    ]


async def test_paging_over_more_than_one_page(venue: str) -> None:
    limit = 2500 if venue == "binanceusdm" else 6000  # pages of 1000 (Binance) and 5000 (Hyperliquid)
    kwargs = {} if venue == "binanceusdm" else {"history_limit": 20_000}
    with make_fake(venue, **kwargs) as fake:
        source = make_source(fake, venue)
        try:
            series = await source.fetch_candles("BTC", "5m", limit=limit, until=NOW)
        finally:
            await source.close()
        last_open = at(NOW) // MIN5 * MIN5 - MIN5
        assert len(series) == limit
        assert set(int(d) for d in series.open_time_ms[1:] - series.open_time_ms[:-1]) == {MIN5}
        assert _rows(series) == [
            tuple(r) for r in fake.candles("BTC", "5m", last_open - limit * MIN5, last_open)[-limit:]
        ]
        assert len(fake.matching(CANDLES[venue])) == math.ceil((limit + 1) / (1000 if venue == "binanceusdm" else 5000))


async def test_range_download_reports_progress_per_page(source: CcxtMarketData, fake: FakeVenue) -> None:
    source.venue = replace(source.venue, candle_page=100)
    pages: list[int] = []
    start, end = NOW - timedelta(days=1, minutes=3), NOW
    got = [s async for s in source.fetch_candles_range("SOL", "5m", start, end, progress=pages.append)]
    assert len(pages) == len(got) == 3 and sum(pages) == 288
    expected = fake.candles("SOL", "5m", at(start), at(end) - MIN5)
    assert [r for s in got for r in _rows(s)] == [tuple(r) for r in expected if r[0] + MIN5 <= at(end)]


# ------------------------------------------------------------------------------------------ funding, ticker, OI


async def test_live_funding_ticker_and_open_interest_equal_what_was_served(
    source: CcxtMarketData, fake: FakeVenue, venue: str
) -> None:
    funding = await source.fetch_funding_rate("BTC", NOW)
    ticker = await source.fetch_ticker_24h("BTC", NOW)
    oi = await source.fetch_open_interest("BTC", NOW)
    assert funding is not None
    if venue == "binanceusdm":
        premium, body = served(fake, venue, "funding"), served(fake, venue, "ticker")
        assert (funding.rate, funding.funding_time_ms) == (
            float(premium["lastFundingRate"]),
            premium["nextFundingTime"],
        )
        assert ticker.last_price == float(body["lastPrice"])
        assert ticker.price_change_pct == float(body["priceChangePercent"])
        assert (ticker.base_volume, ticker.quote_volume) == (float(body["volume"]), float(body["quoteVolume"]))
        assert oi == float(served(fake, venue, "oi")["openInterest"])
    else:
        ctx = served(fake, venue, "ticker")
        assert funding.rate == float(ctx["funding"])
        assert ticker.last_price == float(ctx["midPx"])
        assert ticker.price_change_pct == pytest.approx((float(ctx["midPx"]) / float(ctx["prevDayPx"]) - 1) * 100)
        assert (ticker.base_volume, ticker.quote_volume) == (float(ctx["dayBaseVlm"]), float(ctx["dayNtlVlm"]))
        assert oi == float(ctx["openInterest"])
    assert ticker.symbol == "BTC"


async def test_past_funding_comes_from_the_history(source: CcxtMarketData, fake: FakeVenue, venue: str) -> None:
    moment = NOW - timedelta(days=2, minutes=-7)
    interval = 8 * 3_600_000 if venue == "binanceusdm" else 3_600_000
    settlements = fake.funding_settlements("BTC", at(moment) - 86_400_000, at(moment), interval)
    rate = await source.fetch_funding_rate("BTC", moment)
    assert rate is not None and (rate.funding_time_ms, rate.rate) == settlements[-1]  # jitter rounded off
    source.venue = replace(source.venue, funding_page=7 if venue == "binanceusdm" else 50)  # several pages
    history = await source.fetch_funding_history("BTC", NOW - timedelta(days=5), NOW)
    assert [(r.funding_time_ms, r.rate) for r in history] == fake.funding_settlements(
        "BTC", at(NOW) - 5 * 86_400_000, at(NOW), interval
    )
    assert await source.fetch_open_interest("BTC", moment) is None  # no history of open interest


async def test_past_ticker_is_rebuilt_from_hourly_candles(source: CcxtMarketData, fake: FakeVenue) -> None:
    moment = NOW - timedelta(days=3)
    ticker = await source.fetch_ticker_24h("ETH", moment)
    last_open = at(moment) // 3_600_000 * 3_600_000 - 3_600_000
    hourly = fake.candles("ETH", "1h", last_open - 23 * 3_600_000, last_open)
    assert len(hourly) == 24
    assert ticker.last_price == hourly[-1][4]
    assert ticker.price_change_pct == pytest.approx((hourly[-1][4] / hourly[0][1] - 1) * 100)
    assert ticker.base_volume == pytest.approx(sum(r[5] for r in hourly))


# ------------------------------------------------------------------------------------------ failures


async def test_retries_after_429_honouring_retry_after(source: CcxtMarketData, fake: FakeVenue, venue: str) -> None:
    await source.load()
    body = {"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."}
    fake.fail(429, body if venue == "binanceusdm" else b"null", headers={"Retry-After": "1"}, match=CANDLES[venue])
    series = await source.fetch_candles("BTC", "5m", limit=5, until=NOW)
    assert len(series) == 5
    tries = fake.matching(CANDLES[venue])
    assert [r.status for r in tries] == [429, 200]
    assert tries[1].received_at - tries[0].received_at >= 0.95


async def test_retries_after_500s_and_a_slow_answer(venue: str) -> None:
    with make_fake(venue) as fake:
        source = make_source(fake, venue, timeout_ms=400)
        try:
            fake.fail(500, {"code": -1000, "msg": "An unknown error occurred."}, times=2)  # even loading markets
            rules = await source.market_rules("BTC")
            fake.slow(1.0, match=CANDLES[venue])
            series = await source.fetch_candles("BTC", "5m", limit=3, until=NOW)
        finally:
            await source.close()
    assert rules.symbol == "BTC" and len(series) == 3
    assert [r.status for r in fake.requests][:3] == [500, 500, 200]
    assert len(fake.matching(CANDLES[venue])) == 2  # the slow one timed out, the retry answered


async def test_persistent_failure_is_a_clear_temporary_error(venue: str) -> None:
    with make_fake(venue) as fake:
        source = make_source(fake, venue, attempts=3)
        try:
            await source.load()
            fake.fail(503, b"Service Unavailable", times=10)
            started = time.monotonic()
            with pytest.raises(
                TemporaryError, match=r"candles of BTC .* failed after 3 attempts: ExchangeNotAvailable"
            ):
                await source.fetch_candles("BTC", "5m", limit=3, until=NOW)
        finally:
            await source.close()
    assert len(fake.matching(CANDLES[venue])) == 3
    assert time.monotonic() - started < 2


async def test_retries_are_warnings_until_the_venue_is_out_then_debug_until_it_answers(
    venue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A venue that is out is reported once by whoever gets the TemporaryError (the market's availability): the
    retries of the next reads, while it stays out, do not repeat it as warnings."""

    def retry_levels() -> list[int]:
        levels = [r.levelno for r in caplog.records if "failed (" in r.getMessage() and "retrying" in r.getMessage()]
        caplog.clear()
        return levels

    caplog.set_level(logging.DEBUG, logger="app.services.market_data.ccxt_source")
    with make_fake(venue) as fake:
        source = make_source(fake, venue, attempts=2)
        try:
            await source.load()
            for _ in range(2):
                fake.fail(503, b"Service Unavailable", times=2)
                with pytest.raises(TemporaryError):
                    await source.fetch_candles("BTC", "5m", limit=3, until=NOW)
            out = retry_levels()
            await source.fetch_candles("BTC", "5m", limit=3, until=NOW)  # the venue answers again
            fake.fail(503, b"Service Unavailable", times=1)
            await source.fetch_candles("BTC", "5m", limit=3, until=NOW)  # a blip: retried, answered
            blip = retry_levels()
        finally:
            await source.close()
    assert out == [logging.WARNING, logging.DEBUG]  # the first read's retry warns; once out, debug
    assert blip == [logging.WARNING] and not source.failing


async def test_client_errors_are_not_retried(source: CcxtMarketData, fake: FakeVenue, venue: str) -> None:
    await source.load()
    if venue == "binanceusdm":
        fake.fail(400, {"code": -1121, "msg": "Invalid symbol."}, match="klines")
        with pytest.raises(UnknownSymbolError, match="does not know the symbol"):
            await source.fetch_candles("BTC", "5m", limit=3, until=NOW)
        fake.fail(404, b"", match="ticker/24hr")
        with pytest.raises(VenueRequestError, match="refused: BadRequest"):
            await source.fetch_ticker_24h("BTC", NOW)
        assert [r.status for r in fake.requests[1:]] == [400, 404]
    else:
        fake.fail(422, b"Failed to deserialize the JSON body into the target type", match="candleSnapshot")
        with pytest.raises(VenueRequestError, match="refused"):
            await source.fetch_candles("BTC", "5m", limit=3, until=NOW)
        assert [r.status for r in fake.matching("candleSnapshot")] == [422]


async def test_unknown_timeframe_is_refused_before_any_request(source: CcxtMarketData, fake: FakeVenue) -> None:
    with pytest.raises(ValueError, match="no '7m' candles"):
        await source.fetch_candles("BTC", "7m", limit=3, until=NOW)
    assert not fake.matching(CANDLES["binanceusdm"]) and not fake.matching(CANDLES["hyperliquid"])
