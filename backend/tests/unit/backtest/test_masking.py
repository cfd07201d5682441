"""Masked history (`--mask-dates`): shifted by whole weeks, rebased to 100, returns and quote volume unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from app.backtest.masking import DEFAULT_ANCHOR, MASKED_PRICE, mask_history, unmask_time, week_shift
from app.backtest.results import BacktestConfig
from app.core.timeframes import from_ms, to_ms
from app.services.market_data.base import CandleSeries
from app.services.market_data.replay import ReplaySource, aggregate

START = datetime(2025, 3, 13, 15, 0, tzinfo=UTC)  # a Thursday afternoon
FIRST = datetime(2025, 2, 24, tzinfo=UTC)
HOURS = 24 * 35
LEVELS = {"BTC": 84_000.0, "ETH": 2_100.0, "SOL": 135.0}
WEEK_MS = 7 * 86_400_000


def _hourly(asset: str, seed: int) -> CandleSeries:
    rng = np.random.default_rng(seed)
    close = LEVELS[asset] * np.exp(np.cumsum(rng.normal(0.0, 0.004, HOURS)))
    open_ = np.r_[LEVELS[asset], close[:-1]]
    spread = np.abs(rng.normal(0.0, 0.002, HOURS)) * close
    times = to_ms(FIRST) + np.arange(HOURS, dtype=np.int64) * 3_600_000
    volume = rng.uniform(100.0, 1_000.0, HOURS) * 84_000.0 / LEVELS[asset]
    return CandleSeries(
        asset, "1h", times, open_, np.maximum(open_, close) + spread, np.minimum(open_, close) - spread, close, volume
    )


def _source() -> ReplaySource:
    files = {}
    for seed, asset in enumerate(("SOL", "BTC", "ETH")):
        hourly = _hourly(asset, seed)
        files[asset] = {"1h": hourly, "1d": aggregate(hourly, "1d")}
    times = to_ms(FIRST) + np.arange(0, HOURS, 8, dtype=np.int64) * 3_600_000
    funding = {asset: (times.copy(), np.full(len(times), 1e-4 * (i + 1))) for i, asset in enumerate(sorted(files))}
    return ReplaySource.from_series(files, funding, name="synthetic")


@pytest.fixture
def source() -> ReplaySource:
    return _source()


def _times(source: ReplaySource) -> list[int]:
    times = [int(t) for by_tf in source.files.values() for s in by_tf.values() for t in s.open_time_ms]
    return times + [int(t) for ts, _ in source.funding.values() for t in ts]


# ------------------------------------------------------------------------------------------------ time


def test_times_shift_by_whole_weeks_to_the_anchor(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=False)
    assert masked.shift % timedelta(weeks=1) == timedelta(0)
    assert DEFAULT_ANCHOR <= START + masked.shift < DEFAULT_ANCHOR + timedelta(weeks=1)
    assert masked.mask_time(START) == START + masked.shift
    shift_ms = masked.shift // timedelta(milliseconds=1)
    for asset, by_tf in source.files.items():
        for timeframe, real in by_tf.items():
            shown = masked.source.files[asset][timeframe].open_time_ms
            assert np.array_equal(shown - real.open_time_ms, np.full(len(real), shift_ms))
            assert not ((shown - real.open_time_ms) % WEEK_MS).any()


def test_weekday_and_hour_are_kept(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=False)
    shown_start = masked.mask_time(START)
    assert (shown_start.weekday(), shown_start.hour) == (3, 15)  # still Thursday, 15:00
    for real, shown in zip(_times(source), _times(masked.source), strict=True):
        a, b = from_ms(real), from_ms(shown)
        assert (a.weekday(), a.hour, a.minute) == (b.weekday(), b.hour, b.minute)


def test_nothing_of_the_real_years_appears(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=True)
    real_years = {from_ms(t).year for t in _times(source)}
    shown_years = {from_ms(t).year for t in _times(masked.source)}
    assert real_years == {2025}
    assert shown_years <= {1999, 2000}
    assert min(real_years) - max(shown_years) >= 20
    assert {masked.source.first_time.year, masked.source.last_time.year} <= {1999, 2000}


def test_unmask_time_undoes_the_shift(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=False)
    moment = datetime(2025, 3, 20, 7, 30, tzinfo=UTC)
    assert unmask_time(masked.mask_time(moment), masked.shift) == moment
    assert masked.unmask_time(masked.mask_time(moment)) == moment


def test_the_week_shift_for_other_anchors_and_naive_times() -> None:
    anchor = datetime(1990, 1, 1, tzinfo=UTC)  # a Monday
    shift = week_shift(START, anchor)
    assert anchor <= START + shift < anchor + timedelta(weeks=1)
    assert week_shift(START.replace(tzinfo=None)) == week_shift(START)
    on_anchor_weekday = datetime(2025, 3, 10, tzinfo=UTC)  # a Monday 00:00: lands on the anchor itself
    assert on_anchor_weekday + week_shift(on_anchor_weekday) == DEFAULT_ANCHOR


# ---------------------------------------------------------------------------------------------- prices


def test_prices_start_at_100_and_returns_are_unchanged(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=False)
    shown_start = masked.mask_time(START)
    for asset in source.assets:
        last = masked.source.candles(asset, "1h", limit=1, until=shown_start)
        assert float(last.close[-1]) == pytest.approx(MASKED_PRICE, rel=1e-12)
        real, shown = source.files[asset]["1h"], masked.source.files[asset]["1h"]
        np.testing.assert_allclose(shown.close[1:] / shown.close[:-1], real.close[1:] / real.close[:-1], rtol=1e-12)
        np.testing.assert_allclose(np.diff(np.log(shown.close)), np.diff(np.log(real.close)), rtol=0, atol=1e-12)
        np.testing.assert_allclose(shown.high / shown.low, real.high / real.low, rtol=1e-12)
        np.testing.assert_allclose(shown.close * shown.volume, real.close * real.volume, rtol=1e-12)
        assert (shown.high >= np.maximum(shown.open, shown.close)).all()
        assert (shown.low <= np.minimum(shown.open, shown.close)).all()
        assert float(np.max(shown.high)) < 10 * MASKED_PRICE  # no trace of the real price level
        assert float(np.min(shown.low)) > MASKED_PRICE / 10


def test_every_timeframe_gets_the_same_factor(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=False)
    for asset in source.assets:
        factor = masked.factors[asset]
        assert factor == pytest.approx(MASKED_PRICE / LEVELS[asset], rel=0.5)
        for timeframe, real in source.files[asset].items():
            shown = masked.source.files[asset][timeframe]
            for column in ("open", "high", "low", "close"):
                np.testing.assert_allclose(getattr(shown, column), getattr(real, column) * factor, rtol=1e-12)
            np.testing.assert_allclose(shown.volume, real.volume / factor, rtol=1e-12)
        # a timeframe aggregated on the fly from the masked file is the masked aggregate of the real one
        shown_4h, real_4h = masked.source.series(asset, "4h"), source.series(asset, "4h")
        np.testing.assert_allclose(shown_4h.close, real_4h.close * factor, rtol=1e-12)


def test_the_first_candle_rebases_when_start_precedes_the_data(source: ReplaySource) -> None:
    masked = mask_history(source, start=FIRST - timedelta(days=3), mask_assets=False)
    for asset in source.assets:
        assert float(masked.source.files[asset]["1h"].close[0]) == pytest.approx(MASKED_PRICE, rel=1e-12)


def test_funding_rates_kept_and_times_shifted(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=True)
    shift_ms = masked.shift // timedelta(milliseconds=1)
    for real, shown in masked.names.items():
        times, rates = source.funding[real]
        shown_times, shown_rates = masked.source.funding[shown]
        assert np.array_equal(shown_rates, rates)
        assert np.array_equal(shown_times, times + shift_ms)
    real_rate = source.funding_rate("BTC", START)
    shown_rate = masked.source.funding_rate("ASSET1", masked.mask_time(START))
    assert real_rate is not None and shown_rate is not None
    assert shown_rate.rate == real_rate.rate
    assert shown_rate.funding_time_ms == real_rate.funding_time_ms + shift_ms


def test_the_original_is_left_untouched(source: ReplaySource) -> None:
    before = {a: {tf: s.close.copy() for tf, s in by_tf.items()} for a, by_tf in source.files.items()}
    mask_history(source, start=START, mask_assets=True)
    for asset, by_tf in source.files.items():
        for timeframe, series in by_tf.items():
            assert np.array_equal(series.close, before[asset][timeframe])
            assert series.symbol == asset
    assert source.assets == ["BTC", "ETH", "SOL"]


# ----------------------------------------------------------------------------------------------- names


def test_names_identity_when_assets_are_kept(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=False)
    assert masked.names == {"BTC": "BTC", "ETH": "ETH", "SOL": "SOL"}
    assert masked.source.assets == ["BTC", "ETH", "SOL"]
    assert masked.source.name == "masked"


def test_names_masked_in_sorted_order(source: ReplaySource) -> None:
    masked = mask_history(source, start=START, mask_assets=True)
    assert masked.names == {"BTC": "ASSET1", "ETH": "ASSET2", "SOL": "ASSET3"}
    assert masked.real_names()["ASSET3"] == "SOL"
    assert masked.source.assets == ["ASSET1", "ASSET2", "ASSET3"]
    assert masked.source.files["ASSET2"]["1h"].symbol == "ASSET2"
    assert sorted(masked.source.funding) == ["ASSET1", "ASSET2", "ASSET3"]
    rules = masked.source.rules("ASSET1")  # derived from the masked price, never the real asset's table
    assert rules.market_symbol == "ASSET1/USDT:USDT"
    assert rules.tick_size <= 0.01


# ---------------------------------------------------------------------------------------------- config


def test_a_backtest_config_maps_with_the_shift(source: ReplaySource) -> None:
    config = BacktestConfig(
        assets=("BTC", "SOL"), interval="1h", long_interval="4h", start=START, end=START + timedelta(days=7)
    )
    masked = mask_history(source, start=config.start, mask_assets=True)
    shown = masked.masked_config(config)
    assert shown.start == config.start + masked.shift and shown.end == config.end + masked.shift
    assert unmask_time(shown.start, shown.date_shift) == config.start
    assert unmask_time(shown.end, shown.date_shift) == config.end
    assert shown.assets == ("ASSET1", "ASSET3")
    assert shown.mask_dates and shown.mask_assets
    assert shown.start.year == 2000 and shown.end.year == 2000
    kept = mask_history(source, start=config.start, mask_assets=False).masked_config(config)
    assert kept.assets == ("BTC", "SOL") and kept.mask_dates and not kept.mask_assets


# ------------------------------------------------------------------------------------------- real data


def test_real_candles_from_the_shared_data(shared_data: Path) -> None:
    real = ReplaySource(shared_data / "market" / "binance_usdm_typhonun_mit")
    start = datetime(2025, 3, 20, tzinfo=UTC)
    masked = mask_history(real, start=start, mask_assets=True)
    for asset, shown_asset in masked.names.items():
        for timeframe, series in real.files[asset].items():
            shown = masked.source.files[shown_asset][timeframe]
            np.testing.assert_allclose(
                shown.close[1:] / shown.close[:-1], series.close[1:] / series.close[:-1], rtol=1e-12
            )
            assert {from_ms(int(t)).year for t in shown.open_time_ms} <= {1999, 2000}
        last = masked.source.candles(shown_asset, "5m", limit=1, until=masked.mask_time(start))
        assert float(last.close[-1]) == pytest.approx(MASKED_PRICE, rel=1e-12)
