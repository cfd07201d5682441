"""Strategies stored in the database (built-in ones are written at start-up)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Strategy
from app.schemas.trading_decision import StrategyRiskParameters, TradingStrategy


def to_schema(row: Strategy) -> TradingStrategy:
    return TradingStrategy(
        strategy_id=row.strategy_id,
        strategy_name=row.strategy_name,
        strategy_type=row.strategy_type,
        prompt_template=row.prompt_template,
        risk_parameters=StrategyRiskParameters.model_validate(row.risk_parameters),
        timeframe_preference=list(row.timeframe_preference),
        max_positions=row.max_positions,
        position_sizing=row.position_sizing,
        is_active=row.is_active,
    )


class StrategyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, strategy_id: str) -> TradingStrategy | None:
        row = await self.session.get(Strategy, strategy_id)
        return to_schema(row) if row else None

    async def upsert(self, strategy: TradingStrategy, *, builtin: bool, now: datetime) -> None:
        row = await self.session.get(Strategy, strategy.strategy_id)
        if row is None:
            row = Strategy(strategy_id=strategy.strategy_id, created_at=now, is_builtin=builtin)
            self.session.add(row)
        row.strategy_name = strategy.strategy_name
        row.strategy_type = strategy.strategy_type
        row.prompt_template = strategy.prompt_template
        row.risk_parameters = strategy.risk_parameters.model_dump()
        row.timeframe_preference = list(strategy.timeframe_preference)
        row.max_positions = strategy.max_positions
        row.position_sizing = strategy.position_sizing
        row.is_active = strategy.is_active
        await self.session.flush()
