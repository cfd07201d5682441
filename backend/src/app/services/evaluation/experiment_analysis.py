"""An experiment's results from its decisions' outcomes: each variant's metric over its units (one account's cycle:
its assets' outcomes are scored together, being correlated) with its confidence interval, and against the control
the difference, its interval, p-value and verdict, taken on the first `min_samples` cycles only (no peeking)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from datetime import datetime
from typing import Any, cast

from app.db import models
from app.schemas.experiments import Difference, Estimate
from app.services.evaluation.scoring import METRICS, Metric, OutcomeScore, score, unit_value
from app.services.evaluation.statistics import bootstrap_mean, compare_means, verdict

Unit = tuple[datetime, int]  # (cycle_time, account_id): one account's cycle, in cycle order


class ExperimentAnalysis:
    """The metric of each variant's units and its comparison with the control's."""

    def __init__(self, experiment: models.Experiment, outcomes: list[models.DecisionOutcome], control_id: int):
        self.experiment = experiment
        self.metric = cast(Metric, experiment.metric)
        self.higher_is_better = higher_is_better(self.metric)
        self.paired = experiment.assignment == "shadow"
        self.control_id = control_id
        self.outcomes: dict[int, list[models.DecisionOutcome]] = defaultdict(list)
        grouped: dict[int, dict[Unit, list[models.DecisionOutcome]]] = defaultdict(lambda: defaultdict(list))
        for row in outcomes:
            if row.variant_id is None:
                continue
            self.outcomes[row.variant_id].append(row)
            grouped[row.variant_id][(row.cycle_time, row.account_id)].append(row)
        # Each variant's units in cycle order, with the metric's value (a unit the metric cannot score is left out,
        # e.g. a cycle without a directional decision for the hit rate).
        self.units: dict[int, dict[Unit, float]] = {}
        for variant_id, units in grouped.items():
            values = {unit: unit_value(rows, self.metric) for unit, rows in sorted(units.items())}
            self.units[variant_id] = {unit: v for unit, v in values.items() if v is not None and math.isfinite(v)}

    def of(self, variant_id: int) -> dict[str, Any]:
        """The variant's figures: on its first `min_samples` units once it has that many (with the control's: the
        first `min_samples` cycles both decided when paired), on every unit so far until then."""
        n = self.experiment.min_samples
        level, seed = self.experiment.confidence_level, self.experiment.seed
        units = self.units.get(variant_id, {})
        control = self.units.get(self.control_id, {})
        is_control = variant_id == self.control_id
        mine: dict[Unit, float]
        theirs: dict[Unit, float] = {}
        if is_control:
            mine, available = _first(units, n), len(units)
        elif self.paired:
            common = [unit for unit in units if unit in control]
            available = len(common)
            mine = {u: units[u] for u in common[:n]}
            theirs = {u: control[u] for u in common[:n]}
        else:
            available = min(len(units), len(control))
            mine, theirs = _first(units, n), _first(control, n)
        needed = max(0, n - available)
        found = bootstrap_mean(list(mine.values()), level=level, seed=seed)
        difference: Difference | None = None
        call: str | None = None
        if not is_control:
            comparison = compare_means(mine, theirs, paired=self.paired, level=level, seed=seed)
            call = verdict(comparison, samples=available, min_samples=n, higher_is_better=self.higher_is_better)
            if comparison is not None:
                difference = Difference(
                    value=comparison.difference.estimate,
                    low=comparison.difference.low,
                    high=comparison.difference.high,
                    p_value=comparison.p_value,
                    paired=comparison.paired,
                )
        return {
            "units_available": available,
            "units_analysed": len(mine),
            "units_needed": needed,
            "estimate": Estimate(value=found.estimate, low=found.low, high=found.high) if found else None,
            "difference": difference,
            "verdict": call,
            "note": self._note(is_control, available, len(mine), needed),
            "scores": _scores(score(self.outcomes.get(variant_id, []))),
        }

    def _note(self, is_control: bool, available: int, analysed: int, needed: int) -> str:
        n = self.experiment.min_samples
        what = "cycles both it and the control decided" if self.paired and not is_control else "cycles"
        if needed:
            after = "" if is_control else " before a verdict"
            return f"{available} of {n} {what} with outcomes at the horizon: {needed} more needed{after}"
        if is_control:
            return f"the first {analysed} of {available} cycles analysed"
        return f"verdict on the first {analysed} {what} (fixed: later cycles do not change it); {available} so far"


def _first(units: dict[Unit, float], n: int) -> dict[Unit, float]:
    """The first `n` units in cycle order."""
    return {unit: units[unit] for unit in sorted(units)[:n]}


def _scores(found: OutcomeScore) -> dict[str, float | int | None]:
    """The numeric figures of a `scoring` result (lists such as the reliability table aside; non-finite as None)."""
    raw = dataclasses.asdict(found)
    out: dict[str, float | int | None] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
            continue
        out[key] = value if value is None or math.isfinite(value) else None
    return out


def higher_is_better(metric: str) -> bool:
    return METRICS.get(cast(Metric, metric), True)
