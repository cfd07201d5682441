"""The arena's windows: non-overlapping stretches of history chosen from the prices alone, before any entrant runs.

A model judged on one lucky month says little, so the arena runs every entrant on the same few windows and
wants rising, falling and sideways markets among them. The choice reads only the reference asset's closes (BTC,
else the first asset), so it cannot favour an entrant, and it is deterministic: the same prices give the same
windows.

The rule, step by step:

1. Candidates: every window of `days` days whose first cycle lies on the INTERVAL grid inside [first, last] and
   whose every cycle has a candle (a window with a gap in the data is never a candidate). A window's cycles are
   its start, start + INTERVAL, ..., end = start + days - INTERVAL, so windows that touch do not share a cycle.
2. Regime: the reference's log return from the close at `start` to the close at `end`, against a band of
   ±0.4307 x the typical window volatility (the standard deviation of the INTERVAL log returns over [first,
   last] times sqrt(cycles - 1)). Above the band "up", below it "down", inside it "sideways". 0.4307 is the
   normal quantile at 2/3: in a driftless random walk a third of the windows fall in each regime; a market that
   trends has more up (or down) windows, which is what it was.
3. Choice: regimes take turns, the rarest first (fewest candidates), until `count` windows are chosen or none
   fits; each turn takes, among that regime's candidates that overlap no chosen window, the one farthest from
   the chosen ones, so the windows spread over the span. Distances beyond an even spacing (the span of starts /
   count) count alike, and among equals the most typical of its regime wins (its return nearest the regime's
   median return), then the earliest: a spread of ordinary windows, not of the regimes' edges (a window across a
   peak is up, down or sideways by its net return, and is chosen only when nothing more typical fits). A regime
   that the data lacks is skipped.

Fewer windows than asked are returned (and logged) when no more fit; a `WindowError` when not even one does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from app.core.errors import TradingAgentError
from app.core.timeframes import from_ms, timeframe_seconds, to_ms

log = logging.getLogger(__name__)

Regime = Literal["up", "down", "sideways"]
REGIMES: tuple[Regime, ...] = ("up", "down", "sideways")
# The sideways band in units of the typical window volatility: Phi^-1(2/3), a third of a random walk's windows each.
SIDEWAYS_BAND = 0.4307
_DAY_MS = 86_400_000


class WindowError(TradingAgentError):
    """No window fits as asked: the reason says what to change."""


class PriceColumns(Protocol):
    """Candles as columns (a `CandleSeries`): open times in ms and closes, oldest first."""

    @property
    def open_time_ms(self) -> npt.NDArray[np.int64]: ...

    @property
    def close(self) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class Window:
    """One stretch of history every entrant runs on; start and end are cycle times, as `BacktestConfig`'s."""

    start: datetime  # the first cycle (a candle close)
    end: datetime  # the last cycle, inclusive
    regime: Regime
    reference_return: float  # the reference asset's close at `end` / close at `start` - 1


def choose_windows(
    prices: PriceColumns | tuple[Sequence[int], Sequence[float]],
    *,
    first: datetime,
    last: datetime,
    count: int,
    days: int,
    interval: str,
) -> list[Window]:
    """Up to `count` non-overlapping windows of `days` days in [first, last] covering the regimes the data has.

    `prices`: the reference asset's INTERVAL candles, a `CandleSeries` or (open times in ms, closes); the price
    at a cycle time t is the close of the candle that opened at t - INTERVAL. Returned oldest first.
    """
    if count < 1:
        raise WindowError(f"the number of windows must be at least 1, got {count}")
    step_ms = timeframe_seconds(interval) * 1000
    length_ms = days * _DAY_MS
    if days < 1 or length_ms % step_ms:
        raise WindowError(f"a window of {days} days is not a whole number of {interval} cycles")
    cycles = length_ms // step_ms
    if cycles < 2:
        raise WindowError(f"a window of {days} days holds a single {interval} cycle: there is no return to measure")

    grid, price = _on_grid(prices, first, last, step_ms)
    present = np.isfinite(price)
    filled = np.concatenate(([0], np.cumsum(present)))
    starts = np.arange(max(0, len(grid) - cycles + 1))
    starts = starts[filled[starts + cycles] - filled[starts] == cycles]
    if not len(starts):
        raise WindowError(
            f"no window of {days} days with a candle at every {interval} cycle fits between {first:%Y-%m-%d %H:%M} "
            f"and {last:%Y-%m-%d %H:%M}: shorten --window-days or widen the period"
        )

    log_returns = np.log(price[starts + cycles - 1] / price[starts])
    steps = np.diff(np.log(price))
    steps = steps[np.isfinite(steps)]
    volatility = float(steps.std(ddof=1)) * math.sqrt(cycles - 1) if len(steps) > 1 else 0.0
    band = SIDEWAYS_BAND * volatility
    codes = np.where(log_returns > band, 0, np.where(log_returns < -band, 1, 2))  # indices into REGIMES

    picks = _pick(starts, codes, log_returns, cycles, count)
    windows = [
        Window(
            start=from_ms(int(grid[starts[i]])),
            end=from_ms(int(grid[starts[i] + cycles - 1])),
            regime=REGIMES[int(codes[i])],
            reference_return=math.expm1(float(log_returns[i])),
        )
        for i in sorted(picks)
    ]
    if len(windows) < count:
        log.warning(
            "only %d of %d windows of %d days fit between %s and %s",
            len(windows),
            count,
            days,
            f"{first:%Y-%m-%d %H:%M}",
            f"{last:%Y-%m-%d %H:%M}",
        )
    return windows


def _on_grid(
    prices: PriceColumns | tuple[Sequence[int], Sequence[float]], first: datetime, last: datetime, step_ms: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The cycle times on the INTERVAL grid in [first, last] and the close at each (NaN where no candle closes)."""
    if isinstance(prices, tuple):
        opens = np.asarray(prices[0], dtype=np.int64)
        closes = np.asarray(prices[1], dtype=np.float64)
        order = np.argsort(opens, kind="stable")
        opens, closes = opens[order], closes[order]
    else:
        opens, closes = prices.open_time_ms, prices.close
    first_ms, last_ms = to_ms(first), to_ms(last)
    grid = np.arange(first_ms + (-first_ms) % step_ms, last_ms + 1, step_ms, dtype=np.int64)
    price = np.full(len(grid), np.nan)
    if len(opens) and len(grid):
        close_ms = opens + step_ms
        at = np.searchsorted(close_ms, grid)
        clipped = np.minimum(at, len(close_ms) - 1)
        found = (at < len(close_ms)) & (close_ms[clipped] == grid)
        price[found] = closes[clipped[found]]
    price[~(price > 0)] = np.nan  # a missing, zero or broken close is no price
    return grid, price


def _pick(
    starts: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    log_returns: npt.NDArray[np.float64],
    cycles: int,
    count: int,
) -> list[int]:
    """Indices of the chosen candidates: regimes in turn, rarest first, each far from those chosen and typical."""
    totals = np.bincount(codes, minlength=len(REGIMES))
    turns = sorted((code for code in range(len(REGIMES)) if totals[code]), key=lambda code: (totals[code], code))
    atypical = np.empty(len(starts))
    for code in turns:
        members = codes == code
        atypical[members] = np.abs(log_returns[members] - np.median(log_returns[members]))
    spacing = max(float(cycles), float(starts[-1] - starts[0]) / count)
    nearest = np.full(len(starts), np.inf)  # grid steps to the nearest chosen window's start
    chosen: list[int] = []
    while len(chosen) < count:
        before = len(chosen)
        for code in turns:
            fits = np.flatnonzero((codes == code) & (nearest >= cycles))
            if len(chosen) == count or not len(fits):
                continue
            far = np.minimum(nearest[fits], spacing)
            pick = int(fits[np.lexsort((fits, atypical[fits], -far))[0]])
            chosen.append(pick)
            nearest = np.minimum(nearest, np.abs(starts - starts[pick]))
        if len(chosen) == before:
            break
    return chosen
