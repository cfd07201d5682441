"""Decision outcomes: the decisions and closed positions still to be measured, and the rows measured.

Every read is bounded and indexed. Decisions are read in pages of their primary key: `decisions` has no index on
`cycle_time` alone, so a moment is turned into an id by bisecting the primary key (`first_decision_id_from`),
which is exact while decisions are stored in the order of their cycles (one market clock per agent; a decision
out of that order is left to the back-fill, which reads every id, never measured early: the cycle is checked). The
outcome rows are written with INSERT ... ON CONFLICT DO NOTHING on their unique keys, so that a repeated or a
concurrent run (the loop and a back-fill) never writes one twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, cast, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Decision, DecisionOutcome, DecisionProvenance, DecisionTradeOutcome, FundingPayment, Position
from app.db.session import json_value
from app.db.upsert import insert_for

# Decisions that made no decision: nothing to measure (a pending one is not finished yet and is read, to wait).
NO_DECISION = ("error", "interrupted")
_IN_CHUNK = 500  # ids per IN list


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """What a decision's outcome is measured from (its JSON columns decoded)."""

    id: int
    account_id: int
    cycle_time: datetime
    status: str
    model: str | None  # served, else requested
    strategy_id: str | None
    experiment_id: int | None
    variant_id: int | None
    is_shadow: bool
    validation: dict[str, Any] | None
    asset_state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A closed position a decision opened, with the funding it paid or received and the decision's labels."""

    position_id: int
    decision_id: int
    account_id: int
    asset: str
    side: str
    realized_pnl: float
    fees: float
    funding: float
    margin: float
    exit_reason: str | None
    opened_at: datetime
    closed_at: datetime
    model: str | None
    strategy_id: str | None
    experiment_id: int | None
    variant_id: int | None


_d = Decision.__table__.c
_o = DecisionOutcome.__table__.c
_p = Position.__table__.c
_t = DecisionTradeOutcome.__table__.c
_f = FundingPayment.__table__.c
_DECISION_COLUMNS = (
    _d.id,
    _d.account_id,
    _d.cycle_time,
    _d.status,
    func.coalesce(_d.model_served, _d.model_requested),
    _d.strategy_id,
    _d.experiment_id,
    _d.variant_id,
    _d.shadow_of,
    cast(_d.validation_result, Text),
    cast(_d.asset_state, Text),
)


def _json(text: str | None) -> Any:
    """A JSON column read as text (`json_value`: older rows may hold NaN written by the standard library)."""
    return None if text is None else json_value(text)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield list(ids[start : start + _IN_CHUNK])


class OutcomeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---------------------------------------------------------------------------------------- decisions

    async def first_decision_id_from(self, moment: datetime) -> int:
        """The smallest id from which on every decision's cycle is at or after `moment` (one past the largest id
        when none is): a bisection of the primary key, one indexed read per step."""
        largest = await self.session.scalar(select(func.max(_d.id)))
        if largest is None:  # no decision yet
            return 0
        low, high = 0, largest + 1
        probe = select(_d.id, _d.cycle_time).order_by(_d.id).limit(1)
        while low < high:
            middle = (low + high) // 2
            found, cycle_time = (await self.session.execute(probe.where(_d.id >= middle))).one()
            if cycle_time >= moment:
                high = middle
            else:
                low = found + 1
        return low

    async def decisions(
        self,
        *,
        after_id: int,
        limit: int,
        due_by: datetime,
        below_id: int | None = None,
        unmeasured_at: int | None = None,
        account_id: int | None = None,
        since: datetime | None = None,
    ) -> list[StoredDecision]:
        """The next `limit` decisions after `after_id` (below `below_id`) made for a cycle at or before `due_by`,
        oldest first, except those that made no decision; `unmeasured_at`: only those without an outcome row at
        that horizon yet."""
        query = select(*_DECISION_COLUMNS).where(
            _d.id > after_id, _d.cycle_time <= due_by, _d.status.not_in(NO_DECISION)
        )
        if below_id is not None:
            query = query.where(_d.id < below_id)
        if unmeasured_at is not None:
            measured = exists().where(_o.decision_id == _d.id, _o.horizon == unmeasured_at)
            query = query.where(~measured)
        if account_id is not None:
            query = query.where(_d.account_id == account_id)
        if since is not None:
            query = query.where(_d.cycle_time >= since)
        rows = (await self.session.execute(query.order_by(_d.id).limit(limit))).all()
        return [
            StoredDecision(
                id=row[0],
                account_id=row[1],
                cycle_time=row[2],
                status=row[3],
                model=row[4],
                strategy_id=row[5],
                experiment_id=row[6],
                variant_id=row[7],
                is_shadow=row[3] == "shadow" or row[8] is not None,
                validation=_json(row[9]),
                asset_state=_json(row[10]),
            )
            for row in rows
        ]

    async def last_measured(self, horizon: int) -> int | None:
        """The newest decision with an outcome at `horizon` (the unique key's index, read backwards)."""
        query = select(_o.decision_id).where(_o.horizon == horizon).order_by(_o.decision_id.desc()).limit(1)
        return await self.session.scalar(query)

    async def context_snapshots(self, decision_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The stored contexts of these decisions (those that have one)."""
        column = DecisionProvenance.__table__.c
        found: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(decision_ids):
            query = select(column.decision_id, cast(column.context_snapshot, Text)).where(column.decision_id.in_(chunk))
            for decision_id, text in await self.session.execute(query):
                snapshot = _json(text)
                if snapshot:
                    found[decision_id] = snapshot
        return found

    async def measured(self, decision_ids: Sequence[int], horizons: Sequence[int]) -> set[tuple[int, str, int]]:
        """The (decision, asset, horizon) outcome rows already stored for these decisions."""
        found: set[tuple[int, str, int]] = set()
        for chunk in _chunks(decision_ids):
            query = select(_o.decision_id, _o.asset, _o.horizon).where(
                _o.decision_id.in_(chunk), _o.horizon.in_(list(horizons))
            )
            found.update((d, a, h) for d, a, h in await self.session.execute(query))
        return found

    async def insert_outcomes(self, rows: Sequence[dict[str, Any]]) -> set[tuple[int, str, int]]:
        """Store outcome rows, skipping any already stored; returns the (decision, asset, horizon) of those new."""
        if not rows:
            return set()
        insert = insert_for(self.session)(DecisionOutcome.__table__)
        statement = insert.on_conflict_do_nothing(index_elements=["decision_id", "asset", "horizon"]).returning(
            _o.decision_id, _o.asset, _o.horizon
        )
        result = await self.session.execute(statement, list(rows))
        return {(d, a, h) for d, a, h in result.all()}

    # ---------------------------------------------------------------------------------------- positions

    async def positions_after(
        self, after_id: int, limit: int, *, account_id: int | None = None
    ) -> list[tuple[int, bool]]:
        """The next `limit` positions a decision opened after `after_id` (of `account_id`), oldest first, that
        are open or closed without a trade outcome: (id, is closed)."""
        measured = exists().where(_t.position_id == _p.id)
        query = select(_p.id, _p.status).where(
            _p.id > after_id, _p.decision_id.is_not(None), ~and_(_p.status == "closed", measured)
        )
        if account_id is not None:
            query = query.where(_p.account_id == account_id)
        query = query.order_by(_p.id).limit(limit)
        return [(position_id, status == "closed") for position_id, status in await self.session.execute(query)]

    async def closed_among(self, position_ids: Sequence[int]) -> list[int]:
        """Those of these positions that are closed."""
        closed: list[int] = []
        for chunk in _chunks(sorted(position_ids)):
            query = select(_p.id).where(_p.id.in_(chunk), _p.status == "closed")
            closed.extend(await self.session.scalars(query))
        return closed

    async def closed_trades(self, position_ids: Sequence[int]) -> list[ClosedTrade]:
        """These positions, if closed, each with its funding: the settlements of its account, asset and side
        between its opening and its closing (inclusive)."""
        closed_at = func.coalesce(_p.closed_at, _p.opened_at)
        funding = (
            select(func.coalesce(func.sum(_f.amount), 0.0))
            .where(
                _f.account_id == _p.account_id,
                _f.symbol == _p.symbol,
                _f.position_side == _p.side,
                _f.funding_time >= _p.opened_at,
                _f.funding_time <= closed_at,
            )
            .scalar_subquery()
        )
        trades: list[ClosedTrade] = []
        for chunk in _chunks(position_ids):
            query = (
                select(
                    _p.id,
                    _p.decision_id,
                    _p.account_id,
                    _p.symbol,
                    _p.side,
                    _p.realized_pnl,
                    _p.fees,
                    funding,
                    _p.margin,
                    _p.exit_reason,
                    _p.opened_at,
                    _p.closed_at,
                    func.coalesce(_d.model_served, _d.model_requested),
                    _d.strategy_id,
                    _d.experiment_id,
                    _d.variant_id,
                )
                .join_from(Position.__table__, Decision.__table__, _d.id == _p.decision_id)
                .where(_p.id.in_(chunk), _p.status == "closed")
            )
            for row in await self.session.execute(query):
                trades.append(
                    ClosedTrade(
                        position_id=row[0],
                        decision_id=row[1],
                        account_id=row[2],
                        asset=row[3],
                        side=row[4],
                        realized_pnl=float(row[5]),
                        fees=float(row[6]),
                        funding=float(row[7]),
                        margin=float(row[8]),
                        exit_reason=row[9],
                        opened_at=row[10],
                        closed_at=row[11] or row[10],
                        model=row[12],
                        strategy_id=row[13],
                        experiment_id=row[14],
                        variant_id=row[15],
                    )
                )
        return trades

    async def insert_trade_outcomes(self, rows: Sequence[dict[str, Any]]) -> set[int]:
        """Store trade outcome rows, skipping positions already measured; returns the positions of those new."""
        if not rows:
            return set()
        insert = insert_for(self.session)(DecisionTradeOutcome.__table__)
        statement = insert.on_conflict_do_nothing(index_elements=["position_id"]).returning(_t.position_id)
        return set((await self.session.execute(statement, list(rows))).scalars())
