"""`GET /health` over a real socket: `ok` only while decisions are made; `degraded`, with the reasons, when every
cycle fails or the model's circuit is open. Circuit times are ISO wall-clock times and whole seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.errors import TemporaryError
from app.main import create_app
from app.services.llm.llm_exceptions import LLMAPIError
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.market_data.base import Ticker24h
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve

pytestmark = pytest.mark.db


class TickerOutage(MarketSimulator):
    """The simulator without a 24 h ticker while `down`: no asset's context can be built, every cycle fails."""

    down = False

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        if self.down:
            raise TemporaryError("ticker endpoint unreachable")
        return await super().fetch_ticker_24h(symbol, at)


class DownModel:
    """A remote model whose endpoint answers 503 every time."""

    name = "test/down"
    is_simulated = False

    async def complete(self, request: ModelRequest) -> ModelResponse:
        raise LLMAPIError("503 Service Unavailable", status_code=503, retryable=True)


@asynccontextmanager
async def _served(settings: Settings, agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    async def prebuilt(_s: Settings) -> Agent:
        return agent

    async with (
        serve(create_app(settings, agent_factory=prebuilt)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_health_is_degraded_while_every_cycle_fails(settings: Settings, clock: ManualClock) -> None:
    market = TickerOutage(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market)
    async with _served(settings, agent) as client:
        await agent.loop.run_cycle()
        healthy = await _health(client)
        market.down = True
        for _ in range(2):
            clock.advance(timedelta(minutes=5))
            await agent.loop.run_cycle()
        failing = await _health(client)
        market.down = False
        clock.advance(timedelta(minutes=5))
        await agent.loop.run_cycle()
        recovered = await _health(client)
    assert healthy["status"] == "ok" and healthy["reasons"] == []
    assert failing["status"] == "degraded"
    assert failing["loop"]["last_cycle_failures"] == failing["loop"]["last_cycle_accounts"] == 1
    assert any("failed their last cycle" in r and "ticker endpoint unreachable" in r for r in failing["reasons"])
    assert recovered["status"] == "ok", recovered["reasons"]


async def test_halting_a_failing_account_clears_its_failure_from_health(settings: Settings, clock: ManualClock) -> None:
    """A halted account has no cycles: its last failure must not hold /health degraded until a restart."""
    market = TickerOutage(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market)
    async with _served(settings, agent) as client:
        market.down = True
        await agent.loop.run_cycle()
        failing = await _health(client)
        halted = await client.post("/api/v1/accounts/1/halt", headers={"X-API-Key": ADMIN_KEY})
        assert halted.status_code == 200, halted.text
        clock.advance(timedelta(minutes=5))
        await agent.loop.run_cycle()
        after = await _health(client)
    assert failing["status"] == "degraded"
    assert after["status"] == "ok", after["reasons"]


async def test_health_is_degraded_while_the_model_circuit_is_open(settings: Settings, clock: ManualClock) -> None:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=DownModel())
    async with _served(settings, agent) as client:
        for _ in range(settings.llm_circuit_failure_threshold):
            clock.advance(timedelta(minutes=5))
            await agent.loop.run_cycle()
        body = await _health(client)
    model = agent.llm.model  # the configured model, served through the test's endpoint
    # the cycles themselves were stored (holding, protective orders kept): only the circuit says the model is down
    assert agent.loop.heartbeat.per_account_errors == {}
    assert body["status"] == "degraded"
    assert any(r.startswith("model down") and model in r for r in body["reasons"]), body["reasons"]
    circuit = body["model"]["circuits"][model]
    assert circuit["state"] == "open"
    opened = datetime.fromisoformat(circuit["opened_at"])
    assert opened.tzinfo is not None and opened.year >= 2026
    assert isinstance(circuit["next_attempt_in_s"], int)
    assert 0 < circuit["next_attempt_in_s"] <= settings.llm_circuit_recovery_s
