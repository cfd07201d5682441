"""Trading strategies: the built-in set, and which strategy each account runs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.db.models import Account
from app.db.repositories.strategies import StrategyRepository
from app.schemas.trading_decision import StrategyRiskParameters, TradingStrategy
from app.services.llm.llm_exceptions import AccountNotFoundError, DecisionEngineError
from app.services.llm.prompts.builder import read_template

DEFAULT_STRATEGY_ID = "conservative"


def builtin_strategies() -> list[TradingStrategy]:
    """The strategies every installation has."""
    return [
        TradingStrategy(
            strategy_id="conservative",
            strategy_name="Conservative trend following",
            strategy_type="conservative",
            prompt_template=read_template("strategies/conservative.j2"),
            risk_parameters=StrategyRiskParameters(
                max_risk_per_trade=0.5,
                max_daily_loss=2.0,
                stop_loss_percentage=1.5,
                take_profit_ratio=3.0,
                max_leverage=3.0,
                cooldown_period=600,
            ),
            timeframe_preference=["5m", "4h"],
            max_positions=3,
            position_sizing="percentage",
        )
    ]


class StrategyManager:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = session_factory
        self._clock = clock

    async def ensure_builtins(self) -> None:
        """Write the built-in strategies (idempotent; updates them to this version's definitions)."""
        async with self._sessions.begin() as session:
            repo = StrategyRepository(session)
            for strategy in builtin_strategies():
                await repo.upsert(strategy, builtin=True, now=self._clock.now())

    async def get_strategy(self, strategy_id: str) -> TradingStrategy:
        async with self._sessions() as session:
            strategy = await StrategyRepository(session).get(strategy_id)
        if strategy is None:
            raise DecisionEngineError(f"unknown strategy {strategy_id!r}")
        return strategy

    async def get_account_strategy(self, account_id: int) -> TradingStrategy:
        async with self._sessions() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            strategy = await StrategyRepository(session).get(account.strategy_id)
        if strategy is None:
            raise DecisionEngineError(f"account {account_id} runs unknown strategy {account.strategy_id!r}")
        return strategy

    async def get_available_strategies(self) -> list[TradingStrategy]:
        return builtin_strategies()
