"""Two clocks: operational records (audit entries, keys, accounts' times) and rate limits (forced decisions,
mutations) run on the wall clock; cycles and candles on the market clock. Here the market clock is a manual clock
set years away from a second manual clock standing for the wall, so that every time says which one it came from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.e2e.test_strategies_api import definition

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}
WALL_START = datetime(2031, 7, 14, 6, 2, tzinfo=UTC)


@dataclass
class Clocks:
    client: httpx.AsyncClient
    agent: Agent
    market: ManualClock
    wall: ManualClock


@pytest.fixture
async def clocks(settings: Settings, clock: ManualClock) -> AsyncIterator[Clocks]:
    wall = ManualClock(WALL_START)
    built: list[Agent] = []

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        built.append(await build_agent(s, clock=clock, market=market, wall_clock=wall))
        return built[-1]

    limited = settings.model_copy(update={"decision_refreshes_per_hour": 2, "api_mutations_per_minute": 6})
    async with (
        serve(create_app(limited, agent_factory=factory)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN) as client,
    ):
        yield Clocks(client, built[0], clock, wall)


async def test_records_carry_the_wall_clock_and_decisions_the_market_clock(clocks: Clocks) -> None:
    client, market, wall = clocks.client, clocks.market, clocks.wall
    assert market.now() != wall.now()
    async with clocks.agent.sessions() as session:
        default = await session.get(models.Account, 1)
        admin_key = await session.scalar(select(models.ApiKey).where(models.ApiKey.role == "admin"))
    assert default is not None and default.created_at == WALL_START, "the default account, created at first start"
    assert admin_key is not None and admin_key.created_at == WALL_START

    wall.advance(timedelta(minutes=3))
    created = await client.post("/api/v1/accounts", json={"name": "second"}, headers={"X-Request-ID": "clk-1"})
    assert created.status_code == 201, created.text
    assert created.json()["created_at"] == created.json()["updated_at"] == "2031-07-14T06:05:00Z"
    account_id = created.json()["id"]

    wall.advance(timedelta(minutes=1))
    key = await client.post(f"/api/v1/accounts/{account_id}/keys", json={"name": "bot"})
    assert key.json()["created_at"] == "2031-07-14T06:06:00Z"
    wall.advance(timedelta(minutes=1))
    halted = await client.post(f"/api/v1/accounts/{account_id}/halt", headers={"X-Request-ID": "clk-2"})
    assert halted.json()["updated_at"] == "2031-07-14T06:07:00Z"
    history = (await client.get(f"/api/v1/accounts/{account_id}/history")).json()
    assert [h["changed_at"] for h in history] == ["2031-07-14T06:07:00Z"]
    revoked = await client.delete(f"/api/v1/accounts/{account_id}/keys/{key.json()['id']}")
    assert revoked.json()["revoked_at"] == "2031-07-14T06:07:00Z"
    wall.advance(timedelta(minutes=1))
    switched = await client.post(
        f"/api/v1/strategies/account/{account_id}/switch", json={"strategy_id": "swing", "reason": "test"}
    )
    assert switched.status_code == 200, switched.text
    assert (await client.get(f"/api/v1/accounts/{account_id}")).json()["updated_at"] == "2031-07-14T06:08:00Z"
    created_strategy = await client.post("/api/v1/strategies/custom", json={"strategy": definition("clocked")})
    assert created_strategy.status_code == 201, created_strategy.text
    async with clocks.agent.sessions() as session:
        stored = await session.get(models.Strategy, "clocked")
        builtin = await session.get(models.Strategy, "swing")
    assert stored is not None and stored.created_at == WALL_START + timedelta(minutes=6), "strategy rows: wall time"
    assert builtin is not None and builtin.created_at == WALL_START

    decided = await client.post("/api/v1/decisions/generate", json={"account_id": 1})
    assert decided.status_code == 200, decided.text
    assert decided.json()["cycle_time"] == market.now().isoformat().replace("+00:00", "Z"), "decisions: market time"

    audit = {e["request_id"]: e["created_at"] for e in (await client.get("/api/v1/audit")).json()}
    assert audit["clk-1"] == "2031-07-14T06:05:00Z" and audit["clk-2"] == "2031-07-14T06:07:00Z"


async def test_forced_decisions_are_limited_and_retried_in_wall_clock_seconds(clocks: Clocks) -> None:
    """On an accelerated market clock an hour passes in seconds: the limit and Retry-After are real time."""
    client, market, wall = clocks.client, clocks.market, clocks.wall
    forced = {"account_id": 1, "force_refresh": True}
    for _ in range(2):
        assert (await client.post("/api/v1/decisions/generate", json=forced)).status_code == 200
    wall.advance(timedelta(minutes=10))
    refused = await client.post("/api/v1/decisions/generate", json=forced)
    assert refused.status_code == 429
    # 2 an hour: one more every 30 minutes of the wall clock, 10 of which have passed
    assert refused.headers["Retry-After"] == str(20 * 60), "the wall-clock seconds until the next one fits"

    market.advance(timedelta(hours=3))  # market time alone frees nothing
    assert (await client.post("/api/v1/decisions/generate", json=forced)).status_code == 429
    wall.advance(timedelta(minutes=20))
    assert (await client.post("/api/v1/decisions/generate", json=forced)).status_code == 200
    assert (await client.post("/api/v1/decisions/generate", json=forced)).status_code == 429


async def test_mutations_are_limited_in_wall_clock_time(clocks: Clocks) -> None:
    client, market, wall = clocks.client, clocks.market, clocks.wall
    statuses = [(await client.post("/api/v1/accounts/1/pause")).status_code for _ in range(7)]
    assert statuses == [200] * 6 + [429], "6 mutations a minute per key"
    market.advance(timedelta(hours=1))
    refused = await client.post("/api/v1/accounts/1/resume")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "10", "60 s / 6, in wall seconds"
    wall.advance(timedelta(seconds=10))
    assert (await client.post("/api/v1/accounts/1/resume")).status_code == 200
    assert (await client.post("/api/v1/accounts/1/pause")).status_code == 429
