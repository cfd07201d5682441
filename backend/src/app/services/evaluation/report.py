"""The outcome figures of a selection of decisions, as the metrics endpoints answer them: overall and, when
grouped, per model, strategy, asset or account."""

from __future__ import annotations

from app.db.repositories.outcome_figures import OutcomeSelection
from app.schemas.api import OutcomeFigures, OutcomeGroup, OutcomeGroupBy, OutcomeReport
from app.services.evaluation.scoring import score


def outcome_report(
    selection: OutcomeSelection,
    *,
    horizon: int,
    interval: str,
    include_shadow: bool,
    group_by: OutcomeGroupBy | None = None,
) -> OutcomeReport:
    return OutcomeReport(
        horizon=horizon,
        interval=interval,
        include_shadow=include_shadow,
        group_by=group_by,
        row_limit=selection.limit,
        capped=selection.capped,
        oldest_cycle=selection.oldest_cycle,
        overall=OutcomeFigures.of(score(selection.rows), selection.all_trades, selection.cost_of(selection.rows)),
        groups=[
            OutcomeGroup.of(score(rows), selection.trades_of(key), selection.cost_of(rows), key=key)
            for key, rows in selection.groups()
        ]
        if group_by is not None
        else [],
    )
