"""Many accounts in one cycle: their model calls overlap while preparing them (reads, context, prompt) is
bounded, so the first calls leave early, and answers are acted on once every call is in flight; one account
failing never stops the others."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.services.account.new_account import new_account
from app.services.llm import decision_engine
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.llm.providers.baseline import BaselineModel
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import IsolatedSettings

pytestmark = pytest.mark.db
ACCOUNTS = 12


class Peak:
    """How many are inside at once, at most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1


class SlowModel(BaselineModel):
    """The baseline's answers after a wait, counting the calls in flight."""

    is_simulated = False

    def __init__(self, seconds: float = 0.2) -> None:
        super().__init__()
        self.seconds = seconds
        self.in_flight = Peak()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.in_flight.enter()
        try:
            await asyncio.sleep(self.seconds)
            return await super().complete(request)
        finally:
            self.in_flight.leave()


async def many(database_url: str, clock: ManualClock, tmp: str, model_seconds: float = 0.2) -> tuple[Agent, SlowModel]:
    settings: Settings = IsolatedSettings(
        database_url=database_url,
        secret_key_file=f"{tmp}/secret.key",
        openrouter_api_key="sk-test-not-used",
        max_concurrent_accounts=ACCOUNTS,
        llm_max_concurrency=ACCOUNTS,
        llm_requests_per_minute=10_000,
        llm_daily_budget_usd=None,
    )
    model = SlowModel(model_seconds)
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=model)
    async with agent.sessions.begin() as session:
        repo = AccountRepository(session)
        now = clock.now()
        for i in range(2, ACCOUNTS + 1):
            await repo.add(new_account(f"paper-{i}", now=now), reason="test", now=now)
    return agent, model


async def test_model_calls_overlap_while_preparation_is_bounded(
    database_url: str, clock: ManualClock, tmp_path: Any
) -> None:
    agent, model = await many(database_url, clock, str(tmp_path))
    preparing = Peak()
    build = agent.engine.context_builder.build_with_history

    async def counted(*args: Any, **kwargs: Any) -> Any:
        preparing.enter()
        try:
            await asyncio.sleep(0.01)  # preparation takes a while: overlapping ones would show
            return await build(*args, **kwargs)
        finally:
            preparing.leave()

    agent.engine.context_builder.build_with_history = counted  # type: ignore[method-assign]
    # Each call answers once every account's call is in flight (or after 10 s, a hang guard): if a call waited
    # for another's answer, they would never all be in flight. No race with the machine's speed.
    all_in_flight = asyncio.Event()
    answer = model.complete

    async def gated(request: Any) -> Any:
        if model.in_flight.now + 1 >= ACCOUNTS:
            all_in_flight.set()
        model.in_flight.enter()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in_flight.wait(), 10)
        finally:
            model.in_flight.leave()
        return await answer(request)

    model.complete = gated  # type: ignore[method-assign]
    try:
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == ACCOUNTS
    finally:
        await agent.close()
    assert preparing.most == 4  # DecisionEngine(max_preparing=4)
    assert all_in_flight.is_set(), "every call in flight at once: none waited for another's"


async def test_answers_are_acted_on_once_every_call_of_the_cycle_is_in_flight(
    database_url: str, clock: ManualClock, tmp_path: Any
) -> None:
    """A model answering faster than the accounts are prepared: no answer is validated and executed before
    the last account's call was made (acting on it first would delay the calls still to make)."""
    agent, _model = await many(database_url, clock, str(tmp_path), model_seconds=0.001)
    build, validate = agent.engine.context_builder.build_with_history, agent.engine.validator.validate_decision
    prepared_at: list[float] = []
    validated_at: list[float] = []

    async def slow_build(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.01)
        built = await build(*args, **kwargs)
        prepared_at.append(asyncio.get_running_loop().time())
        return built

    async def timed_validate(*args: Any, **kwargs: Any) -> Any:
        validated_at.append(asyncio.get_running_loop().time())
        return await validate(*args, **kwargs)

    agent.engine.context_builder.build_with_history = slow_build  # type: ignore[method-assign]
    agent.engine.validator.validate_decision = timed_validate  # type: ignore[method-assign]
    try:
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == ACCOUNTS
    finally:
        await agent.close()
    assert len(prepared_at) == len(validated_at) == ACCOUNTS
    assert min(validated_at) >= max(prepared_at)


async def test_a_preparation_that_hangs_delays_the_other_answers_by_the_deferral_limit_only(
    database_url: str, clock: ManualClock, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for every call to be in flight has a limit: one account whose preparation hangs (a slow venue)
    holds the others' answers back for MAX_DEFERRAL_S, not until it is done. Here account 5's preparation
    hangs until the other answers are validated (or 30 s pass): without the limit they would wait for it."""
    monkeypatch.setattr(decision_engine, "MAX_DEFERRAL_S", 0.2)
    agent, _model = await many(database_url, clock, str(tmp_path), model_seconds=0.001)
    build, validate = agent.engine.context_builder.build_with_history, agent.engine.validator.validate_decision
    others_validated = asyncio.Event()
    validations = 0
    hung_until: list[str] = []

    async def hangs_for_account_5(symbols: list[str], account_id: int, *args: Any, **kwargs: Any) -> Any:
        if account_id == 5:
            try:
                await asyncio.wait_for(others_validated.wait(), 30)
                hung_until.append("the others were validated")
            except TimeoutError:
                hung_until.append("timeout")
        return await build(symbols, account_id, *args, **kwargs)

    async def counted_validate(*args: Any, **kwargs: Any) -> Any:
        nonlocal validations
        validations += 1
        if validations == ACCOUNTS - 1:  # account 5 cannot be validated before it is prepared
            others_validated.set()
        return await validate(*args, **kwargs)

    agent.engine.context_builder.build_with_history = hangs_for_account_5  # type: ignore[method-assign]
    agent.engine.validator.validate_decision = counted_validate  # type: ignore[method-assign]
    try:
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == ACCOUNTS
    finally:
        await agent.close()
    assert validations == ACCOUNTS
    assert hung_until == ["the others were validated"]


async def test_one_account_failing_leaves_the_others_deciding(
    database_url: str, clock: ManualClock, tmp_path: Any
) -> None:
    agent, _model = await many(database_url, clock, str(tmp_path))
    build = agent.engine.context_builder.build_with_history

    async def broken_for_account_5(symbols: list[str], account_id: int, *args: Any, **kwargs: Any) -> Any:
        if account_id == 5:
            raise RuntimeError("account 5's venue is unreachable")
        return await build(symbols, account_id, *args, **kwargs)

    agent.engine.context_builder.build_with_history = broken_for_account_5  # type: ignore[method-assign]
    try:
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == ACCOUNTS - 1
        heartbeat = agent.loop.heartbeat
        assert heartbeat.failures == 1
        assert heartbeat.per_account_errors == {5: "account 5: RuntimeError: account 5's venue is unreachable"}
        async with agent.sessions() as session:
            stored = dict(
                (
                    await session.execute(
                        select(models.Decision.account_id, func.count()).group_by(models.Decision.account_id)
                    )
                ).all()
            )
        assert set(stored) == set(range(1, ACCOUNTS + 1)) - {5}
        # the next cycle tries account 5 again; once it works, its error is cleared
        agent.engine.context_builder.build_with_history = build  # type: ignore[method-assign]
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == ACCOUNTS
        assert heartbeat.per_account_errors == {}
    finally:
        await agent.close()
