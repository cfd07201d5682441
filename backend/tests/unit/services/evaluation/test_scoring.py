"""Figures over decision outcomes, the expected numbers worked out by hand from the ten rows below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.db.models import DecisionOutcome
from app.services.evaluation.scoring import METRICS, OutcomeScore, ReliabilityBucket, score, unit_value, unit_values
from tests.unit.services.evaluation.generated_outcomes import Outcome

T0 = datetime(2025, 3, 6, 12, 0, tzinfo=UTC)


def row(
    direction: int,
    direction_return: float,
    hit: bool | None,
    confidence: float | None,
    max_adverse: float | None = None,
    max_favourable: float | None = None,
    first_hit: str | None = None,
    *,
    account_id: int = 1,
    cycle: int = 0,
) -> Outcome:
    return Outcome(
        account_id=account_id,
        cycle_time=T0 + timedelta(minutes=5 * cycle),
        direction=direction,
        direction_return=direction_return,
        hit=hit,
        confidence=confidence,
        max_adverse=max_adverse,
        max_favourable=max_favourable,
        first_hit=first_hit,
    )


ROWS = [
    row(+1, 0.020, True, 80, 0.005, 0.025, "target"),
    row(-1, 0.010, True, 65, 0.002, 0.012, "none"),
    row(+1, -0.015, False, 70, 0.020, 0.004, "stop"),
    row(-1, -0.005, False, 55, 0.008, 0.003, "none"),
    row(+1, 0.004, True, None, 0.001, 0.006, "none"),  # no confidence: out of the Brier score
    row(0, 0.0, None, 40),  # flat, though confident: no hit, no calibration
    row(0, 0.0, None, None),
    row(+1, 0.030, True, 100, 0.0, 0.035, "target"),
    row(-1, -0.010, False, 92, 0.012, 0.001, "stop"),
    row(+1, 0.006, True, 58, 0.003, 0.007, "none"),
]


def test_score_by_hand() -> None:
    figures = score(ROWS)
    assert (figures.decisions, figures.directional, figures.hits) == (10, 8, 5)
    assert figures.hit_rate == pytest.approx(5 / 8)  # flats out
    # Directional returns sorted: -0.015 -0.010 -0.005 0.004 0.006 0.010 0.020 0.030, summing to 0.040.
    assert figures.mean_return == pytest.approx(0.040 / 8)
    assert figures.median_return == pytest.approx((0.004 + 0.006) / 2)
    assert figures.mean_return_all == pytest.approx(0.040 / 10)  # the two flats count 0
    assert figures.profit_factor == pytest.approx(0.070 / 0.030)
    # (0.8-1)^2 + (0.65-1)^2 + 0.7^2 + 0.55^2 + (1-1)^2 + 0.92^2 + (0.58-1)^2 over the 7 directional confident.
    assert figures.brier == pytest.approx((0.04 + 0.1225 + 0.49 + 0.3025 + 0.0 + 0.8464 + 0.1764) / 7)
    assert figures.reliability == [
        ReliabilityBucket(low=50, high=60, decisions=2, mean_confidence=56.5, hit_rate=0.5),
        ReliabilityBucket(low=60, high=70, decisions=1, mean_confidence=65, hit_rate=1.0),
        ReliabilityBucket(low=70, high=80, decisions=1, mean_confidence=70, hit_rate=0.0),
        ReliabilityBucket(low=80, high=90, decisions=1, mean_confidence=80, hit_rate=1.0),
        ReliabilityBucket(low=90, high=100, decisions=2, mean_confidence=96, hit_rate=0.5),  # 100 in the top one
    ]
    assert figures.mean_adverse == pytest.approx(0.051 / 8)
    assert figures.mean_favourable == pytest.approx(0.093 / 8)
    assert (figures.stop_first, figures.target_first) == (2, 2)


def test_score_of_nothing_and_of_flats_only() -> None:
    empty = OutcomeScore(0, 0, 0, None, None, None, None, None, None, [], None, None, 0, 0)
    assert score([]) == empty
    flats = score([row(0, 0.0, None, 70), row(0, 0.0, None, None)])
    assert (flats.decisions, flats.directional, flats.hit_rate, flats.mean_return) == (2, 0, None, None)
    assert flats.mean_return_all == 0.0
    assert (flats.brier, flats.reliability, flats.profit_factor) == (None, [], None)


def test_profit_factor_without_losses_is_none_and_without_gains_zero() -> None:
    assert score([row(+1, 0.01, True, 60), row(-1, 0.02, True, 60)]).profit_factor is None
    assert score([row(+1, -0.01, False, 60), row(0, 0.0, None, None)]).profit_factor == 0.0


def test_unit_value_of_each_metric() -> None:
    assert unit_value(ROWS, "mean_return") == pytest.approx(0.040 / 10)
    assert unit_value(ROWS, "hit_rate") == pytest.approx(5 / 8)
    assert unit_value(ROWS, "brier") == pytest.approx(1.9778 / 7)
    flats = [row(0, 0.0, None, 55), row(0, 0.0, None, None)]
    assert unit_value(flats, "mean_return") == 0.0  # following the model: nothing gained, nothing lost
    assert unit_value(flats, "hit_rate") is None
    assert unit_value(flats, "brier") is None
    assert unit_value([row(+1, 0.01, True, None)], "brier") is None
    assert unit_value([], "mean_return") is None
    with pytest.raises(ValueError):
        unit_value(ROWS, "sharpe")  # type: ignore[arg-type]


def test_metrics_say_which_way_is_better() -> None:
    assert METRICS == {"mean_return": True, "hit_rate": True, "brier": False}


def test_unit_values_group_by_cycle_and_leave_out_units_without_a_value() -> None:
    outcomes = [
        row(+1, 0.02, True, 70, cycle=0),
        row(-1, -0.01, False, 60, cycle=0),
        row(0, 0.0, None, None, cycle=1),  # a cycle of holds: a return of 0, no hit rate
        row(+1, 0.01, True, 90, cycle=2, account_id=2),
    ]
    key = lambda outcome: (outcome.account_id, outcome.cycle_time)  # noqa: E731
    assert unit_values(outcomes, "mean_return", key) == {
        (1, T0): pytest.approx(0.005),
        (1, T0 + timedelta(minutes=5)): 0.0,
        (2, T0 + timedelta(minutes=10)): pytest.approx(0.01),
    }
    assert unit_values(outcomes, "hit_rate", key) == {(1, T0): 0.5, (2, T0 + timedelta(minutes=10)): 1.0}
    assert unit_values(outcomes, "brier", key) == {
        (1, T0): pytest.approx(((0.7 - 1) ** 2 + 0.6**2) / 2),
        (2, T0 + timedelta(minutes=10)): pytest.approx(0.01),
    }


def test_decision_outcome_rows_are_scored() -> None:
    outcome = DecisionOutcome(
        direction=-1,
        direction_return=0.012,
        hit=True,
        confidence=75.0,
        max_adverse=0.004,
        max_favourable=0.015,
        first_hit="target",
    )
    figures = score([outcome])
    assert (figures.hits, figures.hit_rate, figures.target_first) == (1, 1.0, 1)
    assert figures.brier == pytest.approx(0.0625)
    assert unit_value([outcome], "mean_return") == pytest.approx(0.012)
