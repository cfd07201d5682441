"""The decision orchestrator: context -> model -> validation -> execution -> persistence, per account.

One decision at a time per account (a lock), so the loop and an API call can never trade the same
account twice at once. Within one candle a repeated request returns the stored decision unless
`force_refresh` is set. Every cycle is stored, including the ones where the model failed.

A decision is stored `pending` before its model call and always ends: with its outcome, as `error` when its
cycle failed, or as `interrupted` when the agent stopped before it completed (at shutdown, or at the next
start after a crash); an interrupted candle is decided again while it is still the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock, WallClock
from app.core.metrics import AgentMetrics
from app.core.symbols import normalise_asset
from app.core.timeframes import floor_time
from app.db import models
from app.db.repositories.decisions import DecisionRepository, symbols_key
from app.db.repositories.llm_calls import LLMCallRepository
from app.db.repositories.trading import AccountHistory, TradingRepository
from app.schemas.decision_result import DecisionResult, OrderSummary, UsageSummary
from app.schemas.trading_decision import TradingContext, TradingDecision, TradingStrategy
from app.schemas.validation import AssetVerdict, RiskState, ValidationResult
from app.services.alerts import events as alert
from app.services.alerts.events import NO_ALERTS, AlertEvent, AlertSink
from app.services.evaluation.asset_state import asset_state_of
from app.services.exchange.base import ExchangeError, ExchangeUnavailableError
from app.services.exchange.registry import LiveAccountRefusedError, VenueRegistry
from app.services.execution.executor import ExecutionReport, Executor, OrderRun
from app.services.execution.leases import AccountLocks
from app.services.execution.reconciler import Reconciler
from app.services.execution.watchdog import StopWatchdog
from app.services.limits import SharedBuckets
from app.services.llm.context_builder import ContextBuilder
from app.services.llm.decision_validator import DecisionValidator, fallback_hold
from app.services.llm.experiment_plan import AccountPlan, ExperimentPlans, VariantSpec, variant_spent_since
from app.services.llm.llm_exceptions import (
    AccountNotFoundError,
    ContextBuildingError,
    DecisionNotFoundError,
    DecisionRateLimitedError,
    UnknownAssetError,
)
from app.services.llm.llm_service import CallRecord, LLMService, is_baseline
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.llm.risk_rules import daily_loss_reached
from app.services.llm.strategy_manager import HOLD_NOTICE, StrategyManager, StrategyUnavailableError
from app.services.market_data.candle_store import stale_symbol

log = logging.getLogger(__name__)

TRADABLE = ("ACTIVE", "REDUCING")
DEFAULT_STOP_PERCENTAGE = 2.0  # the watchdog's stop distance for a position whose strategy cannot be read
MAX_DEFERRAL_S = 2.0  # the longest a model's answer waits for other accounts' preparation (see _after_preparations)


def _fallback_validation(context: TradingContext, why: str) -> ValidationResult:
    """Every asset holds (protective orders stay) because the model gave no usable decision."""
    positions = {p.symbol: p for p in context.account_state.open_positions}
    verdicts = [
        AssetVerdict(
            asset=s,
            status="rejected",
            reasons=[why],
            original=None,
            final=fallback_hold(s, why, positions.get(s)),
            is_fallback=True,
        )
        for s in context.symbols
    ]
    final = TradingDecision(
        decisions=[v.final for v in verdicts],
        portfolio_rationale=f"Fallback: {why}",
        total_allocation_usd=0.0,
        portfolio_risk_level="low",
        timestamp=context.timestamp,
    )
    return ValidationResult(is_valid=False, verdicts=verdicts, errors=[why], final_decision=final)


def _settle(row: models.Decision, validation: ValidationResult, why: str | None) -> None:
    """What validation made of the decision, on its row (`why`: the reason it fell back, if it did)."""
    row.error = why
    row.is_fallback = why is not None or validation.has_fallback
    row.validation_result = validation.model_dump(mode="json")
    row.final_decision = validation.final_decision.model_dump(mode="json")


def _prompt_text(request: ModelRequest) -> str:
    """The prompt as provenance keeps it."""
    return f"[system]\n{request.system_prompt}\n\n[user]\n{request.user_prompt}"


def _status(validation: ValidationResult, report: ExecutionReport, fallback: bool) -> str:
    if fallback:
        return "fallback"
    acting = [v for v in validation.verdicts if v.status != "rejected" and v.final.action != "hold"]
    if report.errors or any(v.status == "rejected" for v in validation.verdicts):
        return "partial" if report.executed_assets else ("no_action" if not acting else "partial")
    return "executed" if acting else "no_action"


class _AlreadyDecided(Exception):
    """The loop's decision of this (account, candle) exists already (made by another process, or before a restart)."""

    def __init__(self, result: DecisionResult) -> None:
        super().__init__(f"decision {result.id} already made for this candle")
        self.result = result


@dataclass(frozen=True, slots=True)
class _Held:
    """A decision that ended before its model call (no market context, the strategy unavailable): stored as an error.
    Its positions still get the stop watchdog's pass, as every cycle gives them."""

    result: DecisionResult


@dataclass(slots=True)
class _Prepared:
    """A decision ready for its model call: the pending row (stored) and what the rest of the cycle needs."""

    row: models.Decision
    context: TradingContext
    history: AccountHistory  # what the context was built from; the risk rules read it too
    request: ModelRequest
    strategy: TradingStrategy
    status: str
    max_leverage: float
    budget_note: str | None  # the daily LLM budget is spent: no call, hold
    plan: AccountPlan | None = None  # the running experiment the account is in
    account_model: str | None = None  # the account's own model and strategy: what a shadow variant's None keeps
    account_strategy_id: str | None = None


class DecisionEngine:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        assets: list[str],
        interval: str,
        context_builder: ContextBuilder,
        strategies: StrategyManager,
        llm: LLMService,
        validator: DecisionValidator,
        executor: Executor,
        reconciler: Reconciler,
        venues: VenueRegistry,
        daily_budget_usd: float | None = None,
        metrics: AgentMetrics | None = None,
        refreshes_per_hour: int = 12,
        max_preparing: int = 4,
        wall_clock: Clock | None = None,
        experiments: ExperimentPlans | None = None,
        watchdog: StopWatchdog | None = None,
        alerts: AlertSink = NO_ALERTS,
        locks: AccountLocks | None = None,
    ) -> None:
        """`locks`: the per-account locks (shared with other processes through the database when they are; see
        `AccountLocks`). When this process takes an account another process held since, what it cached of it (the
        paper venue, the mirror's revision) is dropped and rebuilt from the database: the other may have traded it."""
        self.alerts = alerts  # a trader hears of a spent budget, the daily loss limit, refused orders and stops
        self.daily_budget_usd = daily_budget_usd
        self.watchdog = watchdog or StopWatchdog()
        self.experiments = experiments  # what running A/B experiments ask of each account's decisions
        self.refreshes_per_hour = refreshes_per_hour
        # forced refreshes, the daily LLM budget and the model calls' times run in real time, not market time
        self.wall_clock = wall_clock or WallClock()
        self._buckets = SharedBuckets(sessions)  # forced refreshes, counted in the database
        self.metrics = metrics
        self.sessions = sessions
        self.clock = clock
        self.assets = assets
        self.interval = interval
        self.context_builder = context_builder
        self.strategies = strategies
        self.llm = llm
        self.validator = validator
        self.executor = executor
        self.reconciler = reconciler
        self.venues = venues
        self._handed_over: set[int] = set()  # accounts another process held since this one last did
        self.locks = locks or AccountLocks()
        if self.locks.on_take is None:
            self.locks.on_take = self._forget_account
        # Preparing a decision (reads, context, prompt) is CPU work with no waiting worth overlapping: a few at a
        # time finish early and put their model calls in flight, where all preparing at once finish together.
        self._preparing = asyncio.Semaphore(max_preparing)
        # Model calls are the long pole of a cycle: an answer that comes back while other accounts still wait to
        # prepare theirs is acted on once they are all in flight (or after MAX_DEFERRAL_S at most).
        self._waiting_to_prepare = 0
        self._all_prepared = asyncio.Event()
        self._all_prepared.set()
        self._in_flight: set[int] = set()  # pending decisions whose cycle is running in this process
        self._shadows: set[asyncio.Task[None]] = set()  # experiments' shadow decisions being made
        self._shadow_queue: list[tuple[_Prepared, VariantSpec, int, datetime]] = []  # until the cycle's end
        self._variant_spend: dict[tuple[int, datetime], float] = {}  # (variant, UTC day) -> USD spent

    # ------------------------------------------------------------------------------------------ public
    def resolve_symbols(self, symbols: list[str] | None) -> list[str]:
        """Normalise requested symbols (`BTCUSDT` -> `BTC`); None means every configured asset."""
        if not symbols:
            return list(self.assets)
        resolved: list[str] = []
        for raw in symbols:
            try:
                asset = normalise_asset(raw)
            except ValueError as exc:
                raise UnknownAssetError(str(exc)) from exc
            if asset not in self.assets:
                raise UnknownAssetError(
                    f"unknown symbol {raw!r}: this agent trades {', '.join(self.assets)} (set ASSETS to change)"
                )
            if asset not in resolved:
                resolved.append(asset)
        return resolved

    async def make_trading_decision(
        self,
        symbols: list[str] | None,
        account_id: int,
        strategy_override: str | None = None,
        *,
        trigger: str = "api",
        force_refresh: bool = False,
    ) -> DecisionResult:
        """Run one decision cycle for `account_id` over `symbols` and return what it produced."""
        assets = self.resolve_symbols(symbols)
        async with self.locks.decide(account_id):
            if account_id in self._handed_over:  # another process held it: it may have been killed mid-cycle
                self._handed_over.discard(account_id)
                await self._interrupt_orphans_of(account_id)
            try:
                return await self._decide(assets, account_id, strategy_override, trigger, force_refresh)
            except _AlreadyDecided as done:
                return done.result
            finally:
                structlog.contextvars.unbind_contextvars("decision_id", "account_id")

    async def _interrupt_orphans_of(self, account_id: int) -> None:
        """Decisions of the account left pending by a process that was killed mid-cycle: this process holds the
        account now, so nobody else is deciding it (on a shared database the start of one process cannot tell the
        pending decisions of the others from orphans). Asked only after the account changed hands, not every cycle."""
        async with self.sessions.begin() as session:
            repo = DecisionRepository(session)
            orphans = [i for i in await repo.pending_ids(account_id) if i not in self._in_flight]
            ended = await repo.end_pending(
                "interrupted", "interrupted: the process deciding it stopped before it completed", ids=orphans
            )
        if ended:
            log.warning("account %s: decisions a stopped process left pending, now interrupted: %s", account_id, ended)
        self._count_ended("interrupted", ended)

    def _forget_account(self, account_id: int) -> None:
        """What this process cached of the account is rebuilt from the database at its next use, and its decisions left
        pending are looked for at its next decision."""
        self._handed_over.add(account_id)
        self.venues.forget_paper(account_id)
        self.reconciler.forget(account_id)

    async def get_decision_history(
        self,
        account_id: int,
        limit: int = 100,
        symbol: str | None = None,
        *,
        before_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, object]]:
        """Stored decisions of an account, newest first, as the JSON of their `DecisionResult` (orders included,
        provenance left out): lists are read far more often than they are written, so no models are built."""
        asset = self.resolve_symbols([symbol])[0] if symbol else None
        async with self.sessions() as session:
            items = await DecisionRepository(session).history(
                account_id, limit=limit, symbol=asset, before_id=before_id, since=since, until=until
            )
            # Every decision belongs to an account: only an empty page needs to ask whether the account exists.
            if not items and await session.get(models.Account, account_id) is None:
                raise AccountNotFoundError(account_id)
        return items

    async def get_decision(
        self, decision_id: int, *, account_id: int | None = None, provenance: bool = True
    ) -> DecisionResult:
        """One stored decision with its orders and, unless `provenance` is False, what it was made from (the
        context the model saw and the prompt it was sent). With `account_id`, a decision of another account is
        not found, and nothing more of it is read."""
        async with self.sessions() as session:
            repo = DecisionRepository(session)
            row = await repo.get(decision_id)
            if row is None or (account_id is not None and row.account_id != account_id):
                raise DecisionNotFoundError(decision_id)
            orders = await TradingRepository(session).orders_for_decision(decision_id)
            made_from = await repo.provenance(decision_id) if provenance else None
            if made_from is not None and made_from.context_snapshot is None and row.shadow_of is not None:
                # a shadow decision was made on its executed decision's context: shown from there
                executed = await repo.provenance(row.shadow_of)
                made_from = models.DecisionProvenance(
                    decision_id=decision_id,
                    context_snapshot=executed.context_snapshot if executed is not None else None,
                    prompt=made_from.prompt,
                )
        return to_result(row, orders, made_from)

    async def switch_strategy(self, account_id: int, strategy_id: str, reason: str = "switch_strategy") -> bool:
        """Assign another strategy to the account (recorded with the reason); False when it is unknown."""
        return await self.strategies.update_account_strategy(account_id, strategy_id, reason)

    async def sync_account(self, account_id: int) -> None:
        """Bring the account's venue up to the clock and mirror it into the database. A live account that cannot be
        reconciled (its venue does not answer or refuses) is not traded: the reason is recorded (`/health`, the
        account) and the cycle stops here, before any model call or order."""
        exchange = await self.venues.exchange_for(account_id)
        exchange.refresh()  # a new moment: what was read before (the last cycle, before the model call) is old
        await self.venues.advance(account_id, self.clock.now())
        if self.reconciler.is_current(account_id, exchange):
            return
        try:
            async with self.sessions.begin() as session:
                await self.reconciler.sync(session, account_id, exchange)
        except (ExchangeError, ExchangeUnavailableError) as exc:
            if not self.venues.is_live(account_id):
                raise
            self.venues.refuse(account_id, f"could not reconcile with the venue: {exc}")
            self.alerts.emit(
                alert.reconciliation(
                    account_id, f"could not reconcile with the venue: {exc}; the account is not traded until it can"
                )
            )
            raise LiveAccountRefusedError(
                f"live account {account_id}: could not reconcile with the venue: {exc}",
                temporary=isinstance(exc, ExchangeUnavailableError),
            ) from None
        if self.venues.is_live(account_id):
            self.venues.accept(account_id)

    def execution_lock(self, account_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while orders are sent for the account and mirrored (a decision's execution, a watchdog pass, a halt's
        flattening): they never interleave, in this process or across processes sharing the database."""
        return self.locks.execute(account_id)

    async def _status_now(self, account_id: int, before: str) -> str:
        async with self.sessions() as session:
            account = await session.get(models.Account, account_id)
        return account.status if account is not None else before

    async def check_account(self, account_id: int, *, synced: bool = False) -> None:
        """Reconcile the account with its venue (unless `synced`: the caller just did) and make sure every open
        position has a protective stop, outside any decision's execution (start-up; a paused or halted account's
        cycle; a decision that ended before its model call): the watchdog's orders are named after the wall-clock
        moment (`w{ms}`)."""
        async with self.execution_lock(account_id):
            if not synced:
                await self.sync_account(account_id)
            await self._guard_account(account_id)

    async def _guard_account(self, account_id: int) -> None:
        exchange = await self.venues.exchange_for(account_id)
        async with self.sessions() as session:
            account = await session.get(models.Account, account_id)
            strategy_id = account.strategy_id if account is not None else None
        try:
            strategy = await self.strategies.runnable_strategy(strategy_id) if strategy_id else None
        except StrategyUnavailableError:
            strategy = None
        stop_pct = strategy.risk_parameters.stop_loss_percentage if strategy else DEFAULT_STOP_PERCENTAGE
        run = OrderRun(exchange, account_id, f"w{int(self.wall_clock.now().timestamp() * 1000)}", ExecutionReport())
        levels = await self._known_stop_levels(account_id)
        guard = await self.watchdog.check(exchange, run, levels=levels, stop_loss_percentage=stop_pct)
        for problem in guard.problems:
            log.warning("account %s, stop watchdog: %s", account_id, problem)
        self._alert(run.report.alerts)
        if run.report.orders:
            async with self.sessions.begin() as session:
                await self.reconciler.sync(session, account_id, exchange, placed=run.report.orders)

    async def _known_stop_levels(self, account_id: int) -> dict[str, float]:
        """The stop level of each open position: the last stop order placed for it (open or not: a stop cancelled
        by hand at the venue keeps its level), else the stop last seen at the venue."""
        async with self.sessions() as session:
            repo = TradingRepository(session)
            levels: dict[str, float] = {}
            for position in await repo.open_positions(account_id):
                last = await repo.last_stop_level(account_id, position.symbol, position.opened_at)
                level = last if last is not None else position.stop_loss
                if level is not None:
                    levels[position.symbol] = level
            return levels

    # ------------------------------------------------------------------------------------------- cycle
    async def _decide(
        self,
        assets: list[str],
        account_id: int,
        strategy_override: str | None,
        trigger: str,
        force_refresh: bool,
    ) -> DecisionResult:
        now = self.clock.now()
        self._waiting_to_prepare += 1
        self._all_prepared.clear()
        try:
            async with self._preparing:
                prepared = await self._prepare(assets, account_id, strategy_override, trigger, force_refresh, now)
        finally:
            self._waiting_to_prepare -= 1
            if not self._waiting_to_prepare:
                self._all_prepared.set()
        if isinstance(prepared, DecisionResult):  # from the cache
            return prepared
        if isinstance(prepared, _Held):  # `_prepare` reconciled the account already
            await self.check_account(account_id, synced=True)
            return prepared.result
        # Every log line from here on (model calls, orders) carries the decision and the account.
        decision_id = prepared.row.id
        structlog.contextvars.bind_contextvars(decision_id=decision_id, account_id=account_id)
        try:
            decided = await self._conclude(prepared, account_id, now)
        except asyncio.CancelledError:
            raise  # still in flight: the shutdown marks it interrupted (see `interrupt_in_flight`)
        except Exception as exc:  # the cycle failed after its pending row was stored: say so on the row
            self._in_flight.discard(decision_id)
            await self._end(decision_id, "error", f"cycle failed: {type(exc).__name__}: {exc}")
            raise
        self._in_flight.discard(decision_id)
        if prepared.plan is not None and prepared.plan.shadows:
            self._start_shadows(prepared, account_id, now, deferred=prepared.row.trigger == "loop")
        return decided

    async def interrupt_in_flight(self, reason: str) -> list[int]:
        """Mark the decisions this engine left pending (their cycle was cancelled) as interrupted; returns them."""
        ids, self._in_flight = self._in_flight, set()
        if not ids:
            return []
        async with self.sessions.begin() as session:
            ended = await DecisionRepository(session).end_pending("interrupted", reason, ids=ids)
        self._count_ended("interrupted", ended)
        return ended

    async def interrupt_orphans(self, reason: str) -> list[int]:
        """At start-up: every decision still pending was left by a process that stopped or crashed mid-cycle
        (nothing will ever finish it): mark it interrupted with the reason; returns the ids."""
        async with self.sessions.begin() as session:
            ended = await DecisionRepository(session).end_pending("interrupted", reason)
        if ended:
            log.warning("%d decision(s) left pending by an earlier run marked interrupted: %s", len(ended), ended)
        self._count_ended("interrupted", ended)
        return ended

    async def _end(self, decision_id: int, status: str, reason: str) -> None:
        """Give one pending decision its final status (its cycle could not store an outcome)."""
        try:
            async with self.sessions.begin() as session:
                ended = await DecisionRepository(session).end_pending(status, reason, ids=[decision_id])
        except Exception:  # the database itself failed: the next start marks the row interrupted
            log.exception("could not mark decision %s %s", decision_id, status)
            return
        self._count_ended(status, ended)

    def _counted(self, result: DecisionResult) -> DecisionResult:
        """`result`, counted in the metrics: a decision stored already ended (in `error`), without an outcome
        of its own to record (every stored decision is counted once, whichever way it ended)."""
        if self.metrics is not None:
            self.metrics.observe(result)
        return result

    def _count_ended(self, status: str, ended: list[int]) -> None:
        if self.metrics is not None and ended:
            self.metrics.decisions.labels(status).inc(len(ended))

    async def _prepare(
        self,
        assets: list[str],
        account_id: int,
        strategy_override: str | None,
        trigger: str,
        force_refresh: bool,
        now: datetime,
    ) -> DecisionResult | _Held | _Prepared:
        """Everything before the model call: the account, the cache, the context, the prompt and the pending
        row (stored before the call, so a crash while the model thinks still leaves a trace)."""
        cycle_time = floor_time(now, self.interval)
        plan = await self.experiments.plan_for(account_id) if self.experiments is not None else None
        variant = plan.executed if plan is not None else None
        async with self.sessions() as session:
            account = await session.get(models.Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            status, max_leverage, account_model = account.status, account.max_leverage, account.model
            daily_budget = account.daily_llm_budget_usd
            if daily_budget is None:
                daily_budget = self.daily_budget_usd
            own_model, own_strategy_id = account_model, account.strategy_id
            if variant is not None and variant.model is not None:
                account_model = variant.model  # the experiment's variant decides for this account
            strategy_id = strategy_override or (variant.strategy_id if variant else None) or account.strategy_id
            if force_refresh:
                await self._take_refresh(account_id)
            else:
                cached = await self._cached(session, account_id, cycle_time, assets, strategy_id)
                if cached is not None:
                    return cached

        unavailable: StrategyUnavailableError | None = None
        try:
            strategy = await self.strategies.runnable_strategy(strategy_id)
        except StrategyUnavailableError as exc:  # deactivated or invalid: the account holds, told why, not broken
            unavailable = exc
        await self.sync_account(account_id)
        row = models.Decision(
            account_id=account_id,
            cycle_time=cycle_time,
            trigger=trigger,
            status="pending",
            symbols=assets,
            symbols_key=symbols_key(assets),
            strategy_id=strategy_id,
            model_requested=self.llm.resolve_model(account_model),
            is_fallback=False,
            created_at=now,
            experiment_id=plan.experiment_id if plan is not None else None,
            variant_id=variant.id if variant is not None else None,
        )
        if unavailable is not None:  # no model call, no order: stored with the reason
            row.status, row.is_fallback, row.model_requested = "error", True, None
            row.error = f"strategy: {unavailable}; {HOLD_NOTICE}"
            await self._store_new(row)
            return _Held(self._counted(to_result(row, [])))
        try:
            context, history = await self.context_builder.build_with_history(
                assets, account_id, strategy, account=account
            )
        except ContextBuildingError as exc:
            self.alerts.emit(alert.market_stale(self.context_builder.market.name, f"account {account_id}: {exc}"))
            row.status, row.error, row.is_fallback = "error", f"context: {exc}", True
            await self._store_new(row)
            return _Held(self._counted(to_result(row, [])))

        request = self.llm.request_for(
            assets,
            context,
            account_model,
            prompt_version=variant.prompt_version if variant else None,
            temperature=variant.temperature if variant else None,
        )
        budget_note = await self._budget_exhausted(account_id, daily_budget)
        if budget_note is not None:
            self.alerts.emit(alert.budget_spent(account_id, budget_note))
        if budget_note is None and variant is not None:
            budget_note = await self._variant_budget_spent(variant)
        row.context_errors = list(context.errors)
        for error in context.errors:  # one alert per stale asset and quiet period, whichever account saw it
            if (asset := stale_symbol(error)) is not None:
                self.alerts.emit(alert.asset_stale(self.context_builder.market.name, asset, error))
        row.asset_state = asset_state_of(context)
        provenance = models.DecisionProvenance(
            context_snapshot=context.model_dump(mode="json"),
            prompt=_prompt_text(request),
        )
        await self._store_new(row, provenance)
        return _Prepared(
            row=row,
            context=context,
            history=history,
            request=request,
            strategy=strategy,
            status=status,
            max_leverage=max_leverage,
            budget_note=budget_note,
            plan=plan,
            account_model=own_model,
            account_strategy_id=own_strategy_id,
        )

    async def _store_new(self, row: models.Decision, provenance: models.DecisionProvenance | None = None) -> None:
        """Store a new decision (a pending one is in flight from its insert on: a stop that lands even while it commits
        marks it interrupted). The database refuses a second loop decision of one (account, candle), whichever process
        made the first: `_AlreadyDecided` then carries the stored one."""
        try:
            async with self.sessions.begin() as session:
                await DecisionRepository(session).add(row, provenance)
                if row.status == "pending":
                    self._in_flight.add(row.id)
        except IntegrityError:
            if row.id is not None:
                self._in_flight.discard(row.id)
            if row.trigger != "loop":
                raise
            async with self.sessions() as session:
                stored = await DecisionRepository(session).loop_decision(row.account_id, row.cycle_time)
                if stored is None:
                    raise
                orders = await TradingRepository(session).orders_for_decision(stored.id)
            log.info("account %s: candle %s decided already (decision %s)", row.account_id, row.cycle_time, stored.id)
            raise _AlreadyDecided(to_result(stored, orders)) from None

    async def _conclude(self, prepared: _Prepared, account_id: int, now: datetime) -> DecisionResult:
        """The model call, validation, execution, and the stored outcome."""
        row, context, status, max_leverage = prepared.row, prepared.context, prepared.status, prepared.max_leverage
        decision_id = row.id
        response: ModelResponse | None = None
        fallback_why: str | None = None
        calls: list[CallRecord] = []
        if prepared.budget_note is not None:
            fallback_why, row.failure = prepared.budget_note, "budget"
        else:
            calls, response, fallback_why = await self._ask(row, prepared.request)
            await self._after_preparations()
        validation = await self._validate(response, fallback_why, prepared, context, account_id, now)

        # Orders, the watchdog and the mirror run under the account's execution lock, which a halt takes too; the
        # status is read again here: a halt that came while the model was thinking sends no order.
        async with self.execution_lock(account_id):
            status = await self._status_now(account_id, status)
            exchange = await self.venues.exchange_for(account_id)
            exchange.refresh()  # the venue may have moved while the model thought
            run = OrderRun(exchange, account_id, f"d{decision_id}", ExecutionReport(), decision_id)
            report = run.report  # what was sent is kept even when the venue fails mid-way
            if status in TRADABLE:
                try:
                    await self.executor.execute(
                        exchange,
                        validation.verdicts,
                        account_id=account_id,
                        decision_id=decision_id,
                        strategy=prepared.strategy,
                        account_max_leverage=max_leverage,
                        prices={s: a.current_price for s, a in context.market_data.assets.items()},
                        allow_new_exposure=status == "ACTIVE",
                        run=run,
                    )
                except Exception as exc:  # the venue failed mid-way: record it, keep what was done
                    log.exception("execution failed for account %s decision %s", account_id, decision_id)
                    report.errors.append(f"execution stopped: {type(exc).__name__}: {exc}")
            await self._guard_stops(run, validation, prepared.strategy)
            self._alert(report.alerts)

            async with self.sessions.begin() as session:
                await self._store_calls(session, calls, account_id, decision_id, self.wall_clock.now())
                self._count_variant_spend(row.variant_id, calls)
                await self.reconciler.sync(
                    session,
                    account_id,
                    exchange,
                    placed=report.orders,
                    decision_id=decision_id,
                    intents=report.intents,
                )
                balance = await exchange.fetch_balance()
                equity = balance.equity
                await self.reconciler.snapshot_equity(session, account_id, balance, now)
                _settle(row, validation, fallback_why)
                row.execution_errors = report.errors
                row.status = (
                    "skipped" if status not in TRADABLE else _status(validation, report, fallback_why is not None)
                )
                if status not in TRADABLE:
                    row.execution_errors = [f"account is {status}: no orders were sent"]
                await DecisionRepository(session).record_outcome(row)
                # only this execution placed orders for this decision
                orders = await TradingRepository(session).orders_for_decision(decision_id) if report.orders else []
                decided = to_result(row, orders)
        if self.metrics is not None:
            self.metrics.observe(decided, equity)
        return decided

    async def _guard_stops(self, run: OrderRun, validation: ValidationResult, strategy: TradingStrategy) -> None:
        """The watchdog's pass of this cycle: every open position has a protective stop at the venue (its orders are
        this decision's, their client ids going on from the execution's). A failure is recorded, never raised."""
        try:
            levels = await self._known_stop_levels(run.account_id)
            for verdict in validation.verdicts:
                item = verdict.final
                if verdict.status == "rejected":
                    continue
                if item.order_adjustment is not None and item.order_adjustment.new_sl_price is not None:
                    levels[item.asset] = item.order_adjustment.new_sl_price
                elif item.position_adjustment is not None and item.position_adjustment.new_sl_price is not None:
                    levels[item.asset] = item.position_adjustment.new_sl_price
                elif item.action in ("buy", "sell") and item.sl_price is not None:
                    levels[item.asset] = item.sl_price
            guard = await self.watchdog.check(
                run.exchange,
                run,
                levels=levels,
                stop_loss_percentage=strategy.risk_parameters.stop_loss_percentage,
            )
            run.report.errors.extend(guard.problems)
        except Exception as exc:  # the venue failed: the next cycle checks again
            log.warning("stop watchdog for account %s failed: %s", run.account_id, exc)
            run.report.errors.append(f"stop watchdog: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------------------------- experiments
    def _start_shadows(self, prepared: _Prepared, account_id: int, now: datetime, *, deferred: bool) -> None:
        """The experiment's other variants decide on this executed decision's context once it is done, each stored
        as a `shadow` decision. In the loop (`deferred`) they start when every executed decision of the cycle is
        done (`shadows_done`): their model calls and CPU time never delay a decision that trades (measured in
        benchmarks/bench_shadow_experiment.py). Their model calls also yield a slot to any executed call."""
        assert prepared.plan is not None
        for variant in prepared.plan.shadows:
            if deferred:
                self._shadow_queue.append((prepared, variant, account_id, now))
            else:
                self._launch_shadow(prepared, variant, account_id, now)

    def _launch_shadow(self, prepared: _Prepared, variant: VariantSpec, account_id: int, now: datetime) -> None:
        task = asyncio.create_task(self._shadow(prepared, variant, account_id, now))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def shadows_done(self) -> None:
        """Make the shadow decisions waiting for the cycle's end, and wait until every one started is stored."""
        queued, self._shadow_queue = self._shadow_queue, []
        for prepared, variant, account_id, now in queued:
            self._launch_shadow(prepared, variant, account_id, now)
        while self._shadows:
            await asyncio.wait(set(self._shadows))

    async def cancel_shadows(self) -> None:
        """Stop the shadow decisions being made (at shutdown): nothing trades on them, they are not stored."""
        self._shadow_queue = []
        tasks = set(self._shadows)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _shadow(self, prepared: _Prepared, variant: VariantSpec, account_id: int, now: datetime) -> None:
        try:
            await self._decide_shadow(prepared, variant, account_id, now)
        except asyncio.CancelledError:
            raise
        except Exception:  # a shadow never breaks the account's cycle
            log.exception("shadow decision of variant %s failed for account %s", variant.name, account_id)

    async def _decide_shadow(self, prepared: _Prepared, variant: VariantSpec, account_id: int, now: datetime) -> None:
        """One variant's decision on the executed decision's context: the model's answer and its validation against
        the same account state are stored (status `shadow`, `shadow_of` the executed decision); no order is sent."""
        control = prepared.row
        context = prepared.context
        # A field the variant leaves None keeps the account's own setting (not the control's)
        strategy_id = variant.strategy_id or prepared.account_strategy_id or control.strategy_id
        row = models.Decision(
            account_id=account_id,
            cycle_time=control.cycle_time,
            trigger=control.trigger,
            status="shadow",
            symbols=list(control.symbols),
            symbols_key=control.symbols_key,
            strategy_id=strategy_id,
            model_requested=self.llm.resolve_model(variant.model or prepared.account_model),
            is_fallback=False,
            created_at=now,  # as the executed decision's
            asset_state=control.asset_state,
            context_errors=control.context_errors,
            experiment_id=variant.experiment_id,
            variant_id=variant.id,
            shadow_of=control.id,
        )
        calls: list[CallRecord] = []
        why: str | None = None
        response: ModelResponse | None = None
        prompt: str | None = None
        strategy = None
        if strategy_id is not None and strategy_id != context.account_state.active_strategy.strategy_id:
            try:
                strategy = await self.strategies.runnable_strategy(strategy_id)
            except StrategyUnavailableError as exc:
                why, row.failure = f"strategy: {exc}", "strategy"
        if strategy is not None:
            account_state = context.account_state.model_copy(update={"active_strategy": strategy})
            context = context.model_copy(update={"account_state": account_state})
        if why is None:
            why = await self._variant_budget_spent(variant)
            if why is not None:
                row.failure = "budget"
        if why is None:
            request = self.llm.request_for(
                list(control.symbols),
                context,
                variant.model or prepared.account_model,
                prompt_version=variant.prompt_version,
                temperature=variant.temperature,
            )
            prompt = _prompt_text(request)
            calls, response, why = await self._ask(row, request, shadow=True)
        _settle(row, await self._validate(response, why, prepared, context, account_id, now, shadow=True), why)
        # The context is the executed decision's (`shadow_of`); only the prompt is this variant's own.
        provenance = models.DecisionProvenance(context_snapshot=None, prompt=prompt)
        async with self.sessions.begin() as session:
            await DecisionRepository(session).add(row, provenance)
            await self._store_calls(session, calls, account_id, row.id, self.wall_clock.now())
        self._count_variant_spend(row.variant_id, calls)
        if self.metrics is not None:  # counted as `shadow`, with its model's latency, tokens and cost (real money)
            self.metrics.observe(to_result(row, []))

    async def _variant_budget_spent(self, variant: VariantSpec) -> str | None:
        """A note when the variant's own daily budget (real money, wall-clock UTC day) is spent."""
        budget = variant.daily_budget_usd
        if budget is None or (self.llm.is_simulated and not variant.model) or is_baseline(variant.model):
            return None
        spent = await self._variant_spent_today(variant.id)
        if spent < budget:
            return None
        return (
            f"the experiment variant {variant.name!r} spent its daily LLM budget: {spent:.4f} of {budget:.2f} USD "
            "today (UTC); no model call for it until tomorrow"
        )

    async def _variant_spent_today(self, variant_id: int) -> float:
        """What the variant's decisions spent on model calls today (UTC, wall clock): read from the database once a
        day, then counted as this process stores their calls (`_count_variant_spend`), so that a check before every
        decision is not a query over every decision the variant made; read every time when other processes share the
        database (they spend too)."""
        today = floor_time(self.wall_clock.now(), "1d")
        key = (variant_id, today)
        if self.locks.shared:  # other processes spend on the variant too: what is stored is the only count
            async with self.sessions() as session:
                return await variant_spent_since(session, variant_id, today)
        if key not in self._variant_spend:
            async with self.sessions() as session:
                spent = await variant_spent_since(session, variant_id, today)
            if key not in self._variant_spend:  # nobody read it while this one waited
                self._variant_spend = {k: v for k, v in self._variant_spend.items() if k[1] == today}
                self._variant_spend[key] = spent
        return self._variant_spend[key]

    def _count_variant_spend(self, variant_id: int | None, calls: list[CallRecord]) -> None:
        if variant_id is None:
            return
        key = (variant_id, floor_time(self.wall_clock.now(), "1d"))
        if key in self._variant_spend:  # not read yet today: the day's first read counts these from the database
            self._variant_spend[key] += sum(c.response.usage.cost_usd or 0.0 for c in calls if c.response is not None)

    async def _ask(
        self, row: models.Decision, request: ModelRequest, *, shadow: bool = False
    ) -> tuple[list[CallRecord], ModelResponse | None, str | None]:
        """The model's answer, recorded on `row`: the calls made, the response, and why the decision falls back
        (None when there is a usable decision)."""
        result = await self.llm.generate(request, shadow=shadow)
        response = result.response
        if response is None:
            row.failure = "api_error"
            row.latency_ms = sum(c.latency_ms for c in result.calls)
            return result.calls, None, f"no model answered: {result.error}"
        self._record_response(row, response)
        why = None if response.decision is not None else f"unusable model answer ({response.failure}): {response.error}"
        return result.calls, response, why

    async def _validate(
        self,
        response: ModelResponse | None,
        why: str | None,
        prepared: _Prepared,
        context: TradingContext,
        account_id: int,
        now: datetime,
        *,
        shadow: bool = False,
    ) -> ValidationResult:
        """The model's decision checked against the account's state, or every asset holding with `why`."""
        if response is None or response.decision is None:
            return _fallback_validation(context, why or "no decision")
        state = await self.risk_state(
            account_id, prepared.status, prepared.max_leverage, context, now, prepared.history
        )
        daily = None if shadow else daily_loss_reached(context.account_state.active_strategy, state)
        if daily is not None:
            self.alerts.emit(alert.daily_loss_limit(account_id, daily))
        return await self.validator.validate_decision(response.decision, context, state)

    async def _after_preparations(self) -> None:
        """Wait until no decision waits to be prepared (every model call of the cycle is in flight), at most
        MAX_DEFERRAL_S: acting on an answer first would delay the calls not yet made by its CPU time."""
        if self._all_prepared.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MAX_DEFERRAL_S):
                await self._all_prepared.wait()

    async def risk_state(
        self,
        account_id: int,
        status: str,
        max_leverage: float,
        context: TradingContext,
        now: datetime,
        history: AccountHistory | None = None,
    ) -> RiskState:
        """The account's day, recent entries and limits, for the validator's rules (`history`: the account's
        stored past, as read for `context`; read again when not given)."""
        if history is None:
            async with self.sessions() as session:
                history = await TradingRepository(session).account_history(account_id, now)
        start_equity, last_entries = history.day_start_equity, history.last_entries
        if start_equity is None:  # nothing recorded yet: the day starts from the initial balance (equity - PnL)
            start_equity = context.account_state.balance_usd - context.account_state.total_pnl
        rules = await self.venues.rules()
        profile = self.venues.profile
        equity = context.account_state.balance_usd
        return RiskState(
            now=now,
            reduce_only_reason="the account is REDUCING" if status == "REDUCING" else None,
            day_start_equity=start_equity,
            day_pnl_usd=equity - start_equity if start_equity is not None else 0.0,
            last_trade_at=last_entries,
            account_max_leverage=max_leverage,
            venue_max_leverage={
                symbol: min(r.max_leverage, self.venues.profile.max_leverage.get(symbol, r.max_leverage))
                for symbol, r in rules.items()
            },
            maintenance_margin_rate=self.venues.maintenance_margin_rate,
            # the rate the paper venue liquidates at: per asset on Hyperliquid (1 / (2 x the asset's max leverage))
            maintenance_margin_rates={
                symbol: profile.maintenance_rate(min(r.max_leverage, profile.max_leverage.get(symbol, float("inf"))))
                for symbol, r in rules.items()
            },
        )

    # ----------------------------------------------------------------------------------------- helpers
    def _alert(self, events: list[AlertEvent]) -> None:
        for event in events:
            self.alerts.emit(event)

    async def _take_refresh(self, account_id: int) -> None:
        """Count a forced decision (it bypasses the per-candle cache and costs a model call): `refreshes_per_hour` per
        account at once, then one more every hour / `refreshes_per_hour`, on the wall clock (a rate limit protects real
        money and real time: on an accelerated market clock an hour passes in seconds, and Retry-After must be real
        seconds). A bucket in the database, so every process sharing it (API servers, workers) counts the same."""
        limit = self.refreshes_per_hour
        wait = (
            await self._buckets.take(
                f"refresh:account:{account_id}", capacity=limit, per_second=limit / 3600, now=self.wall_clock.now()
            )
            if limit
            else 3600.0
        )
        if wait is not None:
            raise DecisionRateLimitedError(
                f"account {account_id} used its forced decisions: at most {limit} an hour "
                f"(DECISION_REFRESHES_PER_HOUR), the next in {math.ceil(wait)} s; the cached decision of this candle "
                "is still available without force_refresh",
                retry_after_s=max(1, math.ceil(wait - 1e-9)),
            )

    async def _budget_exhausted(self, account_id: int, budget: float | None) -> str | None:
        """A note when the account's LLM spend today reached its budget: real money on the real day (UTC, wall
        clock), whatever the market clock says (a replay or a simulation runs through days in minutes)."""
        if budget is None or self.llm.is_simulated:
            return None
        async with self.sessions() as session:
            today = floor_time(self.wall_clock.now(), "1d")
            spent = await LLMCallRepository(session).spent_since(account_id, today)
        if spent < budget:
            return None
        return (
            f"daily LLM budget spent: {spent:.4f} of {budget:.2f} USD today (UTC); no model call until tomorrow, "
            "holding with protective orders in place"
        )

    @staticmethod
    async def _store_calls(
        session: AsyncSession, calls: list[CallRecord], account_id: int, decision_id: int, now: datetime
    ) -> None:
        """The decision's model calls, stamped `now` on the wall clock (spend and usage are real-time records)."""
        rows = []
        for call in calls:
            response = call.response
            usage = response.usage if response else None
            rows.append(
                models.LLMCall(
                    account_id=account_id,
                    decision_id=decision_id,
                    model_requested=call.model,
                    model_served=response.model_served if response else None,
                    provider=response.provider if response else None,
                    generation_id=response.generation_id if response else None,
                    outcome=call.outcome,
                    status_code=call.status_code,
                    error=call.error,
                    attempts=response.attempts if response else 1,
                    reasked=response.reasked if response else False,
                    finish_reason=response.finish_reason if response else None,
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                    reasoning_tokens=usage.reasoning_tokens if usage else None,
                    cached_tokens=usage.cached_tokens if usage else None,
                    cost_usd=usage.cost_usd if usage else None,
                    cost_estimated=response.cost_estimated if response else False,
                    latency_ms=call.latency_ms,
                    created_at=now,
                )
            )
        await LLMCallRepository(session).add_all(rows)

    @staticmethod
    def _record_response(row: models.Decision, response: ModelResponse) -> None:
        row.model_served = response.model_served
        row.provider = response.provider
        row.raw_response = response.raw_text
        row.first_raw_response = response.first_raw_text
        row.parsed_decision = response.decision.model_dump(mode="json") if response.decision else None
        row.finish_reason = response.finish_reason
        row.failure = response.failure
        row.prompt_tokens = response.usage.prompt_tokens
        row.completion_tokens = response.usage.completion_tokens
        row.total_tokens = response.usage.total_tokens
        row.cost_usd = response.usage.cost_usd
        row.latency_ms = response.latency_ms

    async def _cached(
        self, session: AsyncSession, account_id: int, cycle_time: datetime, assets: list[str], strategy_id: str
    ) -> DecisionResult | None:
        """The decision already made for this candle, assets and strategy (so a repeat never trades twice)."""
        row = await DecisionRepository(session).made_for(account_id, cycle_time, symbols_key(assets), strategy_id)
        if row is None:
            return None
        orders = await TradingRepository(session).orders_for_decision(row.id)
        return to_result(row, orders)


def to_result(
    row: models.Decision, orders: list[models.Order], provenance: models.DecisionProvenance | None = None
) -> DecisionResult:
    """The API view of a stored decision (with what it was made from when `provenance` is given)."""
    usage = UsageSummary(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        total_tokens=row.total_tokens,
        cost_usd=row.cost_usd,
    )
    context_errors = list(row.context_errors or [])
    return DecisionResult(
        id=row.id,
        account_id=row.account_id,
        cycle_time=row.cycle_time,
        created_at=row.created_at,
        trigger=row.trigger,
        status=row.status,
        symbols=list(row.symbols or []),
        strategy_id=row.strategy_id,
        decision=TradingDecision.model_validate(row.final_decision) if row.final_decision else None,
        model_decision=TradingDecision.model_validate(row.parsed_decision) if row.parsed_decision else None,
        validation=ValidationResult.model_validate(row.validation_result) if row.validation_result else None,
        orders=[
            OrderSummary(
                client_order_id=o.client_order_id,
                symbol=o.symbol,
                side=o.side,
                type=o.type,
                kind=o.kind,
                status=o.status,
                quantity=o.quantity,
                trigger_price=o.trigger_price,
                filled_quantity=o.filled_quantity,
                avg_fill_price=o.avg_fill_price,
                reject_reason=o.reject_reason,
            )
            for o in orders
        ],
        is_fallback=row.is_fallback,
        error=row.error,
        failure=row.failure,
        context_errors=context_errors,
        execution_errors=list(row.execution_errors or []),
        model_requested=row.model_requested,
        model_served=row.model_served,
        provider=row.provider,
        finish_reason=row.finish_reason,
        usage=usage,
        latency_ms=row.latency_ms,
        raw_response=row.raw_response,
        first_raw_response=row.first_raw_response,
        experiment_id=row.experiment_id,
        variant_id=row.variant_id,
        shadow_of=row.shadow_of,
        provenance=(
            {"context": provenance.context_snapshot, "prompt": provenance.prompt} if provenance is not None else None
        ),
    )


__all__ = ["DecisionEngine", "TradingStrategy", "to_result"]
