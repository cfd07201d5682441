"""The loop with a real LLM provider talking to a fake OpenRouter over a real socket.

The fake answers, in turn, a fenced answer, a 429, 502s, timeouts and a truncated answer: the loop keeps
running, every failure is stored with its class, and the circuit breaker opens and recovers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.services.llm.providers.openrouter import OpenRouterModel
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import IsolatedSettings
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion, error_body, hold_all

pytestmark = pytest.mark.db
KEY = "sk-or-v1-loop-test-0123456789abcdef"
ASSETS = ["BTC", "ETH", "SOL"]


@pytest.fixture
def fake() -> AsyncIterator[FakeOpenRouter]:
    with FakeOpenRouter() as server:
        yield server


AgentFactory = Callable[..., "asyncio.Future[Agent]"]


@pytest.fixture
async def make_agent(
    database_url: str, clock: ManualClock, fake: FakeOpenRouter
) -> AsyncIterator[Callable[..., object]]:
    built: list[Agent] = []

    async def make(wall_clock: ManualClock | None = None, **overrides: object) -> Agent:
        settings: Settings = IsolatedSettings(
            database_url=database_url,
            openrouter_api_key=KEY,
            openrouter_base_url=fake.base_url,
            llm_model="openai/gpt-5",
            llm_circuit_failure_threshold=2,
            llm_circuit_recovery_s=0.3,
            **overrides,
        )
        provider = OpenRouterModel(
            api_key=KEY,
            model=settings.llm_model,
            base_url=fake.base_url,
            timeout_s=0.5,
            max_attempts=2,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
        )
        market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
        agent = await build_agent(settings, clock=clock, market=market, provider=provider, wall_clock=wall_clock)
        built.append(agent)
        return agent

    yield make
    for agent in built:
        await agent.close()


async def _cycle(agent: Agent, clock: ManualClock) -> models.Decision:
    clock.advance(timedelta(minutes=5))
    assert await agent.loop.run_cycle() == 1
    async with agent.sessions() as session:
        row = await session.scalar(select(models.Decision).order_by(models.Decision.id.desc()).limit(1))
    assert row is not None
    return row


async def _calls(agent: Agent, decision_id: int) -> list[models.LLMCall]:
    async with agent.sessions() as session:
        query = select(models.LLMCall).where(models.LLMCall.decision_id == decision_id).order_by(models.LLMCall.id)
        return list((await session.scalars(query)).all())


async def test_the_loop_survives_every_kind_of_failure_and_the_breaker_recovers(
    make_agent: Callable[..., object], fake: FakeOpenRouter, clock: ManualClock
) -> None:
    agent: Agent = await make_agent()  # type: ignore[misc]
    breaker = agent.llm.breakers.get("openai/gpt-5")
    seconds = [1000.0]
    breaker._clock = lambda: seconds[0]  # its recovery time passes when the test says, not with the machine's speed

    fake.reply(chat_completion(f"Here you go:\n```json\n{hold_all()}\n```", cost=0.004, gen_id="gen-1"))
    ok = await _cycle(agent, clock)
    assert ok.status == "no_action" and not ok.is_fallback
    assert ok.model_served == "openai/gpt-5" and ok.provider == "OpenAI"
    assert ok.prompt_tokens == 1200 and ok.completion_tokens == 350 and ok.cost_usd == pytest.approx(0.004)
    assert ok.latency_ms is not None and ok.latency_ms > 0
    assert [(c.outcome, c.generation_id) for c in await _calls(agent, ok.id)] == [("ok", "gen-1")]

    fake.reply(error_body(429, "Rate limit exceeded"), status=429, headers={"Retry-After": "0"})
    fake.reply(chat_completion(hold_all(), cost=0.002))
    retried = await _cycle(agent, clock)
    assert retried.status == "no_action"
    assert [(c.outcome, c.attempts) for c in await _calls(agent, retried.id)] == [("ok", 2)]

    fake.reply(error_body(502, "upstream error"), status=502, times=2)
    bad_gateway = await _cycle(agent, clock)
    assert bad_gateway.status == "fallback" and bad_gateway.is_fallback and bad_gateway.failure == "api_error"
    assert "502" in (bad_gateway.error or "") or "upstream" in (bad_gateway.error or "")
    assert [c.outcome for c in await _calls(agent, bad_gateway.id)] == ["api_error"]
    assert breaker.state == "closed"

    fake.enqueue(
        Scripted(200, chat_completion(hold_all()), delay_s=1.5), Scripted(200, chat_completion(hold_all()), delay_s=1.5)
    )
    timed_out = await _cycle(agent, clock)
    assert timed_out.status == "fallback" and timed_out.failure == "api_error"
    assert breaker.state == "open", "two failures in a row open the circuit"

    requests_before = len(fake.chat_requests)
    skipped = await _cycle(agent, clock)
    assert skipped.status == "fallback" and len(fake.chat_requests) == requests_before, "open circuit: no call"
    assert [c.outcome for c in await _calls(agent, skipped.id)] == ["circuit_open"]

    seconds[0] += 0.35  # past the recovery timeout (0.3 s): half-open lets one call through
    fake.reply(chat_completion('{"decisions": [{"asset": "BTC", "action": "ho', finish_reason="length"))
    truncated = await _cycle(agent, clock)
    assert truncated.status == "fallback" and truncated.failure == "truncated"
    assert truncated.raw_response == '{"decisions": [{"asset": "BTC", "action": "ho'  # the raw answer is kept
    assert breaker.state == "open", "a failed half-open call opens the circuit again"

    seconds[0] += 0.35
    fake.reply(chat_completion(hold_all()))
    recovered = await _cycle(agent, clock)
    assert recovered.status == "no_action" and not recovered.is_fallback
    assert breaker.state == "closed"

    health = await agent.llm.validate_api_health()
    assert health.status == "ok" and health.circuits["openai/gpt-5"]["times_opened"] == 2
    assert agent.loop.heartbeat.failures == 0 and agent.loop.heartbeat.decisions == 7
    # Every fallback keeps the positions protected: nothing but holds was executed.
    for row in (timed_out, skipped, truncated, bad_gateway):
        assert all(d["action"] == "hold" for d in (row.final_decision or {})["decisions"])


async def test_fallback_chain_uses_the_next_model(
    make_agent: Callable[..., object], fake: FakeOpenRouter, clock: ManualClock
) -> None:
    agent: Agent = await make_agent(llm_fallback_models="x-ai/grok-4")  # type: ignore[misc]
    fake.reply(error_body(404, "No endpoints found for openai/gpt-5."), status=404)
    fake.reply(chat_completion(hold_all(), model="x-ai/grok-4", provider="xAI", cost=0.01))
    row = await _cycle(agent, clock)
    assert row.status == "no_action" and row.model_served == "x-ai/grok-4"
    calls = await _calls(agent, row.id)
    assert [(c.model_requested, c.outcome, c.status_code) for c in calls] == [
        ("openai/gpt-5", "api_error", 404),
        ("x-ai/grok-4", "ok", None),
    ]
    assert [r.json["model"] for r in fake.chat_requests] == ["openai/gpt-5", "x-ai/grok-4"]


async def test_a_spent_daily_budget_stops_model_calls_and_says_so(
    make_agent: Callable[..., object], fake: FakeOpenRouter, clock: ManualClock
) -> None:
    agent: Agent = await make_agent(llm_daily_budget_usd=0.005)  # type: ignore[misc]
    fake.reply(chat_completion(hold_all(), cost=0.004))
    fake.reply(chat_completion(hold_all(), cost=0.004))
    first, second = await _cycle(agent, clock), await _cycle(agent, clock)
    assert first.failure is None and second.failure is None
    third = await _cycle(agent, clock)
    assert len(fake.chat_requests) == 2, "no call once 0.008 of 0.005 USD is spent"
    assert third.status == "fallback" and third.failure == "budget"
    assert "daily LLM budget spent" in (third.error or "")


async def test_the_daily_budget_counts_the_real_day_not_the_market_day(
    make_agent: Callable[..., object], fake: FakeOpenRouter, clock: ManualClock
) -> None:
    """A replay or a simulation runs through market days in minutes: the budget is real money per real day."""
    wall = ManualClock(datetime(2031, 7, 14, 6, 0, tzinfo=UTC))
    agent: Agent = await make_agent(llm_daily_budget_usd=0.005, wall_clock=wall)  # type: ignore[misc]
    fake.reply(chat_completion(hold_all(), cost=0.004), times=3)
    first = await _cycle(agent, clock)
    clock.advance(timedelta(days=1))  # a new market day, the same real day
    second = await _cycle(agent, clock)
    clock.advance(timedelta(days=1))
    third = await _cycle(agent, clock)
    assert first.failure is None and second.failure is None
    assert third.failure == "budget" and len(fake.chat_requests) == 2
    calls = await _calls(agent, first.id)
    assert [c.created_at for c in calls] == [wall.now()], "model calls are stamped with the wall clock"
    wall.advance(timedelta(days=1))  # the next real day: calls again
    fourth = await _cycle(agent, clock)
    assert fourth.failure is None and len(fake.chat_requests) == 3


async def test_no_secret_in_stored_errors(
    make_agent: Callable[..., object], fake: FakeOpenRouter, clock: ManualClock
) -> None:
    agent: Agent = await make_agent()  # type: ignore[misc]
    fake.reply(error_body(401, f"Invalid key {KEY}"), status=401)
    row = await _cycle(agent, clock)
    assert row.failure == "api_error" and len(fake.chat_requests) == 1  # 401: not retried
    async with agent.sessions() as session:
        texts = [row.error or ""] + [c.error or "" for c in await _calls(agent, row.id)]
        texts += [
            json.dumps(p.context_snapshot) + (p.prompt or "")
            for p in (await session.scalars(select(models.DecisionProvenance))).all()
        ]
    assert all(KEY not in t for t in texts)


async def test_a_schema_re_ask_keeps_both_answers(
    make_agent: Callable[..., object], fake: FakeOpenRouter, clock: ManualClock
) -> None:
    agent: Agent = await make_agent()  # type: ignore[misc]
    broken = json.loads(hold_all())
    broken["decisions"][0]["confidence"] = 150
    first = json.dumps(broken)
    fake.reply(chat_completion(first, cost=0.001))
    fake.reply(chat_completion(hold_all(), cost=0.002))
    row = await _cycle(agent, clock)
    assert row.status == "no_action" and row.failure is None
    assert row.first_raw_response == first and row.raw_response == hold_all()
    [call] = await _calls(agent, row.id)
    assert call.reasked and call.attempts == 2 and call.cost_usd == pytest.approx(0.003)
    assert "confidence" in fake.chat_requests[1].json["messages"][-1]["content"]
