"""An experiment's results from its decisions' outcomes: each variant's metric over its units (one account's cycle:
its assets' outcomes are scored together, being correlated) with its confidence interval, and against the control
the difference, its interval, p-value and verdict, taken on the first `min_samples` cycles only (no peeking)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from app.db import models
from app.schemas.experiments import Difference, Estimate
from app.services.evaluation.scoring import METRICS, Metric, OutcomeLike, OutcomeScore, score, unit_value
from app.services.evaluation.statistics import bootstrap_mean, compare_means, verdict

Unit = datetime  # a cycle: every decision of the experiment on that candle, all accounts together


class ExperimentOutcome(OutcomeLike, Protocol):
    """What the analysis reads of a `DecisionOutcome` row: its variant and cycle, and what the figures read."""

    @property
    def variant_id(self) -> int | None: ...

    @property
    def cycle_time(self) -> datetime: ...

    @property
    def own_answer(self) -> bool: ...  # answered by the arm's own model (no fallback hold, no other model)


class ExperimentAnalysis:
    """The metric of each variant's units and its comparison with the control's.

    A unit is a cycle: the decisions of one candle move with the same market, whatever the account, so they are
    scored together (a unit of (account, cycle) made 100 accounts look like 100 independent samples of one
    candle). Only settled cycles count: those whose outcomes can no longer arrive (`settled_before`: the horizon
    and the tracker's retry window are over), so that a late outcome never changes a verdict once taken. Every
    comparison is on the same cycles for both arms (the first `min_samples` cycles both scored): an `accounts`
    experiment's arms are then compared over the same market period, unpaired (different accounts); a shadow
    experiment's, paired cycle by cycle (the same accounts and contexts)."""

    def __init__(
        self,
        experiment: models.Experiment,
        outcomes: Sequence[ExperimentOutcome],
        control_id: int,
        *,
        settled_before: datetime,
    ) -> None:
        self.experiment = experiment
        self.metric = cast(Metric, experiment.metric)
        self.higher_is_better = higher_is_better(self.metric)
        self.paired = experiment.assignment == "shadow"
        self.control_id = control_id
        self.outcomes: dict[int, list[ExperimentOutcome]] = defaultdict(list)
        grouped: dict[int, dict[Unit, list[ExperimentOutcome]]] = defaultdict(lambda: defaultdict(list))
        for row in outcomes:
            if row.variant_id is None:
                continue
            self.outcomes[row.variant_id].append(row)
            if row.cycle_time < settled_before:
                grouped[row.variant_id][row.cycle_time].append(row)
        # Each variant's settled cycles in order, with the metric's value (a cycle the metric cannot score is left
        # out, e.g. one without a directional decision for the hit rate).
        self.units: dict[int, dict[Unit, float]] = {}
        for variant_id, units in grouped.items():
            # A cycle where some decision of the arm was not its own model's answer (a fallback hold, or another
            # model of the fallback chain: the executed control has one, a shadow does not) would compare unlike
            # with unlike: it is left out of the arm, and so of every comparison with it. The fallback and error
            # rates say how often that happened.
            own = {unit: rows for unit, rows in units.items() if all(bool(row.own_answer) for row in rows)}
            values = {unit: unit_value(rows, self.metric) for unit, rows in sorted(own.items())}
            self.units[variant_id] = {unit: v for unit, v in values.items() if v is not None and math.isfinite(v)}

    def of(self, variant_id: int) -> dict[str, Any]:
        """The variant's figures: on the first `min_samples` cycles it and the control both scored once there are
        that many, on every such cycle so far until then (the control: its own first `min_samples`)."""
        n = self.experiment.min_samples
        level, seed = self.experiment.confidence_level, self.experiment.seed
        units = self.units.get(variant_id, {})
        control = self.units.get(self.control_id, {})
        is_control = variant_id == self.control_id
        mine: dict[Unit, float]
        theirs: dict[Unit, float] = {}
        if is_control:
            mine, available = _first(units, n), len(units)
        else:
            common = [unit for unit in units if unit in control]
            available = len(common)
            mine = {u: units[u] for u in common[:n]}
            theirs = {u: control[u] for u in common[:n]}
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
        what = "settled cycles both it and the control scored" if not is_control else "settled cycles"
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
