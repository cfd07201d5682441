"""Bootstrap intervals, comparisons and verdicts against answers computed independently here (plain means,
Student's and Welch's t from scipy), and the error rates an experiment promises: two identical models are
"no difference" in at least 95 of 100 runs, a real edge is found, and nothing is called before its sample size."""

from __future__ import annotations

import math
import statistics
from datetime import datetime

import numpy as np
import pytest
from scipy import stats

from app.services.evaluation.scoring import METRICS
from app.services.evaluation.statistics import Comparison, Interval, bootstrap_mean, compare_means, verdict
from tests.unit.services.evaluation.generated_outcomes import (
    decide,
    false_positives,
    identical_models,
    market,
    units,
)

SERIES = [0.012, -0.004, 0.007, 0.0, -0.011, 0.003, 0.009, -0.002, 0.005, 0.001]


def keyed(values: np.ndarray, account_id: int = 1) -> dict[tuple[int, int], float]:
    return {(account_id, cycle): float(value) for cycle, value in enumerate(values)}


# --- bootstrap_mean ---------------------------------------------------------------------------------------------


def test_bootstrap_mean_estimates_the_mean_inside_a_symmetric_interval() -> None:
    interval = bootstrap_mean(SERIES)
    assert interval is not None
    assert interval.estimate == pytest.approx(statistics.fmean(SERIES), abs=1e-15)
    assert interval.level == 0.95
    assert interval.low < interval.estimate < interval.high
    assert interval.estimate - interval.low == pytest.approx(interval.high - interval.estimate)
    # A fixed seed gives a fixed answer; another seed moves the bounds only by resampling noise.
    assert bootstrap_mean(SERIES) == interval
    other = bootstrap_mean(SERIES, seed=1)
    assert other is not None and other != interval
    assert other.high - other.estimate == pytest.approx(interval.high - interval.estimate, rel=0.15)


def test_bootstrap_mean_of_many_values_is_the_t_interval() -> None:
    values = np.random.default_rng(7).normal(0.001, 0.01, 3000)
    interval = bootstrap_mean(list(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    half = (high - low) / 2
    assert interval is not None
    assert interval.low == pytest.approx(low, abs=0.06 * half)
    assert interval.high == pytest.approx(high, abs=0.06 * half)


def test_bootstrap_mean_wider_at_a_higher_level() -> None:
    narrow, wide = bootstrap_mean(SERIES, level=0.8), bootstrap_mean(SERIES, level=0.99)
    assert narrow is not None and wide is not None
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bootstrap_mean_needs_two_finite_values_and_enough_resamples() -> None:
    assert bootstrap_mean([]) is None
    assert bootstrap_mean([0.01]) is None
    assert bootstrap_mean([0.01, 0.01]) == Interval(0.01, 0.01, 0.01, 0.95)  # no spread: the value itself
    with pytest.raises(ValueError):
        bootstrap_mean([0.01, math.nan, 0.02])
    with pytest.raises(ValueError):
        bootstrap_mean(SERIES, level=1.0)
    with pytest.raises(ValueError):
        bootstrap_mean(SERIES, level=0.95, resamples=10)


def test_two_values_fall_back_to_student_t() -> None:
    # Half of all resamples of two values repeat one of them (no spread): the interval is Student's, not infinite.
    interval = bootstrap_mean([0.01, 0.03])
    low, high = stats.t.interval(0.95, 1, loc=0.02, scale=stats.sem([0.01, 0.03]))
    assert interval is not None
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))


# --- compare_means: known answers -------------------------------------------------------------------------------


def test_paired_shift_is_found_with_the_difference_computed_here() -> None:
    rng = np.random.default_rng(11)
    control = rng.normal(0.0, 0.01, 400)
    variant = control + 0.002 + rng.normal(0.0, 0.005, 400)
    comparison = compare_means(keyed(variant), keyed(control), paired=True)
    assert comparison is not None
    assert comparison.paired and (comparison.n_variant, comparison.n_control) == (400, 400)
    assert comparison.difference.estimate == pytest.approx(float(np.mean(variant - control)), abs=1e-15)
    assert comparison.difference.low < 0.002 < comparison.difference.high
    assert comparison.p_value < 0.05
    assert comparison.difference.low > 0


def test_unpaired_shift_is_found_with_the_difference_computed_here() -> None:
    rng = np.random.default_rng(12)
    variant = rng.normal(0.003, 0.01, 300)
    control = rng.normal(0.0, 0.02, 500)
    comparison = compare_means(keyed(variant, 1), keyed(control, 2), paired=False)
    assert comparison is not None
    assert not comparison.paired and (comparison.n_variant, comparison.n_control) == (300, 500)
    assert comparison.difference.estimate == pytest.approx(float(variant.mean() - control.mean()), abs=1e-15)
    assert comparison.difference.low < 0.003 < comparison.difference.high
    assert comparison.p_value < 0.05


@pytest.mark.parametrize("shift", [0.0, 0.0005, 0.001, 0.0015])
def test_paired_p_value_agrees_with_the_paired_t_test(shift: float) -> None:
    rng = np.random.default_rng(13)
    control = rng.normal(0.0, 0.01, 500)
    variant = control + shift + rng.normal(0.0, 0.01, 500)
    comparison = compare_means(keyed(variant), keyed(control), paired=True, seed=5)
    expected = stats.ttest_rel(variant, control).pvalue
    assert comparison is not None
    assert comparison.p_value == pytest.approx(expected, abs=0.02 + 0.15 * expected)


@pytest.mark.parametrize("shift", [0.0, 0.001, 0.0015, 0.002])
def test_unpaired_p_value_agrees_with_welch(shift: float) -> None:
    rng = np.random.default_rng(14)
    variant = rng.normal(shift, 0.01, 400)
    control = rng.normal(0.0, 0.015, 600)
    comparison = compare_means(keyed(variant, 1), keyed(control, 2), paired=False, seed=6)
    expected = stats.ttest_ind(variant, control, equal_var=False).pvalue
    assert comparison is not None
    assert comparison.p_value == pytest.approx(expected, abs=0.02 + 0.15 * expected)


def test_no_shift_at_all_is_p_one() -> None:
    # Differences that cancel exactly, and two accounts with the same values: the estimate is 0, nothing beats it.
    differences = np.array([0.004, -0.004, 0.01, -0.01, 0.002, -0.002])
    paired = compare_means(keyed(differences), keyed(np.zeros(6)), paired=True)
    values = np.random.default_rng(15).normal(0.0, 0.01, 50)
    unpaired = compare_means(keyed(values, 1), keyed(values, 2), paired=False)
    for comparison in (paired, unpaired):
        assert comparison is not None
        assert comparison.difference.estimate == pytest.approx(0.0, abs=1e-16)
        assert comparison.p_value == 1.0
        assert comparison.difference.low < 0 < comparison.difference.high


def test_paired_uses_only_the_cycles_both_decided() -> None:
    rng = np.random.default_rng(16)
    control, variant = rng.normal(0, 0.01, 60), rng.normal(0, 0.01, 60)
    both = compare_means(keyed(variant[:50]), keyed(control[:50]), paired=True)
    extra = compare_means(keyed(variant), keyed(control[:50]), paired=True)  # 10 cycles the control missed
    assert extra is not None and (extra.n_variant, extra.n_control) == (50, 50)
    assert extra == both


def test_the_answer_does_not_depend_on_the_order_units_arrive_in() -> None:
    rng = np.random.default_rng(17)
    variant = keyed(rng.normal(0.001, 0.01, 80), 1)
    for control, paired in ((keyed(rng.normal(0, 0.01, 80), 1), True), (keyed(rng.normal(0, 0.01, 70), 2), False)):
        backwards = compare_means(dict(reversed(variant.items())), dict(reversed(control.items())), paired=paired)
        assert backwards == compare_means(variant, control, paired=paired)


def test_too_few_units_is_none() -> None:
    assert compare_means({1: 0.01}, {1: 0.0}, paired=True) is None
    assert compare_means({1: 0.01, 2: 0.02}, {1: 0.0, 3: 0.0}, paired=True) is None  # one common cycle
    assert compare_means({1: 0.01}, {2: 0.0, 3: 0.01}, paired=False) is None
    assert compare_means({1: 0.01, 2: 0.0}, {}, paired=False) is None


def test_identical_decisions_are_no_difference_and_a_constant_gain_is_better() -> None:
    # A shadow variant that decided exactly like the control (e.g. the rule-based baseline twice).
    control = {cycle: 0.001 * (cycle % 7 - 3) for cycle in range(120)}
    same = compare_means(dict(control), control, paired=True)
    assert same == Comparison(Interval(0.0, 0.0, 0.0, 0.95), 1.0, paired=True, n_variant=120, n_control=120)
    assert verdict(same, samples=120, min_samples=100, higher_is_better=True) == "no difference"
    ahead = compare_means({cycle: value + 0.001 for cycle, value in control.items()}, control, paired=True)
    assert ahead is not None and ahead.difference.estimate == pytest.approx(0.001)
    assert verdict(ahead, samples=120, min_samples=100, higher_is_better=True) == "better"


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_p_value_below_one_minus_level_exactly_when_the_interval_excludes_zero(level: float) -> None:
    rng = np.random.default_rng(18)
    checked = excluded = 0
    for case in range(300):
        n = int(rng.choice([2, 3, 5, 10, 40, 150]))
        paired = bool(case % 2)
        shift = float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.0])) / math.sqrt(n)
        variant = keyed(rng.standard_t(3, n) + shift, 1)
        control = keyed(rng.standard_t(3, n + (0 if paired else int(rng.integers(0, 5)))), 1 if paired else 2)
        comparison = compare_means(variant, control, paired=paired, level=level, resamples=400, seed=case)
        assert comparison is not None
        assert comparison.difference.level == level
        assert comparison.difference.excludes(0.0) == (comparison.p_value < 1 - level), (case, comparison)
        assert 0.0 < comparison.p_value <= 1.0
        checked += 1
        excluded += comparison.difference.excludes(0.0)
    assert 0 < excluded < checked  # both outcomes were exercised


# --- verdicts -----------------------------------------------------------------------------------------------------


def test_not_yet_before_the_sample_size_even_when_the_difference_is_huge() -> None:
    rng = np.random.default_rng(19)
    control = rng.normal(0.0, 0.01, 99)
    comparison = compare_means(keyed(control + rng.normal(0.05, 0.01, 99)), keyed(control), paired=True)
    assert comparison is not None and comparison.p_value < 0.001
    assert verdict(comparison, samples=99, min_samples=100, higher_is_better=True) == "not yet"
    assert verdict(comparison, samples=0, min_samples=100, higher_is_better=False) == "not yet"
    assert verdict(None, samples=500, min_samples=100, higher_is_better=True) == "not yet"
    assert verdict(comparison, samples=100, min_samples=100, higher_is_better=True) == "better"


@pytest.mark.parametrize("paired", [True, False])
def test_an_edge_of_one_standard_deviation_over_200_units_is_better_and_its_mirror_worse(paired: bool) -> None:
    rng = np.random.default_rng(20)
    sd = 0.01
    control = keyed(rng.normal(0.0, sd, 200), 1)
    edge = keyed(rng.normal(sd, sd, 200), 1 if paired else 2)
    behind = keyed(rng.normal(-sd, sd, 200), 1 if paired else 2)
    gain = compare_means(edge, control, paired=paired)
    loss = compare_means(behind, control, paired=paired)
    assert verdict(gain, samples=200, min_samples=200, higher_is_better=True) == "better"
    assert verdict(loss, samples=200, min_samples=200, higher_is_better=True) == "worse"
    # The same intervals on a metric where lower is better read the other way.
    assert verdict(gain, samples=200, min_samples=200, higher_is_better=False) == "worse"
    assert verdict(loss, samples=200, min_samples=200, higher_is_better=False) == "better"


def test_a_model_that_peeks_is_better_on_every_metric_brier_lower() -> None:
    # Decision outcomes end to end: a model that knows each cycle's move 60% of the time against a coin flip,
    # both 80% confident, units per cycle, shadow (paired) assignment.
    rng = np.random.default_rng(21)
    moves = market(rng, 200)
    peeking, random = decide(rng, moves, 1, skill=0.6, confidence=80), decide(rng, moves, 1, confidence=80)
    for metric, higher_is_better in METRICS.items():
        better = compare_means(units(peeking, metric), units(random, metric), paired=True)
        worse = compare_means(units(random, metric), units(peeking, metric), paired=True)
        assert better is not None and worse is not None
        if metric == "brier":
            assert better.difference.high < 0  # the peeking model's probabilities are closer to what happened
        assert verdict(better, samples=200, min_samples=200, higher_is_better=higher_is_better) == "better", metric
        assert verdict(worse, samples=200, min_samples=200, higher_is_better=higher_is_better) == "worse", metric


# --- the false-positive rate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_two_identical_models_are_no_difference_in_95_of_100_runs(paired: bool) -> None:
    wrong = false_positives(100, 100, paired=paired)
    assert wrong <= 5, f"{wrong} of 100 runs of two identical models ended other than 'no difference'"


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_false_positive_rate_is_the_level_at_a_small_sample_size(paired: bool) -> None:
    # 1000 runs of 8 normal units, where an interval that ignores the uncertainty of its standard error (the
    # percentile bootstrap) calls a difference about twice as often as 5%. 5% is 50 +- 7 of 1000 (one sd): the
    # upper bound is three sd above; the lower one, lower still because the bootstrap-t is slightly conservative
    # this small, catches intervals so wide that they would cost power.
    wrong = 0
    for seed in range(10_000, 11_000):
        rng = np.random.default_rng(seed)
        variant, control = keyed(rng.normal(0.0, 0.01, 8), 1), keyed(rng.normal(0.0, 0.01, 8), 1 if paired else 2)
        comparison = compare_means(variant, control, paired=paired, seed=seed)
        wrong += verdict(comparison, samples=8, min_samples=8, higher_is_better=True) != "no difference"
    assert 20 <= wrong <= 71, f"{wrong} of 1000 runs of two identical series ended other than 'no difference'"


def test_identical_models_generator_gives_units_keyed_by_account_and_cycle() -> None:
    variant, control = identical_models(0, 30, paired=True)
    assert len(variant) == len(control) == 30
    assert set(variant) == set(control)
    key = next(iter(variant))
    assert key[0] == 1 and isinstance(key[1], datetime)
    _, split = identical_models(0, 30, paired=False)
    assert {account for account, _ in split} == {2}
