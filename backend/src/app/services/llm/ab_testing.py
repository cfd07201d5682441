"""A/B testing between models, strategies, prompt versions and temperatures (the seed's `ab_testing.py`).

Skeleton: the constructor is the contract the agent's wiring uses; the service is being written."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.services.llm.experiment_plan import ExperimentPlans
from app.services.llm.llm_service import LLMService
from app.services.llm.prompts.builder import PromptBuilder
from app.services.llm.strategy_manager import StrategyManager


class ExperimentService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        wall_clock: Clock,
        interval: str,
        llm: LLMService,
        strategies: StrategyManager,
        prompts: PromptBuilder,
        plans: ExperimentPlans,
        daily_budget_usd: float | None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.wall_clock = wall_clock
        self.interval = interval
        self.llm = llm
        self.strategies = strategies
        self.prompts = prompts
        self.plans = plans
        self.daily_budget_usd = daily_budget_usd
