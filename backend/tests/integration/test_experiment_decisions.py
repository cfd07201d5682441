"""How the decision engine runs A/B experiments: an `accounts` variant decides (and trades) for its account; in a
`shadow` experiment every other variant decides on the same context beside the executed decision and is stored,
never executed. The experiments are stored by hand here (the service that creates them has its own tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock, WallClock
from app.core.config import Settings
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.services.account.new_account import new_account
from app.services.llm.providers.openrouter import OpenRouterModel
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import START, IsolatedSettings
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion, hold_all, model_entry

pytestmark = pytest.mark.db

KEY = "sk-or-v1-experiment-test-0123456789abcdef"


async def _experiment(
    agent: Agent, assignment: str, variants: Sequence[dict[str, Any]], accounts: Sequence[int] = (1,)
) -> tuple[int, list[int]]:
    """A running experiment stored as the service would store it; returns its id and its variants' ids (the first
    is the control). For `accounts`, variant i runs account accounts[i]."""
    async with agent.sessions.begin() as session:
        experiment = models.Experiment(
            name=f"{assignment} test",
            status="running",
            assignment=assignment,
            metric="mean_return",
            horizon=1,
            interval="5m",
            min_samples=20,
            confidence_level=0.95,
            seed=1,
            accounts=list(accounts),
            expected_daily_cost_usd=0.0,
            started_cycle=START,
            created_at=START,
        )
        session.add(experiment)
        await session.flush()
        rows = [
            models.ExperimentVariant(experiment_id=experiment.id, is_control=i == 0, weight=1.0, **spec)
            for i, spec in enumerate(variants)
        ]
        session.add_all(rows)
        await session.flush()
        if assignment == "accounts":
            session.add_all(
                models.ExperimentAssignment(
                    experiment_id=experiment.id, account_id=account, variant_id=row.id, assigned_at=START
                )
                for account, row in zip(accounts, rows, strict=False)
            )
        ids = [row.id for row in rows]
        experiment_id = experiment.id
    agent.experiments.plans.invalidate()
    return experiment_id, ids


async def _cycles(agent: Agent, clock: ManualClock, count: int) -> None:
    for _ in range(count):
        clock.advance(timedelta(minutes=5))
        await agent.loop.run_cycle()


async def _decisions(agent: Agent) -> list[models.Decision]:
    async with agent.sessions() as session:
        return list((await session.scalars(select(models.Decision).order_by(models.Decision.id))).all())


async def test_a_shadow_variant_decides_on_the_executed_context_and_never_trades(
    agent: Agent, clock: ManualClock
) -> None:
    _, (control, aggressive) = await _experiment(
        agent, "shadow", [{"name": "control"}, {"name": "aggressive", "strategy_id": "aggressive"}]
    )
    await _cycles(agent, clock, 12)

    rows = await _decisions(agent)
    executed = [r for r in rows if r.shadow_of is None]
    shadows = [r for r in rows if r.shadow_of is not None]
    assert len(executed) == 12 and len(shadows) == 12
    by_control = {r.shadow_of: r for r in shadows}
    for row in executed:
        assert row.variant_id == control and row.strategy_id == "conservative" and row.status != "shadow"
        shadow = by_control[row.id]  # one shadow per executed decision, on its candle and context
        assert shadow.status == "shadow" and shadow.variant_id == aggressive
        assert shadow.strategy_id == "aggressive" and shadow.cycle_time == row.cycle_time
        assert shadow.asset_state == row.asset_state and row.asset_state is not None
        assert set(row.asset_state) == {"BTC", "ETH", "SOL"}
        assert shadow.validation_result is not None and shadow.final_decision is not None
    async with agent.sessions() as session:
        shadow_orders = await session.scalar(
            select(func.count()).select_from(models.Order).where(models.Order.decision_id.in_([s.id for s in shadows]))
        )
        shadow_calls = await session.scalar(
            select(func.count())
            .select_from(models.LLMCall)
            .where(models.LLMCall.decision_id.in_([s.id for s in shadows]))
        )
    assert shadow_orders == 0  # never executed
    assert shadow_calls == 12  # each with its model call on record

    # their outcomes are measured like every decision's, and told apart in Prometheus
    async with agent.sessions() as session:
        shadow_outcomes = await session.scalar(
            select(func.count())
            .select_from(models.DecisionOutcome)
            .where(models.DecisionOutcome.is_shadow, models.DecisionOutcome.horizon == 1)
        )
    assert shadow_outcomes == 11 * 3  # every asset of every shadow whose next candle has closed
    counted = sum(
        sample.value
        for metric in agent.metrics.registry.collect()
        if metric.name == "decision_outcomes"
        for sample in metric.samples
        if sample.name == "decision_outcomes_total"
        and sample.labels["shadow"] == "true"
        and sample.labels["horizon"] == "1"
    )
    assert counted == shadow_outcomes

    # the account's history and its candle cache know only the executed decisions
    history = await agent.engine.get_decision_history(1, limit=100)
    assert {item["id"] for item in history} == {r.id for r in executed}
    again = await agent.engine.make_trading_decision(None, 1)
    assert again.id == executed[-1].id and again.shadow_of is None

    # a shadow shows the context it was made on (the executed decision's) with its own prompt
    shown = await agent.engine.get_decision(shadows[-1].id)
    executed_view = await agent.engine.get_decision(executed[-1].id)
    assert shown.status == "shadow" and shown.shadow_of == executed[-1].id
    assert shown.provenance is not None and executed_view.provenance is not None
    assert shown.provenance["context"] == executed_view.provenance["context"]
    assert "aggressive" in shown.provenance["prompt"].lower()
    assert shown.provenance["prompt"] != executed_view.provenance["prompt"]


async def test_an_accounts_variant_decides_for_its_account(agent: Agent, clock: ManualClock) -> None:
    async with agent.sessions.begin() as session:
        second = await AccountRepository(session).add(new_account("second", now=START), reason="test", now=START)
    _, (as_is, aggressive) = await _experiment(
        agent,
        "accounts",
        [{"name": "as-is"}, {"name": "aggressive", "strategy_id": "aggressive"}],
        accounts=(second.id, 1),
    )
    await _cycles(agent, clock, 2)
    rows = await _decisions(agent)
    assert len(rows) == 4
    for row in rows:
        expected = (aggressive, "aggressive") if row.account_id == 1 else (as_is, "conservative")
        assert (row.variant_id, row.strategy_id) == expected and row.shadow_of is None
    account_view = await agent.strategies.get_account_strategy(1)
    assert account_view.strategy_id == "conservative"  # the account's own setting is untouched


@pytest.fixture
async def llm_agent(database_url: str, clock: ManualClock) -> AsyncIterator[tuple[Agent, FakeOpenRouter]]:
    catalog = [
        model_entry(slug, ["temperature", "max_tokens", "response_format"])
        for slug in ("openai/gpt-5", "test/variant-model")
    ]
    with FakeOpenRouter(models=catalog) as fake:
        settings: Settings = IsolatedSettings(
            database_url=database_url,
            openrouter_api_key=KEY,
            openrouter_base_url=fake.base_url,
            llm_model="openai/gpt-5",
        )
        provider = OpenRouterModel(api_key=KEY, model=settings.llm_model, base_url=fake.base_url, timeout_s=5)
        market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
        agent = await build_agent(settings, clock=clock, market=market, provider=provider)
        try:
            yield agent, fake
        finally:
            await agent.close()


async def test_a_shadow_variant_sends_its_own_model_temperature_and_prompt_version(
    llm_agent: tuple[Agent, FakeOpenRouter], clock: ManualClock
) -> None:
    agent, fake = llm_agent
    fake.responder = lambda body: Scripted(200, chat_completion(hold_all(), model=body["model"]))
    _, (control, variant, _baseline) = await _experiment(
        agent,
        "shadow",
        [
            {"name": "control"},
            {"name": "lean-cool", "model": "test/variant-model", "temperature": 0.3, "prompt_version": "lean"},
            {"name": "baseline", "model": "baseline"},
        ],
    )
    await _cycles(agent, clock, 1)

    bodies = [json.loads(r.body) for r in fake.chat_requests]
    by_model = {body["model"]: body for body in bodies}
    assert set(by_model) == {"openai/gpt-5", "test/variant-model"}  # the baseline answers without the endpoint
    control_prompt = by_model["openai/gpt-5"]["messages"][-1]["content"]
    lean_prompt = by_model["test/variant-model"]["messages"][-1]["content"]
    assert by_model["test/variant-model"]["temperature"] == 0.3
    assert "temperature" not in by_model["openai/gpt-5"]
    assert "PERFORMANCE:" in control_prompt and "PERFORMANCE:" not in lean_prompt
    rows = await _decisions(agent)
    served = {r.variant_id: r.model_served for r in rows}
    assert served[control] == "openai/gpt-5" and served[variant] == "test/variant-model"
    assert sorted(r.model_served or "" for r in rows if r.shadow_of is not None) == [
        "baseline/trend-following-v1",
        "test/variant-model",
    ]


async def test_a_variant_over_its_daily_budget_makes_no_model_call(
    llm_agent: tuple[Agent, FakeOpenRouter], clock: ManualClock
) -> None:
    agent, fake = llm_agent
    fake.responder = lambda body: Scripted(200, chat_completion(hold_all(), model=body["model"], cost=0.01))
    _, (_, variant) = await _experiment(
        agent,
        "shadow",
        [{"name": "control"}, {"name": "capped", "model": "test/variant-model", "daily_budget_usd": 0.015}],
    )
    await _cycles(agent, clock, 3)
    asked = [json.loads(r.body)["model"] for r in fake.chat_requests]
    assert asked.count("openai/gpt-5") == 3
    assert asked.count("test/variant-model") == 2  # 0.01 spent, then 0.02 >= 0.015: no third call
    rows = [r for r in await _decisions(agent) if r.variant_id == variant]
    assert [r.failure for r in rows] == [None, None, "budget"]
    assert rows[-1].error is not None and "daily LLM budget" in rows[-1].error


async def test_a_variant_without_a_budget_of_its_own_spends_its_accounts_budgets(
    llm_agent: tuple[Agent, FakeOpenRouter], clock: ManualClock
) -> None:
    agent, fake = llm_agent
    fake.responder = lambda body: Scripted(200, chat_completion(hold_all(), model=body["model"], cost=0.01))
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, 1)
        assert account is not None
        account.daily_llm_budget_usd = 0.015
    await _experiment(agent, "shadow", [{"name": "control"}, {"name": "uncapped", "model": "test/variant-model"}])
    await _cycles(agent, clock, 3)
    asked = [json.loads(r.body)["model"] for r in fake.chat_requests]
    assert asked.count("test/variant-model") == 2  # the account's 0.015 a day holds for the variant too
    # and the shadow's spending is its own: the account's decisions still had their 0.015 (two calls of 0.01)
    assert asked.count("openai/gpt-5") == 2


async def test_what_a_shadow_variant_leaves_open_is_the_accounts_own_setting(
    llm_agent: tuple[Agent, FakeOpenRouter], clock: ManualClock
) -> None:
    agent, fake = llm_agent
    fake.responder = lambda body: Scripted(200, chat_completion(hold_all(), model=body["model"]))
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, 1)
        assert account is not None
        account.model = "test/variant-model"
    _, (control, warm) = await _experiment(
        agent,
        "shadow",
        [{"name": "control", "model": "openai/gpt-5", "strategy_id": "aggressive"}, {"name": "warm", "temperature": 1}],
    )
    await _cycles(agent, clock, 1)
    rows = {r.variant_id: r for r in await _decisions(agent)}
    assert (rows[control].model_requested, rows[control].strategy_id) == ("openai/gpt-5", "aggressive")
    # not the control's model and strategy: the account's own
    assert (rows[warm].model_requested, rows[warm].strategy_id) == ("test/variant-model", "conservative")


class _OneMillisecondBeforeAClose(WallClock):
    """Real time, 1 ms before a 5m candle closes."""

    def now(self) -> datetime:
        return datetime(2026, 3, 2, 12, 4, 59, 999_000, tzinfo=UTC)


async def test_on_the_wall_clock_shadows_never_hold_the_next_cycle(agent: Agent, clock: ManualClock) -> None:
    """On real time the loop waits for the cycle's shadow decisions only until the next candle closes (they go on
    beside the next cycle); a simulated clock waits for them all."""
    gate, entered, finished = asyncio.Event(), asyncio.Event(), []

    async def slow_shadows() -> None:
        entered.set()
        await gate.wait()
        finished.append(True)

    agent.engine.shadows_done = slow_shadows  # type: ignore[method-assign]
    agent.loop.clock = _OneMillisecondBeforeAClose()
    clock.advance(timedelta(minutes=5))
    # returns with the shadows still waiting (the bound only keeps a regression from hanging the suite)
    await asyncio.wait_for(agent.loop.run_cycle(), timeout=120)
    assert finished == [] and agent.loop._shadows_behind is not None
    gate.set()
    await agent.loop._shadows_behind
    assert finished == [True]

    agent.loop.clock = clock  # the market's clock: the cycle waits for its shadows
    gate.clear()
    entered.clear()
    cycle = asyncio.create_task(agent.loop.run_cycle())
    await entered.wait()
    assert not cycle.done()
    gate.set()
    await cycle
    assert finished == [True, True]
