"""A/B testing between models, strategies, prompt versions and temperatures (the seed's `ab_testing.py`).

`ExperimentService` starts an experiment (checked, costed, its accounts split, stored), lists, shows and stops
it, and computes its results from the decisions' stored outcomes. The decision engine reads the running ones
through `ExperimentPlans`; this service tells the plans when it starts or stops one.

Rules a trader can trust:
- nothing is stored when an experiment is refused, and the reason says what to change;
- the sample size is fixed at the start and the verdict rests on the first `min_samples` cycles only (no peeking:
  more data never changes a verdict once taken);
- the `accounts` split is drawn once from the seed and stored: the same seed and accounts give the same split;
- the expected daily cost of each variant is shown when it starts, and one over its budget is refused.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.timeframes import floor_time, timeframe_delta
from app.db import models
from app.db.repositories.outcome_figures import SCORED_COLUMNS
from app.schemas.api import MAX_DB_ID
from app.schemas.experiments import (
    ExperimentCreate,
    ExperimentResults,
    ExperimentView,
    VariantCreate,
    VariantResults,
    VariantView,
)
from app.services.evaluation.experiment_analysis import ExperimentAnalysis, ExperimentOutcome, higher_is_better
from app.services.evaluation.tracker import RETRY_CANDLES
from app.services.llm.experiment_cost import Costed, ExperimentAccount, ExperimentCosts
from app.services.llm.experiment_plan import ExperimentPlans
from app.services.llm.llm_exceptions import (
    AccountNotFoundError,
    ExperimentError,
    ExperimentForbiddenError,
    ExperimentNotFoundError,
)
from app.services.llm.llm_service import LLMService, is_baseline
from app.services.llm.prompts.builder import (
    DEFAULT_PROMPT_VERSION,
    PROMPT_VERSIONS,
    PromptBuilder,
)
from app.services.llm.strategy_manager import StrategyManager


def split_by_weight(accounts: Sequence[int], weights: Sequence[float], seed: int) -> list[list[int]]:
    """The accounts of each variant, by weight: the accounts (in id order) are shuffled with `seed`, then cut in
    consecutive runs whose lengths are the largest-remainder quotas of the weights (ties to the earlier variant);
    a variant whose quota rounds to none takes one from the variant furthest over its quota, so each runs on
    one account at least. Deterministic: the same accounts, weights and seed give the same split."""
    if len(accounts) < len(weights):
        raise ValueError(f"{len(accounts)} account(s) cannot be split between {len(weights)} variants")
    shuffled = sorted(set(accounts))
    random.Random(seed).shuffle(shuffled)
    total, n = float(sum(weights)), len(shuffled)
    exact = [n * w / total for w in weights]
    counts = [math.floor(q) for q in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        while counts[i] == 0:
            donor = max((j for j in range(len(counts)) if counts[j] > 1), key=lambda j: (counts[j] - exact[j], -j))
            counts[donor] -= 1
            counts[i] += 1
    runs, start = [], 0
    for count in counts:
        runs.append(sorted(shuffled[start : start + count]))
        start += count
    return runs


def _same_arm(a: VariantCreate, b: VariantCreate) -> bool:
    """Whether two variants would decide alike: the same model (the baseline by any name), strategy, prompt
    version (none is v1) and temperature."""

    def arm(v: VariantCreate) -> tuple[Any, ...]:
        model = "baseline" if is_baseline(v.model) else v.model
        return model, v.strategy_id, v.prompt_version or DEFAULT_PROMPT_VERSION, v.temperature

    return arm(a) == arm(b)


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
        """`clock` is the market's (an experiment's first cycle); `wall_clock` stamps its creation and stop;
        `daily_budget_usd` is LLM_DAILY_BUDGET_USD, an account's budget when it has none of its own."""
        self.sessions = sessions
        self.clock = clock
        self.wall_clock = wall_clock
        self.interval = interval
        self.llm = llm
        self.strategies = strategies
        self.prompts = prompts
        self.plans = plans
        self.daily_budget_usd = daily_budget_usd
        self.costs = ExperimentCosts(llm=llm, strategies=strategies, prompts=prompts, interval=interval)

    # ------------------------------------------------------------------------------------------ create
    async def create(self, spec: ExperimentCreate, owner_account_id: int | None = None) -> ExperimentView:
        """Check, cost and start an experiment; `owner_account_id` is the account whose key asks (None: an admin
        or the CLI). Refused with the reason, nothing stored: ExperimentError (a conflict within the request or
        with the agent's state: two controls, a name twice, too few accounts, identical shadow variants, a model
        without a key, an account in a running experiment, a cost over the budget), AccountNotFoundError,
        StrategyNotFoundError / StrategyUnavailableError, ModelNotAvailableError / ModelCatalogUnavailableError."""
        control = self._control_index(spec)
        self._check_static(spec, control)
        await self._check_models(spec.variants)
        for variant in spec.variants:
            if variant.strategy_id is not None:
                await self.strategies.check_assignable(variant.strategy_id)
        seed = spec.seed if spec.seed is not None else random.SystemRandom().randint(0, MAX_DB_ID)
        async with self.sessions() as session:
            accounts = await self._accounts(session, spec.accounts, owner_account_id)
            await self._refuse_busy(session, [a.id for a in accounts])
            if spec.assignment == "accounts":
                if len(accounts) < len(spec.variants):
                    raise ExperimentError(
                        f"{len(accounts)} account(s) cannot be split between {len(spec.variants)} variants: each "
                        "variant needs one account at least (list more accounts, or use the shadow assignment)"
                    )
                runs = split_by_weight([a.id for a in accounts], [v.weight for v in spec.variants], seed)
            else:
                runs = [[a.id for a in accounts] for _ in spec.variants]
            by_id = {a.id: a for a in accounts}
            costed = [
                await self.costs.costed(session, variant, [by_id[i] for i in run])
                for variant, run in zip(spec.variants, runs, strict=True)
            ]
        self.costs.refuse_over_budget(spec, costed)
        experiment_id = await self._store(spec, control, seed, accounts, runs, costed, owner_account_id)
        self.plans.invalidate()
        return await self.get(experiment_id)

    def _control_index(self, spec: ExperimentCreate) -> int:
        marked = [i for i, v in enumerate(spec.variants) if v.is_control]
        if len(marked) > 1:
            names = ", ".join(spec.variants[i].name for i in marked)
            raise ExperimentError(f"one control at most: {names} are all marked is_control")
        return marked[0] if marked else 0

    def _check_static(self, spec: ExperimentCreate, control: int) -> None:
        """The rules across fields that the request's schema cannot state (each field is checked by the schema, which
        the API and the CLI both validate against)."""
        names = [v.name for v in spec.variants]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ExperimentError(f"variant names must differ: {', '.join(twice)} named twice")
        for variant in spec.variants:
            if variant.prompt_version is not None and variant.prompt_version not in PROMPT_VERSIONS:
                raise ExperimentError(
                    f"variant {variant.name!r}: unknown prompt version {variant.prompt_version!r}: one of "
                    f"{', '.join(PROMPT_VERSIONS)}"
                )
        if spec.assignment == "shadow":
            reference = spec.variants[control]
            if all(_same_arm(v, reference) for v in spec.variants):
                raise ExperimentError(
                    "a shadow experiment needs a variant that differs from its control (model, strategy, prompt "
                    "version or temperature): each would decide exactly as the control on the same context"
                )

    async def _check_models(self, variants: Sequence[VariantCreate]) -> None:
        """Every model named is the baseline or in the endpoint's catalog; without a key only the baseline can be
        a variant's (a simulated provider answers for any other name). Asked outside any transaction."""
        for variant in variants:
            if variant.model is None or is_baseline(variant.model):
                continue
            if self.llm.is_simulated:
                raise ExperimentError(
                    f"variant {variant.name!r}: no LLM is configured (OPENROUTER_API_KEY), so its model "
                    f"{variant.model!r} cannot be asked: only `baseline` can be a variant's model without a key"
                )
            if not await self.llm.check_model(variant.model):  # raises for a model the catalog does not list
                raise ExperimentError(f"variant {variant.name!r}: not a model name: {variant.model!r}")

    async def _accounts(
        self, session: AsyncSession, wanted: list[int] | None, owner_account_id: int | None
    ) -> list[ExperimentAccount]:
        """The experiment's accounts: those listed (an account key may list its own only: any other is reported
        missing, as the API does for accounts it may not see), else the owner's, else every account."""
        ids = list(dict.fromkeys(wanted)) if wanted else None
        if owner_account_id is not None:
            ids = ids or [owner_account_id]
            foreign = next((i for i in ids if i != owner_account_id), None)
            if foreign is not None:
                raise AccountNotFoundError(foreign)
        query = select(models.Account).order_by(models.Account.id)
        if ids is not None:
            query = query.where(models.Account.id.in_(ids))
        rows = {row.id: row for row in (await session.scalars(query)).all()}
        for account_id in ids or []:
            if account_id not in rows:
                raise AccountNotFoundError(account_id)
        if not rows:
            raise ExperimentError("there is no account to run an experiment on")
        return [
            ExperimentAccount(
                id=row.id,
                model=row.model,
                strategy_id=row.strategy_id,
                daily_budget_usd=row.daily_llm_budget_usd
                if row.daily_llm_budget_usd is not None
                else self.daily_budget_usd,
            )
            for row in (rows[i] for i in (ids or sorted(rows)))
        ]

    async def _refuse_busy(self, session: AsyncSession, account_ids: list[int]) -> None:
        running = (
            await session.execute(
                select(models.Experiment.id, models.Experiment.name, models.Experiment.accounts).where(
                    models.Experiment.status == "running"
                )
            )
        ).all()
        for experiment_id, name, accounts in running:
            busy = sorted(set(account_ids) & {int(a) for a in accounts or []})
            if busy:
                raise ExperimentError(
                    f"account(s) {', '.join(map(str, busy))} already in the running experiment {experiment_id} "
                    f"({name!r}): an account runs one experiment at a time (stop that one first)"
                )

    # ------------------------------------------------------------------------------------------- store
    async def _store(
        self,
        spec: ExperimentCreate,
        control: int,
        seed: int,
        accounts: list[ExperimentAccount],
        runs: list[list[int]],
        costed: list[Costed],
        owner_account_id: int | None,
    ) -> int:
        """Write the experiment, its variants and (`accounts`) its split in one transaction, with its accounts
        locked and checked again: two experiments started at once on one account cannot both run."""
        account_ids = [a.id for a in accounts]
        now = self.wall_clock.now()
        async with self.sessions.begin() as session:
            await self._lock_accounts(session, account_ids)
            await self._refuse_busy(session, account_ids)
            experiment = models.Experiment(
                name=spec.name,
                status="running",
                assignment=spec.assignment,
                metric=spec.metric,
                horizon=spec.horizon,
                interval=self.interval,
                min_samples=spec.min_samples,
                confidence_level=spec.confidence_level,
                seed=seed,
                accounts=account_ids,
                owner_account_id=owner_account_id,
                expected_daily_cost_usd=sum(c.expected_usd for c in costed),
                started_cycle=floor_time(self.clock.now(), self.interval),
                created_at=now,
                description=spec.description,
            )
            session.add(experiment)
            await session.flush()
            rows = [
                models.ExperimentVariant(
                    experiment_id=experiment.id,
                    name=variant.name,
                    is_control=index == control,
                    model=variant.model,
                    strategy_id=variant.strategy_id,
                    prompt_version=variant.prompt_version,
                    temperature=variant.temperature,
                    weight=variant.weight,
                    daily_budget_usd=variant.daily_budget_usd,
                    expected_daily_cost_usd=cost.expected_usd,
                )
                for index, (variant, cost) in enumerate(zip(spec.variants, costed, strict=True))
            ]
            session.add_all(rows)
            await session.flush()
            if spec.assignment == "accounts":
                session.add_all(
                    models.ExperimentAssignment(
                        experiment_id=experiment.id, account_id=account_id, variant_id=row.id, assigned_at=now
                    )
                    for row, run in zip(rows, runs, strict=True)
                    for account_id in run
                )
            return experiment.id

    async def _lock_accounts(self, session: AsyncSession, account_ids: list[int]) -> None:
        """The accounts' rows locked until the transaction ends: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite,
        which has no row locks, a write that changes nothing takes the database's write lock."""
        if session.get_bind().dialect.name == "sqlite":
            touch = (
                update(models.Account)
                .where(models.Account.id.in_(account_ids))
                .values(updated_at=models.Account.updated_at)
                .execution_options(synchronize_session=False)
            )
            await session.execute(touch)
            return
        query = select(models.Account.id).where(models.Account.id.in_(account_ids)).order_by(models.Account.id)
        await session.execute(query.with_for_update())

    # ------------------------------------------------------------------------------------------- reads
    async def list_all(self, scope: int | None = None, *, status: str | None = None) -> list[ExperimentView]:
        """Every experiment, newest first (`scope`: those on that account only), of a `status` or all."""
        async with self.sessions() as session:
            query = select(models.Experiment).order_by(models.Experiment.id.desc())
            if status is not None:
                query = query.where(models.Experiment.status == status)
            rows = [e for e in (await session.scalars(query)).all() if _visible(e, scope)]
            return [await self._view(session, e) for e in rows]

    async def get(self, experiment_id: int, scope: int | None = None) -> ExperimentView:
        async with self.sessions() as session:
            return await self._view(session, await self._experiment(session, experiment_id, scope))

    async def _experiment(self, session: AsyncSession, experiment_id: int, scope: int | None) -> models.Experiment:
        experiment = await session.get(models.Experiment, experiment_id)
        if experiment is None or not _visible(experiment, scope):
            raise ExperimentNotFoundError(experiment_id)
        return experiment

    async def _variants(self, session: AsyncSession, experiment_id: int) -> list[models.ExperimentVariant]:
        query = (
            select(models.ExperimentVariant)
            .where(models.ExperimentVariant.experiment_id == experiment_id)
            .order_by(models.ExperimentVariant.id)
        )
        return list((await session.scalars(query)).all())

    async def _view(self, session: AsyncSession, experiment: models.Experiment) -> ExperimentView:
        variants = await self._variants(session, experiment.id)
        assigned: dict[int, list[int]] = defaultdict(list)
        if experiment.assignment == "accounts":
            rows = await session.execute(
                select(models.ExperimentAssignment.variant_id, models.ExperimentAssignment.account_id)
                .where(models.ExperimentAssignment.experiment_id == experiment.id)
                .order_by(models.ExperimentAssignment.account_id)
            )
            for variant_id, account_id in rows.all():
                assigned[variant_id].append(account_id)
        accounts = [int(a) for a in experiment.accounts or []]
        views = [
            VariantView(
                id=v.id,
                name=v.name,
                is_control=v.is_control,
                model=v.model,
                strategy_id=v.strategy_id,
                prompt_version=v.prompt_version,
                temperature=v.temperature,
                weight=v.weight,
                daily_budget_usd=v.daily_budget_usd,
                expected_daily_cost_usd=v.expected_daily_cost_usd,
                accounts=assigned[v.id] if experiment.assignment == "accounts" else accounts,
            )
            for v in variants
        ]
        extra = sum(
            v.expected_daily_cost_usd for v in variants if experiment.assignment == "accounts" or not v.is_control
        )
        return ExperimentView(
            id=experiment.id,
            name=experiment.name,
            description=experiment.description,
            status="running" if experiment.status == "running" else "stopped",
            assignment="accounts" if experiment.assignment == "accounts" else "shadow",
            metric=experiment.metric,
            higher_is_better=higher_is_better(experiment.metric),
            horizon=experiment.horizon,
            interval=experiment.interval,
            min_samples=experiment.min_samples,
            confidence_level=experiment.confidence_level,
            seed=experiment.seed,
            accounts=accounts,
            owner_account_id=experiment.owner_account_id,
            expected_daily_cost_usd=experiment.expected_daily_cost_usd,
            extra_daily_cost_usd=extra,
            started_cycle=experiment.started_cycle,
            created_at=experiment.created_at,
            stopped_at=experiment.stopped_at,
            stop_reason=experiment.stop_reason,
            variants=views,
        )

    # -------------------------------------------------------------------------------------------- stop
    async def stop(self, experiment_id: int, reason: str | None = None, scope: int | None = None) -> ExperimentView:
        """Stop a running experiment: from the next decision on, its accounts decide as before (their own settings,
        no shadows). An account key may stop the experiments it started only."""
        async with self.sessions.begin() as session:
            experiment = await self._experiment(session, experiment_id, scope)
            if scope is not None and experiment.owner_account_id != scope:
                raise ExperimentForbiddenError(
                    f"experiment {experiment_id} was started by an admin key: only an admin key may stop it"
                )
            done = await session.execute(
                update(models.Experiment)
                .where(models.Experiment.id == experiment_id, models.Experiment.status == "running")
                .values(status="stopped", stopped_at=self.wall_clock.now(), stop_reason=reason)
                .execution_options(synchronize_session=False)
            )
            if not getattr(done, "rowcount", 0):
                raise ExperimentError(f"experiment {experiment_id} is already stopped")
        self.plans.invalidate()
        return await self.get(experiment_id, scope)

    # ----------------------------------------------------------------------------------------- results
    async def results(self, experiment_id: int, scope: int | None = None) -> ExperimentResults:
        """Per variant: its decisions, fallback and error rates, latency, cost and tokens; the metric over its
        settled cycles (a unit is a cycle: its decisions, every account's, move with one market and are scored
        together) with its confidence interval; and against the control the difference, its interval and
        p-value, and the verdict, taken on the first `min_samples` settled cycles both scored once there are that
        many, and "not yet" until then (see `ExperimentAnalysis`)."""
        async with self.sessions() as session:
            experiment = await self._experiment(session, experiment_id, scope)
            view = await self._view(session, experiment)
            variants = view.variants  # read once, with the view
            ids = [v.id for v in variants]
            counts = await self._decision_counts(session, ids)
            usage = await self._usage(session, ids)
            outcomes = await self._outcomes(session, experiment)
        control = next(v for v in variants if v.is_control)
        # A cycle is settled once its horizon and the tracker's wait for late candles are over: no outcome of it
        # can still arrive, so a verdict taken on it never changes.
        settled = floor_time(self.clock.now(), self.interval) - (experiment.horizon + RETRY_CANDLES) * timeframe_delta(
            self.interval
        )
        analysis = ExperimentAnalysis(experiment, outcomes, control.id, settled_before=settled)
        results = []
        for variant in variants:
            decided = counts.get(variant.id)
            total = decided.decisions if decided else 0
            cost, prompt_tokens, completion_tokens = usage.get(variant.id, (0.0, 0, 0))
            results.append(
                VariantResults(
                    variant_id=variant.id,
                    name=variant.name,
                    is_control=variant.is_control,
                    decisions=total,
                    shadow_decisions=decided.shadows if decided else 0,
                    fallback_rate=decided.fallbacks / total if decided and total else None,
                    error_rate=decided.errors / total if decided and total else None,
                    mean_latency_ms=decided.mean_latency_ms if decided else None,
                    cost_usd=cost,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    **analysis.of(variant.id),
                )
            )
        return ExperimentResults(experiment=view, variants=results)

    async def _decision_counts(self, session: AsyncSession, variant_ids: list[int]) -> dict[int, _Counts]:
        d = models.Decision
        query = (
            select(
                d.variant_id,
                func.count(),
                func.sum(case((d.shadow_of.is_not(None), 1), else_=0)),
                func.sum(case((d.is_fallback, 1), else_=0)),
                func.sum(case((or_(d.status == "error", d.failure == "api_error"), 1), else_=0)),
                func.avg(d.latency_ms),
            )
            .where(d.variant_id.in_(variant_ids))
            .group_by(d.variant_id)
        )
        return {
            int(variant_id): _Counts(
                int(n), int(shadows or 0), int(fallbacks or 0), int(errors or 0), float(ms) if ms is not None else None
            )
            for variant_id, n, shadows, fallbacks, errors, ms in (await session.execute(query)).all()
        }

    async def _usage(self, session: AsyncSession, variant_ids: list[int]) -> dict[int, tuple[float, int, int]]:
        """USD and tokens of the model calls of each variant's decisions."""
        call = models.LLMCall
        query = (
            select(
                models.Decision.variant_id,
                func.coalesce(func.sum(call.cost_usd), 0.0),
                func.coalesce(func.sum(call.prompt_tokens), 0),
                func.coalesce(func.sum(call.completion_tokens), 0),
            )
            .join(models.Decision, models.Decision.id == call.decision_id)
            .where(models.Decision.variant_id.in_(variant_ids))
            .group_by(models.Decision.variant_id)
        )
        return {
            variant_id: (float(usd or 0.0), int(prompt or 0), int(completion or 0))
            for variant_id, usd, prompt, completion in (await session.execute(query)).all()
            if variant_id is not None
        }

    async def _outcomes(self, session: AsyncSession, experiment: models.Experiment) -> list[ExperimentOutcome]:
        """The columns the analysis reads of the experiment's outcomes at its horizon (plain rows, not ORM objects:
        an experiment on many accounts has millions)."""
        o = models.DecisionOutcome
        d = models.Decision
        failed_call = (
            select(models.LLMCall.id)
            .where(models.LLMCall.decision_id == o.decision_id, models.LLMCall.outcome != "ok")
            .exists()
        )
        query = (
            select(
                o.variant_id,
                o.cycle_time,
                # answered by the model the arm asked, at the first try of the chain (a usable answer: no failure,
                # and no other model of the fallback chain): only such cycles are compared
                and_(d.failure.is_(None), ~failed_call).label("own_answer"),
                *SCORED_COLUMNS,
            )
            .join(d, d.id == o.decision_id)
            .where(
                o.experiment_id == experiment.id,
                o.horizon == experiment.horizon,
                o.interval == experiment.interval,
                o.cycle_time >= experiment.started_cycle,
            )
            .order_by(o.cycle_time, o.account_id, o.id)
        )
        return cast(list[ExperimentOutcome], list((await session.execute(query)).all()))


@dataclass(frozen=True, slots=True)
class _Counts:
    decisions: int
    shadows: int
    fallbacks: int
    errors: int
    mean_latency_ms: float | None


def _visible(experiment: models.Experiment, scope: int | None) -> bool:
    """An admin sees every experiment; an account key those on its account alone (one over several accounts shows
    the others' ids and aggregates their outcomes, which that key may not read)."""
    return scope is None or {int(a) for a in experiment.accounts or []} == {scope}


__all__ = [
    "ExperimentError",
    "ExperimentForbiddenError",
    "ExperimentNotFoundError",
    "ExperimentService",
    "split_by_weight",
]
