"""The experiment service: starting an experiment (checked, costed, split, stored), every refusal (nothing stored),
the stable `accounts` split, stopping, and results computed on hand-made outcomes whose answer the test works out
itself (including "not yet" below the sample size, and no peeking beyond it)."""

from __future__ import annotations

import asyncio
import statistics
import typing
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.timeframes import floor_time
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.schemas.api import OutcomeHorizon
from app.schemas.experiments import ExperimentCreate, Horizon, PromptVersion
from app.services.account.new_account import new_account
from app.services.evaluation.scoring import METRICS
from app.services.evaluation.tracker import DEFAULT_HORIZONS, RETRY_CANDLES
from app.services.llm.ab_testing import (
    ExperimentError,
    ExperimentForbiddenError,
    ExperimentNotFoundError,
    split_by_weight,
)
from app.services.llm.llm_exceptions import AccountNotFoundError, ModelNotAvailableError
from app.services.llm.prompts.builder import PROMPT_VERSIONS
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import OpenRouterModel
from app.services.llm.strategy_manager import StrategyNotFoundError, StrategyUnavailableError
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import START, IsolatedSettings
from tests.fakes.openrouter_server import FakeOpenRouter, model_entry

pytestmark = pytest.mark.db

KEY = "sk-or-v1-experiment-service-0123456789abcdef"
CYCLES_PER_DAY = 288  # 5m candles
SHADOW = {
    "name": "trend",
    "assignment": "shadow",
    "min_samples": 20,
    "variants": [
        {"name": "control", "model": "baseline", "strategy_id": "conservative"},
        {"name": "aggr", "model": "baseline", "strategy_id": "aggressive"},
    ],
}


def spec(**changes: Any) -> ExperimentCreate:
    return ExperimentCreate.model_validate({**SHADOW, **changes})


async def add_accounts(agent: Agent, count: int, **fields: Any) -> list[int]:
    ids = []
    async with agent.sessions.begin() as session:
        for _ in range(count):
            name = f"acct-{len(ids)}-{id(ids)}"
            account = await AccountRepository(session).add(
                new_account(name, now=START, **fields), reason="test", now=START
            )
            ids.append(account.id)
    return ids


async def stored(agent: Agent) -> tuple[int, int, int]:
    async with agent.sessions() as session:
        counts = [
            await session.scalar(select(func.count()).select_from(table))
            for table in (models.Experiment, models.ExperimentVariant, models.ExperimentAssignment)
        ]
    return counts[0] or 0, counts[1] or 0, counts[2] or 0


def test_the_schema_offers_the_engines_prompt_versions_and_metrics() -> None:
    assert set(typing.get_args(PromptVersion)) == set(PROMPT_VERSIONS)
    metric = ExperimentCreate.model_fields["metric"].annotation
    assert set(typing.get_args(metric)) == set(METRICS)
    # the horizons an experiment or the metrics may ask for are those the outcome tracker records
    assert set(typing.get_args(Horizon)) == set(DEFAULT_HORIZONS) == {int(h) for h in OutcomeHorizon}


# ------------------------------------------------------------------------------------------------- create
async def test_a_shadow_experiment_is_stored_and_planned(agent: Agent, clock: ManualClock) -> None:
    clock.advance(timedelta(minutes=7))  # mid-candle: the experiment starts on the current candle
    view = await agent.experiments.create(spec(description="does momentum beat trend?", seed=7))

    assert (view.status, view.assignment, view.metric, view.horizon, view.min_samples) == (
        "running",
        "shadow",
        "mean_return",
        4,
        20,
    )
    assert view.accounts == [1] and view.owner_account_id is None and view.seed == 7
    assert view.started_cycle == floor_time(clock.now(), "5m") == START + timedelta(minutes=5)
    assert view.higher_is_better and view.confidence_level == 0.95
    control, aggr = view.variants
    assert (control.name, control.is_control, aggr.name, aggr.is_control) == ("control", True, "aggr", False)
    assert control.accounts == aggr.accounts == [1]
    assert view.expected_daily_cost_usd == 0.0 and aggr.expected_daily_cost_usd == 0.0  # the baseline is free

    plan = await agent.experiments.plans.plan_for(1)
    assert plan is not None and plan.experiment_id == view.id and plan.assignment == "shadow"
    assert plan.executed.id == control.id and [s.id for s in plan.shadows] == [aggr.id]
    assert [s.strategy_id for s in plan.shadows] == ["aggressive"]
    assert await agent.experiments.get(view.id) == view
    assert [v.id for v in await agent.experiments.list_all()] == [view.id]


async def test_the_control_is_the_one_marked_else_the_first(agent: Agent) -> None:
    variants = [
        {"name": "a", "model": "baseline"},
        {"name": "b", "model": "baseline", "strategy_id": "aggressive", "is_control": True},
    ]
    view = await agent.experiments.create(spec(variants=variants))
    assert [(v.name, v.is_control) for v in view.variants] == [("a", False), ("b", True)]


async def _refusal(agent: Agent, request: ExperimentCreate, error: type[Exception], needle: str) -> None:
    before = await stored(agent)
    with pytest.raises(error) as refused:
        await agent.experiments.create(request)
    assert needle in str(refused.value)
    assert await stored(agent) == before, "nothing stored on a refusal"


async def test_every_refusal_says_why_and_stores_nothing(agent: Agent) -> None:
    variants: list[dict[str, Any]] = SHADOW["variants"]  # type: ignore[assignment]
    cases: list[tuple[ExperimentCreate, type[Exception], str]] = [
        (spec(accounts=[1, 99]), AccountNotFoundError, "account 99 does not exist"),
        (
            spec(variants=[variants[0], {"name": "x", "strategy_id": "no_such_strategy"}]),
            StrategyNotFoundError,
            "unknown strategy 'no_such_strategy'",
        ),
        (
            spec(variants=[variants[0], {"name": "x", "model": "openai/gpt-5"}]),
            ExperimentError,
            "no LLM is configured",
        ),
        (
            spec(variants=[{**variants[0], "is_control": True}, {**variants[1], "is_control": True}]),
            ExperimentError,
            "one control at most",
        ),
        (spec(variants=[variants[0], {**variants[1], "name": "control"}]), ExperimentError, "control named twice"),
        (
            spec(variants=[variants[0], {**variants[0], "name": "same", "prompt_version": "v1"}]),
            ExperimentError,
            "needs a variant that differs from its control",
        ),
        (spec(assignment="accounts"), ExperimentError, "1 account(s) cannot be split between 2 variants"),
    ]
    for request, error, needle in cases:
        await _refusal(agent, request, error, needle)

    # a strategy that exists but cannot run
    own = (await agent.strategies.get_strategy("conservative")).model_copy(
        update={"strategy_id": "paused-one", "strategy_type": "custom", "strategy_name": "Paused"}
    )
    await agent.strategies.create_custom_strategy(own)
    await agent.strategies.set_strategy_active("paused-one", False)
    await _refusal(
        agent,
        spec(variants=[variants[0], {"name": "x", "strategy_id": "paused-one"}]),
        StrategyUnavailableError,
        "paused-one",
    )


async def test_an_account_runs_one_experiment_at_a_time(agent: Agent) -> None:
    (second,) = await add_accounts(agent, 1)
    first = await agent.experiments.create(spec(accounts=[1]))
    await _refusal(agent, spec(accounts=[second, 1]), ExperimentError, f"already in the running experiment {first.id}")
    await agent.experiments.create(spec(accounts=[second]))  # another account is free
    await agent.experiments.stop(first.id, "done")
    again = await agent.experiments.create(spec(accounts=[1]))  # free again once stopped
    assert again.accounts == [1]


async def test_two_experiments_started_at_once_on_one_account_cannot_both_run(agent: Agent) -> None:
    results = await asyncio.gather(
        agent.experiments.create(spec(name="one")),
        agent.experiments.create(spec(name="two")),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ExperimentError)]
    assert len(refused) == 1 and "already in the running experiment" in str(refused[0]), results
    async with agent.sessions() as session:
        running = await session.scalar(
            select(func.count()).select_from(models.Experiment).where(models.Experiment.status == "running")
        )
    assert running == 1


async def test_an_account_key_owns_experiments_on_its_own_account_only(agent: Agent) -> None:
    (mine,) = await add_accounts(agent, 1)
    with pytest.raises(AccountNotFoundError, match="account 1 does not exist"):
        await agent.experiments.create(spec(accounts=[1]), owner_account_id=mine)
    assert await stored(agent) == (0, 0, 0)
    view = await agent.experiments.create(spec(), owner_account_id=mine)  # the default: its own account
    assert view.accounts == [mine] and view.owner_account_id == mine

    admins = await agent.experiments.create(spec(accounts=[1]))
    assert [v.id for v in await agent.experiments.list_all(mine)] == [view.id]
    assert {v.id for v in await agent.experiments.list_all()} == {view.id, admins.id}
    for call in (agent.experiments.get, agent.experiments.results):
        with pytest.raises(ExperimentNotFoundError, match=f"experiment {admins.id} does not exist"):
            await call(admins.id, mine)
    with pytest.raises(ExperimentNotFoundError):
        await agent.experiments.stop(admins.id, "not mine", mine)
    assert (await agent.experiments.get(admins.id)).status == "running"

    # an admin's experiment on the account: the account's key sees it, but only an admin stops it
    await agent.experiments.stop(view.id, "mine", mine)
    on_mine = await agent.experiments.create(spec(accounts=[mine]))
    assert (await agent.experiments.get(on_mine.id, mine)).id == on_mine.id
    with pytest.raises(ExperimentForbiddenError, match="only an admin key may stop it"):
        await agent.experiments.stop(on_mine.id, None, mine)


# ------------------------------------------------------------------------------------------ accounts split
def test_the_split_follows_the_weights_and_gives_every_variant_an_account() -> None:
    accounts = list(range(1, 11))
    runs = split_by_weight(accounts, [3, 1], seed=5)
    assert [len(r) for r in runs] == [8, 2]  # 7.5 and 2.5: the tie goes to the first
    assert sorted(runs[0] + runs[1]) == accounts
    assert split_by_weight(list(reversed(accounts)), [3, 1], seed=5) == runs, "the order given does not matter"
    assert [len(r) for r in split_by_weight(accounts, [1, 1, 1], seed=1)] == [4, 3, 3]
    assert [len(r) for r in split_by_weight([1, 2, 3], [100, 1, 1], seed=1)] == [1, 1, 1]
    assert [len(r) for r in split_by_weight(accounts, [100, 1, 1], seed=1)] == [8, 1, 1]
    splits = {tuple(map(tuple, split_by_weight(accounts, [1, 1], seed=s))) for s in range(10)}
    assert len(splits) > 1, "the seed draws the split"
    with pytest.raises(ValueError):
        split_by_weight([1], [1, 1], seed=1)


async def test_the_accounts_split_is_drawn_from_the_seed_stored_and_stable(agent: Agent) -> None:
    accounts = [1, *await add_accounts(agent, 7)]
    variants = [
        {"name": "control", "model": "baseline", "weight": 3},
        {"name": "aggr", "model": "baseline", "strategy_id": "aggressive", "weight": 1},
    ]
    request = spec(assignment="accounts", accounts=accounts, variants=variants, seed=1234)
    view = await agent.experiments.create(request)
    expected = split_by_weight(accounts, [3, 1], 1234)
    assert [v.accounts for v in view.variants] == expected
    assert [len(run) for run in expected] == [6, 2]

    async with agent.sessions() as session:
        rows = (
            await session.execute(
                select(models.ExperimentAssignment.account_id, models.ExperimentAssignment.variant_id)
            )
        ).all()
    by_variant = {v.id: v.accounts for v in view.variants}
    assert {(a, v) for a, v in rows} == {(a, v) for v, run in by_variant.items() for a in run}
    for variant in view.variants:
        for account_id in variant.accounts:
            plan = await agent.experiments.plans.plan_for(account_id)
            assert plan is not None and plan.executed.id == variant.id and plan.shadows == ()
    agent.experiments.plans.invalidate()  # read again from the database: the same
    for variant in view.variants:
        for account_id in variant.accounts:
            plan = await agent.experiments.plans.plan_for(account_id)
            assert plan is not None and plan.executed.id == variant.id

    await agent.experiments.stop(view.id)
    again = await agent.experiments.create(request)  # the same seed and accounts: the same split
    assert [v.accounts for v in again.variants] == expected


# ------------------------------------------------------------------------------------------------- stop
async def test_stop_ends_the_plan_and_keeps_the_experiment(agent: Agent) -> None:
    view = await agent.experiments.create(spec())
    assert await agent.experiments.plans.plan_for(1) is not None
    stopped = await agent.experiments.stop(view.id, "enough data")
    assert (stopped.status, stopped.stop_reason) == ("stopped", "enough data") and stopped.stopped_at is not None
    assert await agent.experiments.plans.plan_for(1) is None
    with pytest.raises(ExperimentError, match="already stopped"):
        await agent.experiments.stop(view.id, "again")
    assert (await agent.experiments.get(view.id)).stop_reason == "enough data"
    assert [v.id for v in await agent.experiments.list_all(status="running")] == []
    assert [v.id for v in await agent.experiments.list_all(status="stopped")] == [view.id]
    with pytest.raises(ExperimentNotFoundError):
        await agent.experiments.stop(view.id + 1)


# -------------------------------------------------------------------------------------------------- cost
@pytest.fixture
async def keyed(database_url: str, clock: ManualClock) -> AsyncIterator[tuple[Agent, FakeOpenRouter]]:
    """An agent with a model provider (the fake OpenRouter and its priced catalog)."""
    catalog = [
        model_entry("openai/gpt-5", ["max_tokens"], prompt_per_m=1.25, completion_per_m=10.0),
        model_entry("test/expensive", ["max_tokens"], prompt_per_m=1000.0, completion_per_m=2000.0),
        model_entry("test/cheap", ["max_tokens"], prompt_per_m=0.1, completion_per_m=0.2),
    ]
    with FakeOpenRouter(models=catalog) as fake:
        settings = IsolatedSettings(
            database_url=database_url,
            openrouter_api_key=KEY,
            openrouter_base_url=fake.base_url,
            llm_model="openai/gpt-5",
        )
        provider = OpenRouterModel(
            api_key=KEY,
            model=settings.llm_model,
            base_url=fake.base_url,
            timeout_s=5,
            catalog=ModelCatalog(base_url=fake.base_url, api_key=KEY),
            max_tokens=1500,
        )
        market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
        built = await build_agent(settings, clock=clock, market=market, provider=provider)
        try:
            yield built, fake
        finally:
            await built.close()


async def _calls(agent: Agent, rows: Sequence[tuple[str, float | None, int, int]]) -> None:
    """Stored model calls: (model, cost, prompt tokens, completion tokens)."""
    async with agent.sessions.begin() as session:
        session.add_all(
            models.LLMCall(
                account_id=1,
                model_requested=model,
                outcome="ok",
                cost_usd=cost,
                prompt_tokens=prompt,
                completion_tokens=completion,
                created_at=START,
            )
            for model, cost, prompt, completion in rows
        )


async def test_a_model_the_catalog_does_not_list_is_refused(keyed: tuple[Agent, FakeOpenRouter]) -> None:
    agent, _ = keyed
    request = spec(variants=[SHADOW["variants"][0], {"name": "x", "model": "test/unlisted"}])  # type: ignore[index]
    await _refusal(agent, request, ModelNotAvailableError, "test/unlisted")


async def test_the_expected_cost_comes_from_recent_calls_else_the_catalog_and_is_held_to_the_budget(
    keyed: tuple[Agent, FakeOpenRouter],
) -> None:
    agent, _ = keyed
    # gpt-5 has calls on record: its mean cost per call; the others none: catalog prices x the calls' mean tokens
    await _calls(agent, [("openai/gpt-5", 0.002, 1000, 400), ("openai/gpt-5", 0.004, 3000, 600)])
    await _calls(agent, [("openai/gpt-5", 0.006, 2000, 500), ("baseline/trend-following-v1", None, 0, 0)])
    gpt5_day = CYCLES_PER_DAY * statistics.mean([0.002, 0.004, 0.006])  # 1.152
    expensive_decision = (2000 * 1000.0 + 500 * 2000.0) / 1e6  # 3 USD: mean tokens 2000 in, 500 out
    expensive_day = CYCLES_PER_DAY * expensive_decision

    control = {"name": "control", "model": "baseline"}
    # the account's budget (LLM_DAILY_BUDGET_USD, 5 USD) covers gpt-5 for one account
    view = await agent.experiments.create(spec(variants=[control, {"name": "gpt5", "model": "openai/gpt-5"}]))
    assert view.variants[1].expected_daily_cost_usd == pytest.approx(gpt5_day)
    assert view.variants[0].expected_daily_cost_usd == 0.0
    assert view.expected_daily_cost_usd == pytest.approx(gpt5_day)
    assert view.extra_daily_cost_usd == pytest.approx(gpt5_day)
    async with agent.sessions() as session:
        row = await session.get(models.Experiment, view.id)
        assert row is not None and row.expected_daily_cost_usd == pytest.approx(gpt5_day)
    await agent.experiments.stop(view.id)

    # the expensive one, over the account's 5 USD: refused with the figures, nothing stored
    over = spec(variants=[control, {"name": "pricey", "model": "test/expensive"}])
    await _refusal(agent, over, ExperimentError, f"expected to cost {expensive_day:.4f} USD a day")
    await _refusal(agent, over, ExperimentError, "over its daily budget of 5.0000 USD")
    # its own budget decides when given: too small, then large enough
    small = {"name": "pricey", "model": "test/expensive", "daily_budget_usd": 800}
    await _refusal(agent, spec(variants=[control, small]), ExperimentError, "over its daily budget of 800.0000 USD")
    enough = await agent.experiments.create(spec(variants=[control, {**small, "daily_budget_usd": 900}]))
    assert enough.variants[1].expected_daily_cost_usd == pytest.approx(expensive_day)
    assert enough.variants[1].daily_budget_usd == 900


async def test_the_cost_counts_every_account_a_variant_decides_for(keyed: tuple[Agent, FakeOpenRouter]) -> None:
    agent, _ = keyed
    others = await add_accounts(agent, 2, daily_llm_budget_usd=0.5)
    await _calls(agent, [("test/cheap", 0.001, 2000, 500)])
    control = {"name": "control", "model": "baseline"}
    cheap = {"name": "cheap", "model": "test/cheap"}
    # shadow: the cheap variant decides for all three accounts; budgets 5 + 0.5 + 0.5
    view = await agent.experiments.create(spec(accounts=[1, *others], variants=[control, cheap]))
    assert view.variants[1].expected_daily_cost_usd == pytest.approx(CYCLES_PER_DAY * 3 * 0.001)
    await agent.experiments.stop(view.id)
    # one account on the cheap variant with a 0.5 USD budget: 0.288 fits; with 0.2 it would not
    tight = await add_accounts(agent, 1, daily_llm_budget_usd=0.2)
    await _refusal(
        agent, spec(accounts=tight, variants=[control, cheap]), ExperimentError, "over its daily budget of 0.2000 USD"
    )


# ----------------------------------------------------------------------------------------------- results
async def _decision(
    agent: Agent, account_id: int, cycle: datetime, variant_id: int, experiment_id: int, **fields: Any
) -> int:
    async with agent.sessions.begin() as session:
        row = models.Decision(
            account_id=account_id,
            cycle_time=cycle,
            # not "loop": these rows give one account several decisions per candle (variants side by side, as shadows
            # are), which the database allows the loop only once
            trigger="api",
            status=fields.pop("status", "no_action"),
            symbols=["BTC", "ETH"],
            symbols_key=",BTC,ETH,",
            created_at=cycle,
            experiment_id=experiment_id,
            variant_id=variant_id,
            **fields,
        )
        session.add(row)
        await session.flush()
        return row.id


async def _outcome(
    agent: Agent,
    decision_id: int,
    account_id: int,
    cycle: datetime,
    variant_id: int,
    experiment_id: int,
    asset: str,
    direction: int,
    value: float,
    horizon: int = 4,
) -> None:
    async with agent.sessions.begin() as session:
        session.add(
            models.DecisionOutcome(
                decision_id=decision_id,
                account_id=account_id,
                asset=asset,
                interval="5m",
                horizon=horizon,
                cycle_time=cycle,
                experiment_id=experiment_id,
                variant_id=variant_id,
                is_shadow=False,
                action="buy" if direction > 0 else "sell" if direction < 0 else "hold",
                verdict="accepted",
                direction=direction,
                confidence=60.0,
                entry_price=100.0,
                exit_price=100.0 * (1 + direction * value),
                market_return=direction * value,
                direction_return=value if direction else 0.0,
                hit=(value > 0) if direction else None,
                evaluated_at=cycle,
            )
        )


async def _cycle(
    agent: Agent, experiment_id: int, variant_id: int, account_id: int, cycle: datetime, values: tuple[float, float]
) -> None:
    """One account's cycle of one variant: a decision with BTC long and ETH short outcomes (the test's unit)."""
    decision = await _decision(agent, account_id, cycle, variant_id, experiment_id)
    await _outcome(agent, decision, account_id, cycle, variant_id, experiment_id, "BTC", 1, values[0])
    await _outcome(agent, decision, account_id, cycle, variant_id, experiment_id, "ETH", -1, values[1])
    # another horizon's outcome of the same decision: never counted at the experiment's horizon
    await _outcome(agent, decision, account_id, cycle, variant_id, experiment_id, "SOL", 1, 9.9, horizon=1)


def _control_values(i: int) -> tuple[float, float]:
    return (0.001 * ((i % 5) - 2), -0.0005 * ((i % 3) - 1))


def _better_values(i: int) -> tuple[float, float]:
    base = _control_values(i)
    return (base[0] + 0.004 + 0.0002 * (i % 4), base[1] + 0.003)


async def test_shadow_results_compare_cycle_by_cycle_and_never_peek(agent: Agent, clock: ManualClock) -> None:
    view = await agent.experiments.create(spec(min_samples=20, seed=3))
    clock.advance(timedelta(days=1))  # every cycle below is settled (its outcomes can no longer change)
    experiment_id = view.id
    control, aggr = (v.id for v in view.variants)
    cycles = [view.started_cycle + timedelta(minutes=5 * i) for i in range(26)]

    empty = await agent.experiments.results(experiment_id)
    assert [(r.decisions, r.units_available, r.verdict) for r in empty.variants] == [(0, 0, None), (0, 0, "not yet")]
    assert empty.variants[1].units_needed == 20 and empty.variants[1].estimate is None

    # 19 cycles both decided, the variant clearly better: still "not yet"
    for i in range(19):
        await _cycle(agent, experiment_id, control, 1, cycles[i], _control_values(i))
        await _cycle(agent, experiment_id, aggr, 1, cycles[i], _better_values(i))
    early = await agent.experiments.results(experiment_id)
    variant = early.variants[1]
    assert (variant.verdict, variant.units_available, variant.units_needed) == ("not yet", 19, 1)
    assert "1 more needed" in variant.note

    # the variant alone on one cycle (its control's decision has no outcome): not a common unit
    await _cycle(agent, experiment_id, aggr, 1, cycles[19], _better_values(19))
    assert (await agent.experiments.results(experiment_id)).variants[1].units_available == 19
    await _cycle(agent, experiment_id, control, 1, cycles[19], _control_values(19))
    reached = await agent.experiments.results(experiment_id)
    variant = reached.variants[1]

    def unit(values: tuple[float, float]) -> float:  # mean_return of a cycle: its assets' returns averaged
        return (values[0] + values[1]) / 2

    differences = [unit(_better_values(i)) - unit(_control_values(i)) for i in range(20)]
    assert variant.difference is not None and variant.difference.paired
    assert variant.difference.value == pytest.approx(statistics.mean(differences))
    assert variant.difference.low <= variant.difference.value <= variant.difference.high
    assert variant.difference.low > 0 and variant.difference.p_value < 0.05
    assert variant.verdict == "better" and variant.units_needed == 0 and variant.units_analysed == 20
    assert variant.estimate is not None
    assert variant.estimate.value == pytest.approx(statistics.mean(unit(_better_values(i)) for i in range(20)))
    control_row = reached.variants[0]
    assert control_row.estimate is not None and control_row.verdict is None and control_row.difference is None
    assert control_row.estimate.value == pytest.approx(statistics.mean(unit(_control_values(i)) for i in range(20)))
    assert variant.scores["hit_rate"] is not None and variant.scores["decisions"] == 40

    # later cycles where the variant loses badly: the verdict rests on the first 20 and does not move
    for i in range(20, 26):
        await _cycle(agent, experiment_id, control, 1, cycles[i], (0.01, 0.01))
        await _cycle(agent, experiment_id, aggr, 1, cycles[i], (-0.05, -0.05))
    later = (await agent.experiments.results(experiment_id)).variants[1]
    assert later.verdict == "better" and later.difference == variant.difference
    assert (later.units_available, later.units_analysed) == (26, 20)
    assert later.decisions == 26 and later.scores["decisions"] == 52


async def test_accounts_results_compare_independent_samples_and_count_decisions(
    agent: Agent, clock: ManualClock
) -> None:
    accounts = [1, *await add_accounts(agent, 1)]
    variants = [{"name": "control", "model": "baseline"}, {"name": "same", "model": "baseline", "temperature": 0.1}]
    view = await agent.experiments.create(spec(assignment="accounts", accounts=accounts, variants=variants, seed=9))
    clock.advance(timedelta(days=1))  # every cycle below is settled
    control, other = view.variants
    (control_account,), (other_account,) = control.accounts, other.accounts
    start = view.started_cycle
    for i in range(24):
        cycle = start + timedelta(minutes=5 * i)
        await _cycle(agent, view.id, control.id, control_account, cycle, _control_values(i))
        # the same returns a cycle later: no difference in truth
        await _cycle(agent, view.id, other.id, other_account, cycle, _control_values(i + 1))
    # decisions without outcomes: a fallback and an error with latencies, model calls with cost and tokens
    fallback = await _decision(agent, other_account, start, other.id, view.id, is_fallback=True, latency_ms=100.0)
    await _decision(agent, other_account, start, other.id, view.id, status="error", latency_ms=300.0)
    # no model answered: a fallback and an error
    await _decision(
        agent, other_account, start, other.id, view.id, status="fallback", is_fallback=True, failure="api_error"
    )
    async with agent.sessions.begin() as session:
        session.add_all(
            models.LLMCall(
                account_id=other_account,
                decision_id=fallback,
                model_requested="baseline",
                outcome="ok",
                cost_usd=cost,
                prompt_tokens=100,
                completion_tokens=10,
                created_at=START,
            )
            for cost in (0.25, 0.5)
        )

    found = await agent.experiments.results(view.id)
    row = found.variants[1]

    def unit(values: tuple[float, float]) -> float:
        return (values[0] + values[1]) / 2

    ours = [unit(_control_values(i + 1)) for i in range(20)]
    theirs = [unit(_control_values(i)) for i in range(20)]
    assert row.difference is not None and not row.difference.paired
    assert row.difference.value == pytest.approx(statistics.mean(ours) - statistics.mean(theirs))
    assert row.verdict == "no difference" and row.units_analysed == 20 and row.units_available == 24
    assert (row.decisions, row.shadow_decisions) == (27, 0)
    assert row.fallback_rate == pytest.approx(2 / 27) and row.error_rate == pytest.approx(2 / 27)
    assert row.mean_latency_ms == pytest.approx(200.0)
    assert (row.cost_usd, row.prompt_tokens, row.completion_tokens) == (pytest.approx(0.75), 200, 20)
    assert found.variants[0].cost_usd == 0.0 and found.variants[0].fallback_rate == 0.0


async def test_a_unit_is_a_cycle_of_every_account_and_counts_once_settled(agent: Agent, clock: ManualClock) -> None:
    """Two accounts' decisions on one candle move with one market: one unit (their outcomes scored together), not
    two. A cycle counts once no outcome of it can still arrive (its horizon and the tracker's retry window over)."""
    second = (await add_accounts(agent, 1))[0]
    view = await agent.experiments.create(spec(min_samples=20, seed=4, accounts=[1, second]))
    control, aggr = (v.id for v in view.variants)
    step = timedelta(minutes=5)
    for i in range(30):
        cycle = view.started_cycle + i * step
        for account, shift in ((1, 0.0), (second, 0.002)):
            await _cycle(agent, view.id, control, account, cycle, _control_values(i))
            await _cycle(agent, view.id, aggr, account, cycle, (_control_values(i)[0] + shift, _control_values(i)[1]))
    last = view.started_cycle + 29 * step
    wait = (view.horizon + RETRY_CANDLES) * step  # after its candle, a cycle is settled this much later
    clock.set(last + wait)  # the last cycle is not settled yet: 29 are
    row = (await agent.experiments.results(view.id)).variants[1]
    assert (row.units_available, row.units_analysed, row.verdict) == (29, 20, "better")
    clock.set(last + wait + step)
    row = (await agent.experiments.results(view.id)).variants[1]
    assert row.units_available == 30
    # a cycle's value: both accounts' assets together (four returns), the second account's BTC 0.002 better
    assert row.difference is not None and row.difference.value == pytest.approx(0.002 / 4)


async def test_an_account_key_sees_the_experiments_on_its_account_alone(agent: Agent) -> None:
    """One over several accounts shows the others' ids and aggregates their outcomes: not for an account key."""
    second = (await add_accounts(agent, 1))[0]
    shared = await agent.experiments.create(spec(accounts=[1, second]))
    await agent.experiments.stop(shared.id)
    own = await agent.experiments.create(spec(accounts=[1]))
    assert [e.id for e in await agent.experiments.list_all(scope=1)] == [own.id]
    with pytest.raises(ExperimentNotFoundError):
        await agent.experiments.results(shared.id, scope=1)
    assert (await agent.experiments.get(own.id, scope=1)).accounts == [1]
    assert {e.id for e in await agent.experiments.list_all()} == {shared.id, own.id}


async def test_a_cycle_an_arm_did_not_answer_itself_is_not_compared(agent: Agent, clock: ManualClock) -> None:
    """The executed control has the model fallback chain, a shadow does not: a cycle where an arm's decision was not
    its own model's answer (the model failed: a fallback hold, or another model of the chain answered) would compare
    unlike with unlike, so it is left out of both arms; the fallback and error rates say how often it happened."""
    view = await agent.experiments.create(spec(min_samples=20, seed=6))
    clock.advance(timedelta(days=1))
    control, aggr = (v.id for v in view.variants)
    for i in range(22):
        cycle = view.started_cycle + timedelta(minutes=5 * i)
        await _cycle(agent, view.id, control, 1, cycle, _control_values(i))
        await _cycle(agent, view.id, aggr, 1, cycle, _better_values(i))
    async with agent.sessions.begin() as session:
        decisions = {
            (row.variant_id, row.cycle_time): row
            for row in (await session.scalars(select(models.Decision).where(models.Decision.experiment_id == view.id)))
        }
        # cycle 3: the control's model failed, the chain's next model answered; cycle 5: the shadow had no answer
        chained = decisions[(control, view.started_cycle + timedelta(minutes=15))]
        session.add_all(
            models.LLMCall(
                account_id=1, decision_id=chained.id, model_requested=model, outcome=outcome, created_at=START
            )
            for model, outcome in (("first/model", "api_error"), ("second/model", "ok"))
        )
        decisions[(aggr, view.started_cycle + timedelta(minutes=25))].failure = "api_error"
    row = (await agent.experiments.results(view.id)).variants[1]
    assert (row.units_available, row.units_analysed) == (20, 20)
    kept = [i for i in range(22) if i not in (3, 5)][:20]
    unit = [
        (_better_values(i)[0] + _better_values(i)[1]) / 2 - (_control_values(i)[0] + _control_values(i)[1]) / 2
        for i in kept
    ]
    assert row.difference is not None and row.difference.value == pytest.approx(statistics.mean(unit))
