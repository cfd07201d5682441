"""Confidence intervals, p-values and verdicts that tell a real edge from luck.

Every interval here comes from the symmetric studentized bootstrap (bootstrap-t): each resample's deviation from
the sample's estimate is divided by that resample's own standard error, and the interval is the estimate plus or
minus the (level) quantile of |t*| times the sample's standard error. It was chosen over the percentile
bootstrap and the equal-tailed bootstrap-t because it keeps its promised error rate where those do not: the
percentile interval is too narrow for the sample sizes an experiment starts with (it ignores that the standard
error is itself estimated), and the equal-tailed bootstrap-t rejects too often when returns have heavy tails,
which they do. The unit tests hold the false-positive rate to the level on generated outcome series.

The p-value is the same pivot read the other way: the share of resamples whose |t*| reaches the observed |t|
(with the usual +1 so that it is never 0), so `p_value < 1 - level` holds exactly when the interval excludes 0.
When so few units remain that many resamples repeat one value (no spread, an infinite |t*|), the interval and
p-value fall back to Student's t (Welch's for two groups), which the bootstrap-t approximates anyway.

An experiment's unit is a cycle: the decisions of one cycle see the same market and are correlated, so units,
not decisions, are resampled; each unit carries one value (e.g. the mean return of its asset decisions).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]
Key = TypeVar("Key", bound=Hashable)  # a unit's key, e.g. (account_id, cycle_time)

Verdict = Literal["not yet", "better", "worse", "no difference"]

# Resampled values held in memory at once (8 MB of float64): 10,000 units resample 100 rows at a time.
_CHUNK_ELEMENTS = 1 << 20
# Values closer than this, relative to their size, differ only by floating-point rounding.
_ROUNDING = 64 * float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval at `level` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float

    def excludes(self, value: float = 0.0) -> bool:
        return self.low > value or self.high < value


@dataclass(frozen=True)
class Comparison:
    """A variant against the control: the difference of their means with its interval and two-sided p-value."""

    difference: Interval  # variant minus control
    p_value: float  # two-sided, for H0: difference == 0; < 1 - level exactly when the interval excludes 0
    paired: bool
    n_variant: int  # units used
    n_control: int


def bootstrap_mean(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval | None:
    """The mean of `values` with its symmetric bootstrap-t interval; None with fewer than 2 values."""
    _check(level, resamples)
    sample = _array(values)
    if len(sample) < 2:
        return None
    rng = np.random.default_rng(seed)
    deviations, variances = _resample(sample, resamples, rng)
    n = len(sample)
    interval, _ = _studentized(
        float(sample.mean()),
        math.sqrt(_variance(sample) / n),
        deviations,
        np.sqrt(variances / n),
        level=level,
        df=n - 1,
    )
    return interval


def compare_means(
    variant: Mapping[Key, float],
    control: Mapping[Key, float],
    *,
    paired: bool,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison | None:
    """Variant minus control over units keyed by cycle, with a bootstrap-t interval and p-value.

    paired (shadow experiments, every variant decided on the same cycles): only the keys in both count, and
    the per-key differences are resampled. Unpaired (accounts split between variants): each group is
    resampled on its own and the difference of means is studentized with Welch's standard error. None with
    fewer than 2 units (paired: common keys; unpaired: in either group).
    """
    _check(level, resamples)
    rng = np.random.default_rng(seed)
    if paired:
        common = [key for key in _ordered_keys(variant) if key in control]
        if len(common) < 2:
            return None
        differences = _array([variant[key] - control[key] for key in common])
        n = len(differences)
        deviations, variances = _resample(differences, resamples, rng)
        interval, p_value = _studentized(
            float(differences.mean()),
            math.sqrt(_variance(differences) / n),
            deviations,
            np.sqrt(variances / n),
            level=level,
            df=n - 1,
        )
        return Comparison(interval, p_value, paired=True, n_variant=n, n_control=n)

    ours = _array([variant[key] for key in _ordered_keys(variant)])
    theirs = _array([control[key] for key in _ordered_keys(control)])
    if len(ours) < 2 or len(theirs) < 2:
        return None
    n_ours, n_theirs = len(ours), len(theirs)
    ours_deviations, ours_variances = _resample(ours, resamples, rng)
    theirs_deviations, theirs_variances = _resample(theirs, resamples, rng)
    ours_var, theirs_var = _variance(ours) / n_ours, _variance(theirs) / n_theirs
    interval, p_value = _studentized(
        float(ours.mean() - theirs.mean()),
        math.sqrt(ours_var + theirs_var),
        ours_deviations - theirs_deviations,
        np.sqrt(ours_variances / n_ours + theirs_variances / n_theirs),
        level=level,
        df=_welch_df(ours_var, theirs_var, n_ours, n_theirs),
    )
    return Comparison(interval, p_value, paired=False, n_variant=n_ours, n_control=n_theirs)


def verdict(comparison: Comparison | None, *, samples: int, min_samples: int, higher_is_better: bool) -> Verdict:
    """Say "not yet" until `min_samples` is reached (no peeking), then whether the interval excludes 0 and which way."""
    if comparison is None or samples < min_samples:
        return "not yet"
    difference = comparison.difference
    if difference.low > 0:
        return "better" if higher_is_better else "worse"
    if difference.high < 0:
        return "worse" if higher_is_better else "better"
    return "no difference"


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if _rejections(level, resamples) < 1:
        raise ValueError(f"{resamples} resamples cannot resolve a {level:.0%} interval")


def _array(values: Sequence[float]) -> FloatArray:
    sample = np.asarray(values, dtype=np.float64)
    if not np.isfinite(sample).all():
        raise ValueError("values must be finite numbers")
    return sample


def _ordered_keys(units: Mapping[Key, float]) -> list[Key]:
    """Keys in sorted order when they sort, so a seed gives the same answer whatever order the units came in."""
    try:
        return sorted(units)  # type: ignore[type-var]
    except TypeError:
        return list(units)


def _variance(sample: FloatArray) -> float:
    """The variance (ddof=1), 0 when the values differ only by rounding (e.g. a variant that gained the same on
    every cycle): such noise would otherwise be resampled as if it were spread."""
    if float(np.ptp(sample)) <= _ROUNDING * float(np.abs(sample).max()):
        return 0.0
    return float(sample.var(ddof=1))


def _resample(sample: FloatArray, resamples: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Each resample's mean minus the sample's, and its variance (ddof=1), drawn `resamples` times with
    replacement. The sample is centred first, so the variance of small returns loses no precision."""
    n = len(sample)
    centred = sample - sample.mean()
    deviations = np.empty(resamples, dtype=np.float64)
    variances = np.empty(resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        drawn = centred[rng.integers(0, n, size=(stop - start, n))]
        totals = drawn.sum(axis=1)
        squares = np.einsum("ij,ij->i", drawn, drawn)
        deviations[start:stop] = totals / n
        variances[start:stop] = np.maximum(squares - totals * totals / n, 0.0) / (n - 1)
    return deviations, variances


def _rejections(level: float, resamples: int) -> int:
    """How many resamples may reach the observed |t| with the p-value still below 1 - level: the count m such
    that (c + 1) / (resamples + 1) < 1 - level exactly for c < m (computed in the same floats callers use)."""
    alpha = 1.0 - level
    m = max(0, math.ceil(alpha * (resamples + 1)) - 1)
    while m > 0 and not m / (resamples + 1) < alpha:
        m -= 1
    while m < resamples and (m + 1) / (resamples + 1) < alpha:
        m += 1
    return m


def _studentized(
    estimate: float, se: float, deviations: FloatArray, ses: FloatArray, *, level: float, df: float
) -> tuple[Interval, float]:
    """The symmetric bootstrap-t interval and its p-value from the resamples' deviations and standard errors."""
    if se == 0.0:  # every unit carries the same value: there is no spread to resample
        return Interval(estimate, estimate, estimate, level), 1.0 if estimate == 0.0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        pivots = np.abs(deviations / ses)
    pivots[np.isnan(pivots)] = 0.0  # a resample with no spread and no deviation
    pivots.sort()
    resamples = len(pivots)
    quantile = float(pivots[resamples - _rejections(level, resamples)])
    if not math.isfinite(quantile):  # too many resamples without spread: Student's t instead
        quantile = float(stats.t.ppf(0.5 + level / 2, df))
        p_value = float(2.0 * stats.t.sf(abs(estimate) / se, df))
    else:
        # Counted on the same products as the bounds, so p < 1 - level exactly when the interval excludes 0.
        reach = resamples - int(np.searchsorted(pivots * se, abs(estimate), side="left"))
        p_value = (reach + 1) / (resamples + 1)
    half = quantile * se
    return Interval(estimate, estimate - half, estimate + half, level), p_value


def _welch_df(ours_var: float, theirs_var: float, n_ours: int, n_theirs: int) -> float:
    """Welch-Satterthwaite degrees of freedom from the two squared standard errors."""
    denominator = ours_var**2 / (n_ours - 1) + theirs_var**2 / (n_theirs - 1)
    return (ours_var + theirs_var) ** 2 / denominator if denominator > 0 else float(n_ours + n_theirs - 2)
