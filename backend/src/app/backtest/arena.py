"""The arena's leaderboard: every entrant's figures across the same windows, with intervals, and ranks only where
the intervals separate.

Each window is one unit (the cycles of a window move with one market, so they are not independent samples): an
entrant's return, Sharpe and max drawdown are the means of its per-window figures with 95% bootstrap intervals
(`statistics.bootstrap_mean`, none below 2 windows); its difference to buy-and-hold and to the baseline entrant is
the mean of the per-window differences, paired by window (`statistics.compare_means`).

The rank rule: entrants are ordered by mean return (then label) and a line is drawn between two neighbours only
when every entrant above it beat every entrant below it by a paired difference whose interval lies above 0 (the
differences of their returns window by window, `statistics.compare_means`: every entrant ran on the same windows, so
the market's swing from one window to the next, which dominates each entrant's own interval, cancels out). The
groups between lines are ranked 1 + the number of entrants above them; a group of several shares its rank, marked
"=" (e.g. "2="). With no line drawn (no pair separates, or fewer than 2 common windows) nobody is ranked: "–".
Entrants without any window are listed last, unranked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from app.backtest.results import BacktestResult
from app.services.evaluation.statistics import bootstrap_mean, compare_means
from app.services.llm.llm_service import is_baseline

UNRANKED = "–"


@dataclass(frozen=True)
class Entrant:
    """A model with a strategy, under a label that names it on the leaderboard."""

    model: str
    strategy: str
    label: str


@dataclass(frozen=True)
class WindowFigures:
    """What an entrant did in one window."""

    total_return: float  # fraction of the initial balance
    sharpe: float | None  # annualised; None when undefined (no spread)
    max_drawdown: float | None  # fraction of the peak, positive
    cost_usd: float  # model cost spent in this window
    errors: int  # cycles stored in error
    fallbacks: int  # cycles decided by a fallback
    cycles: int

    @classmethod
    def from_run(cls, result: BacktestResult, summary: Mapping[str, Any]) -> WindowFigures | None:
        """The figures of a stored run (its summary's "strategy" part); None when it has no return (no cycle)."""
        figures = summary.get("strategy") or {}
        if figures.get("total_return") is None:
            return None
        return cls(
            total_return=float(figures["total_return"]),
            sharpe=figures.get("sharpe"),
            max_drawdown=figures.get("max_drawdown"),
            cost_usd=result.model_cost_usd,
            errors=result.errors,
            fallbacks=result.fallbacks,
            cycles=result.cycles,
        )


@dataclass(frozen=True)
class Estimate:
    """A mean over windows with its interval (low and high None below 2 windows; None mean with none)."""

    value: float | None
    low: float | None
    high: float | None
    windows: int

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Standing:
    """One entrant's line on the leaderboard."""

    label: str
    rank: str  # "1", "2=", or "–"
    windows: int
    total_return: Estimate
    sharpe: Estimate
    max_drawdown: Estimate
    vs_buy_and_hold: Estimate  # entrant minus buy-and-hold return, paired by window
    vs_baseline: Estimate | None  # entrant minus the baseline entrant's return; None for the baseline itself
    cost_usd: float
    cycles: int
    error_rate: float | None
    fallback_rate: float | None


@dataclass(frozen=True)
class Leaderboard:
    standings: list[Standing]  # by mean return, best first; entrants without a window last
    windows: int  # windows with a buy-and-hold return
    buy_and_hold: Estimate
    baseline_label: str | None
    level: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (no NaN or infinity)."""
        return _finite(asdict(self))


def entrants(models: Sequence[str], strategies: Sequence[str]) -> tuple[list[Entrant], str]:
    """Every model with every strategy, with the rule baseline added first when it is not listed (it is the
    yardstick), and the label of the baseline entrant the others are compared with (with the first strategy)."""
    listed = list(dict.fromkeys(models))
    if not any(is_baseline(model) for model in listed):
        listed.insert(0, "baseline")
    chosen = [Entrant(model, strategy, f"{model} · {strategy}") for model in listed for strategy in strategies]
    yardstick = next(e for e in chosen if is_baseline(e.model) and e.strategy == strategies[0])
    return chosen, yardstick.label


def leaderboard(
    results: Mapping[str, Mapping[int, WindowFigures]],
    *,
    buy_and_hold: Mapping[int, float],
    baseline_label: str | None,
    level: float = 0.95,
    seed: int = 0,
) -> Leaderboard:
    """Each entrant's figures across windows (results: label -> window index -> figures), ranked by the rule above."""
    if baseline_label is not None and baseline_label not in results:
        raise ValueError(f"the baseline entrant {baseline_label!r} is not among the results")
    baseline = {w: f.total_return for w, f in results.get(baseline_label or "", {}).items()}
    lines = []
    by_label = {label: {w: f.total_return for w, f in by_window.items()} for label, by_window in results.items()}
    for label, by_window in results.items():
        returns = by_label[label]
        cycles = sum(f.cycles for f in by_window.values())
        lines.append(
            Standing(
                label=label,
                rank=UNRANKED,
                windows=len(by_window),
                total_return=_mean(list(returns.values()), level, seed),
                sharpe=_mean([f.sharpe for f in by_window.values() if f.sharpe is not None], level, seed),
                max_drawdown=_mean(
                    [f.max_drawdown for f in by_window.values() if f.max_drawdown is not None], level, seed
                ),
                vs_buy_and_hold=_paired(returns, buy_and_hold, level, seed),
                vs_baseline=None if label == baseline_label else _paired(returns, baseline, level, seed),
                cost_usd=sum(f.cost_usd for f in by_window.values()),
                cycles=cycles,
                error_rate=sum(f.errors for f in by_window.values()) / cycles if cycles else None,
                fallback_rate=sum(f.fallbacks for f in by_window.values()) / cycles if cycles else None,
            )
        )
    return Leaderboard(
        standings=_ranked(lines, by_label, level, seed),
        windows=len(buy_and_hold),
        buy_and_hold=_mean(list(buy_and_hold.values()), level, seed),
        baseline_label=baseline_label,
        level=level,
    )


def _mean(values: Sequence[float], level: float, seed: int) -> Estimate:
    if not values:
        return Estimate(None, None, None, 0)
    interval = bootstrap_mean(values, level=level, seed=seed)
    if interval is None:
        return Estimate(sum(values) / len(values), None, None, len(values))
    return Estimate(interval.estimate, interval.low, interval.high, len(values))


def _paired(ours: Mapping[int, float], theirs: Mapping[int, float], level: float, seed: int) -> Estimate:
    """Ours minus theirs over the windows both have: the mean difference, with its interval from 2 windows."""
    common = sorted(set(ours) & set(theirs))
    if not common:
        return Estimate(None, None, None, 0)
    comparison = compare_means(ours, theirs, paired=True, level=level, seed=seed)
    if comparison is None:
        return Estimate(sum(ours[w] - theirs[w] for w in common) / len(common), None, None, len(common))
    difference = comparison.difference
    return Estimate(difference.estimate, difference.low, difference.high, len(common))


def _ranked(
    lines: list[Standing], returns: Mapping[str, Mapping[int, float]], level: float, seed: int
) -> list[Standing]:
    """Best mean return first, with ranks where the paired differences separate (the rule in the module's text)."""
    scored = sorted((s for s in lines if s.total_return.value is not None), key=lambda s: (-_value(s), s.label))
    unscored = sorted((s for s in lines if s.total_return.value is None), key=lambda s: s.label)

    def beats(upper: Standing, lower: Standing) -> bool:
        difference = _paired(returns[upper.label], returns[lower.label], level, seed)
        return difference.low is not None and difference.low > 0

    lines_after = [
        p
        for p in range(len(scored) - 1)
        if all(beats(upper, lower) for upper in scored[: p + 1] for lower in scored[p + 1 :])
    ]
    if not lines_after:
        return scored + unscored
    ranks: list[str] = []
    starts = [0, *(p + 1 for p in lines_after)]
    ends = [*(p + 1 for p in lines_after), len(scored)]
    for start, end in zip(starts, ends, strict=True):
        ranks += [f"{start + 1}=" if end - start > 1 else str(start + 1)] * (end - start)
    return [replace(s, rank=rank) for s, rank in zip(scored, ranks, strict=True)] + unscored


def _value(standing: Standing) -> float:
    return standing.total_return.value if standing.total_return.value is not None else -math.inf


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------------- the table


def format_leaderboard(board: Leaderboard) -> str:
    """The leaderboard as a fixed-width table for the terminal, with a line on how to read it."""
    headers = ["rank", "entrant", "windows", "return", "Sharpe", "max drawdown", "vs buy-and-hold", "vs baseline"]
    headers += ["cost USD", "errors", "fallbacks"]
    rows = [
        [
            s.rank,
            s.label + (" (baseline)" if s.label == board.baseline_label else ""),
            str(s.windows),
            _shown(s.total_return, percent=True),
            _shown(s.sharpe, percent=False),
            _shown(s.max_drawdown, percent=True, signed=False),
            _shown(s.vs_buy_and_hold, percent=True),
            "" if s.vs_baseline is None else _shown(s.vs_baseline, percent=True),
            f"{s.cost_usd:.4f}",
            _rate(s.error_rate),
            _rate(s.fallback_rate),
        ]
        for s in board.standings
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    left = {0, 1}  # rank and label; figures align right

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    level = f"{board.level:.0%}"
    head = (
        f"{len(board.standings)} entrants on {board.windows} windows; mean across windows with {level} bootstrap "
        f"intervals [low, high]; buy-and-hold {_shown(board.buy_and_hold, percent=True)}"
    )
    foot = (
        f"rank: only where every entrant above a line beat every one below it, the {level} interval of their "
        f"paired difference (window by window) above 0; '=' shared, '{UNRANKED}' not separated."
    )
    rule = "-" * len(line(headers))
    return "\n".join([head, rule, line(headers), rule, *(line(row) for row in rows), rule, foot])


def _shown(estimate: Estimate, *, percent: bool, signed: bool = True) -> str:
    if estimate.value is None:
        return "n/a"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    sign = "+" if signed else ""
    text = f"{estimate.value * scale:{sign}.2f}{unit}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low * scale:{sign}.2f}, {estimate.high * scale:{sign}.2f}]"
    return text


def _rate(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.0%}"
