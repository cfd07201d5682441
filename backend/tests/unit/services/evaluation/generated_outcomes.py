"""Generated outcome series for the statistics tests: two "models" deciding on the same simulated markets, each
cycle's asset decisions correlated (one market factor, one view per model and cycle), so that an experiment's
unit has to be the cycle.

Run as a script to measure the false-positive rate of two identical models over many seeds:

    .venv/bin/python -m tests.unit.services.evaluation.generated_outcomes --runs 2000
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from app.services.evaluation.scoring import Metric, unit_values
from app.services.evaluation.statistics import compare_means, verdict

ASSETS = 4
START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Outcome:
    account_id: int
    cycle_time: datetime
    direction: int
    direction_return: float
    hit: bool | None
    confidence: float | None
    max_adverse: float | None = None
    max_favourable: float | None = None
    first_hit: str | None = None


def market(rng: np.random.Generator, cycles: int, *, tails: float | None = None) -> np.ndarray:
    """Each cycle's return of each asset: a common factor and an asset's own move, about 1% each cycle.
    `tails`: Student-t degrees of freedom for heavy-tailed moves (None: normal)."""

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        if tails is None:
            return rng.standard_normal(shape)
        return rng.standard_t(tails, shape) / np.sqrt(tails / (tails - 2))

    return 0.01 * (0.6 * draw((cycles, 1)) + 0.8 * draw((cycles, ASSETS)))


def decide(
    rng: np.random.Generator,
    moves: np.ndarray,
    account_id: int,
    *,
    edge: float = 0.0,
    skill: float = 0.0,
    confidence: float | None = None,
) -> list[Outcome]:
    """One model's outcomes on `moves`: each cycle it takes a view (long or short) that every asset follows
    unless it stays flat (one in five). `skill` is the chance the view is the sign of the cycle's mean move
    (a peek at the future); `edge` is added to every directional return. Its stated confidence is `confidence`
    on every directional decision, else drawn between 30 and 90."""
    outcomes = []
    for cycle, row in enumerate(moves):
        view = 1 if rng.random() < 0.5 else -1
        if rng.random() < skill:
            view = 1 if row.mean() > 0 else -1
        for move in row:
            direction = 0 if rng.random() < 0.2 else view
            value = direction * float(move) + (edge if direction else 0.0)
            outcomes.append(
                Outcome(
                    account_id=account_id,
                    cycle_time=START + timedelta(minutes=5 * cycle),
                    direction=direction,
                    direction_return=value,
                    hit=value > 0 if direction else None,
                    confidence=(confidence or float(rng.integers(30, 90))) if direction else None,
                )
            )
    return outcomes


def units(outcomes: list[Outcome], metric: Metric) -> dict[tuple[int, datetime], float]:
    return unit_values(outcomes, metric, key=lambda row: (row.account_id, row.cycle_time))


def identical_models(
    seed: int, cycles: int, *, paired: bool, metric: Metric = "mean_return", tails: float | None = None
) -> tuple[dict[tuple[int, datetime], float], dict[tuple[int, datetime], float]]:
    """Units of two identical models. Paired (shadow): both decide for one account on the same markets.
    Unpaired (accounts split): each decides for its own account; the accounts see the same markets too."""
    rng = np.random.default_rng(seed)
    moves = market(rng, cycles, tails=tails)
    variant = decide(rng, moves, account_id=1)
    control = decide(rng, moves, account_id=1 if paired else 2)
    return units(variant, metric), units(control, metric)


def false_positives(runs: int, cycles: int, *, paired: bool, tails: float | None = None, first_seed: int = 0) -> int:
    """Runs (seeds first_seed, first_seed + 1, ...) in which two identical models were not "no difference"."""
    count = 0
    for seed in range(first_seed, first_seed + runs):
        variant, control = identical_models(seed, cycles, paired=paired, tails=tails)
        comparison = compare_means(variant, control, paired=paired, seed=seed)
        if verdict(comparison, samples=cycles, min_samples=cycles, higher_is_better=True) != "no difference":
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--cycles", type=int, nargs="+", default=[30, 100, 300])
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    for tails in (None, 3.0):
        for cycles in args.cycles:
            for paired in (True, False):
                count = false_positives(args.runs, cycles, paired=paired, tails=tails, first_seed=args.first_seed)
                print(
                    f"{'normal' if tails is None else f't({tails:g})':>7} moves, {cycles:4d} cycles, "
                    f"{'paired  ' if paired else 'unpaired'}: {count}/{args.runs} false positives "
                    f"({count / args.runs:.2%})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
