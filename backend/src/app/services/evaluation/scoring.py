"""Figures over decision outcomes: how often the direction was right, what following it returned, and whether
the model's confidence meant what it said.

Works on `DecisionOutcome` rows or anything shaped like them (`OutcomeLike`), one horizon at a time: mixing
horizons would count a decision several times. A flat decision (direction 0) took no side, so it has no hit and
no calibration, but it still counts, as a return of 0, in the value of following the model (`mean_return_all`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar


class OutcomeLike(Protocol):
    """The attributes of a `DecisionOutcome` that the figures read."""

    @property
    def direction(self) -> int: ...  # +1 long, -1 short, 0 flat

    @property
    def direction_return(self) -> float: ...

    @property
    def hit(self) -> bool | None: ...  # None when flat

    @property
    def confidence(self) -> float | None: ...  # percent, 0..100

    @property
    def max_adverse(self) -> float | None: ...

    @property
    def max_favourable(self) -> float | None: ...

    @property
    def first_hit(self) -> str | None: ...  # stop | target | none; None when flat


OutcomeT = TypeVar("OutcomeT", bound=OutcomeLike)
Key = TypeVar("Key", bound=Hashable)

Metric = Literal["mean_return", "hit_rate", "brier"]
# Each metric an experiment may judge by, and whether a higher value is better.
METRICS: dict[Metric, bool] = {"mean_return": True, "hit_rate": True, "brier": False}

BUCKET_WIDTH = 10.0  # confidence points per reliability bucket


@dataclass(frozen=True)
class ReliabilityBucket:
    """Directional decisions whose confidence fell in [low, high) (the last bucket includes 100): how confident
    the model said it was against how often it was right."""

    low: float
    high: float
    decisions: int
    mean_confidence: float  # percent
    hit_rate: float  # observed fraction of hits


@dataclass(frozen=True)
class OutcomeScore:
    decisions: int  # all asset decisions
    directional: int  # direction != 0
    hits: int
    hit_rate: float | None  # hits / directional
    mean_return: float | None  # mean direction_return over directional decisions
    median_return: float | None
    mean_return_all: float | None  # over all decisions, a flat one counting 0: the value of following the model
    profit_factor: float | None  # gains / |losses| over directional decisions; None without a loss
    brier: float | None  # mean (confidence/100 - hit)^2 over directional decisions with a confidence
    reliability: list[ReliabilityBucket]  # non-empty buckets, lowest confidence first
    mean_adverse: float | None
    mean_favourable: float | None
    stop_first: int
    target_first: int


def score(outcomes: Iterable[OutcomeLike]) -> OutcomeScore:
    """Every figure over `outcomes` (one horizon)."""
    rows = list(outcomes)
    directional = [row for row in rows if row.direction != 0]
    returns = [row.direction_return for row in directional]
    hits = sum(1 for row in directional if row.hit)
    gains = sum(value for value in returns if value > 0)
    losses = -sum(value for value in returns if value < 0)
    adverse = [row.max_adverse for row in directional if row.max_adverse is not None]
    favourable = [row.max_favourable for row in directional if row.max_favourable is not None]
    return OutcomeScore(
        decisions=len(rows),
        directional=len(directional),
        hits=hits,
        hit_rate=hits / len(directional) if directional else None,
        mean_return=_mean(returns),
        median_return=statistics.median(returns) if returns else None,
        mean_return_all=_mean([_followed_return(row) for row in rows]),
        profit_factor=gains / losses if losses > 0 else None,
        brier=_brier(directional),
        reliability=_reliability(directional),
        mean_adverse=_mean(adverse),
        mean_favourable=_mean(favourable),
        stop_first=sum(1 for row in directional if row.first_hit == "stop"),
        target_first=sum(1 for row in directional if row.first_hit == "target"),
    )


def unit_value(outcomes: Sequence[OutcomeLike], metric: Metric) -> float | None:
    """One unit's (cycle's) value of `metric`: mean_return over all its asset decisions (a flat one counting 0),
    hit_rate and brier over its directional ones (None without any)."""
    if metric == "mean_return":
        return _mean([_followed_return(row) for row in outcomes])
    directional = [row for row in outcomes if row.direction != 0]
    if metric == "hit_rate":
        return sum(1 for row in directional if row.hit) / len(directional) if directional else None
    if metric == "brier":
        return _brier(directional)
    raise ValueError(f"unknown metric {metric!r}")


def unit_values(outcomes: Iterable[OutcomeT], metric: Metric, key: Callable[[OutcomeT], Key]) -> dict[Key, float]:
    """`unit_value` per unit, the outcomes grouped by `key` (an experiment's is (account_id, cycle_time));
    units without a value (no directional decision for hit_rate or brier) are left out."""
    groups: dict[Key, list[OutcomeT]] = {}
    for row in outcomes:
        groups.setdefault(key(row), []).append(row)
    values = {unit: unit_value(rows, metric) for unit, rows in groups.items()}
    return {unit: value for unit, value in values.items() if value is not None}


def _followed_return(row: OutcomeLike) -> float:
    return row.direction_return if row.direction != 0 else 0.0


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _calibrated(directional: Iterable[OutcomeLike]) -> list[tuple[float, bool]]:
    """(confidence, hit) of the directional decisions that stated a confidence."""
    return [(row.confidence, bool(row.hit)) for row in directional if row.confidence is not None]


def _brier(directional: Iterable[OutcomeLike]) -> float | None:
    pairs = _calibrated(directional)
    return _mean([(confidence / 100.0 - float(hit)) ** 2 for confidence, hit in pairs])


def _reliability(directional: Iterable[OutcomeLike]) -> list[ReliabilityBucket]:
    buckets: dict[int, list[tuple[float, bool]]] = {}
    last = int(100.0 / BUCKET_WIDTH) - 1
    for confidence, hit in _calibrated(directional):
        index = min(max(int(confidence // BUCKET_WIDTH), 0), last)
        buckets.setdefault(index, []).append((confidence, hit))
    return [
        ReliabilityBucket(
            low=index * BUCKET_WIDTH,
            high=(index + 1) * BUCKET_WIDTH,
            decisions=len(pairs),
            mean_confidence=sum(confidence for confidence, _ in pairs) / len(pairs),
            hit_rate=sum(1 for _, hit in pairs if hit) / len(pairs),
        )
        for index, pairs in sorted(buckets.items())
    ]
