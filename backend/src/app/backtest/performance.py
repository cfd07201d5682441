"""A backtest's figures: the strategy against buy-and-hold and the rule baseline, per asset, and split at the
model's knowledge cutoff (pure functions over a BacktestResult).

Conventions (the report states them, so a reader can redo a figure by hand):
- Times are real: a masked run's times are shifted back by `config.date_shift` before anything is computed.
- Every curve starts from the initial balance just before the first cycle, at the first cycle's time; a part of
  a curve starts from the equity of the cycle before it. Returns are per cycle; Sharpe and Sortino are
  annualised with 365 days of cycles (crypto trades every day), risk-free rate 0; CAGR compounds over the
  calendar time between the start and the last cycle.
- A closed trade is one asset's fills from flat to flat: its PnL is the fills' realized PnL minus their fees plus
  the asset's funding while it was open. A trade belongs to the cycle (and so to the part) in which it closed.
- Buy-and-hold buys at the first cycle's close, pays one taker fee on the notional, and holds a long 1x position
  that pays (positive rate) or receives funding at every settlement after the first cycle, at the close of the
  last cycle at or before the settlement; the payment shows from the first cycle at or after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from app.backtest.results import BacktestConfig, BacktestResult, FundingEvent, TradeFill
from app.core.timeframes import from_ms, timeframe_seconds, to_ms
from app.services.account.metrics import RETURN_NOISE
from app.services.exchange.base import FEE_PROFILES
from app.services.llm.llm_service import is_baseline

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

YEAR_SECONDS = 365 * 86_400
FLAT_TOLERANCE = 1e-9  # a position this small against its largest size is float rounding: flat
IN_SAMPLE_NOTE = "in-sample: the model may remember this period"
OUT_OF_SAMPLE_NOTE = "out-of-sample: after the model's knowledge cutoff"
UNKNOWN_NOTE = "unknown: the model's knowledge cutoff is not known, so it may remember any of this period"
NO_MEMORY_NOTE = "not applicable: the rule baseline has no training data to remember"
COMPARED = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar")  # differences are taken of these


@dataclass(frozen=True)
class Curve:
    """An account's equity after each cycle (one entry per EquityPoint), with running totals up to each cycle."""

    label: str
    at_ms: IntArray  # real time of each cycle, ms since the epoch
    equity: FloatArray
    gross_exposure: FloatArray  # USD
    fees_cum: FloatArray  # paid, positive
    funding_cum: FloatArray  # net, positive: received
    notional_cum: FloatArray  # traded notional, USD
    base: float  # the money before the first cycle


@dataclass(frozen=True)
class RoundTrip:
    """One asset's fills from flat to flat (closed_at None: still open at the end)."""

    asset: str
    side: str  # long | short
    opened_at: datetime
    closed_at: datetime | None
    realized_pnl: float  # gross of fees
    fees: float
    funding: float  # positive: received
    fills: int

    @property
    def pnl(self) -> float:
        return self.realized_pnl - self.fees + self.funding


@dataclass(frozen=True)
class Figures:
    """What a curve (and its trades) did; None where a figure is undefined or does not apply."""

    period_from: str | None = None
    period_to: str | None = None
    days: float | None = None
    cycles: int = 0
    start_equity: float | None = None
    end_equity: float | None = None
    total_return: float | None = None
    cagr: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    max_drawdown: float | None = None  # fraction of the peak, positive
    max_drawdown_days: float | None = None  # from its peak to recovery, or to the end when not recovered
    max_drawdown_recovered: bool | None = None
    calmar: float | None = None
    exposure: float | None = None  # fraction of cycles with an open position
    avg_leverage: float | None = None  # mean over all cycles of gross exposure / equity
    turnover: float | None = None  # traded notional / mean equity
    traded_notional: float | None = None
    fees: float | None = None
    funding: float | None = None
    trades: int | None = None  # closed round trips
    open_trades: int | None = None
    win_rate: float | None = None
    profit_factor: float | None = None  # gross wins / gross losses; None without a losing trade
    model_cost_usd: float | None = None
    model_calls: int | None = None
    cached_answers: int | None = None
    errors: int | None = None
    fallbacks: int | None = None
    error_rate: float | None = None
    fallback_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: _finite(value) for key, value in asdict(self).items()}


# ---------------------------------------------------------------- curves


def strategy_curve(result: BacktestResult) -> Curve:
    """The run's own equity, with its fees, funding and traded notional counted at the cycle that saw them."""
    at = _cycle_ms(result)
    n = at.size
    fill_idx = _cycle_index(at, [_real_ms(result.config, f.at) for f in result.fills])
    funding_idx = _cycle_index(at, [_real_ms(result.config, e.at) for e in result.funding])
    return Curve(
        label=result.config.label or f"{result.config.model} · {result.config.strategy}",
        at_ms=at,
        equity=np.array([p.equity for p in result.equity], dtype=float),
        gross_exposure=np.array([p.gross_exposure for p in result.equity], dtype=float),
        fees_cum=_running(n, fill_idx, [f.fee for f in result.fills]),
        funding_cum=_running(n, funding_idx, [e.amount for e in result.funding]),
        notional_cum=_running(n, fill_idx, [f.quantity * f.price for f in result.fills]),
        base=result.config.initial_balance,
    )


def btc_buy_and_hold(result: BacktestResult) -> Curve:
    """All the money in BTC from the first cycle; the first asset when BTC is not traded or names are masked."""
    assets = traded_assets(result)
    if "BTC" in assets:
        return _buy_and_hold(result, {"BTC": 1.0}, "BTC buy-and-hold")
    if not assets:
        return _buy_and_hold(result, {}, "buy-and-hold (no prices)")
    why = "asset names masked" if result.config.mask_assets else "no BTC in this run"
    return _buy_and_hold(result, {assets[0]: 1.0}, f"{assets[0]} buy-and-hold (first asset: {why})")


def equal_weight_buy_and_hold(result: BacktestResult) -> Curve:
    """The initial balance split equally over the assets, each bought at the first cycle's close."""
    assets = traded_assets(result)
    return _buy_and_hold(result, {a: 1.0 / len(assets) for a in assets}, "equal-weight buy-and-hold")


def traded_assets(result: BacktestResult) -> list[str]:
    """The assets with prices: the configured ones in their order (the prices' names when those are masked)."""
    if not result.equity:
        return list(result.config.assets)
    prices = result.equity[0].prices
    return [a for a in result.config.assets if a in prices] or list(prices)


def drawdown(curve: Curve) -> FloatArray:
    """Each cycle's fall from the peak so far (including the starting balance), as a positive fraction."""
    series = np.concatenate(([curve.base], curve.equity))
    return _drawdowns(series)[1:]


def _buy_and_hold(result: BacktestResult, weights: dict[str, float], label: str) -> Curve:
    at = _cycle_ms(result)
    n = at.size
    base = result.config.initial_balance
    fee_rate = FEE_PROFILES[result.config.venue].taker_bps / 10_000
    value = np.zeros(n)
    gross = np.zeros(n)
    funding = np.zeros(n)
    spent = 0.0
    for asset, weight in weights.items():
        prices = _prices(result, asset)
        if n == 0 or not prices[0] > 0:
            continue
        size = base * weight / prices[0]
        spent += base * weight
        value += size * (prices - prices[0])
        gross += size * prices
        for moment, rate in result.funding_rates.get(asset, []):
            t = _real_ms(result.config, moment)
            if not at[0] < t <= at[-1]:
                continue  # before the position was bought, or after the run
            priced_at = int(np.searchsorted(at, t, side="right")) - 1  # the last close at or before it
            shown_at = int(np.searchsorted(at, t, side="left"))  # the first cycle at or after it
            funding[shown_at] -= rate * size * prices[priced_at]
    fees = spent * fee_rate
    funding_cum = np.cumsum(funding)
    return Curve(
        label=label,
        at_ms=at,
        equity=base - fees + value + funding_cum,
        gross_exposure=gross,
        fees_cum=np.full(n, fees),
        funding_cum=funding_cum,
        notional_cum=np.full(n, spent),
        base=base,
    )


def _prices(result: BacktestResult, asset: str) -> FloatArray:
    """The asset's close at each cycle; a missing one repeats the last known (NaN before the first)."""
    prices = np.array([p.prices.get(asset, np.nan) for p in result.equity], dtype=float)
    missing = ~np.isfinite(prices)
    if missing.any():
        last_known = np.where(missing, 0, np.arange(prices.size))
        prices = prices[np.maximum.accumulate(last_known)]
    return prices


# ---------------------------------------------------------------- trades


def round_trips(fills: Sequence[TradeFill], funding: Sequence[FundingEvent]) -> list[RoundTrip]:
    """Group fills into trades from flat to flat, per asset, in time order; funding of an asset goes to its open
    trade (a settlement at the same time as a fill counts before the fill, as the venue settles it first). A
    fill that would flip the position (the paper venue rejects those) closes the trade and opens the next, its
    fee shared by quantity."""
    events: list[tuple[int, int, int, TradeFill | FundingEvent]] = [
        (to_ms(e.at), 0, i, e) for i, e in enumerate(funding)
    ] + [(to_ms(f.at), 1, i, f) for i, f in enumerate(fills)]
    events.sort(key=lambda event: event[:3])
    open_trades: dict[str, _OpenTrade] = {}
    done: list[_OpenTrade] = []
    for _, _, _, event in events:
        trade = open_trades.get(event.asset)
        if isinstance(event, FundingEvent):
            if trade is not None:
                trade.funding += event.amount
            continue
        signed = event.quantity if event.side == "buy" else -event.quantity
        if trade is None:
            trade = open_trades[event.asset] = _OpenTrade(event.asset, _side(signed), event.at)
            done.append(trade)
        before, after = trade.position, trade.position + signed
        trade.fills += 1
        trade.realized += event.realized_pnl
        trade.largest = max(trade.largest, abs(before), abs(after))
        if before * after < 0:  # a flip: the part up to flat closes this trade
            closing = abs(before) / event.quantity
            trade.fees += event.fee * closing
            trade.closed_at, trade.position = event.at, 0.0
            following = open_trades[event.asset] = _OpenTrade(event.asset, _side(after), event.at, position=after)
            following.fees, following.fills, following.largest = event.fee * (1 - closing), 1, abs(after)
            done.append(following)
            continue
        trade.fees += event.fee
        trade.position = after
        if abs(after) <= FLAT_TOLERANCE * trade.largest:
            trade.closed_at = event.at
            del open_trades[event.asset]
    return [t.freeze() for t in sorted(done, key=lambda t: to_ms(t.opened_at))]


def _side(signed_quantity: float) -> str:
    return "long" if signed_quantity > 0 else "short"


@dataclass
class _OpenTrade:
    asset: str
    side: str
    opened_at: datetime
    position: float = 0.0
    largest: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    fills: int = 0
    closed_at: datetime | None = None

    def freeze(self) -> RoundTrip:
        return RoundTrip(
            asset=self.asset,
            side=self.side,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            realized_pnl=self.realized,
            fees=self.fees,
            funding=self.funding,
            fills=self.fills,
        )


# ---------------------------------------------------------------- figures


def curve_figures(curve: Curve, interval: str, lo: int = 0, hi: int | None = None) -> Figures:
    """Return, risk and activity of the cycles lo..hi-1 of a curve (all by default), from the equity before them."""
    hi = curve.equity.size if hi is None else hi
    if hi <= lo:
        return Figures()
    base = curve.base if lo == 0 else float(curve.equity[lo - 1])
    series = np.concatenate(([base], curve.equity[lo:hi]))
    times = np.concatenate(([curve.at_ms[max(lo - 1, 0)]], curve.at_ms[lo:hi]))
    seconds = float(times[-1] - times[0]) / 1000
    total = float(series[-1] / base - 1) if base > 0 else None
    cagr = _cagr(total, seconds)
    returns = _returns(series)
    per_year = YEAR_SECONDS / timeframe_seconds(interval)
    drops = _drawdowns(series)
    worst, worst_days, recovered = _worst_drawdown(series, drops, times)
    equity = curve.equity[lo:hi]
    gross = curve.gross_exposure[lo:hi]
    notional = _between(curve.notional_cum, lo, hi)
    mean_equity = float(equity.mean())
    return Figures(
        period_from=_iso_ms(int(times[0])),
        period_to=_iso_ms(int(times[-1])),
        days=seconds / 86_400,
        cycles=hi - lo,
        start_equity=base,
        end_equity=float(series[-1]),
        total_return=total,
        cagr=cagr,
        sharpe=_sharpe(returns, per_year),
        sortino=_sortino(returns, per_year),
        max_drawdown=worst,
        max_drawdown_days=worst_days,
        max_drawdown_recovered=recovered,
        calmar=cagr / worst if cagr is not None and worst > 0 else None,
        exposure=float((gross > 0).mean()),
        avg_leverage=float(np.where(equity > 0, gross / np.where(equity > 0, equity, 1.0), 0.0).mean()),
        turnover=notional / mean_equity if mean_equity > 0 else None,
        traded_notional=notional,
        fees=_between(curve.fees_cum, lo, hi),
        funding=_between(curve.funding_cum, lo, hi),
    )


def strategy_figures(
    result: BacktestResult,
    curve: Curve | None = None,
    trips: Sequence[RoundTrip] | None = None,
    lo: int = 0,
    hi: int | None = None,
) -> Figures:
    """The curve's figures plus the trades closed in lo..hi-1 and the model's cost; over the whole run (the
    default) the run's own counters, over a part the cost of its cycles' decisions (counters are not split)."""
    curve = curve if curve is not None else strategy_curve(result)
    trips = trips if trips is not None else round_trips(result.fills, result.funding)
    hi = curve.equity.size if hi is None else hi
    figures = curve_figures(curve, result.config.interval, lo, hi)
    closed_in, open_at_end = _trades_in(result, curve, trips, lo, hi)
    pnls = [t.pnl for t in closed_in]
    wins = sum(p for p in pnls if p > 0)
    losses = -sum(p for p in pnls if p < 0)
    trade_figures: dict[str, Any] = {
        "trades": len(pnls),
        "open_trades": open_at_end,
        "win_rate": sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None,
        "profit_factor": wins / losses if losses > 0 else None,
    }
    if lo == 0 and hi == curve.equity.size:
        cycles = result.cycles or curve.equity.size
        run_figures: dict[str, Any] = {
            "model_cost_usd": result.model_cost_usd,
            "model_calls": result.model_calls,
            "cached_answers": result.cached_answers,
            "errors": result.errors,
            "fallbacks": result.fallbacks,
            "error_rate": result.errors / cycles if cycles else None,
            "fallback_rate": result.fallbacks / cycles if cycles else None,
        }
    else:
        at = _cycle_index(curve.at_ms, [_real_ms(result.config, d.cycle_time) for d in result.decisions])
        costs = [d.cost_usd for d, i in zip(result.decisions, at, strict=True) if lo <= i < hi]
        run_figures = {"model_cost_usd": float(sum(costs))}
    return _replace(figures, **trade_figures, **run_figures)


def _trades_in(
    result: BacktestResult, curve: Curve, trips: Sequence[RoundTrip], lo: int, hi: int
) -> tuple[list[RoundTrip], int]:
    """The trades closed in cycles lo..hi-1, and how many were open after cycle hi-1."""
    opened = _cycle_index(curve.at_ms, [_real_ms(result.config, t.opened_at) for t in trips])
    closed_in: list[RoundTrip] = []
    still_open = 0
    for trip, opened_idx in zip(trips, opened, strict=True):
        closed_idx = (
            None
            if trip.closed_at is None
            else int(_cycle_index(curve.at_ms, [_real_ms(result.config, trip.closed_at)])[0])
        )
        if closed_idx is not None and lo <= closed_idx < hi:
            closed_in.append(trip)
        elif opened_idx < hi and (closed_idx is None or closed_idx >= hi):
            still_open += 1
    return closed_in, still_open


def per_asset(result: BacktestResult, trips: Sequence[RoundTrip] | None = None) -> dict[str, dict[str, Any]]:
    """Each asset's trades, win rate, realized PnL (gross of fees), fees, funding, net PnL and traded notional."""
    trips = trips if trips is not None else round_trips(result.fills, result.funding)
    seen = [*traded_assets(result), *sorted({f.asset for f in result.fills} | {e.asset for e in result.funding})]
    out: dict[str, dict[str, Any]] = {}
    for asset in dict.fromkeys(seen):
        fills = [f for f in result.fills if f.asset == asset]
        closed = [t.pnl for t in trips if t.asset == asset and t.closed_at is not None]
        realized = sum(f.realized_pnl for f in fills)
        fees = sum(f.fee for f in fills)
        funding = sum(e.amount for e in result.funding if e.asset == asset)
        out[asset] = {
            "trades": len(closed),
            "open_trades": sum(1 for t in trips if t.asset == asset and t.closed_at is None),
            "fills": len(fills),
            "win_rate": _finite(sum(1 for p in closed if p > 0) / len(closed)) if closed else None,
            "realized_pnl": _finite(realized),
            "fees": _finite(fees),
            "funding": _finite(funding),
            "net_pnl": _finite(realized - fees + funding),
            "traded_notional": _finite(sum(f.quantity * f.price for f in fills)),
        }
    return out


# ---------------------------------------------------------------- in- and out-of-sample


def sample_split(
    result: BacktestResult,
    curve: Curve | None = None,
    trips: Sequence[RoundTrip] | None = None,
    benchmarks: Sequence[tuple[str, Curve]] = (),
) -> dict[str, Any]:
    """The run cut at the model's knowledge cutoff in real time: figures before it (in-sample: the model may
    remember the period) and after it, for the strategy and each benchmark; one part when the cutoff is unknown."""
    curve = curve if curve is not None else strategy_curve(result)
    trips = trips if trips is not None else round_trips(result.fills, result.funding)
    cutoff = result.knowledge_cutoff
    n = curve.equity.size
    if cutoff is None:
        model_has_no_memory = is_baseline(result.config.model)
        status = "not applicable" if model_has_no_memory else "unknown"
        parts = [(status, NO_MEMORY_NOTE if model_has_no_memory else UNKNOWN_NOTE, 0, n)]
    else:
        k = int(np.searchsorted(curve.at_ms, _cutoff_ms(cutoff), side="left"))
        parts = [("in-sample", IN_SAMPLE_NOTE, 0, k), ("out-of-sample", OUT_OF_SAMPLE_NOTE, k, n)]
        parts = [p for p in parts if p[3] > p[2]] or parts[:1]
        status = "split" if len(parts) == 2 else parts[0][0]
    return {
        "knowledge_cutoff": None if cutoff is None else _iso_ms(_cutoff_ms(cutoff)),
        "status": status,
        "parts": [
            {
                "name": name,
                "note": note,
                "strategy": strategy_figures(result, curve, trips, lo, hi).as_dict(),
                **{key: curve_figures(bench, result.config.interval, lo, hi).as_dict() for key, bench in benchmarks},
            }
            for name, note, lo, hi in parts
        ],
    }


# ---------------------------------------------------------------- the summary


def build_summary(
    result: BacktestResult, *, baseline: BacktestResult | None = None, masked: BacktestResult | None = None
) -> dict[str, Any]:
    """Everything the report, the API and the arena read about a run, JSON-ready (no NaN or infinity: None)."""
    curve = strategy_curve(result)
    trips = round_trips(result.fills, result.funding)
    strategy = strategy_figures(result, curve, trips).as_dict()
    benchmarks = [
        ("btc_buy_and_hold", btc_buy_and_hold(result)),
        ("equal_weight_buy_and_hold", equal_weight_buy_and_hold(result)),
    ]
    bench_figures = {key: curve_figures(c, result.config.interval).as_dict() for key, c in benchmarks}
    baseline_figures = strategy_figures(baseline).as_dict() if baseline is not None else None
    differences = {key: _differences(strategy, figures) for key, figures in bench_figures.items()}
    if baseline_figures is not None:
        differences["baseline"] = _differences(strategy, baseline_figures)
    fingerprints = {"data": result.data_fingerprint, "trades": result.trade_fingerprint}
    if baseline is not None:
        fingerprints["baseline_trades"] = baseline.trade_fingerprint
    if masked is not None:
        fingerprints["masked_trades"] = masked.trade_fingerprint
    first_ms, last_ms = (int(curve.at_ms[0]), int(curve.at_ms[-1])) if curve.at_ms.size else (None, None)
    summary = {
        "label": curve.label,
        "config": config_strings(result.config),
        "period": {
            "from": _iso_ms(first_ms),
            "to": _iso_ms(last_ms),
            "cycles": curve.equity.size,
            "dates_masked": result.config.mask_dates,
        },
        "strategy": strategy,
        "benchmarks": {key: {"label": c.label, "figures": bench_figures[key]} for key, c in benchmarks},
        "baseline": None
        if baseline_figures is None
        else {"label": "rule baseline (same data)", "figures": baseline_figures},
        "differences": differences,
        "per_asset": per_asset(result, trips),
        "sample_split": sample_split(result, curve, trips, benchmarks),
        "masked": None if masked is None else _masked_side(masked, strategy, result),
        "fingerprints": fingerprints,
        "code_version": result.code_version,
        "cost": {
            "model_cost_usd": result.model_cost_usd,
            "model_calls": result.model_calls,
            "cached_answers": result.cached_answers,
        },
        "cycles": result.cycles,
        "stopped": result.stopped,
        "notes": list(result.notes),
    }
    return _json_ready(summary)


def config_strings(config: BacktestConfig) -> dict[str, str | None]:
    """The settings as text (None stays None), for the summary and the report's settings table."""
    out: dict[str, str | None] = {}
    for field_ in fields(config):
        value = getattr(config, field_.name)
        if value is None:
            out[field_.name] = None
        elif isinstance(value, tuple):
            out[field_.name] = ",".join(str(v) for v in value)
        elif isinstance(value, datetime):
            out[field_.name] = _iso(value)
        elif isinstance(value, bool):
            out[field_.name] = "true" if value else "false"
        else:
            out[field_.name] = str(value)
    return out


def _masked_side(masked: BacktestResult, strategy: dict[str, Any], result: BacktestResult) -> dict[str, Any]:
    what = "dates and asset names masked" if masked.config.mask_assets else "dates masked"
    figures = strategy_figures(masked).as_dict()
    return {
        "label": f"with {what}",
        "figures": figures,
        "differences": _differences(figures, strategy),  # masked minus unmasked
        "same_trades": masked.trade_fingerprint == result.trade_fingerprint,
    }


def _differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """a minus b for the compared figures (None where either is missing)."""
    return {
        key: _finite(a[key] - b[key]) if a.get(key) is not None and b.get(key) is not None else None for key in COMPARED
    }


# ---------------------------------------------------------------- helpers


def _returns(series: FloatArray) -> FloatArray:
    prev = series[:-1]
    valid = prev > 0
    returns: FloatArray = (series[1:][valid] - prev[valid]) / prev[valid]
    return returns


def _sharpe(returns: FloatArray, per_year: float) -> float | None:
    if returns.size < 2:
        return None
    mean, std = float(returns.mean()), float(returns.std(ddof=1))
    if not math.isfinite(std) or std <= RETURN_NOISE * max(1.0, abs(mean)):
        return None  # equal returns leave float noise, not volatility
    return mean / std * math.sqrt(per_year)


def _sortino(returns: FloatArray, per_year: float) -> float | None:
    """Mean return over the downside deviation (root mean square of the negative returns, target 0)."""
    if returns.size < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside <= RETURN_NOISE:
        return None  # no losing cycle: unbounded
    return float(returns.mean()) / downside * math.sqrt(per_year)


def _cagr(total: float | None, seconds: float) -> float | None:
    if total is None or seconds <= 0:
        return None
    if total <= -1:
        return -1.0
    try:
        return _finite(math.exp(math.log1p(total) * YEAR_SECONDS / seconds) - 1)
    except OverflowError:
        return None


def _drawdowns(series: FloatArray) -> FloatArray:
    peaks = np.maximum.accumulate(series)
    with np.errstate(divide="ignore", invalid="ignore"):
        drops: FloatArray = np.where(peaks > 0, (peaks - series) / peaks, 0.0)
    return drops


def _worst_drawdown(series: FloatArray, drops: FloatArray, times: IntArray) -> tuple[float, float, bool]:
    """The largest drawdown, its duration in days (peak to recovery, or to the end) and whether it recovered."""
    trough = int(np.argmax(drops))
    worst = float(drops[trough])
    if worst <= 0:
        return 0.0, 0.0, True
    peak_value = series[: trough + 1].max()
    peak = int(np.flatnonzero(series[: trough + 1] >= peak_value)[-1])
    after = np.flatnonzero(series[trough + 1 :] >= peak_value)
    end = trough + 1 + int(after[0]) if after.size else series.size - 1
    return worst, float(times[end] - times[peak]) / 86_400_000, bool(after.size)


def _between(running: FloatArray, lo: int, hi: int) -> float:
    return float(running[hi - 1] - (running[lo - 1] if lo > 0 else 0.0))


def _running(n: int, index: IntArray, amounts: Sequence[float]) -> FloatArray:
    per_cycle = np.zeros(n)
    if n and len(amounts):
        np.add.at(per_cycle, index, np.asarray(amounts, dtype=float))
    totals: FloatArray = np.cumsum(per_cycle)
    return totals


def _cycle_ms(result: BacktestResult) -> IntArray:
    return np.array([_real_ms(result.config, p.at) for p in result.equity], dtype=np.int64)


def _cycle_index(at_ms: IntArray, moments_ms: Sequence[int]) -> IntArray:
    """The first cycle at or after each moment (the last cycle for anything after the run)."""
    if at_ms.size == 0:
        return np.zeros(len(moments_ms), dtype=np.int64)
    index = np.searchsorted(at_ms, np.asarray(moments_ms, dtype=np.int64), side="left")
    clipped: IntArray = np.minimum(index, at_ms.size - 1).astype(np.int64)
    return clipped


def _real_ms(config: BacktestConfig, moment: datetime) -> int:
    """A run's time (masked when its dates are) as real time, ms since the epoch."""
    return to_ms(moment - config.date_shift)


def _cutoff_ms(cutoff: datetime | date) -> int:
    """A cutoff given as a day (the last day of training data) ends at that day's end."""
    if isinstance(cutoff, datetime):
        return to_ms(cutoff)
    return to_ms(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC) + timedelta(days=1))


def _iso(moment: datetime) -> str:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).isoformat()


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else from_ms(ms).isoformat()


def _finite(value: Any) -> Any:
    """Numbers as plain floats/ints, NaN and infinity as None; anything else unchanged."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return _finite(value)


def _replace(figures: Figures, **changes: Any) -> Figures:
    return Figures(**{**asdict(figures), **changes})
