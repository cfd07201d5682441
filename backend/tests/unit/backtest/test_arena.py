"""The arena's leaderboard: known answers for the means, the paired differences and the rank rule."""

from __future__ import annotations

import json

import pytest

from app.backtest.arena import UNRANKED, Leaderboard, WindowFigures, entrants, format_leaderboard, leaderboard
from app.services.evaluation.statistics import bootstrap_mean, compare_means

MARKET = {0: 0.04, 1: -0.06, 2: 0.01, 3: 0.08, 4: -0.02, 5: 0.00}  # buy-and-hold per window


def _figures(returns: dict[int, float], **extra: float) -> dict[int, WindowFigures]:
    values = {"sharpe": 1.0, "max_drawdown": 0.05, "cost_usd": 0.0, "errors": 0, "fallbacks": 0, "cycles": 24}
    values.update(extra)
    return {
        w: WindowFigures(
            total_return=r,
            sharpe=values["sharpe"],
            max_drawdown=values["max_drawdown"],
            cost_usd=values["cost_usd"],
            errors=int(values["errors"]),
            fallbacks=int(values["fallbacks"]),
            cycles=int(values["cycles"]),
        )
        for w, r in returns.items()
    }


def _board(results: dict[str, dict[int, WindowFigures]], baseline: str | None = "base") -> Leaderboard:
    return leaderboard(results, buy_and_hold=MARKET, baseline_label=baseline, seed=7)


def _ranks(board: Leaderboard) -> dict[str, str]:
    return {s.label: s.rank for s in board.standings}


def test_an_entrant_better_in_every_window_ranks_first_and_separated_ones_follow() -> None:
    noise = {0: 0.001, 1: -0.002, 2: 0.0, 3: 0.002, 4: -0.001, 5: 0.0015}
    board = _board(
        {
            "base": _figures({w: 0.0 + n for w, n in noise.items()}),
            "star": _figures({w: 0.05 + n for w, n in noise.items()}),
            "dud": _figures({w: -0.05 - n for w, n in noise.items()}),
        }
    )
    assert [s.label for s in board.standings] == ["star", "base", "dud"]
    assert _ranks(board) == {"star": "1", "base": "2", "dud": "3"}


def test_a_difference_lost_in_the_noise_gives_no_rank() -> None:
    jitter = {0: 0.02, 1: -0.03, 2: 0.01, 3: -0.01, 4: 0.035, 5: -0.02}  # mean +0.0008, spread far wider
    board = _board(
        {
            "base": _figures({w: r for w, r in MARKET.items()}),
            "close": _figures({w: r + jitter[w] for w, r in MARKET.items()}),
        }
    )
    top, _ = board.standings
    assert top.label == "close"  # ordered by mean return all the same
    assert _ranks(board) == {"close": UNRANKED, "base": UNRANKED}


def test_better_in_every_window_ranks_although_the_market_swamps_each_interval() -> None:
    board = _board(
        {
            "base": _figures({w: r for w, r in MARKET.items()}),
            "close": _figures({w: r + 0.005 + 0.001 * (w % 2) for w, r in MARKET.items()}),
        }
    )
    top, second = board.standings
    assert top.total_return.low is not None and second.total_return.high is not None
    assert top.total_return.low < second.total_return.high, "each entrant's own interval overlaps the other's"
    assert _ranks(board) == {"close": "1", "base": "2"}, "the paired difference (+0.5 % every window) separates them"


def test_entrants_that_do_not_separate_share_a_rank_above_one_that_does() -> None:
    jitter = {0: 0.004, 1: -0.003, 2: 0.002, 3: -0.004, 4: 0.003, 5: -0.001}
    board = _board(
        {
            "base": _figures({w: -0.10 + r / 10 for w, r in MARKET.items()}),
            "a": _figures({w: 0.03 + r / 10 for w, r in MARKET.items()}),
            "b": _figures({w: 0.0302 + r / 10 + jitter[w] for w, r in MARKET.items()}),
        }
    )
    assert [s.label for s in board.standings] == ["b", "a", "base"]
    assert _ranks(board) == {"b": "1=", "a": "1=", "base": "3"}


def test_the_paired_difference_to_buy_and_hold_is_the_mean_of_per_window_differences() -> None:
    ours = {0: 0.05, 1: -0.01, 2: 0.02, 3: 0.03, 4: 0.01, 5: -0.02}
    board = _board({"base": _figures(MARKET), "model": _figures(ours)})
    model = next(s for s in board.standings if s.label == "model")
    expected = sum(ours[w] - MARKET[w] for w in MARKET) / len(MARKET)
    assert model.vs_buy_and_hold.value == pytest.approx(expected, abs=1e-15)
    reference = compare_means(ours, MARKET, paired=True, seed=7)
    assert reference is not None
    assert (model.vs_buy_and_hold.low, model.vs_buy_and_hold.high) == (
        reference.difference.low,
        reference.difference.high,
    )
    assert model.vs_baseline is not None and model.vs_baseline.value == pytest.approx(expected, abs=1e-15)
    base = next(s for s in board.standings if s.label == "base")
    assert base.vs_baseline is None
    assert base.vs_buy_and_hold.value == pytest.approx(0.0, abs=1e-15)


def test_means_come_with_the_bootstrap_interval_and_sharpe_without_a_value_is_left_out() -> None:
    ours = {0: 0.05, 1: -0.01, 2: 0.02}
    figures = _figures(ours, max_drawdown=0.1)
    figures[1] = WindowFigures(-0.01, None, 0.2, 0.0, 0, 0, 24)
    board = leaderboard({"model": figures}, buy_and_hold={0: 0.0, 1: 0.0, 2: 0.0}, baseline_label=None, seed=3)
    (model,) = board.standings
    interval = bootstrap_mean(list(ours.values()), seed=3)
    assert interval is not None
    assert (model.total_return.value, model.total_return.low, model.total_return.high) == (
        interval.estimate,
        interval.low,
        interval.high,
    )
    assert model.sharpe.windows == 2 and model.sharpe.value == pytest.approx(1.0)
    assert model.max_drawdown.value == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    assert model.rank == UNRANKED  # alone: nobody to be separated from


def test_one_window_gives_means_without_intervals_and_no_rank() -> None:
    board = leaderboard(
        {"base": _figures({0: 0.0}), "model": _figures({0: 0.5})}, buy_and_hold={0: 0.1}, baseline_label="base"
    )
    model = board.standings[0]
    assert model.label == "model" and model.total_return.value == 0.5
    assert model.total_return.low is None and model.vs_buy_and_hold.value == pytest.approx(0.4)
    assert _ranks(board) == {"model": UNRANKED, "base": UNRANKED}


def test_cost_error_and_fallback_rates_add_up_over_windows() -> None:
    board = _board(
        {
            "base": _figures(MARKET),
            "model": _figures(MARKET, cost_usd=0.25, errors=3, fallbacks=6, cycles=24),
        }
    )
    model = next(s for s in board.standings if s.label == "model")
    assert model.cost_usd == pytest.approx(1.5)
    assert model.cycles == 144
    assert model.error_rate == pytest.approx(18 / 144) and model.fallback_rate == pytest.approx(36 / 144)


def test_an_entrant_without_windows_is_listed_last_unranked() -> None:
    noise = {0: 0.001, 1: -0.002, 2: 0.0, 3: 0.002, 4: -0.001, 5: 0.0015}
    board = _board(
        {
            "broken": {},
            "base": _figures(dict(noise.items())),
            "star": _figures({w: 0.05 + n for w, n in noise.items()}),
        }
    )
    assert [s.label for s in board.standings] == ["star", "base", "broken"]
    assert _ranks(board) == {"star": "1", "base": "2", "broken": UNRANKED}
    assert board.standings[-1].error_rate is None


def test_a_missing_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match="baseline entrant 'nobody'"):
        leaderboard({"a": _figures(MARKET)}, buy_and_hold=MARKET, baseline_label="nobody")


def test_entrants_cross_models_and_strategies_and_add_the_baseline_once() -> None:
    chosen, yardstick = entrants(["m/one", "m/two"], ["conservative", "aggressive"])
    assert [(e.model, e.strategy) for e in chosen] == [
        ("baseline", "conservative"),
        ("baseline", "aggressive"),
        ("m/one", "conservative"),
        ("m/one", "aggressive"),
        ("m/two", "conservative"),
        ("m/two", "aggressive"),
    ]
    assert yardstick == "baseline · conservative" and len({e.label for e in chosen}) == 6

    listed, yardstick = entrants(["m/one", "baseline", "m/one"], ["aggressive"])
    assert [e.model for e in listed] == ["m/one", "baseline"]
    assert yardstick == "baseline · aggressive"


def test_the_table_is_fixed_width_and_the_board_is_json_ready() -> None:
    noise = {0: 0.001, 1: -0.002, 2: 0.0, 3: 0.002, 4: -0.001, 5: 0.0015}
    board = _board(
        {
            "base": _figures(dict(noise.items())),
            "star": _figures({w: 0.05 + n for w, n in noise.items()}, cost_usd=0.01),
            "gone": {},
        }
    )
    text = format_leaderboard(board)
    lines = text.splitlines()
    table = lines[1:-1]
    assert len({len(line) for line in table}) == 1, text  # every row of the table as wide as the rule
    star = next(line for line in table if " star " in f" {line} ")
    assert star.lstrip().startswith("1 ") and "+5.02% [" in star and "0.0600" in star
    assert "base (baseline)" in text and "n/a" in text
    assert "3 entrants on 6 windows" in lines[0]
    decoded = json.loads(json.dumps(board.as_dict(), allow_nan=False))
    assert decoded["standings"][0]["label"] == "star" and decoded["standings"][0]["rank"] == "1"
