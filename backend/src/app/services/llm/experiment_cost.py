"""What an experiment's variants are expected to cost a day, checked against their budgets when it starts.

A variant's daily cost is cycles a day x its decisions a cycle x what one decision of its model costs: nothing for
the baseline, else the mean of the model's recent stored calls, else the catalog's prices for the expected tokens.
An experiment with a variant over its daily budget is refused (shadow variants multiply model calls)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.timeframes import timeframe_seconds
from app.db import models
from app.schemas.experiments import ExperimentCreate, VariantCreate
from app.services.llm.experiment_plan import variant_daily_budget
from app.services.llm.llm_exceptions import ExperimentError
from app.services.llm.llm_service import LLMService, is_baseline
from app.services.llm.prompts.builder import ANSWER_FORMAT, PromptBuilder, decision_schema_json
from app.services.llm.strategy_manager import DEFAULT_STRATEGY_ID, StrategyManager

RECENT_CALLS = 200  # the stored model calls a cost or token estimate is averaged over
DEFAULT_COMPLETION_TOKENS = 1000  # without stored calls nor LLM_MAX_TOKENS
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class ExperimentAccount:
    id: int
    model: str | None
    strategy_id: str
    daily_budget_usd: float | None  # its own, else LLM_DAILY_BUDGET_USD; None: unlimited


@dataclass(frozen=True, slots=True)
class DecisionCost:
    """What one decision of a model is expected to cost (None: unknown), and how that was estimated."""

    usd: float | None
    basis: str


@dataclass(frozen=True, slots=True)
class _Tokens:
    prompt: float
    completion: float
    basis: str


@dataclass(frozen=True, slots=True)
class Costed:
    """A variant's expected daily cost against its daily budget."""

    expected_usd: float
    known: bool
    budget_usd: float | None  # None: unlimited
    budget_basis: str
    explanation: str


class ExperimentCosts:
    def __init__(self, *, llm: LLMService, strategies: StrategyManager, prompts: PromptBuilder, interval: str) -> None:
        self.llm = llm
        self.strategies = strategies
        self.prompts = prompts
        self.interval = interval

    @property
    def cycles_per_day(self) -> float:
        return 86_400 / timeframe_seconds(self.interval)

    async def costed(self, session: AsyncSession, variant: VariantCreate, accounts: list[ExperimentAccount]) -> Costed:
        """The variant's expected daily cost: cycles a day x its decisions a cycle (one per account it decides for)
        x each decision's expected cost (the model it asks for that account), against its daily budget: its own,
        else its accounts' daily LLM budgets summed (unlimited when one of them is)."""
        per_model: dict[str, int] = defaultdict(int)
        for account in accounts:
            per_model[self.llm.resolve_model(variant.model or account.model)] += 1
        expected, known, parts = 0.0, True, []
        for model, count in per_model.items():
            cost = await self.decision_cost(session, model, variant.strategy_id or accounts[0].strategy_id)
            if cost.usd is None:
                known = False
                parts.append(f"{count} decision(s) a cycle of {model} at an unknown cost ({cost.basis})")
                continue
            expected += self.cycles_per_day * count * cost.usd
            parts.append(
                f"{self.cycles_per_day:g} cycles x {count} decision(s) of {model} x {cost.usd:.6f} USD ({cost.basis})"
            )
        budget, basis = variant_daily_budget(variant.daily_budget_usd, [a.daily_budget_usd for a in accounts])
        return Costed(expected, known, budget, basis, "; ".join(parts))

    async def decision_cost(self, session: AsyncSession, model: str, strategy_id: str) -> DecisionCost:
        """One decision of `model`: nothing for the baseline or a simulated provider; else the mean cost of its last
        stored calls; else the catalog's prices for the expected prompt and completion tokens."""
        if is_baseline(model) or self.llm.is_simulated:
            return DecisionCost(0.0, "no model call is paid" if self.llm.is_simulated else "the rule-based baseline")
        recent = (
            select(models.LLMCall.cost_usd)
            .where(models.LLMCall.model_requested == model, models.LLMCall.cost_usd.is_not(None))
            .order_by(models.LLMCall.id.desc())
            .limit(RECENT_CALLS)
            .subquery()
        )
        mean, calls = (
            await session.execute(select(func.avg(recent.c.cost_usd), func.count()).select_from(recent))
        ).one()
        if calls:
            return DecisionCost(float(mean or 0.0), f"mean of its last {calls} call(s)")
        catalog = getattr(self.llm.provider, "catalog", None)
        if catalog is None or catalog.price(model) is None:
            return DecisionCost(None, f"no price for {model} in the model catalog and no call of it stored")
        tokens = await self._tokens(session, strategy_id)
        usd = catalog.estimate_cost(model, round(tokens.prompt), round(tokens.completion))
        return DecisionCost(usd, f"catalog prices x {tokens.basis}")

    async def _tokens(self, session: AsyncSession, strategy_id: str) -> _Tokens:
        """Tokens a decision is expected to take: the mean of the last stored model calls (the baseline's, which
        have none, aside); else a stored prompt's characters / 4, or the strategy's system prompt doubled (the
        user part: account and market) when no decision has been stored yet; and LLM_MAX_TOKENS (or 1000) for the
        answer."""
        recent = (
            select(models.LLMCall.prompt_tokens, models.LLMCall.completion_tokens)
            .where(models.LLMCall.prompt_tokens > 0, models.LLMCall.completion_tokens.is_not(None))
            .order_by(models.LLMCall.id.desc())
            .limit(RECENT_CALLS)
            .subquery()
        )
        prompt, completion, calls = (
            await session.execute(
                select(
                    func.avg(recent.c.prompt_tokens), func.avg(recent.c.completion_tokens), func.count()
                ).select_from(recent)
            )
        ).one()
        if calls:
            return _Tokens(float(prompt), float(completion), f"the mean tokens of the last {calls} call(s)")
        max_tokens = getattr(self.llm.provider, "max_tokens", None)
        completion_tokens = float(max_tokens if isinstance(max_tokens, int) else DEFAULT_COMPLETION_TOKENS)
        stored = await session.scalar(
            select(func.length(models.DecisionProvenance.prompt))
            .where(models.DecisionProvenance.prompt.is_not(None))
            .order_by(models.DecisionProvenance.decision_id.desc())
            .limit(1)
        )
        if stored:
            return _Tokens(
                stored / CHARS_PER_TOKEN, completion_tokens, f"a stored prompt's size and {completion_tokens:g} tokens"
            )
        strategy = await self.strategies.get_strategy(strategy_id or DEFAULT_STRATEGY_ID)
        system = self.prompts.render_strategy(strategy) + "\n\n" + ANSWER_FORMAT.format(schema=decision_schema_json())
        return _Tokens(
            2 * len(system) / CHARS_PER_TOKEN,
            completion_tokens,
            f"the size of a prompt of strategy {strategy.strategy_id} and {completion_tokens:g} tokens",
        )

    def refuse_over_budget(self, spec: ExperimentCreate, costed: list[Costed]) -> None:
        for variant, cost in zip(spec.variants, costed, strict=True):
            if cost.budget_usd is None:
                continue
            if not cost.known:
                raise ExperimentError(
                    f"variant {variant.name!r}: its daily cost cannot be estimated ({cost.explanation}), so it cannot "
                    f"be checked against its daily budget of {cost.budget_usd:.2f} USD ({cost.budget_basis})"
                )
            if cost.expected_usd > cost.budget_usd:
                raise ExperimentError(
                    f"variant {variant.name!r} is expected to cost {cost.expected_usd:.4f} USD a day "
                    f"({cost.explanation}), over its daily budget of {cost.budget_usd:.4f} USD ({cost.budget_basis}): "
                    "give it a larger daily_budget_usd, fewer accounts or a cheaper model"
                )
