"""`/api/v1/experiments` over a real socket: start, list, show, results and stop; every refusal's status and
reason with nothing stored; an account key's scope (another account's experiment is 404); the cost refusal with
a priced model behind the fake OpenRouter; the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import OpenRouterModel
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, IsolatedSettings
from tests.e2e.server import serve
from tests.e2e.test_api import simulated
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, model_entry

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}
URL = "/api/v1/experiments"
CONTROL = {"name": "control", "model": "baseline", "strategy_id": "conservative"}
AGGR = {"name": "aggr", "model": "baseline", "strategy_id": "aggressive"}
BODY: dict[str, Any] = {"name": "trend", "assignment": "shadow", "min_samples": 20, "variants": [CONTROL, AGGR]}


class Api:
    def __init__(self, client: httpx.AsyncClient, agent: Agent) -> None:
        self.client = client
        self.agent = agent

    async def new_account(self, name: str) -> tuple[int, dict[str, str]]:
        created = await self.client.post("/api/v1/accounts", json={"name": name}, headers=ADMIN)
        assert created.status_code == 201, created.text
        account_id = int(created.json()["id"])
        key = await self.client.post(f"/api/v1/accounts/{account_id}/keys", headers=ADMIN)
        assert key.status_code == 201, key.text
        return account_id, {"X-API-Key": key.json()["key"]}

    async def stored(self) -> tuple[int, int, int]:
        async with self.agent.sessions() as session:
            return (
                await session.scalar(select(func.count()).select_from(models.Experiment)) or 0,
                await session.scalar(select(func.count()).select_from(models.ExperimentVariant)) or 0,
                await session.scalar(select(func.count()).select_from(models.ExperimentAssignment)) or 0,
            )


@asynccontextmanager
async def running(settings: Settings, factory: Any) -> AsyncIterator[Api]:
    app = create_app(settings, agent_factory=factory)
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield Api(client, app.state.agent)


@pytest.fixture
async def api(settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    async with running(settings, simulated(clock)) as served:
        yield served


async def test_start_list_show_results_and_stop(api: Api) -> None:
    created = await api.client.post(URL, json={**BODY, "seed": 11}, headers=ADMIN)
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["status"], view["assignment"], view["accounts"], view["seed"]) == ("running", "shadow", [1], 11)
    assert [(v["name"], v["is_control"], v["accounts"]) for v in view["variants"]] == [
        ("control", True, [1]),
        ("aggr", False, [1]),
    ]
    assert view["expected_daily_cost_usd"] == 0.0 and view["owner_account_id"] is None

    listed = await api.client.get(URL, headers=ADMIN)
    assert listed.status_code == 200 and [e["id"] for e in listed.json()] == [view["id"]]
    shown = await api.client.get(f"{URL}/{view['id']}", headers=ADMIN)
    assert shown.status_code == 200 and shown.json() == view

    results = await api.client.get(f"{URL}/{view['id']}/results", headers=ADMIN)
    assert results.status_code == 200, results.text
    body = results.json()
    assert body["experiment"] == view
    assert [(v["name"], v["verdict"], v["units_needed"]) for v in body["variants"]] == [
        ("control", None, 20),
        ("aggr", "not yet", 20),
    ]

    # the loop decides with the experiment: the aggressive variant decides beside each executed decision
    decided = await api.client.post("/api/v1/decisions/generate", json={"account_id": 1}, headers=ADMIN)
    assert decided.status_code == 200, decided.text
    await api.agent.engine.shadows_done()
    counted = (await api.client.get(f"{URL}/{view['id']}/results", headers=ADMIN)).json()["variants"]
    assert [(v["decisions"], v["shadow_decisions"]) for v in counted] == [(1, 0), (1, 1)]

    stopped = await api.client.post(f"{URL}/{view['id']}/stop", json={"reason": "seen enough"}, headers=ADMIN)
    assert stopped.status_code == 200, stopped.text
    assert (stopped.json()["status"], stopped.json()["stop_reason"]) == ("stopped", "seen enough")
    again = await api.client.post(f"{URL}/{view['id']}/stop", headers=ADMIN)
    assert again.status_code == 409 and "already stopped" in again.json()["detail"]
    assert (await api.client.get(URL, params={"status": "running"}, headers=ADMIN)).json() == []
    assert [e["id"] for e in (await api.client.get(URL, params={"status": "stopped"}, headers=ADMIN)).json()] == [
        view["id"]
    ]
    missing = await api.client.get(f"{URL}/424242/results", headers=ADMIN)
    assert (missing.status_code, missing.json()["detail"]) == (404, "experiment 424242 does not exist")

    async with api.agent.sessions() as session:
        details = (
            await session.scalars(select(models.AuditEntry.detail).where(models.AuditEntry.path.like(f"{URL}%")))
        ).all()
    assert any(d and f"experiment {view['id']} 'trend' started: shadow on account(s) 1" in d for d in details)
    assert f"experiment {view['id']} stopped: seen enough" in details


@pytest.mark.parametrize(
    ("changes", "status", "needle"),
    [
        ({"accounts": [1, 77]}, 404, "account 77 does not exist"),
        ({"variants": [CONTROL, {"name": "x", "strategy_id": "no_such_strategy"}]}, 404, "unknown strategy"),
        ({"variants": [CONTROL, {"name": "x", "model": "openai/gpt-5"}]}, 409, "no LLM is configured"),
        ({"variants": [CONTROL, {**AGGR, "name": "control"}]}, 409, "control named twice"),
        ({"variants": [{**CONTROL, "is_control": True}, {**AGGR, "is_control": True}]}, 409, "one control at most"),
        ({"variants": [CONTROL, {**CONTROL, "name": "same"}]}, 409, "differs from its control"),
        ({"assignment": "accounts"}, 409, "cannot be split between 2 variants"),
        ({"min_samples": 19}, 422, "min_samples"),
        ({"variants": [CONTROL]}, 422, "variants"),
        ({"metric": "sharpe"}, 422, "metric"),
        ({"horizon": 5}, 422, "horizon"),
        ({"variants": [CONTROL, {**AGGR, "prompt_version": "v9"}]}, 422, "prompt_version"),
        ({"variants": [CONTROL, {**AGGR, "temperature": 3}]}, 422, "temperature"),
        ({"surprise": True}, 422, "surprise"),
    ],
)
async def test_a_refused_experiment_says_why_and_stores_nothing(
    api: Api, changes: dict[str, Any], status: int, needle: str
) -> None:
    refused = await api.client.post(URL, json={**BODY, **changes}, headers=ADMIN)
    assert refused.status_code == status, refused.text
    assert needle in refused.json()["detail"]
    assert await api.stored() == (0, 0, 0)


async def test_an_account_in_a_running_experiment_is_refused(api: Api) -> None:
    first = await api.client.post(URL, json=BODY, headers=ADMIN)
    assert first.status_code == 201
    second = await api.client.post(URL, json={**BODY, "name": "again"}, headers=ADMIN)
    assert second.status_code == 409
    assert f"already in the running experiment {first.json()['id']}" in second.json()["detail"]
    assert (await api.stored())[0] == 1


async def test_an_account_key_sees_and_stops_only_what_is_its_own(api: Api) -> None:
    b_id, as_b = await api.new_account("account-b")
    on_a = (await api.client.post(URL, json={**BODY, "accounts": [1]}, headers=ADMIN)).json()

    assert (await api.client.get(URL, headers=as_b)).json() == []
    for path in (f"{URL}/{on_a['id']}", f"{URL}/{on_a['id']}/results"):
        hidden = await api.client.get(path, headers=as_b)
        assert (hidden.status_code, hidden.json()["detail"]) == (404, f"experiment {on_a['id']} does not exist")
    foreign_stop = await api.client.post(f"{URL}/{on_a['id']}/stop", json={}, headers=as_b)
    assert foreign_stop.status_code == 404
    assert (await api.client.get(f"{URL}/{on_a['id']}", headers=ADMIN)).json()["status"] == "running"
    on_other = await api.client.post(URL, json={**BODY, "accounts": [1]}, headers=as_b)
    assert (on_other.status_code, on_other.json()["detail"]) == (404, "account 1 does not exist")

    mine = await api.client.post(URL, json=BODY, headers=as_b)  # its own account, by default
    assert mine.status_code == 201, mine.text
    assert (mine.json()["accounts"], mine.json()["owner_account_id"]) == ([b_id], b_id)
    assert [e["id"] for e in (await api.client.get(URL, headers=as_b)).json()] == [mine.json()["id"]]
    assert (await api.client.get(f"{URL}/{mine.json()['id']}/results", headers=as_b)).status_code == 200
    stopped = await api.client.post(f"{URL}/{mine.json()['id']}/stop", headers=as_b)
    assert stopped.status_code == 200, stopped.text

    by_admin = (await api.client.post(URL, json={**BODY, "accounts": [b_id]}, headers=ADMIN)).json()
    assert (await api.client.get(f"{URL}/{by_admin['id']}", headers=as_b)).status_code == 200
    forbidden = await api.client.post(f"{URL}/{by_admin['id']}/stop", headers=as_b)
    assert forbidden.status_code == 403 and "only an admin key may stop it" in forbidden.json()["detail"]


KEY = "sk-or-v1-experiment-api-0123456789abcdef"


async def test_a_variant_over_its_budget_is_refused_with_the_figures(
    database_url: str, tmp_path: Any, clock: ManualClock
) -> None:
    catalog = [
        model_entry("openai/gpt-5", ["max_tokens"]),
        model_entry("test/expensive", ["max_tokens"], prompt_per_m=500.0, completion_per_m=1000.0),
    ]
    with FakeOpenRouter(models=catalog) as fake:
        settings = IsolatedSettings(
            database_url=database_url,
            admin_api_key=ADMIN_KEY,
            secret_key_file=str(tmp_path / "secret.key"),
            openrouter_api_key=KEY,
            openrouter_base_url=fake.base_url,
            llm_model="openai/gpt-5",
            llm_daily_budget_usd=2.0,
        )

        async def factory(s: Settings) -> Agent:
            provider = OpenRouterModel(
                api_key=KEY,
                model=s.llm_model,
                base_url=fake.base_url,
                timeout_s=5,
                catalog=ModelCatalog(base_url=fake.base_url, api_key=KEY),
                max_tokens=1000,
            )
            market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
            return await build_agent(s, clock=clock, market=market, provider=provider)

        async with running(settings, factory) as api:
            async with api.agent.sessions.begin() as session:  # a stored call: the prompt's size in tokens
                session.add(
                    models.LLMCall(
                        account_id=1,
                        model_requested="openai/gpt-5",
                        outcome="ok",
                        prompt_tokens=3000,
                        completion_tokens=1000,
                        created_at=clock.now(),
                    )
                )
            fake.enqueue_models(Scripted(status=500, body={"error": "down"}))
            pricey = {**BODY, "variants": [CONTROL, {"name": "pricey", "model": "test/expensive"}]}
            unreadable = await api.client.post(URL, json=pricey, headers=ADMIN)
            assert unreadable.status_code == 503 and "cannot be read" in unreadable.json()["detail"]

            refused = await api.client.post(URL, json=pricey, headers=ADMIN)
            assert refused.status_code == 409, refused.text
            per_decision = (3000 * 500.0 + 1000 * 1000.0) / 1e6  # 2.5 USD
            detail = refused.json()["detail"]
            assert f"expected to cost {288 * per_decision:.4f} USD a day" in detail
            assert "over its daily budget of 2.0000 USD" in detail
            unlisted = {**BODY, "variants": [CONTROL, {"name": "x", "model": "test/unlisted"}]}
            assert (await api.client.post(URL, json=unlisted, headers=ADMIN)).status_code == 404
            assert await api.stored() == (0, 0, 0)

            budgeted = {
                **pricey,
                "variants": [CONTROL, {"name": "pricey", "model": "test/expensive", "daily_budget_usd": 800}],
            }
            started = await api.client.post(URL, json=budgeted, headers=ADMIN)
            assert started.status_code == 201, started.text
            assert started.json()["variants"][1]["expected_daily_cost_usd"] == pytest.approx(288 * per_decision)
