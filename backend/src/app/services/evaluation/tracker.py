"""`OutcomeTracker`: the outcome of every asset decision at every horizon, measured once the horizon has closed,
and the realized PnL of every position a decision opened, once it has closed.

`update(now)` is the incremental job the trading loop runs after its cycle (`now` on the market clock): it
measures what became due since the last run and has not been measured, and returns how many rows it wrote; run
again, it writes nothing. A horizon of h candles is due when its last candle has closed (`now >= cycle_time +
h x INTERVAL`) and is never measured before: its candles are read from the candle store (which the loop keeps
synced) up to that close only. When one of them is missing the decision's rows at that horizon are not written;
it is tried again on the next runs for `retry_candles` candles (the loop's sync back-fills gaps), then left to
`backfill` (`trading-agent outcomes backfill`). A decision still pending is waited for the same way.

Each run reads only what may be new: decisions in pages of their id, from the first one not yet settled at each
horizon up to the last one due (see `OutcomeRepository.first_decision_id_from`), and positions: those stored since
the last run, plus those it saw open. A process's first run goes on from the newest decision measured before (an
agent that was down catches up), or, on a database without outcomes, from the retry window; older decisions are
the back-fill's. Rows are inserted with ON CONFLICT DO NOTHING, so a concurrent run (another
process, a back-fill) never writes one twice. `backfill` measures every due decision (of one account, since a
moment) whatever the runs before did, and says why what it could not measure was left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock, WallClock
from app.core.metrics import AgentMetrics
from app.core.timeframes import from_ms, timeframe_delta, to_ms
from app.db.repositories.outcomes import ClosedTrade, OutcomeRepository, StoredDecision
from app.services.evaluation.outcomes import AssetCall, Outcome, asset_state_of_snapshot, call_of, measure
from app.services.market_data.base import Candle
from app.services.market_data.candle_store import CandleStore

log = logging.getLogger(__name__)

DEFAULT_HORIZONS = (1, 4, 12, 24)
BATCH_DECISIONS = 500  # decisions per page: one read and one write transaction
BATCH_POSITIONS = 1000
RETRY_CANDLES = 24  # how long `update` waits for a missing candle or a pending decision
_TICK = timedelta(microseconds=1)


def _columns(record: object, names: tuple[str, ...]) -> dict[str, Any]:
    """A flat dataclass's fields by name (`dataclasses.asdict` copies deeply: it took a quarter of a run)."""
    return {name: getattr(record, name) for name in names}


_OUTCOME_COLUMNS = tuple(f.name for f in fields(Outcome))
_TRADE_COLUMNS = tuple(f.name for f in fields(ClosedTrade))


@dataclass
class MissingCandles:
    """Outcomes of one asset that could not be measured because candles of their horizon are not stored."""

    outcomes: int = 0
    first_cycle: datetime | None = None
    last_cycle: datetime | None = None

    def add(self, cycle_time: datetime) -> None:
        self.outcomes += 1
        self.first_cycle = min(self.first_cycle or cycle_time, cycle_time)
        self.last_cycle = max(self.last_cycle or cycle_time, cycle_time)


@dataclass
class OutcomeReport:
    """What a run wrote, and what it left and why."""

    written: int = 0  # outcome rows
    trades: int = 0  # trade outcome rows
    decisions: int = 0  # decisions read
    pending: int = 0  # decisions not finished yet
    no_price: int = 0  # asset decisions without a price (no asset_state, no stored context): never measurable
    not_due: int = 0  # (decision, horizon) whose last candle had not closed
    missing: dict[str, MissingCandles] = field(default_factory=dict)  # by asset
    unmeasured: set[int] = field(default_factory=set)  # decisions with an outcome left for want of candles


@dataclass(frozen=True, slots=True)
class _Item:
    """One outcome to measure: a decision's call on an asset at a horizon."""

    decision: StoredDecision
    call: AssetCall
    horizon: int


class OutcomeTracker:
    """Measures decision outcomes from the candles `store` holds for `source_name` in `interval`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: CandleStore,
        source_name: str,
        interval: str,
        horizons: Sequence[int] = DEFAULT_HORIZONS,
        wall_clock: Clock | None = None,
        metrics: AgentMetrics | None = None,
        *,
        batch_size: int = BATCH_DECISIONS,
        retry_candles: int = RETRY_CANDLES,
    ) -> None:
        if not horizons or any(h < 1 for h in horizons):
            raise ValueError(f"horizons are whole numbers of candles >= 1, got {list(horizons)}")
        self.sessions = sessions
        self.store = store
        self.source_name = source_name
        self.interval = interval
        self.step = timeframe_delta(interval)
        self.horizons = tuple(sorted(set(horizons)))
        self.wall_clock = wall_clock or WallClock()  # evaluated_at: when it was measured, in real time
        self.metrics = metrics
        self.batch_size = batch_size
        self.retry_candles = retry_candles
        self._settled: dict[int, int] = {}  # horizon -> decisions below this id are measured or given up
        self._waiting: dict[int, set[int]] = {h: set() for h in self.horizons}  # decisions tried again
        self._positions_seen = 0  # positions up to this id have been looked at
        self._watched: set[int] = set()  # positions a decision opened, not measured yet (open when last seen)
        self._lock = asyncio.Lock()  # the state above is one run's at a time

    # ------------------------------------------------------------------------------------------ the job

    async def update(self, now: datetime) -> int:
        """Measure every outcome due by `now` (market clock) and not measured yet, and every position a decision
        opened that has closed; returns how many rows were written. Runs one at a time."""
        async with self._lock:
            written = 0
            for horizon in self.horizons:
                written += await self._update_horizon(now, horizon)
            return written + await self._update_trades()

    async def backfill(
        self, now: datetime, *, account_id: int | None = None, since: datetime | None = None
    ) -> OutcomeReport:
        """Measure every outcome due by `now` of the decisions (of `account_id`, made for a cycle at or after
        `since`) that is not stored yet, and every closed position a decision opened; what could not be measured
        is counted in the report with the reason."""
        report = OutcomeReport()
        due_by = now - self.horizons[0] * self.step
        after = 0
        while True:
            async with self.sessions() as session:
                page = await OutcomeRepository(session).decisions(
                    after_id=after, limit=self.batch_size, due_by=due_by, account_id=account_id, since=since
                )
            if not page:
                break
            report.decisions += len(page)
            items, _ = await self._items(page, now, self.horizons, report)
            rows, _ = await self._measure(items, now, report, whole=False)
            report.written += await self._insert(rows)
            after = page[-1].id
            if len(page) < self.batch_size:
                break
        report.trades = await self._backfill_trades(account_id)
        return report

    # ---------------------------------------------------------------------------------------- decisions

    async def _update_horizon(self, now: datetime, horizon: int) -> int:
        due_by = now - horizon * self.step
        async with self.sessions() as session:
            repo = OutcomeRepository(session)
            floor = await repo.first_decision_id_from(due_by - self.retry_candles * self.step)
            end = await repo.first_decision_id_from(due_by + _TICK)
            if horizon in self._settled:
                start = max(self._settled[horizon], floor)
            else:  # this process's first run: on from the last decision measured (the agent may have been down)
                last = await repo.last_measured(horizon)
                start = floor if last is None else min(last + 1, floor)
        given_up = {d for d in self._waiting[horizon] if d < floor}
        if given_up:
            log.warning(
                "%d decision(s) not measured at horizon %d (a candle of %s %s is missing or the decision never "
                "finished); `trading-agent outcomes backfill` measures them once the candles are stored",
                len(given_up),
                horizon,
                self.source_name,
                self.interval,
            )
        after = start - 1
        written = 0
        waiting: set[int] = set()
        report = OutcomeReport()
        while after + 1 < end:
            async with self.sessions() as session:
                page = await OutcomeRepository(session).decisions(
                    after_id=after, below_id=end, limit=self.batch_size, due_by=due_by, unmeasured_at=horizon
                )
            if not page:
                break
            # read `unmeasured_at` the horizon, and a decision's rows at a horizon are written together: none stored
            items, pending = await self._items(page, now, (horizon,), report, unmeasured=True)
            rows, incomplete = await self._measure(items, now, report, whole=True)
            written += await self._insert(rows)
            waiting.update(pending | incomplete)
            after = page[-1].id
            if len(page) < self.batch_size:
                break
        # from the first decision waited for on, every run reads again what is still unmeasured
        self._waiting[horizon] = waiting
        self._settled[horizon] = min(waiting, default=end)
        return written

    async def _items(
        self,
        page: list[StoredDecision],
        now: datetime,
        horizons: Sequence[int],
        report: OutcomeReport,
        *,
        unmeasured: bool = False,
    ) -> tuple[list[_Item], set[int]]:
        """The outcomes to measure of a page of decisions (those due by `now` and not stored yet), and the
        decisions still pending. `unmeasured`: the page holds no stored row at `horizons` (nothing to look up)."""
        async with self.sessions() as session:
            repo = OutcomeRepository(session)
            stateless = [d.id for d in page if d.asset_state is None and d.validation is not None]
            snapshots = await repo.context_snapshots(stateless) if stateless else {}
            stored = set() if unmeasured else await repo.measured([d.id for d in page], horizons)
        items: list[_Item] = []
        pending: set[int] = set()
        for decision in page:
            if decision.status == "pending":
                pending.add(decision.id)
                report.pending += 1
                continue
            if decision.validation is None:
                continue
            state = decision.asset_state
            if state is None:
                snapshot = snapshots.get(decision.id)
                state = asset_state_of_snapshot(snapshot) if snapshot else {}
            for verdict in decision.validation.get("verdicts") or []:
                call = call_of(verdict, state.get(verdict["asset"]))
                if call is None:
                    report.no_price += 1
                    continue
                for horizon in horizons:
                    if decision.cycle_time + horizon * self.step > now:
                        report.not_due += 1
                    elif (decision.id, call.asset, horizon) not in stored:
                        items.append(_Item(decision, call, horizon))
        return items, pending

    async def _measure(
        self, items: list[_Item], now: datetime, report: OutcomeReport, *, whole: bool
    ) -> tuple[list[dict[str, Any]], set[int]]:
        """The rows of `items` whose candles are all stored, and the decisions with an outcome left for want of
        candles. `whole`: a decision's rows at a horizon are written all together or not at all (it is tried
        again), else whatever can be measured is."""
        step_ms = self.step // timedelta(milliseconds=1)
        spans: dict[str, tuple[int, int]] = {}  # asset -> first open, last close (ms) of the candles needed
        for item in items:
            first = to_ms(item.decision.cycle_time)
            last = first + item.horizon * step_ms
            known = spans.get(item.call.asset)
            spans[item.call.asset] = (min(first, known[0]), max(last, known[1])) if known else (first, last)
        candles: dict[str, dict[int, Candle]] = {}
        for asset, (first, last) in spans.items():
            until = from_ms(last)
            if until > now:  # never: every item is due; a candle not closed by `now` must never be read
                raise AssertionError(f"{asset} candles up to {until} asked for at {now}")
            series = await self.store.load_candles(
                self.source_name, asset, self.interval, limit=(last - first) // step_ms, until=until
            )
            candles[asset] = {c.open_time_ms: c for c in series.candles()}
        evaluated_at = self.wall_clock.now()
        rows: list[dict[str, Any]] = []
        incomplete: set[tuple[int, int]] = set()
        for item in items:
            decision, call, horizon = item.decision, item.call, item.horizon
            first = to_ms(decision.cycle_time)
            stored = candles[call.asset]
            window = [stored.get(first + i * step_ms) for i in range(horizon)]
            present = [c for c in window if c is not None]
            if len(present) < horizon:
                incomplete.add((decision.id, horizon))
                report.missing.setdefault(call.asset, MissingCandles()).add(decision.cycle_time)
                report.unmeasured.add(decision.id)
                continue
            rows.append(self._row(item, present, evaluated_at))
        if whole and incomplete:
            rows = [r for r in rows if (r["decision_id"], r["horizon"]) not in incomplete]
        return rows, {decision_id for decision_id, _ in incomplete}

    def _row(self, item: _Item, window: list[Candle], evaluated_at: datetime) -> dict[str, Any]:
        decision, call = item.decision, item.call
        return {
            "decision_id": decision.id,
            "account_id": decision.account_id,
            "asset": call.asset,
            "interval": self.interval,
            "horizon": item.horizon,
            "cycle_time": decision.cycle_time,
            "model": decision.model,
            "strategy_id": decision.strategy_id,
            "experiment_id": decision.experiment_id,
            "variant_id": decision.variant_id,
            "is_shadow": decision.is_shadow,
            "action": call.action,
            "verdict": call.verdict,
            "direction": call.direction,
            "confidence": call.confidence,
            "entry_price": call.entry_price,
            "stop_price": call.stop,
            "target_price": call.target,
            **_columns(measure(call, window), _OUTCOME_COLUMNS),
            "evaluated_at": evaluated_at,
        }

    async def _insert(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        async with self.sessions.begin() as session:
            new = await OutcomeRepository(session).insert_outcomes(rows)
        if self.metrics is not None:
            for row in rows:
                if (row["decision_id"], row["asset"], row["horizon"]) in new:
                    self.metrics.observe_outcome(
                        model=row["model"],
                        horizon=row["horizon"],
                        direction_return=row["direction_return"],
                        hit=row["hit"],
                        confidence=row["confidence"],
                        shadow=bool(row["is_shadow"]),
                    )
        return len(new)

    # ---------------------------------------------------------------------------------------- positions

    async def _update_trades(self) -> int:
        """Positions stored since the last run are watched; the watched ones that have closed are measured."""
        async with self.sessions() as session:
            repo = OutcomeRepository(session)
            while True:
                page = await repo.positions_after(self._positions_seen, BATCH_POSITIONS)
                self._watched.update(position_id for position_id, _ in page)
                if page:
                    self._positions_seen = page[-1][0]
                if len(page) < BATCH_POSITIONS:
                    break
            closed = await repo.closed_among(sorted(self._watched)) if self._watched else []
        written = await self._write_trades(closed)
        self._watched.difference_update(closed)
        return written

    async def _backfill_trades(self, account_id: int | None) -> int:
        written, after = 0, 0
        while True:
            async with self.sessions() as session:
                page = await OutcomeRepository(session).positions_after(after, BATCH_POSITIONS, account_id=account_id)
            written += await self._write_trades([position_id for position_id, closed in page if closed])
            if len(page) < BATCH_POSITIONS:
                return written
            after = page[-1][0]

    async def _write_trades(self, position_ids: list[int]) -> int:
        written = 0
        for start in range(0, len(position_ids), BATCH_POSITIONS):
            chunk = position_ids[start : start + BATCH_POSITIONS]
            evaluated_at = self.wall_clock.now()
            async with self.sessions.begin() as session:
                repo = OutcomeRepository(session)
                trades = await repo.closed_trades(chunk)
                rows = [
                    {
                        **_columns(trade, _TRADE_COLUMNS),
                        "net_pnl": trade.realized_pnl - trade.fees + trade.funding,
                        "evaluated_at": evaluated_at,
                    }
                    for trade in trades
                ]
                new = await repo.insert_trade_outcomes(rows)
            if self.metrics is not None:
                for row in rows:
                    if row["position_id"] in new:
                        self.metrics.observe_trade_outcome(model=row["model"], net_pnl=row["net_pnl"])
            written += len(new)
        return written
