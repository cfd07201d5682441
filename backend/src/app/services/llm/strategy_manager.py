"""Trading strategies: the built-in set, and which strategy each account runs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.timeframes import timeframe_seconds
from app.db.models import Account, Decision, Position, Strategy, StrategyAssignment
from app.db.repositories.strategies import StrategyRepository, to_schema
from app.schemas.trading_decision import StrategyRiskParameters, TradingStrategy
from app.services.llm.llm_exceptions import AccountNotFoundError, DecisionEngineError
from app.services.llm.prompts.builder import PromptBuilder, read_template

DEFAULT_STRATEGY_ID = "conservative"
MAX_TEMPLATE_CHARS = 8_000
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{2,63}$")


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
    """How the decisions made under one strategy did over a window (closed trades, net of fees)."""

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


class StrategyManager:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock, prompts: PromptBuilder | None = None
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._prompts = prompts or PromptBuilder(interval="5m", long_interval="4h")
        # Strategies are written once (built-ins at start-up, custom ones at creation) and never edited, so
        # a strategy read is kept; an id not seen yet (e.g. created by another process) is read again.
        self._known: dict[str, TradingStrategy] = {}

    async def ensure_builtins(self) -> None:
        """Write the built-in strategies (idempotent; updates them to this version's definitions)."""
        async with self._sessions.begin() as session:
            repo = StrategyRepository(session)
            for strategy in builtin_strategies():
                await repo.upsert(strategy, builtin=True, now=self._clock.now())
        self._known.clear()

    async def get_strategy(self, strategy_id: str) -> TradingStrategy:
        strategy = self._known.get(strategy_id)
        if strategy is not None:
            return strategy
        async with self._sessions() as session:
            strategy = await StrategyRepository(session).get(strategy_id)
        if strategy is None:
            raise StrategyError(f"unknown strategy {strategy_id!r}")
        self._known[strategy_id] = strategy
        return strategy

    async def get_account_strategy(self, account_id: int) -> TradingStrategy:
        async with self._sessions() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
        try:
            return await self.get_strategy(account.strategy_id)
        except StrategyError:
            raise StrategyError(f"account {account_id} runs unknown strategy {account.strategy_id!r}") from None

    async def update_account_strategy(self, account_id: int, strategy_id: str, reason: str = "switched") -> bool:
        """Assign `strategy_id` to the account (recorded with the reason); False for an unknown or inactive
        strategy."""
        async with self._sessions.begin() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            row = await session.get(Strategy, strategy_id)
            if row is None or not row.is_active:
                return False
            now = self._clock.now()
            account.strategy_id = strategy_id
            account.updated_at = now
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

    async def create_custom_strategy(self, strategy: TradingStrategy) -> str:
        """Validate and store a custom strategy; returns its id. Refused (StrategyError with the reason) when
        the id is taken or malformed, the type is not `custom`, or the template does not render."""
        problems: list[str] = []
        if not _ID.match(strategy.strategy_id):
            problems.append("strategy_id must be 3-64 characters of a-z, 0-9, '_' or '-'")
        if strategy.strategy_type != "custom":
            problems.append("a custom strategy has strategy_type 'custom'")
        if not strategy.timeframe_preference or len(strategy.timeframe_preference) > 2:
            problems.append("timeframe_preference lists one or two timeframes (decision, trend)")
        for timeframe in strategy.timeframe_preference:
            try:
                timeframe_seconds(timeframe)
            except ValueError as exc:
                problems.append(str(exc))
        if len(strategy.prompt_template) > MAX_TEMPLATE_CHARS:
            problems.append(f"prompt_template is longer than {MAX_TEMPLATE_CHARS} characters")
        else:
            try:
                rendered = self._prompts.render_strategy(strategy)
            except ValueError as exc:
                problems.append(str(exc))
            else:
                if not rendered.strip():
                    problems.append("prompt_template renders to nothing")
        if problems:
            raise StrategyError("strategy refused: " + "; ".join(problems))
        async with self._sessions.begin() as session:
            if await session.get(Strategy, strategy.strategy_id) is not None:
                raise StrategyError(f"strategy refused: the id {strategy.strategy_id!r} is taken")
            await StrategyRepository(session).upsert(strategy, builtin=False, now=self._clock.now())
        return strategy.strategy_id

    async def get_available_strategies(self) -> list[TradingStrategy]:
        """Built-in and custom strategies that are active."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(Strategy).where(Strategy.is_active).order_by(Strategy.created_at, Strategy.strategy_id)
                )
            ).all()
        return [to_schema(r) for r in rows]

    async def get_strategy_performance(
        self, strategy_id: str, timeframe: str = "7d", account_id: int | None = None
    ) -> StrategyPerformance:
        """Decisions and closed trades of every account (or one) while it ran `strategy_id`, over the window."""
        try:
            window = parse_window(timeframe)
        except ValueError as exc:
            raise StrategyError(str(exc)) from exc
        since = self._clock.now() - window
        await self.get_strategy(strategy_id)
        scope = [Decision.strategy_id == strategy_id]
        if account_id is not None:  # an account key sees its own account's figures only
            scope.append(Decision.account_id == account_id)
        async with self._sessions() as session:
            decisions = await session.scalar(
                select(func.count()).select_from(Decision).where(*scope, Decision.cycle_time >= since)
            )
            fallbacks = await session.scalar(
                select(func.count())
                .select_from(Decision)
                .where(*scope, Decision.cycle_time >= since, Decision.is_fallback)
            )
            query = (
                select(Position.realized_pnl, Position.fees)
                .join(Decision, Decision.id == Position.decision_id)
                .where(*scope, Position.status == "closed", Position.closed_at >= since)
            )
            pnls = [float(realized) - float(fees) for realized, fees in (await session.execute(query)).all()]
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
        )
