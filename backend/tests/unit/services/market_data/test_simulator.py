"""The seeded market simulator behaves like a deterministic, plausible perpetual-futures market."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from app.services.market_data.base import CandleSeries, UnknownSymbolError
from app.services.market_data.simulator import FUNDING_CAP, FUNDING_INTERVAL_MS, MarketSimulator

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
ASSETS = ["BTC", "ETH", "SOL", "DOGE"]
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def sim() -> MarketSimulator:
    return MarketSimulator(ASSETS)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def fingerprint(series: CandleSeries) -> str:
    digest = hashlib.sha256()
    for column in (series.open_time_ms, series.open, series.high, series.low, series.close, series.volume):
        digest.update(column.tobytes())
    return digest.hexdigest()


def tail(series: CandleSeries, n: int) -> CandleSeries:
    cut = len(series) - n
    return CandleSeries(
        series.symbol,
        series.timeframe,
        series.open_time_ms[cut:],
        series.open[cut:],
        series.high[cut:],
        series.low[cut:],
        series.close[cut:],
        series.volume[cut:],
    )


def log_returns(sim: MarketSimulator, asset: str, days: int) -> np.ndarray:
    close = sim.candles_between(asset, "5m", EPOCH, EPOCH + timedelta(days=days)).close
    return np.diff(np.log(close))


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_candles_whatever_the_query_order() -> None:
    late_first, early_first = MarketSimulator(["BTC", "ETH"]), MarketSimulator(["ETH", "BTC"])
    far = EPOCH + timedelta(days=40)
    late = late_first.candles("BTC", "5m", limit=500, until=far)
    early_first.candles("BTC", "1h", limit=24, until=EPOCH + timedelta(days=2))
    everything = early_first.candles_between("BTC", "5m", EPOCH, far)

    assert fingerprint(late) == fingerprint(tail(everything, 500))


def test_same_seed_gives_identical_candles_in_a_fresh_process() -> None:
    until = EPOCH + timedelta(days=20)
    script = (
        "from datetime import datetime, UTC, timedelta\n"
        "from app.services.market_data.simulator import MarketSimulator\n"
        "from tests.unit.services.market_data.test_simulator import fingerprint\n"
        "sim = MarketSimulator(['SOL', 'BTC'], seed=11)\n"
        f"until = datetime.fromisoformat('{until}')\n"
        "print(fingerprint(sim.candles('BTC', '15m', limit=1500, until=until)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    here = MarketSimulator(["BTC"], seed=11).candles("BTC", "15m", limit=1500, until=until)
    assert out.stdout.strip() == fingerprint(here)


def test_seeds_and_assets_give_different_markets() -> None:
    until = EPOCH + timedelta(days=3)
    a = MarketSimulator(["BTC", "DOGE", "PEPE"], seed=1)
    b = MarketSimulator(["BTC"], seed=2)
    btc_1, btc_2 = (m.candles("BTC", "5m", limit=100, until=until).close for m in (a, b))
    assert not np.array_equal(btc_1, btc_2)
    doge = np.diff(np.log(a.candles("DOGE", "5m", limit=100, until=until).close))
    pepe = np.diff(np.log(a.candles("PEPE", "5m", limit=100, until=until).close))
    assert abs(np.corrcoef(doge, pepe)[0, 1]) < 0.5


# --------------------------------------------------------------------------------- candles and windows


@settings(max_examples=60, deadline=None)
@given(
    offset_ms=st.integers(min_value=-2 * 86_400_000, max_value=45 * 86_400_000),
    limit=st.integers(min_value=0, max_value=400),
    timeframe=st.sampled_from(["5m", "15m", "1h", "4h", "1d"]),
)
def test_fetch_candles_returns_the_last_closed_candles(
    sim: MarketSimulator, offset_ms: int, limit: int, timeframe: str
) -> None:
    until = EPOCH + timedelta(milliseconds=offset_ms)
    series = asyncio.run(sim.fetch_candles("ETH", timeframe, limit=limit, until=until))
    tf_ms = {"5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}[timeframe] * MINUTE_MS
    newest_closed_open = ms(until) // tf_ms * tf_ms - tf_ms
    available = max(0, (newest_closed_open - ms(EPOCH)) // tf_ms + 1)

    assert len(series) == min(limit, available)
    assert series.open_time_ms.dtype == np.int64 and series.close.dtype == np.float64
    if len(series):
        assert series.open_time_ms[-1] == newest_closed_open  # nothing closed is missing at the end
        assert series.open_time_ms[0] >= ms(EPOCH)
        assert np.all(np.diff(series.open_time_ms) == tf_ms)
        assert np.all(series.open_time_ms % tf_ms == 0)
        whole_history = sim.candles_between("ETH", timeframe, EPOCH, until)
        assert fingerprint(series) == fingerprint(tail(whole_history, len(series)))


def test_a_candle_still_forming_at_until_is_not_returned(sim: MarketSimulator) -> None:
    until = EPOCH + timedelta(days=1, minutes=7, seconds=30)  # mid-way through the 00:05 candle
    series = sim.candles("BTC", "5m", limit=3, until=until)
    day = EPOCH + timedelta(days=1)
    assert series.open_time_ms.tolist() == [ms(day - timedelta(minutes=m)) for m in (10, 5, 0)]


def test_nothing_exists_before_the_epoch(sim: MarketSimulator) -> None:
    assert len(sim.candles("BTC", "5m", limit=10, until=EPOCH)) == 0
    assert len(sim.candles("BTC", "5m", limit=10, until=EPOCH - timedelta(days=3))) == 0
    first_hour = sim.candles("BTC", "5m", limit=1000, until=EPOCH + timedelta(hours=1))
    assert len(first_hour) == 12 and int(first_hour.open_time_ms[0]) == ms(EPOCH)
    assert first_hour.open[0] == 100_000.0


def test_higher_timeframe_candle_that_would_start_before_the_epoch_is_left_out() -> None:
    sim = MarketSimulator(["BTC"], epoch=datetime(2025, 1, 1, 3, 0, tzinfo=UTC))
    four_hours = sim.candles("BTC", "4h", limit=10, until=datetime(2025, 1, 1, 12, 0, tzinfo=UTC))
    assert four_hours.open_time_ms.tolist() == [
        ms(datetime(2025, 1, 1, 4, tzinfo=UTC)),
        ms(datetime(2025, 1, 1, 8, tzinfo=UTC)),
    ]


@pytest.mark.parametrize("timeframe", ["15m", "1h", "4h", "1d"])
def test_higher_timeframes_aggregate_base_candles(sim: MarketSimulator, timeframe: str) -> None:
    until = EPOCH + timedelta(days=9, hours=5, minutes=3)
    big = sim.candles("SOL", timeframe, limit=30, until=until)
    tf_ms = int(big.open_time_ms[1] - big.open_time_ms[0])
    start = EPOCH + timedelta(milliseconds=int(big.open_time_ms[0]) - ms(EPOCH))
    base = sim.candles_between("SOL", "5m", start, start + timedelta(milliseconds=tf_ms * len(big)))
    per = tf_ms // (5 * MINUTE_MS)
    assert len(base) == per * len(big)

    np.testing.assert_array_equal(big.open_time_ms, base.open_time_ms[::per])
    np.testing.assert_array_equal(big.open, base.open[::per])
    np.testing.assert_array_equal(big.high, base.high.reshape(-1, per).max(axis=1))
    np.testing.assert_array_equal(big.low, base.low.reshape(-1, per).min(axis=1))
    np.testing.assert_array_equal(big.close, base.close[per - 1 :: per])
    np.testing.assert_allclose(big.volume, base.volume.reshape(-1, per).sum(axis=1), rtol=1e-12)


def test_timeframe_finer_than_the_base_is_refused(sim: MarketSimulator) -> None:
    with pytest.raises(ValueError, match="multiple of the base timeframe"):
        sim.candles("BTC", "1m", limit=5, until=EPOCH + timedelta(days=1))
    with pytest.raises(ValueError, match="multiple of the base timeframe"):
        sim.candles("BTC", "7m", limit=5, until=EPOCH + timedelta(days=1))


# --------------------------------------------------------------------------------------------- realism


@pytest.mark.parametrize("seed", [7, 2024])
@pytest.mark.parametrize("asset", ASSETS)
def test_candles_are_continuous_and_consistent(asset: str, seed: int) -> None:
    series = MarketSimulator([asset], seed=seed).candles_between(asset, "5m", EPOCH, EPOCH + timedelta(days=50))
    assert len(series) == 50 * 288
    assert np.all(np.isfinite(np.vstack([series.open, series.high, series.low, series.close])))
    assert np.array_equal(series.open[1:], series.close[:-1])
    assert np.all(series.high >= np.maximum(series.open, series.close))
    assert np.all(series.low <= np.minimum(series.open, series.close))
    assert np.all(series.low > 0)
    assert np.all(series.volume > 0)
    assert np.mean(series.high > np.maximum(series.open, series.close)) > 0.5  # real wicks, not flat bars


def test_start_prices_and_volatility_are_plausible(sim: MarketSimulator) -> None:
    first = EPOCH + timedelta(minutes=5)
    starts = {a: sim.candles(a, "5m", limit=1, until=first).open[0] for a in ("BTC", "ETH", "SOL")}
    assert starts == {"BTC": 100_000.0, "ETH": 3_500.0, "SOL": 180.0}
    annual = {a: log_returns(sim, a, 70).std() * np.sqrt(288 * 365) for a in ("BTC", "ETH", "SOL")}
    assert 0.3 < annual["BTC"] < 0.9
    assert annual["BTC"] < annual["ETH"] and annual["BTC"] < annual["SOL"]


def test_volatility_clusters_and_tails_are_fat(sim: MarketSimulator) -> None:
    returns = log_returns(sim, "BTC", 70)  # about 20k candles
    magnitude = np.abs(returns) - np.abs(returns).mean()
    acf = [np.dot(magnitude[:-k], magnitude[k:]) / np.dot(magnitude, magnitude) for k in range(1, 11)]
    assert min(acf) > 0.1
    assert stats.kurtosis(returns) > 3.0
    assert np.any(np.abs(returns) > 8 * returns.std())  # a few jumps


def test_volume_is_larger_when_price_moves_more(sim: MarketSimulator) -> None:
    series = sim.candles_between("ETH", "5m", EPOCH, EPOCH + timedelta(days=30))
    moves = np.abs(np.log(series.close / series.open))
    quiet, busy = moves < np.quantile(moves, 0.2), moves > np.quantile(moves, 0.8)
    assert series.volume[busy].mean() > 2 * series.volume[quiet].mean()


# --------------------------------------------------------------------------------- funding, OI, ticker


@settings(max_examples=40, deadline=None)
@given(offset_ms=st.integers(min_value=0, max_value=60 * 86_400_000))
def test_funding_is_the_last_8h_settlement(sim: MarketSimulator, offset_ms: int) -> None:
    at = EPOCH + timedelta(milliseconds=offset_ms)
    funding = asyncio.run(sim.fetch_funding_rate("SOL", at))
    if ms(at) < ms(EPOCH) + FUNDING_INTERVAL_MS:  # the first settlement after the epoch is at 08:00
        assert funding is None
        return
    assert funding is not None
    assert funding.funding_time_ms % FUNDING_INTERVAL_MS == 0  # 00, 08, 16 UTC
    assert funding.funding_time_ms <= ms(at) < funding.funding_time_ms + FUNDING_INTERVAL_MS
    same_window = EPOCH + timedelta(milliseconds=funding.funding_time_ms - ms(EPOCH))
    assert sim.funding_rate("SOL", same_window) == funding
    assert -FUNDING_CAP <= funding.rate <= FUNDING_CAP


def test_no_funding_before_the_first_settlement(sim: MarketSimulator) -> None:
    assert sim.funding_rate("BTC", EPOCH) is None
    assert sim.funding_rate("BTC", EPOCH + timedelta(hours=7, minutes=59)) is None
    first = sim.funding_rate("BTC", EPOCH + timedelta(hours=8))
    assert first is not None and first.funding_time_ms == ms(EPOCH + timedelta(hours=8))


@pytest.mark.parametrize("asset", ASSETS)
def test_funding_sits_at_the_interest_rate_and_leans_with_the_trend(sim: MarketSimulator, asset: str) -> None:
    end = EPOCH + timedelta(days=365)
    history = sim.funding_history(asset, EPOCH, end)
    assert len(history) == 365 * 3
    rates = np.array([f.rate for f in history])
    assert np.all(np.abs(rates) <= FUNDING_CAP)
    assert 0.1 < np.mean(rates == 0.0001) < 0.9  # the clamp pins it to the interest rate, often not always
    assert -0.0002 < rates.mean() < 0.0004
    close = sim.candles_between(asset, "8h", EPOCH, end).close  # 8h candles close at the settlements
    trailing_day = np.log(close[3:] / close[:-3])  # return over the 24 h before settlements 4..n
    assert np.corrcoef(trailing_day, rates[3:])[0, 1] > 0.3


def test_open_interest_is_positive_and_deterministic(sim: MarketSimulator) -> None:
    at = EPOCH + timedelta(days=12, hours=3)
    oi = asyncio.run(sim.fetch_open_interest("BTC", at))
    assert oi is not None and 10_000 < oi < 1_000_000  # BTC, in base units
    assert MarketSimulator(["BTC"]).open_interest("BTC", at) == oi
    assert sim.open_interest("BTC", EPOCH) is None


@settings(max_examples=30, deadline=None)
@given(offset_ms=st.integers(min_value=5 * MINUTE_MS, max_value=40 * 86_400_000))
def test_ticker_agrees_with_the_candles(sim: MarketSimulator, offset_ms: int) -> None:
    at = EPOCH + timedelta(milliseconds=offset_ms)
    ticker = asyncio.run(sim.fetch_ticker_24h("DOGE", at))
    day = sim.candles("DOGE", "5m", limit=288, until=at)
    assert ticker.symbol == "DOGE"
    assert ticker.last_price == day.close[-1]
    assert ticker.price_change_pct == pytest.approx((day.close[-1] / day.open[0] - 1) * 100, rel=1e-12)
    assert ticker.base_volume == pytest.approx(day.volume.sum(), rel=1e-12)
    assert ticker.quote_volume == pytest.approx((day.close * day.volume).sum(), rel=1e-12)


def test_ticker_before_any_candle_is_refused(sim: MarketSimulator) -> None:
    with pytest.raises(ValueError, match="no BTC candle"):
        sim.ticker_24h("BTC", EPOCH + timedelta(minutes=4))


# ---------------------------------------------------------------------------------- rules and symbols


async def test_market_rules_fit_the_price_level(sim: MarketSimulator) -> None:
    btc, eth, sol = [await sim.market_rules(a) for a in ("BTC", "ETH", "SOL")]
    assert (btc.market_symbol, btc.tick_size, btc.lot_size, btc.max_leverage) == (
        "BTC/USDT:USDT",
        0.1,
        0.001,
        125,
    )
    assert (eth.tick_size, eth.lot_size, eth.max_leverage) == (0.01, 0.001, 100)
    assert (sol.tick_size, sol.lot_size, sol.max_leverage) == (0.01, 0.1, 75)
    doge = await sim.market_rules("doge")
    price = sim.candles("DOGE", "5m", limit=1, until=EPOCH + timedelta(minutes=5)).close[0]
    assert doge.symbol == "DOGE" and doge.market_symbol == "DOGE/USDT:USDT"
    assert 1e-5 <= doge.tick_size / price <= 1e-3
    assert 1.0 <= doge.lot_size * price < doge.min_notional * 10
    assert (doge.min_notional, doge.max_leverage) == (5.0, 20)


async def test_unknown_symbol_is_refused_naming_the_known_assets(sim: MarketSimulator) -> None:
    at = EPOCH + timedelta(days=2)
    calls = [
        sim.fetch_candles("XRP", "5m", limit=5, until=at),
        sim.fetch_funding_rate("XRP", at),
        sim.fetch_open_interest("XRP", at),
        sim.fetch_ticker_24h("XRP", at),
        sim.market_rules("XRP"),
    ]
    for call in calls:
        with pytest.raises(UnknownSymbolError, match=r"'XRP'.*BTC, ETH, SOL, DOGE"):
            await call


async def test_symbols_are_case_insensitive_and_close_is_harmless(sim: MarketSimulator) -> None:
    at = EPOCH + timedelta(days=1)
    lower = await sim.fetch_candles("btc", "1h", limit=5, until=at)
    upper = await sim.fetch_candles("BTC", "1h", limit=5, until=at)
    assert fingerprint(lower) == fingerprint(upper)
    await sim.close()
    assert len(await sim.fetch_candles("BTC", "1h", limit=5, until=at)) == 5
    assert sim.name == "simulated" and sim.is_simulated
