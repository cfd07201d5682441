"""`--mask-dates`: history a model cannot place in time, so it cannot answer from memory of what prices did.

A model trained after the backtest's period may recognise it from the dates or from the price levels (BTC at
~84,000 in April 2025) and "remember" what came next: parametric look-ahead bias. The masked history shifts
every time by a whole number of weeks so that `start` lands near a fixed anchor (2000-01-03, a Monday):
weekday, hour and every epoch-aligned candle boundary stay as they were, the year is decades away. Each
asset's prices are divided by its close at `start` and multiplied by 100, and its volumes multiplied by the
inverse, so the price starts at 100, quote volume (price x volume) is unchanged and so is every return.
Funding rates are kept (they are rates), their times shifted. Asset names are kept, or replaced by ASSET1,
ASSET2, ... in sorted order when the name itself would give the period away.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from app.backtest.results import BacktestConfig
from app.core.timeframes import timeframe_seconds, to_ms
from app.services.market_data.base import CandleSeries
from app.services.market_data.replay import ReplayDataError, ReplaySource

DEFAULT_ANCHOR = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday, 00:00 UTC
MASKED_PRICE = 100.0  # every asset's price at `start`
MASKED_NAME = "masked"
WEEK = timedelta(weeks=1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class MaskedHistory:
    """The masked replay and what undoes it: `shift` (masked time = real time + shift, whole weeks), `names` (real
    asset -> shown asset) and `factors` (real asset -> the multiplier applied to its prices)."""

    source: ReplaySource
    shift: timedelta
    names: dict[str, str]
    factors: dict[str, float]

    def mask_time(self, at: datetime) -> datetime:
        return at + self.shift

    def unmask_time(self, at: datetime) -> datetime:
        return unmask_time(at, self.shift)

    def real_names(self) -> dict[str, str]:
        """Shown asset -> real asset."""
        return {shown: real for real, shown in self.names.items()}

    def masked_config(self, config: BacktestConfig) -> BacktestConfig:
        """The backtest the engine runs: masked start, end and assets, with `date_shift` to map its times back."""
        return replace(
            config,
            assets=tuple(self.names.get(asset.upper(), asset) for asset in config.assets),
            start=self.mask_time(config.start),
            end=self.mask_time(config.end),
            mask_dates=True,
            mask_assets=any(real != shown for real, shown in self.names.items()),
            date_shift=self.shift,
        )


def unmask_time(at: datetime, shift: timedelta) -> datetime:
    """The real time of a masked one."""
    return at - shift


def week_shift(start: datetime, anchor: datetime = DEFAULT_ANCHOR) -> timedelta:
    """The whole number of weeks that moves `start` to within the week after `anchor` (anchor <= start + shift <
    anchor + 1 week)."""
    return -((_utc(start) - _utc(anchor)) // WEEK) * WEEK


def mask_history(
    source: ReplaySource, *, start: datetime, mask_assets: bool, anchor: datetime = DEFAULT_ANCHOR
) -> MaskedHistory:
    """The masked copy of `source` (every timeframe file of every asset, and the funding) for a backtest from
    `start`; the original is left untouched."""
    shift = week_shift(start, anchor)
    shift_ms = shift // _MS
    assets = sorted(source.files)
    names = {asset: f"ASSET{i}" for i, asset in enumerate(assets, start=1)} if mask_assets else {a: a for a in assets}
    factors = {asset: MASKED_PRICE / _reference_close(source, asset, start) for asset in assets}
    series = {
        names[asset]: {
            timeframe: _masked_series(candles, names[asset], factors[asset], shift_ms)
            for timeframe, candles in source.files[asset].items()
        }
        for asset in assets
    }
    funding = {
        names[asset]: (times + shift_ms, rates.copy())
        for asset, (times, rates) in source.funding.items()
        if asset in names
    }
    masked = ReplaySource.from_series(series, funding, name=MASKED_NAME, derive_rules=True)
    return MaskedHistory(source=masked, shift=shift, names=names, factors=factors)


def _reference_close(source: ReplaySource, asset: str, start: datetime) -> float:
    """The asset's last close at or before `start` on its finest file (its first close when none closed by then)."""
    files = source.files[asset]
    finest = min(files, key=timeframe_seconds)
    candles = files[finest]
    if len(candles) == 0:
        raise ReplayDataError(f"no {asset} {finest} candles to rebase the masked prices on")
    close_ms = candles.open_time_ms + timeframe_seconds(finest) * 1000
    index = int(np.searchsorted(close_ms, to_ms(start), side="right")) - 1
    return float(candles.close[max(index, 0)])


def _masked_series(candles: CandleSeries, name: str, factor: float, shift_ms: int) -> CandleSeries:
    return CandleSeries(
        symbol=name,
        timeframe=candles.timeframe,
        open_time_ms=candles.open_time_ms + shift_ms,
        open=candles.open * factor,
        high=candles.high * factor,
        low=candles.low * factor,
        close=candles.close * factor,
        volume=candles.volume / factor,
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
