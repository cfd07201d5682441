"""What the running A/B experiments ask of an account's next decision: the variant it runs (`accounts`
assignment) or the control it executes and the variants that decide beside it as shadows (`shadow`).

The decision engine asks `plan_for(account_id)` on every decision; the plans are read from the database once and
kept until `invalidate()` (an experiment started or stopped in this process) or for `RELOAD_S` of the wall clock
at most (one started by another process or the CLI is picked up that late)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import models

log = logging.getLogger(__name__)

RELOAD_S = 5.0


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One arm: a field left None keeps the account's own setting. `daily_budget_usd`: what its model calls may
    spend a day (its own budget, else its accounts' summed; None: no limit)."""

    id: int
    experiment_id: int
    name: str
    is_control: bool
    model: str | None = None
    strategy_id: str | None = None
    prompt_version: str | None = None
    temperature: float | None = None
    daily_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """The account's part in one running experiment: `executed` decides and trades; `shadows` decide on the same
    stored context and are only recorded (an `accounts` experiment has none)."""

    experiment_id: int
    assignment: str
    executed: VariantSpec
    shadows: tuple[VariantSpec, ...] = ()


@dataclass
class _Snapshot:
    plans: dict[int, AccountPlan] = field(default_factory=dict)
    loaded_at: float = float("-inf")


class ExperimentPlans:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        default_budget_usd: float | None = None,
        reload_s: float = RELOAD_S,
    ) -> None:
        """`default_budget_usd`: an account's daily LLM budget when it has none of its own (LLM_DAILY_BUDGET_USD);
        a variant without its own budget may spend its accounts' budgets summed (as the start-up check counts it)."""
        self.sessions = sessions
        self.default_budget_usd = default_budget_usd
        self.reload_s = reload_s
        self._snapshot = _Snapshot()
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._snapshot = _Snapshot()

    async def plan_for(self, account_id: int) -> AccountPlan | None:
        snapshot = self._snapshot
        if time.monotonic() - snapshot.loaded_at > self.reload_s:
            async with self._lock:
                if self._snapshot is snapshot:  # nobody reloaded while this waited
                    self._snapshot = await self._load()
                snapshot = self._snapshot
        return snapshot.plans.get(account_id)

    async def _load(self) -> _Snapshot:
        started = time.monotonic()
        async with self.sessions() as session:
            experiments = (
                await session.scalars(select(models.Experiment).where(models.Experiment.status == "running"))
            ).all()
            plans: dict[int, AccountPlan] = {}
            for experiment in experiments:
                try:
                    plans.update(await self._plans_of(session, experiment))
                except Exception:  # a broken stored experiment must not stop every account's decisions
                    log.exception("experiment %s cannot be run: its accounts decide without it", experiment.id)
        return _Snapshot(plans, started)

    async def _plans_of(self, session: AsyncSession, experiment: models.Experiment) -> dict[int, AccountPlan]:
        """The plans of one running experiment's accounts."""
        plans: dict[int, AccountPlan] = {}
        rows = (
            await session.scalars(
                select(models.ExperimentVariant)
                .where(models.ExperimentVariant.experiment_id == experiment.id)
                .order_by(models.ExperimentVariant.id)
            )
        ).all()
        budgets = await self._account_budgets(session, [int(a) for a in experiment.accounts])
        if experiment.assignment == "shadow":
            every = [int(a) for a in experiment.accounts]
            specs = [_spec(v, self._budget(v, every, budgets)) for v in rows]
            control = next(v for v in specs if v.is_control)
            shadows = tuple(v for v in specs if not v.is_control)
            for account_id in every:
                plans[account_id] = AccountPlan(experiment.id, "shadow", control, shadows)
            return plans
        assigned = (
            await session.execute(
                select(models.ExperimentAssignment.account_id, models.ExperimentAssignment.variant_id).where(
                    models.ExperimentAssignment.experiment_id == experiment.id
                )
            )
        ).all()
        accounts_of: dict[int, list[int]] = {}
        for account_id, variant_id in assigned:
            accounts_of.setdefault(variant_id, []).append(int(account_id))
        variants = {v.id: _spec(v, self._budget(v, accounts_of.get(v.id, []), budgets)) for v in rows}
        for account_id, variant_id in assigned:
            plans[int(account_id)] = AccountPlan(experiment.id, "accounts", variants[variant_id])
        return plans

    async def _account_budgets(self, session: AsyncSession, account_ids: list[int]) -> dict[int, float | None]:
        rows = await session.execute(
            select(models.Account.id, models.Account.daily_llm_budget_usd).where(models.Account.id.in_(account_ids))
        )
        return {int(i): budget if budget is not None else self.default_budget_usd for i, budget in rows.all()}

    @staticmethod
    def _budget(
        variant: models.ExperimentVariant, accounts: list[int], budgets: dict[int, float | None]
    ) -> float | None:
        return variant_daily_budget(variant.daily_budget_usd, [budgets.get(a) for a in accounts])[0]


def _spec(row: models.ExperimentVariant, budget: float | None) -> VariantSpec:
    return VariantSpec(
        id=row.id,
        experiment_id=row.experiment_id,
        name=row.name,
        is_control=row.is_control,
        model=row.model,
        strategy_id=row.strategy_id,
        prompt_version=row.prompt_version,
        temperature=row.temperature,
        daily_budget_usd=budget,
    )


def variant_daily_budget(own: float | None, accounts: Sequence[float | None]) -> tuple[float | None, str]:
    """What a variant may spend on model calls a day, and why: its own budget, else its accounts' daily LLM budgets
    summed (each an account's own, else LLM_DAILY_BUDGET_USD); None (no limit) when one of them has none."""
    if own is not None:
        return own, "the variant's daily_budget_usd"
    if not accounts or any(b is None for b in accounts):
        return None, "unlimited (an account has no daily LLM budget)"
    return float(sum(b for b in accounts if b is not None)), f"the daily LLM budgets of its {len(accounts)} account(s)"


async def variant_spent_since(session: AsyncSession, variant_id: int, since: datetime) -> float:
    """USD spent since `since` (wall clock) on the model calls of a variant's decisions."""
    query = (
        select(func.coalesce(func.sum(models.LLMCall.cost_usd), 0.0))
        .join(models.Decision, models.Decision.id == models.LLMCall.decision_id)
        .where(models.Decision.variant_id == variant_id, models.LLMCall.created_at >= since)
    )
    return float((await session.scalar(query)) or 0.0)


__all__ = ["AccountPlan", "ExperimentPlans", "VariantSpec", "variant_daily_budget", "variant_spent_since"]
