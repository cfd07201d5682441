"""Performance and risk figures on hand-computed examples."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from app.services.account.metrics import max_drawdown, performance_metrics, risk_metrics, sharpe_ratio


def curve(returns: Sequence[float], start: float = 100.0) -> list[float]:
    """The equity curve that has exactly these period returns."""
    equity = [start]
    for r in returns:
        equity.append(equity[-1] * (1 + r))
    return equity


# ---- max drawdown --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equity", "expected"),
    [
        ([100, 120, 90, 130, 65], 0.5),  # 130 -> 65, deeper than 120 -> 90 (25%)
        ([100, 120, 90, 130, 120], 0.25),  # 120 -> 90 is the worst
        ([100, 50, 100, 75], 0.5),  # a recovered drop still counts
        ([100, 110, 120], 0.0),  # never falls
        ([100, 100, 100], 0.0),
        ([100, 0], 1.0),  # wiped out
        ([100], 0.0),
        ([], 0.0),
    ],
)
def test_max_drawdown(equity: list[float], expected: float) -> None:
    assert max_drawdown(equity) == pytest.approx(expected)


# ---- Sharpe --------------------------------------------------------------------------------------------

# returns +2%, -1% five times each: mean 0.5%; deviations +-1.5%, sample variance 10 x 0.015^2 / 9
ALTERNATING = [0.02, -0.01] * 5
PER_PERIOD_SHARPE = 0.005 / math.sqrt(10 * 0.015**2 / 9)  # 0.316228


@pytest.mark.parametrize("periods_per_year", [252.0, 365.0, 365.0 * 288])
def test_sharpe_is_the_mean_over_the_sample_std_annualised_by_sqrt_periods(periods_per_year: float) -> None:
    assert sharpe_ratio(curve(ALTERNATING), periods_per_year) == pytest.approx(
        PER_PERIOD_SHARPE * math.sqrt(periods_per_year), rel=1e-9
    )


def test_sharpe_by_hand_for_daily_periods() -> None:
    assert sharpe_ratio(curve(ALTERNATING), 252.0) == pytest.approx(5.01996, abs=1e-5)


def test_a_losing_curve_has_a_negative_sharpe() -> None:
    assert sharpe_ratio(curve([-0.02, 0.01] * 5), 252.0) == pytest.approx(-PER_PERIOD_SHARPE * math.sqrt(252.0))


def test_sharpe_needs_ten_returns() -> None:
    assert sharpe_ratio(curve(ALTERNATING[:9]), 252.0) == 0.0


@pytest.mark.parametrize(
    "equity", [[100.0] * 20, curve([0.01] * 19), curve([-0.001] * 500)], ids=["flat", "compounding", "bleeding"]
)
def test_sharpe_without_volatility_is_zero_not_float_noise_blown_up(equity: list[float]) -> None:
    assert sharpe_ratio(equity, 365.0 * 288) == 0.0


# ---- performance ---------------------------------------------------------------------------------------


def test_performance_metrics_from_net_trade_pnls() -> None:
    metrics = performance_metrics(
        [10.0, -5.0, 20.0, 0.0], [100, 120, 90, 130, 65], total_pnl=-35.0, periods_per_year=252
    )

    assert metrics.win_rate == pytest.approx(0.5)  # a break-even trade (net 0) is not a win
    assert metrics.avg_win == pytest.approx(15.0)
    assert metrics.avg_loss == pytest.approx(-2.5)
    assert metrics.max_drawdown == pytest.approx(0.5)
    assert metrics.total_pnl == -35.0
    assert metrics.sharpe_ratio == 0.0  # four returns: too few


def test_performance_metrics_without_trades() -> None:
    metrics = performance_metrics([], [], total_pnl=0.0, periods_per_year=252)
    assert (metrics.win_rate, metrics.avg_win, metrics.avg_loss, metrics.max_drawdown) == (0.0, 0.0, 0.0, 0.0)


# ---- VaR -----------------------------------------------------------------------------------------------

# eleven returns; the 5th percentile (linear) sits halfway between the two worst, -5% and -3%
VAR_RETURNS = [0.01, -0.05, 0.02, -0.03, 0.0, 0.02, -0.01, 0.03, 0.04, 0.05, 0.06]


def test_var95_is_the_loss_at_the_5th_percentile_of_returns() -> None:
    assert risk_metrics(curve(VAR_RETURNS), {}, {}).var_95 == pytest.approx(0.04)


def test_var95_is_zero_when_even_the_worst_returns_are_gains() -> None:
    assert risk_metrics(curve([0.01, 0.02] * 6), {}, {}).var_95 == 0.0


def test_var95_needs_ten_returns() -> None:
    assert risk_metrics(curve(VAR_RETURNS[:9]), {}, {}).var_95 == 0.0


def test_risk_metrics_report_the_drawdown_of_the_curve() -> None:
    assert risk_metrics([100, 120, 90, 130, 65], {}, {}).max_drawdown == pytest.approx(0.5)


# ---- correlation ---------------------------------------------------------------------------------------

A = [0.01, -0.01] * 6  # twelve returns
ORTHOGONAL = [0.01, 0.01, -0.01, -0.01] * 3  # zero mean and uncorrelated with A


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        ([2 * r for r in A], 1.0),  # same moves, twice as big
        ([-r for r in A], 1.0),  # mirror moves: as risky as a double bet, so the absolute value
        (ORTHOGONAL, 0.0),
    ],
)
def test_correlation_risk_of_two_held_assets(other: list[float], expected: float) -> None:
    notionals = {"BTC": 1_000.0, "ETH": 1_000.0}
    assert risk_metrics([], notionals, {"BTC": A, "ETH": other}).correlation_risk == pytest.approx(expected, abs=1e-12)


def test_correlation_risk_is_the_mean_absolute_pairwise_correlation() -> None:
    # pairs: BTC/ETH 1, BTC/SOL 0, ETH/SOL 0
    returns = {"BTC": A, "ETH": [3 * r for r in A], "SOL": ORTHOGONAL}
    notionals = {"BTC": 1.0, "ETH": 1.0, "SOL": 1.0}
    assert risk_metrics([], notionals, returns).correlation_risk == pytest.approx(1 / 3)


def test_correlation_risk_only_counts_held_assets_with_enough_history() -> None:
    returns = {"BTC": A, "ETH": [-r for r in A], "SOL": ORTHOGONAL, "DOGE": A[:5]}
    # SOL is not held, DOGE has too few returns: only BTC/ETH remain
    assert risk_metrics([], {"BTC": 1.0, "ETH": 1.0, "DOGE": 1.0}, returns).correlation_risk == pytest.approx(1.0)
    # one held asset: nothing to correlate
    assert risk_metrics([], {"BTC": 1.0}, returns).correlation_risk == 0.0


def test_correlation_risk_aligns_the_newest_returns_of_series_of_different_lengths() -> None:
    # ETH's last twelve returns mirror BTC; the older ones in front are noise that must be ignored
    eth = [0.05, -0.07, 0.02] + [-r for r in A]
    assert risk_metrics([], {"BTC": 1.0, "ETH": 1.0}, {"BTC": A, "ETH": eth}).correlation_risk == pytest.approx(1.0)


def test_correlation_risk_of_a_flat_asset_is_zero_not_nan() -> None:
    result = risk_metrics([], {"BTC": 1.0, "ETH": 1.0}, {"BTC": A, "ETH": [0.0] * 12})
    assert result.correlation_risk == 0.0


def test_a_flat_asset_does_not_hide_the_correlation_of_the_others() -> None:
    returns = {"BTC": A, "ETH": [2 * r for r in A], "SOL": [0.0] * 12}
    result = risk_metrics([], {"BTC": 1.0, "ETH": 1.0, "SOL": 1.0}, returns)
    assert result.correlation_risk == pytest.approx(1.0)


# ---- concentration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notionals", "expected"),
    [
        ({"BTC": 6_000.0, "ETH": 3_000.0, "SOL": 1_000.0}, 0.6),
        ({"BTC": 6_000.0, "ETH": -3_000.0, "SOL": 1_000.0}, 0.6),  # a short's exposure counts by size
        ({"BTC": 1_000.0, "ETH": -9_000.0}, 0.9),
        ({"BTC": 2_500.0, "ETH": 2_500.0, "SOL": 2_500.0, "DOGE": 2_500.0}, 0.25),
        ({"BTC": 5_000.0}, 1.0),
        ({}, 0.0),
    ],
)
def test_concentration_is_the_largest_positions_share_of_gross_exposure(
    notionals: dict[str, float], expected: float
) -> None:
    assert risk_metrics([], notionals, {}).concentration_risk == pytest.approx(expected)
