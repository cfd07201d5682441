"""Trading strategies: the built-in set, and which strategy each account runs."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock, WallClock
from app.db.models import Account, Decision, Position, Strategy, StrategyAssignment
from app.db.repositories.outcome_figures import OutcomeFiguresRepository, OutcomeScope
from app.db.repositories.strategies import StoredStrategy, StrategyRepository, load, validation_summary
from app.schemas.api import OutcomeReport
from app.schemas.text import text_problem
from app.schemas.trading_decision import StrategyRiskParameters, TradingStrategy
from app.services.evaluation.report import outcome_report
from app.services.llm.llm_exceptions import AccountNotFoundError, DecisionEngineError
from app.services.llm.prompts.builder import PromptBuilder, read_template
from app.services.llm.strategy_checks import definition_problems, runnable_problem

log = logging.getLogger(__name__)

DEFAULT_STRATEGY_ID = "conservative"
# What an account on a strategy that cannot run does, said on each of its decisions and in its views.
HOLD_NOTICE = (
    "the account holds (no model call, no new order; its stops stay) until it is switched to a usable strategy"
)


def _strategy(
    strategy_id: str,
    name: str,
    risk: StrategyRiskParameters,
    timeframes: list[str],
    max_positions: int,
    sizing: str,
) -> TradingStrategy:
    return TradingStrategy(
        strategy_id=strategy_id,
        strategy_name=name,
        strategy_type=strategy_id,
        prompt_template=read_template(f"strategies/{strategy_id}.j2"),
        risk_parameters=risk,
        timeframe_preference=timeframes,
        max_positions=max_positions,
        position_sizing=sizing,
    )


def builtin_strategies() -> list[TradingStrategy]:
    """The strategies every installation has. Their risk parameters are enforced by the validator and
    the executor, not only described to the model:

    | id           | risk/trade | daily loss | stop  | R:R | leverage | cooldown | positions | sizing              |
    |--------------|-----------:|-----------:|------:|----:|---------:|---------:|----------:|---------------------|
    | conservative |      0.5 % |        2 % | 1.5 % |   3 |       3x |    600 s |         3 | percentage          |
    | aggressive   |      1.5 % |        6 % | 2.5 % |   2 |       8x |    120 s |         5 | percentage          |
    | scalping     |      0.3 % |        3 % | 0.5 % | 1.5 |      10x |     60 s |         3 | fixed               |
    | swing        |      1.0 % |        4 % | 4.0 % | 2.5 |       3x |  14400 s |         4 | volatility_adjusted |
    | dca          |      0.5 % |        3 % | 8.0 % | 1.5 |       2x |   3600 s |         3 | fixed               |
    """
    return [
        _strategy(
            "conservative",
            "Conservative trend following",
            StrategyRiskParameters(
                max_risk_per_trade=0.5,
                max_daily_loss=2.0,
                stop_loss_percentage=1.5,
                take_profit_ratio=3.0,
                max_leverage=3.0,
                cooldown_period=600,
            ),
            ["5m", "4h"],
            3,
            "percentage",
        ),
        _strategy(
            "aggressive",
            "Aggressive momentum",
            StrategyRiskParameters(
                max_risk_per_trade=1.5,
                max_daily_loss=6.0,
                stop_loss_percentage=2.5,
                take_profit_ratio=2.0,
                max_leverage=8.0,
                cooldown_period=120,
            ),
            ["5m", "1h"],
            5,
            "percentage",
        ),
        _strategy(
            "scalping",
            "Scalping",
            StrategyRiskParameters(
                max_risk_per_trade=0.3,
                max_daily_loss=3.0,
                stop_loss_percentage=0.5,
                take_profit_ratio=1.5,
                max_leverage=10.0,
                cooldown_period=60,
            ),
            ["5m", "1h"],
            3,
            "fixed",
        ),
        _strategy(
            "swing",
            "Swing trading",
            StrategyRiskParameters(
                max_risk_per_trade=1.0,
                max_daily_loss=4.0,
                stop_loss_percentage=4.0,
                take_profit_ratio=2.5,
                max_leverage=3.0,
                cooldown_period=14_400,
            ),
            ["1h", "1d"],
            4,
            "volatility_adjusted",
        ),
        _strategy(
            "dca",
            "Dollar-cost averaging with the trend",
            StrategyRiskParameters(
                max_risk_per_trade=0.5,
                max_daily_loss=3.0,
                stop_loss_percentage=8.0,
                take_profit_ratio=1.5,
                max_leverage=2.0,
                cooldown_period=3_600,
            ),
            ["1h", "4h"],
            3,
            "fixed",
        ),
    ]


class StrategyPerformance(BaseModel):
    """How the decisions made under one strategy did over a window: closed trades net of fees, and the outcomes
    of its asset decisions at a horizon. Experiments' shadow decisions (never executed) are left out."""

    strategy_id: str
    timeframe: str
    since: datetime
    decisions: int
    fallback_decisions: int
    trades: int
    total_pnl: float
    win_rate: float
    avg_win: float
    avg_loss: float
    outcomes: OutcomeReport


class StrategyAssignmentView(BaseModel):
    account_id: int
    strategy_id: str
    reason: str
    assigned_at: datetime


_WINDOW = re.compile(r"^(\d+)([hdw])$")


def parse_window(timeframe: str) -> timedelta:
    """`24h`, `7d`, `4w` -> a timedelta; ValueError otherwise."""
    match = _WINDOW.match(timeframe.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"not a window: {timeframe!r} (expected e.g. 24h, 7d or 4w)")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(hours=amount) if unit == "h" else timedelta(days=amount * (7 if unit == "w" else 1))


class StrategyError(DecisionEngineError):
    """A strategy was refused (with the reason) or does not exist."""


class StrategyNotFoundError(StrategyError):
    """No strategy with that id."""

    def __init__(self, strategy_id: str) -> None:
        super().__init__(f"unknown strategy {strategy_id!r}")
        self.strategy_id = strategy_id


class BuiltinStrategyError(StrategyError):
    """Built-in strategies are not editable, deactivatable or replaceable."""


class StrategyConflictError(StrategyError):
    """A valid request the stored strategies refuse: the id is taken, or a replacement names another id: the
    representation conflicts with the target (RFC 9110)."""


class StrategyUnavailableError(StrategyError):
    """The strategy exists but cannot be run: deactivated, a stored definition that no longer validates, or
    timeframes the agent cannot serve. An account on it holds (no model call, no order) with this reason."""

    def __init__(self, strategy_id: str, reason: str) -> None:
        super().__init__(reason)
        self.strategy_id = strategy_id


class StrategyStatus(BaseModel):
    """A stored strategy as an operator sees it: whether it can run, why not, and who runs it."""

    strategy_id: str
    is_builtin: bool
    is_active: bool
    usable: bool = Field(..., description="Active, with a valid definition the agent can serve")
    problem: str | None = Field(None, description="Why it cannot run (deactivated, invalid stored definition)")
    accounts: list[int] = Field(..., description="The accounts whose strategy it is")
    strategy: TradingStrategy | None = Field(None, description="None when the stored definition is invalid")


# The fields of a custom strategy an edit may change (`strategy_id`, `strategy_type` and `is_active` stay).
EDITABLE = (
    "strategy_name",
    "prompt_template",
    "risk_parameters",
    "timeframe_preference",
    "max_positions",
    "position_sizing",
)


def _changes(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """`field: old -> new` for each changed field (templates by length), for the audit log."""
    if before is None:
        return "replaced an invalid stored definition"
    parts: list[str] = []
    for key in EDITABLE:
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            parts.extend(f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k))
        elif old != new:
            if key == "prompt_template":
                parts.append(f"prompt_template: {len(str(old or ''))} -> {len(str(new))} characters")
            else:
                parts.append(f"{key}: {old!r} -> {new!r}")
    return "; ".join(parts) or "no change"


class StrategyManager:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        prompts: PromptBuilder | None = None,
        *,
        interval: str = "5m",
        long_interval: str = "4h",
        wall_clock: Clock | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock  # assignments are on the market clock, like the decisions they apply to
        self._wall_clock = wall_clock or WallClock()  # operational records: strategy rows, an account's updated_at
        self.interval = interval
        self.long_interval = long_interval
        self._prompts = prompts or PromptBuilder(interval=interval, long_interval=long_interval)
        self._reported: set[tuple[str, str]] = set()  # unusable stored strategies already logged

    async def ensure_builtins(self) -> None:
        """Write the built-in strategies (idempotent; updates them to this version's definitions)."""
        async with self._sessions.begin() as session:
            repo = StrategyRepository(session)
            for strategy in builtin_strategies():
                await repo.upsert(strategy, builtin=True, now=self._wall_clock.now())

    # ------------------------------------------------------------------------------------------ reads
    # Strategies are read from the database each time (a primary-key read per decision): they can be edited
    # and deactivated, by this process or another one on the same database.
    async def _stored(self, strategy_id: str) -> StoredStrategy:
        async with self._sessions() as session:
            stored = await StrategyRepository(session).stored(strategy_id)
        if stored is None:
            raise StrategyNotFoundError(strategy_id)
        return stored

    async def get_strategy(self, strategy_id: str) -> TradingStrategy:
        """The strategy (active or not); StrategyNotFoundError for an unknown id, StrategyUnavailableError when
        its stored definition is invalid."""
        stored = await self._stored(strategy_id)
        if stored.strategy is None:
            raise StrategyUnavailableError(strategy_id, f"strategy {strategy_id!r} cannot be used: {stored.problem}")
        return stored.strategy

    async def runnable_strategy(self, strategy_id: str) -> TradingStrategy:
        """The strategy, when a decision can be made with it now; else StrategyNotFoundError or
        StrategyUnavailableError (deactivated, invalid stored definition, timeframes that cannot be served)."""
        strategy = await self.get_strategy(strategy_id)
        problem = runnable_problem(strategy, interval=self.interval)
        if problem:
            raise StrategyUnavailableError(strategy_id, problem)
        return strategy

    async def account_strategy_id(self, account_id: int) -> str:
        async with self._sessions() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            return account.strategy_id

    async def get_account_strategy(self, account_id: int) -> TradingStrategy:
        """The account's strategy, also when deactivated (`is_active` says so); StrategyUnavailableError when
        its stored definition is invalid."""
        strategy_id = await self.account_strategy_id(account_id)
        try:
            return await self.get_strategy(strategy_id)
        except StrategyNotFoundError:
            raise StrategyError(f"account {account_id} runs unknown strategy {strategy_id!r}") from None
        except StrategyUnavailableError as exc:
            raise StrategyUnavailableError(strategy_id, f"account {account_id}: {exc}") from None

    async def strategy_notice(self, strategy_id: str) -> str | None:
        """Why an account on this strategy holds instead of deciding, or None when it can run."""
        try:
            await self.runnable_strategy(strategy_id)
        except StrategyError as exc:
            return f"{exc}; {HOLD_NOTICE}"
        return None

    async def get_available_strategies(self, include_inactive: bool = False) -> list[TradingStrategy]:
        """Built-in and custom strategies that are active (and the deactivated ones with `include_inactive`). A
        stored strategy whose definition is invalid is left out and logged with the reason (once)."""
        async with self._sessions() as session:
            stored = await StrategyRepository(session).all(include_inactive=include_inactive)
        out = []
        for item in stored:
            if item.strategy is None:
                self._report(item.strategy_id, item.problem or "invalid")
                continue
            out.append(item.strategy)
        return out

    async def strategy_statuses(self, *, custom_only: bool = True) -> list[StrategyStatus]:
        """Every stored (custom) strategy, active or not, valid or not, with the reason it cannot run."""
        async with self._sessions() as session:
            repo = StrategyRepository(session)
            stored = await repo.all(include_inactive=True, custom_only=custom_only)
            accounts = {item.strategy_id: await repo.accounts_on(item.strategy_id) for item in stored}
        return [self._status(item, accounts[item.strategy_id]) for item in stored]

    async def strategy_status(self, strategy_id: str) -> StrategyStatus:
        async with self._sessions() as session:
            repo = StrategyRepository(session)
            stored = await repo.stored(strategy_id)
            if stored is None:
                raise StrategyNotFoundError(strategy_id)
            accounts = await repo.accounts_on(strategy_id)
        return self._status(stored, accounts)

    def _status(self, stored: StoredStrategy, accounts: list[int]) -> StrategyStatus:
        if stored.strategy is None:
            problem: str | None = f"strategy {stored.strategy_id!r} cannot be used: {stored.problem}"
        else:
            problem = runnable_problem(stored.strategy, interval=self.interval)
        return StrategyStatus(
            strategy_id=stored.strategy_id,
            is_builtin=stored.is_builtin,
            is_active=stored.is_active,
            usable=problem is None,
            problem=problem,
            accounts=accounts,
            strategy=stored.strategy,
        )

    def _report(self, strategy_id: str, problem: str) -> None:
        if (strategy_id, problem) not in self._reported:
            self._reported.add((strategy_id, problem))
            log.warning("strategy %r left out of the listing: %s", strategy_id, problem)

    # ------------------------------------------------------------------------------------ assignments
    async def check_assignable(self, strategy_id: str) -> None:
        """Raise StrategyError with the reason when no account may be switched to this strategy."""
        await self.runnable_strategy(strategy_id)

    async def update_account_strategy(self, account_id: int, strategy_id: str, reason: str = "switched") -> bool:
        """Assign `strategy_id` to the account (recorded with the reason); False, with nothing saved, for an
        unknown strategy or one that cannot run (deactivated, invalid stored definition, unservable)."""
        if text_problem(reason, multiline=False):
            raise StrategyError(f"reason {text_problem(reason, multiline=False)}")
        async with self._sessions.begin() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            stored = await StrategyRepository(session).stored(strategy_id)
            if stored is None or stored.strategy is None:
                return False
            if runnable_problem(stored.strategy, interval=self.interval):
                return False
            now = self._clock.now()
            account.strategy_id = strategy_id
            account.updated_at = self._wall_clock.now()
            session.add(
                StrategyAssignment(account_id=account_id, strategy_id=strategy_id, reason=reason, assigned_at=now)
            )
        return True

    async def assignment_history(self, account_id: int) -> list[StrategyAssignmentView]:
        async with self._sessions() as session:
            query = (
                select(StrategyAssignment)
                .where(StrategyAssignment.account_id == account_id)
                .order_by(StrategyAssignment.id.desc())
            )
            rows = (await session.scalars(query)).all()
        return [
            StrategyAssignmentView(
                account_id=r.account_id, strategy_id=r.strategy_id, reason=r.reason, assigned_at=r.assigned_at
            )
            for r in rows
        ]

    # ------------------------------------------------------------------------------- custom strategies
    def _refuse_if_invalid(self, strategy: TradingStrategy) -> None:
        problems = definition_problems(
            strategy, prompts=self._prompts, interval=self.interval, long_interval=self.long_interval
        )
        if problems:
            raise StrategyError("strategy refused: " + "; ".join(problems))

    async def create_custom_strategy(self, strategy: TradingStrategy) -> str:
        """Validate and store a custom strategy; returns its id. Refused (StrategyError with the reason, nothing
        stored) when the id is taken or malformed, the type is not `custom`, a number is not finite or out of
        bounds, a text is not valid, a timeframe cannot be served, or the template does not render."""
        self._refuse_if_invalid(strategy)
        taken = StrategyConflictError(f"strategy refused: the id {strategy.strategy_id!r} is taken")
        try:
            async with self._sessions.begin() as session:
                if await session.get(Strategy, strategy.strategy_id) is not None:
                    raise taken
                await StrategyRepository(session).upsert(strategy, builtin=False, now=self._wall_clock.now())
        except IntegrityError:  # a concurrent request created it between the check and the insert
            async with self._sessions() as session:
                if await session.get(Strategy, strategy.strategy_id) is None:
                    raise  # another constraint: not a conflict of ids
            raise taken from None
        return strategy.strategy_id

    async def _editable(self, session: AsyncSession, strategy_id: str) -> Strategy:
        """The custom strategy's row, locked until the transaction ends (its edits read and write it there)."""
        row = await StrategyRepository(session).locked(strategy_id)
        if row is None:
            raise StrategyNotFoundError(strategy_id)
        if row.is_builtin:
            raise BuiltinStrategyError(
                f"strategy {strategy_id!r} is built in: built-in strategies cannot be edited nor deactivated"
            )
        return row

    async def update_custom_strategy(self, strategy_id: str, strategy: TradingStrategy) -> tuple[TradingStrategy, str]:
        """Replace a custom strategy's definition (checked like a new one; its id, type and activity stay);
        returns it with a summary of what changed. A stored definition that had become invalid can be fixed
        this way."""
        if strategy.strategy_id != strategy_id:
            raise StrategyConflictError(
                f"strategy refused: the body names {strategy.strategy_id!r}, the path {strategy_id!r}"
            )
        async with self._sessions.begin() as session:
            return await self._replace(session, await self._editable(session, strategy_id), strategy)

    async def _replace(
        self, session: AsyncSession, row: Strategy, strategy: TradingStrategy
    ) -> tuple[TradingStrategy, str]:
        """Write `strategy` over the locked `row`, in the caller's transaction."""
        strategy = strategy.model_copy(update={"is_active": row.is_active})  # changed by (de)activation only
        self._refuse_if_invalid(strategy)
        stored = load(row)
        before = stored.strategy.model_dump(mode="json") if stored.strategy else None
        await StrategyRepository(session).upsert(strategy, builtin=False, now=self._wall_clock.now())
        return strategy, _changes(before, strategy.model_dump(mode="json"))

    async def patch_custom_strategy(self, strategy_id: str, changes: dict[str, Any]) -> tuple[TradingStrategy, str]:
        """Change some fields of a custom strategy (`risk_parameters` key by key); the result is checked like a
        new strategy. Returns it with a summary of what changed."""
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise StrategyError(
                f"strategy refused: {', '.join(unknown)} cannot be edited (editable: {', '.join(EDITABLE)})"
            )
        async with self._sessions.begin() as session:  # read and written in one transaction: no lost update
            row = await self._editable(session, strategy_id)
            current: dict[str, Any] = {
                "strategy_id": row.strategy_id,
                "strategy_name": row.strategy_name,
                "strategy_type": row.strategy_type,
                "prompt_template": row.prompt_template,
                "risk_parameters": dict(row.risk_parameters or {}),
                "timeframe_preference": list(row.timeframe_preference or []),
                "max_positions": row.max_positions,
                "position_sizing": row.position_sizing,
                "is_active": row.is_active,
            }
            merged = {**current, **changes}
            merged["risk_parameters"] = {**current["risk_parameters"], **(changes.get("risk_parameters") or {})}
            try:
                strategy = TradingStrategy.model_validate(merged)
            except ValidationError as exc:
                raise StrategyError("strategy refused: " + validation_summary(exc.errors())) from None
            return await self._replace(session, row, strategy)

    async def set_strategy_active(self, strategy_id: str, active: bool) -> StrategyStatus:
        """Deactivate (no longer offered nor assignable; the accounts on it hold, told why) or activate again
        (refused while its stored definition is invalid or cannot be served)."""
        async with self._sessions.begin() as session:
            row = await self._editable(session, strategy_id)
            if active:
                stored = load(row)
                if stored.strategy is None:
                    raise StrategyUnavailableError(
                        strategy_id,
                        f"strategy {strategy_id!r} cannot be activated: {stored.problem}; fix it with PUT or PATCH "
                        "first",
                    )
                problem = runnable_problem(
                    stored.strategy.model_copy(update={"is_active": True}), interval=self.interval
                )
                if problem:
                    raise StrategyUnavailableError(strategy_id, f"{problem}; fix it with PUT or PATCH first")
            await StrategyRepository(session).set_active(strategy_id, active)
        return await self.strategy_status(strategy_id)

    async def get_strategy_performance(
        self, strategy_id: str, timeframe: str = "7d", account_id: int | None = None, horizon: int = 4
    ) -> StrategyPerformance:
        """Decisions, closed trades and outcomes at `horizon` (candles of the interval) of every account (or one)
        while it ran `strategy_id`, over the window."""
        try:
            window = parse_window(timeframe)
        except ValueError as exc:
            raise StrategyError(str(exc)) from exc
        since = self._clock.now() - window
        await self._stored(strategy_id)  # its figures, also when its stored definition has become invalid
        scope = [Decision.strategy_id == strategy_id]
        if account_id is not None:  # an account key sees its own account's figures only
            scope.append(Decision.account_id == account_id)
        outcome_scope = OutcomeScope(
            since=since, horizon=horizon, interval=self.interval, account_id=account_id, strategy_id=strategy_id
        )
        async with self._sessions() as session:
            executed = [*scope, Decision.cycle_time >= since, Decision.shadow_of.is_(None)]
            decisions = await session.scalar(select(func.count()).select_from(Decision).where(*executed))
            fallbacks = await session.scalar(
                select(func.count()).select_from(Decision).where(*executed, Decision.is_fallback)
            )
            query = (
                select(Position.realized_pnl, Position.fees)
                .join(Decision, Decision.id == Position.decision_id)
                .where(*scope, Position.status == "closed", Position.closed_at >= since)
            )
            pnls = [float(realized) - float(fees) for realized, fees in (await session.execute(query)).all()]
            selection = await OutcomeFiguresRepository(session).select(outcome_scope, "strategy")
        wins = [p for p in pnls if p > 0]
        losses = [p for p in pnls if p <= 0]
        return StrategyPerformance(
            strategy_id=strategy_id,
            timeframe=timeframe,
            since=since,
            decisions=int(decisions or 0),
            fallback_decisions=int(fallbacks or 0),
            trades=len(pnls),
            total_pnl=sum(pnls),
            win_rate=len(wins) / len(pnls) if pnls else 0.0,
            avg_win=sum(wins) / len(wins) if wins else 0.0,
            avg_loss=sum(losses) / len(losses) if losses else 0.0,
            outcomes=outcome_report(selection, horizon=horizon, interval=self.interval, include_shadow=False),
        )
