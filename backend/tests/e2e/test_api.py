"""The decision API over a real socket: generate, history, health, and clear 4xx answers to bad requests."""

from __future__ import annotations

import gc
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve

pytestmark = pytest.mark.db


def simulated(clock: ManualClock) -> Callable[[Settings], Awaitable[Agent]]:
    """The app's agent factory: the simulator on the test's clock."""

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market)

    return factory


@pytest.fixture
async def api(settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[httpx.AsyncClient, ManualClock]]:
    async with (
        serve(create_app(settings, agent_factory=simulated(clock))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        yield client, clock


async def test_generate_then_history(api: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, clock = api
    first = await client.post("/api/v1/decisions/generate", json={"account_id": 1})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["account_id"] == 1 and body["symbols"] == ["BTC", "ETH", "SOL"]
    assert body["status"] in ("executed", "no_action", "partial")
    assert {v["asset"] for v in body["validation"]["verdicts"]} == {"BTC", "ETH", "SOL"}
    assert body["model_served"] == "baseline/trend-following-v1"

    one_decision = await client.get(f"/api/v1/decisions/{body['id']}")
    assert one_decision.status_code == 200, one_decision.text
    made_from = one_decision.json().pop("provenance")
    assert one_decision.json() | {"provenance": None} == body | {"provenance": None}
    assert made_from["context"]["symbols"] == ["BTC", "ETH", "SOL"] and made_from["context"]["account_id"] == 1
    assert made_from["prompt"].startswith("[system]\n") and "\n\n[user]\n" in made_from["prompt"]
    light = await client.get(f"/api/v1/decisions/{body['id']}", params={"provenance": "false"})
    assert light.json()["provenance"] is None and light.json()["id"] == body["id"]
    unknown = await client.get("/api/v1/decisions/999999")
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "decision 999999 does not exist")

    again = await client.post("/api/v1/decisions/generate", json={"account_id": 1})
    assert again.json()["id"] == body["id"], "a second request in the same candle returns the stored decision"
    forced = await client.post("/api/v1/decisions/generate", json={"account_id": 1, "force_refresh": True})
    assert forced.json()["id"] != body["id"]

    clock.advance(timedelta(minutes=5))
    one = await client.post("/api/v1/decisions/generate", json={"account_id": 1, "symbols": ["BTCUSDT"]})
    assert one.status_code == 200 and one.json()["symbols"] == ["BTC"]

    history = await client.get("/api/v1/decisions/history", params={"account_id": 1, "limit": 50})
    assert history.status_code == 200
    ids = [d["id"] for d in history.json()]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3
    only_eth = await client.get("/api/v1/decisions/history", params={"account_id": 1, "symbol": "ETHUSDT"})
    assert [d["id"] for d in only_eth.json()] == [forced.json()["id"], body["id"]]
    page = await client.get("/api/v1/decisions/history", params={"account_id": 1, "limit": 1, "before_id": ids[0]})
    assert [d["id"] for d in page.json()] == [ids[1]]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "needle"),
    [
        ("POST", "/api/v1/decisions/generate", {}, 422, "account_id"),
        ("POST", "/api/v1/decisions/generate", {"account_id": "one"}, 422, "account_id"),
        ("POST", "/api/v1/decisions/generate", {"account_id": 0}, 422, "account_id"),
        # A well-formed symbol this agent does not trade: 404; one that is not a symbol breaks the schema: 422.
        ("POST", "/api/v1/decisions/generate", {"account_id": 1, "symbols": ["DOGE"]}, 404, "unknown symbol"),
        ("POST", "/api/v1/decisions/generate", {"account_id": 1, "symbols": ["$$$"]}, 422, "symbols.0"),
        ("POST", "/api/v1/decisions/generate", {"account_id": 1, "symbols": "BTC"}, 422, "symbols"),
        ("POST", "/api/v1/decisions/generate", {"account_id": 1, "surprise": True}, 422, "surprise"),
        ("POST", "/api/v1/decisions/generate", {"account_id": 999}, 404, "account 999 does not exist"),
        ("GET", "/api/v1/decisions/history", None, 422, "account_id"),
        ("GET", "/api/v1/decisions/history?account_id=1&limit=0", None, 422, "limit"),
        ("GET", "/api/v1/decisions/history?account_id=1&limit=abc", None, 422, "limit"),
        ("GET", "/api/v1/decisions/history?account_id=1&since=yesterday", None, 422, "since"),
        ("GET", "/api/v1/decisions/history?account_id=1&symbol=NOPE", None, 404, "unknown symbol"),
        ("GET", "/api/v1/decisions/history?account_id=1&symbol=$$$", None, 422, "symbol"),
        ("GET", "/api/v1/decisions/history?account_id=42", None, 404, "account 42 does not exist"),
    ],
)
async def test_bad_requests_get_a_clear_4xx(
    api: tuple[httpx.AsyncClient, ManualClock], method: str, path: str, payload: object, status: int, needle: str
) -> None:
    client, _ = api
    response = (
        await client.request(method, path, json=payload) if payload is not None else await client.request(method, path)
    )
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


async def test_malformed_json_body_is_a_422_not_a_500(api: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, _ = api
    response = await client.post(
        "/api/v1/decisions/generate", content=b'{"account_id": 1,', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "invalid request" in response.json()["detail"]


async def test_health_reports_the_simulated_parts(api: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, _ = api
    health = (await client.get("/health")).json()
    assert health["database"] == "ok"
    names = {p["name"]: p for p in health["parts"]}
    assert names["market"]["simulated"] and names["venue"]["simulated"] and names["model"]["simulated"]
    assert (await client.get("/docs")).status_code == 200
    assert "/api/v1/decisions/generate" in (await client.get("/openapi.json")).json()["paths"]


async def test_forced_decisions_are_limited_per_account(settings: Settings, clock: ManualClock) -> None:
    """force_refresh bypasses the per-candle cache and costs a model call: two per hour here, then 429 with
    Retry-After, while the cached decision stays available; an hour later (of the wall clock) forcing works
    again."""
    limited = settings.model_copy(update={"decision_refreshes_per_hour": 2})
    wall = ManualClock(clock.now())

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market, wall_clock=wall)

    async with (
        serve(create_app(limited, agent_factory=factory)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        forced = {"account_id": 1, "force_refresh": True}
        ids = []
        for _ in range(2):
            answer = await client.post("/api/v1/decisions/generate", json=forced)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["id"])
        refused = await client.post("/api/v1/decisions/generate", json=forced)
        assert refused.status_code == 429
        assert "DECISION_REFRESHES_PER_HOUR" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        cached = await client.post("/api/v1/decisions/generate", json={"account_id": 1})
        assert cached.status_code == 200 and cached.json()["id"] == ids[-1]

        wall.advance(timedelta(hours=1))
        again = await client.post("/api/v1/decisions/generate", json=forced)
        assert again.status_code == 200, again.text


async def test_only_the_served_process_freezes_its_start_up_objects(settings: Settings, clock: ManualClock) -> None:
    """`trading-agent run` and `serve` take start-up's objects out of later garbage collections; an app made
    without asking (tests, embedding) leaves the collector as it was."""
    assert gc.get_freeze_count() == 0
    try:
        async with serve(create_app(settings, agent_factory=simulated(clock))):
            assert gc.get_freeze_count() == 0
        async with serve(create_app(settings, agent_factory=simulated(clock), freeze_startup=True)):
            assert gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()


def test_no_route_or_dependency_runs_in_the_thread_pool(settings: Settings, clock: ManualClock) -> None:
    """FastAPI runs a plain `def` endpoint or dependency in its thread pool: a round trip to another thread on
    every request, which cost 0.3-0.4 ms of CPU per history request here. Every one of ours is `async def`."""

    def calls(dependant: Dependant) -> list[Any]:
        return [dependant.call, *(call for sub in dependant.dependencies for call in calls(sub))]

    def runs_on_the_loop(call: Any) -> bool:
        method = call.__call__ if callable(call) and not inspect.isfunction(call) else None
        return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)

    app = create_app(settings, agent_factory=simulated(clock))
    # The routes as FastAPI serves them: each included router's routes with what the inclusion adds.
    served = [context for context in iter_route_contexts(app.routes) if getattr(context, "dependant", None)]
    assert len(served) > 20
    in_pool = sorted(
        f"{context.path}: {getattr(call, '__qualname__', call)}"
        for context in served
        for call in calls(context.dependant)
        if call is not None and not runs_on_the_loop(call)
    )
    assert in_pool == []
