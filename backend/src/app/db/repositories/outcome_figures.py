"""Read side of decision outcomes: the outcome rows of a scope (newest first, capped), what the model calls of
those decisions cost, and the realized PnL of the positions they opened. The database only selects; the figures
(hit rate, returns, calibration) are computed from these rows by `services.evaluation.scoring`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.models import Decision, DecisionOutcome, DecisionTradeOutcome, LLMCall

GroupBy = Literal["model", "strategy", "asset", "account"]
GroupKey = str | int | None
# Outcome rows read for one answer at most (the newest): the figures are computed in Python from every row, so
# the rows are bounded; an answer built from fewer rows than the window holds says so.
OUTCOME_ROWS_LIMIT = 50_000


@dataclass(frozen=True)
class OutcomeScope:
    """Which outcomes: decided from `since` on (market clock), measured `horizon` candles of `interval` later, of
    one account (or all) and one strategy (or all); shadow decisions only with `include_shadow`."""

    since: datetime
    horizon: int
    interval: str
    account_id: int | None = None
    strategy_id: str | None = None
    include_shadow: bool = False


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One asset decision's outcome at the horizon: what `scoring.score` reads, and what it is grouped by."""

    decision_id: int
    account_id: int
    asset: str
    model: str | None
    strategy_id: str | None
    cycle_time: datetime
    direction: int
    direction_return: float
    hit: bool | None
    confidence: float | None
    max_adverse: float | None
    max_favourable: float | None
    first_hit: str | None

    def key(self, by: GroupBy) -> GroupKey:
        if by == "model":
            return self.model
        if by == "strategy":
            return self.strategy_id
        if by == "asset":
            return self.asset
        return self.account_id


@dataclass(frozen=True)
class DecisionCost:
    """The model calls of one decision (its retries and re-asks included)."""

    calls: int
    tokens: int  # prompt + completion
    cost_usd: float


@dataclass(frozen=True)
class CostTotals:
    """What the model calls of a set of decisions cost, and per decision (a decision without a model call, such
    as the rule-based baseline's, counts with nothing spent). A decision covers all its assets with one call: a
    group by asset counts the whole cost of each decision that covered the asset."""

    decisions: int
    llm_calls: int
    tokens: int
    cost_usd: float

    @property
    def tokens_per_decision(self) -> float | None:
        return self.tokens / self.decisions if self.decisions else None

    @property
    def cost_usd_per_decision(self) -> float | None:
        return self.cost_usd / self.decisions if self.decisions else None


@dataclass(frozen=True)
class TradeTotals:
    """Closed positions opened by the decisions: how many, and their realized PnL, fees, funding and net PnL."""

    trades: int = 0
    realized_pnl: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    net_pnl: float = 0.0

    def __add__(self, other: TradeTotals) -> TradeTotals:
        return TradeTotals(
            self.trades + other.trades,
            self.realized_pnl + other.realized_pnl,
            self.fees + other.fees,
            self.funding + other.funding,
            self.net_pnl + other.net_pnl,
        )


def _sort_key(key: GroupKey) -> tuple[bool, Any]:
    return key is None, key if key is not None else 0


@dataclass(frozen=True)
class OutcomeSelection:
    """The outcome rows of a scope (newest first; `capped` when the window held more than were read), the cost of
    their decisions' model calls, and the trades of the window's decisions grouped by `group_by`."""

    group_by: GroupBy
    rows: list[OutcomeRow]
    capped: bool
    limit: int
    costs: dict[int, DecisionCost] = field(default_factory=dict)
    trades: dict[GroupKey, TradeTotals] = field(default_factory=dict)

    @property
    def oldest_cycle(self) -> datetime | None:
        return self.rows[-1].cycle_time if self.rows else None

    def groups(self) -> list[tuple[GroupKey, list[OutcomeRow]]]:
        """Each group's rows, groups that only have trades included (with no rows), sorted by key (None last)."""
        grouped: dict[GroupKey, list[OutcomeRow]] = defaultdict(list)
        for row in self.rows:
            grouped[row.key(self.group_by)].append(row)
        for key in self.trades:
            grouped.setdefault(key, [])
        return sorted(grouped.items(), key=lambda item: _sort_key(item[0]))

    def cost_of(self, rows: Iterable[OutcomeRow]) -> CostTotals:
        decisions = {row.decision_id for row in rows}
        spent = [self.costs[d] for d in decisions if d in self.costs]
        return CostTotals(
            decisions=len(decisions),
            llm_calls=sum(c.calls for c in spent),
            tokens=sum(c.tokens for c in spent),
            cost_usd=sum(c.cost_usd for c in spent),
        )

    def trades_of(self, key: GroupKey) -> TradeTotals:
        return self.trades.get(key, TradeTotals())

    @property
    def all_trades(self) -> TradeTotals:
        return sum(self.trades.values(), TradeTotals())


# What the figures (`scoring.score`, `scoring.unit_value`) read of an outcome row.
SCORED_COLUMNS = (
    DecisionOutcome.direction,
    DecisionOutcome.direction_return,
    DecisionOutcome.hit,
    DecisionOutcome.confidence,
    DecisionOutcome.max_adverse,
    DecisionOutcome.max_favourable,
    DecisionOutcome.first_hit,
)


class OutcomeFiguresRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def select(
        self, scope: OutcomeScope, group_by: GroupBy = "model", *, limit: int = OUTCOME_ROWS_LIMIT
    ) -> OutcomeSelection:
        """The newest `limit` outcome rows of the scope, their decisions' model-call costs, and the window's
        trades by `group_by`."""
        o = DecisionOutcome
        columns = (o.decision_id, o.account_id, o.asset, o.model, o.strategy_id, o.cycle_time, *SCORED_COLUMNS)
        query = (
            select(*columns)
            .where(*self._outcome_filter(scope, scope.since))
            .order_by(o.cycle_time.desc(), o.id.desc())
            .limit(limit + 1)
        )
        found = (await self.session.execute(query)).all()
        capped = len(found) > limit
        rows = [OutcomeRow(**row._asdict()) for row in found[:limit]]
        costs = await self._costs(scope, rows[-1].cycle_time) if rows else {}
        trades = await self._trades(scope, group_by)
        return OutcomeSelection(group_by, rows, capped, limit, costs, trades)

    @staticmethod
    def _outcome_filter(scope: OutcomeScope, since: datetime) -> list[ColumnElement[bool]]:
        o = DecisionOutcome
        # (account_id, cycle_time) is indexed; the rest filters the rows that index finds.
        where = [o.cycle_time >= since, o.horizon == scope.horizon, o.interval == scope.interval]
        if scope.account_id is not None:
            where.append(o.account_id == scope.account_id)
        if scope.strategy_id is not None:
            where.append(o.strategy_id == scope.strategy_id)
        if not scope.include_shadow:
            where.append(~o.is_shadow)
        return where

    async def _costs(self, scope: OutcomeScope, oldest: datetime) -> dict[int, DecisionCost]:
        """The model calls of the decisions whose outcomes were selected (from the oldest row read on), summed
        per decision in the database."""
        c = LLMCall
        decided = select(DecisionOutcome.decision_id).where(*self._outcome_filter(scope, oldest))
        query = (
            select(
                c.decision_id,
                func.count(),
                func.coalesce(func.sum(c.prompt_tokens), 0) + func.coalesce(func.sum(c.completion_tokens), 0),
                func.coalesce(func.sum(c.cost_usd), 0.0),
            )
            .where(c.decision_id.in_(decided))
            .group_by(c.decision_id)
        )
        rows = (await self.session.execute(query)).all()
        return {
            d: DecisionCost(int(n), int(tokens or 0), float(usd or 0.0))
            for d, n, tokens, usd in rows
            if d is not None  # never, with `IN`; the column may hold NULL
        }

    async def _trades(self, scope: OutcomeScope, group_by: GroupBy) -> dict[GroupKey, TradeTotals]:
        """Closed positions opened by decisions of the window (cycle time from `since`), summed per group. Only
        executed decisions open positions: the horizon and shadow decisions do not apply."""
        t = DecisionTradeOutcome
        columns: dict[GroupBy, InstrumentedAttribute[Any]] = {
            "model": t.model,
            "strategy": t.strategy_id,
            "asset": t.asset,
            "account": t.account_id,
        }
        key = columns[group_by]
        where: list[ColumnElement[bool]] = [Decision.cycle_time >= scope.since]
        if scope.account_id is not None:
            where.append(Decision.account_id == scope.account_id)
        if scope.strategy_id is not None:
            where.append(t.strategy_id == scope.strategy_id)
        query = (
            select(
                key,
                func.count(),
                func.coalesce(func.sum(t.realized_pnl), 0.0),
                func.coalesce(func.sum(t.fees), 0.0),
                func.coalesce(func.sum(t.funding), 0.0),
                func.coalesce(func.sum(t.net_pnl), 0.0),
            )
            .join(Decision, Decision.id == t.decision_id)
            .where(*where)
            .group_by(key)
        )
        rows = (await self.session.execute(query)).all()
        return {
            k: TradeTotals(int(n), float(realized), float(fees), float(funding), float(net))
            for k, n, realized, fees, funding, net in rows
        }
