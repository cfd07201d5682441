"""The model provider through the API, against the fake OpenRouter over real sockets: the OpenRouter key rotated
without a restart, the default model switched (checked against the catalog, kept across restarts), the
provider's word on the key in health, and the usage of the stored calls."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, IsolatedSettings
from tests.e2e.server import serve
from tests.fakes.openrouter_server import (
    FakeOpenRouter,
    Scripted,
    chat_completion,
    error_body,
    hold_all,
    key_info,
    model_entry,
)

pytestmark = pytest.mark.db
ENV_KEY = "sk-or-v1-environment-key-0123456789abcdef"
NEW_KEY = "sk-or-v1-rotated-key-fedcba9876543210zz"
WRONG_KEY = "sk-or-v1-unknown-key-00000000000000000000"
ADMIN = {"X-API-Key": ADMIN_KEY}
CATALOG = [
    model_entry("openai/gpt-5", ["max_tokens", "response_format", "structured_outputs"]),
    model_entry("x-ai/grok-4", ["max_tokens", "temperature", "response_format", "structured_outputs"]),
]


@pytest.fixture
def fake() -> AsyncIterator[FakeOpenRouter]:
    with FakeOpenRouter(models=CATALOG) as server:
        server.known_keys = {ENV_KEY: key_info(limit=100.0, usage=25.5), NEW_KEY: key_info(limit=None, usage=1.0)}
        yield server


def _settings(database_url: str, tmp_path: Path, fake: FakeOpenRouter, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_api_key": ADMIN_KEY,
        "secret_key_file": str(tmp_path / "secret.key"),
        "openrouter_api_key": ENV_KEY,
        "openrouter_base_url": fake.base_url,
        "llm_model": "openai/gpt-5",
        "llm_timeout_s": 10,
        "llm_max_attempts": 1,
        **overrides,
    }
    return IsolatedSettings(**values)


@asynccontextmanager
async def running(settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[Agent, httpx.AsyncClient]]:
    """The app with the provider chosen from the settings (as `trading-agent run` does), on the simulator."""

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market)

    app = create_app(settings, agent_factory=factory)
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN) as client:
        yield app.state.agent, client


async def _decide(agent: Agent, clock: ManualClock, fake: FakeOpenRouter) -> str:
    """One decision on a new candle; the Authorization header its model call was sent with."""
    fake.reply(chat_completion(hold_all()))
    clock.advance(timedelta(minutes=5))
    before = len(fake.chat_requests)
    result = await agent.engine.make_trading_decision(None, 1, trigger="api")
    assert result.model_served == "openai/gpt-5", result.error
    assert len(fake.chat_requests) == before + 1
    return fake.chat_requests[-1].headers["authorization"]


async def test_the_openrouter_key_is_rotated_through_the_api_without_a_restart(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(database_url, tmp_path, fake)
    async with running(settings, clock) as (agent, client):
        assert await _decide(agent, clock, fake) == f"Bearer {ENV_KEY}"
        shown = (await client.get("/api/v1/llm/openrouter-key")).json()
        assert (shown["source"], shown["environment_key"], shown["in_use"]) == ("environment", True, True)

        refused = await client.put("/api/v1/llm/openrouter-key", json={"api_key": WRONG_KEY})
        assert refused.status_code == 400 and "does not accept this key" in refused.json()["detail"]
        assert (await client.get("/api/v1/llm/openrouter-key")).json()["source"] == "environment"

        rotated = await client.put("/api/v1/llm/openrouter-key", json={"api_key": NEW_KEY})
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["source"] == "stored" and rotated.json()["fingerprint"].startswith("sha256:")
        assert fake.key_requests[-1].headers["authorization"] == f"Bearer {NEW_KEY}"  # checked before stored
        assert await _decide(agent, clock, fake) == f"Bearer {NEW_KEY}"  # the next call, no restart

        async with agent.sessions() as session:
            row = await session.get(models.LLMSetting, "openrouter_api_key")
        assert row is not None and NEW_KEY not in row.value and agent.secrets.decrypt(row.value) == NEW_KEY

        removed = await client.delete("/api/v1/llm/openrouter-key")
        assert removed.status_code == 200 and removed.json()["source"] == "environment"
        assert await _decide(agent, clock, fake) == f"Bearer {ENV_KEY}"
        assert (await client.delete("/api/v1/llm/openrouter-key")).status_code == 404

        assert (await client.put("/api/v1/llm/openrouter-key", json={"api_key": NEW_KEY})).status_code == 200
        answers = [
            (await client.get(path)).text for path in ("/api/v1/llm/openrouter-key", "/api/v1/llm/health", "/health")
        ]
        audit = (await client.get("/api/v1/audit")).text

    async with running(settings, clock) as (agent, client):  # the stored key wins over the environment's
        assert await _decide(agent, clock, fake) == f"Bearer {NEW_KEY}"

    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (NEW_KEY, ENV_KEY, WRONG_KEY):
        assert secret not in logged
        assert not any(secret in text for text in [*answers, audit, rotated.text, refused.text])


async def test_an_unreachable_provider_stores_no_key_unless_told(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    async with running(_settings(database_url, tmp_path, fake), clock) as (_agent, client):
        fake.enqueue_key(Scripted(502, error_body(502, "upstream down")))
        unchecked = await client.put("/api/v1/llm/openrouter-key", json={"api_key": NEW_KEY})
        assert unchecked.status_code == 503 and "nothing was changed" in unchecked.json()["detail"]
        assert (await client.get("/api/v1/llm/openrouter-key")).json()["source"] == "environment"
        forced = await client.put("/api/v1/llm/openrouter-key", json={"api_key": NEW_KEY, "verify": False})
        assert forced.status_code == 200 and forced.json()["source"] == "stored"
        bad = await client.put("/api/v1/llm/openrouter-key", json={"api_key": "sk-or-v1 with spaces in it!!"})
        assert bad.status_code in (400, 422)


async def test_the_default_model_switch_is_checked_and_survives_a_restart(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    settings = _settings(database_url, tmp_path, fake, llm_fallback_models=["x-ai/grok-4"])
    async with running(settings, clock) as (agent, client):
        unknown = await client.post("/api/v1/decisions/models/switch", json={"model": "nobody/no-such-model"})
        assert unknown.status_code == 404 and "not in the model catalog" in unknown.json()["detail"]
        assert agent.llm.models == ["openai/gpt-5", "x-ai/grok-4"]

        switched = await client.post("/api/v1/decisions/models/switch", json={"model": "x-ai/grok-4"})
        assert switched.status_code == 200, switched.text
        assert switched.json()["models"] == ["x-ai/grok-4", "openai/gpt-5"]

    async with running(settings, clock) as (agent, client):
        assert agent.llm.models == ["x-ai/grok-4", "openai/gpt-5"]
        assert "x-ai/grok-4" in agent.describe().split("model", 1)[1].splitlines()[0]

    # A new LLM_MODEL is the operator's newer word: the old switch is dropped.
    changed = _settings(database_url, tmp_path, fake, llm_model="x-ai/grok-4", llm_fallback_models=["openai/gpt-5"])
    async with running(changed, clock) as (agent, client):
        assert agent.llm.models == ["x-ai/grok-4", "openai/gpt-5"]
    async with running(settings, clock) as (agent, client):
        assert agent.llm.models == ["openai/gpt-5", "x-ai/grok-4"]
        async with agent.sessions() as session:
            assert await session.get(models.LLMSetting, "default_model") is None


async def test_a_switch_is_refused_clearly_when_the_catalog_cannot_be_read(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    async with running(_settings(database_url, tmp_path, fake), clock) as (agent, client):
        fake.enqueue_models(Scripted(503, error_body(503, "catalog down")))
        refused = await client.post("/api/v1/decisions/models/switch", json={"model": "x-ai/grok-4"})
        assert refused.status_code == 503, refused.text
        assert "cannot be read" in refused.json()["detail"] and "nothing was changed" in refused.json()["detail"]
        assert agent.llm.models == ["openai/gpt-5"]
        async with agent.sessions() as session:
            assert await session.get(models.LLMSetting, "default_model") is None
        again = await client.post("/api/v1/decisions/models/switch", json={"model": "x-ai/grok-4"})  # it answers
        assert again.status_code == 200 and agent.llm.models == ["x-ai/grok-4", "openai/gpt-5"]


async def test_health_asks_the_provider_about_the_key_and_caches_the_answer(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    async with running(_settings(database_url, tmp_path, fake), clock) as (agent, client):
        first = (await client.get("/api/v1/llm/health")).json()
        assert first["status"] == "ok" and first["key"]["status"] == "ok"
        assert (first["key"]["limit_usd"], first["key"]["limit_remaining_usd"]) == (100.0, 74.5)
        assert first["key"]["source"] == "environment"
        public = (await client.get("/health")).json()
        assert public["model"]["key"]["status"] == "ok"
        assert len(fake.key_requests) == 1, "cached: one question for both"

        fake.known_keys = {ENV_KEY: key_info(limit=10.0, usage=10.0)}
        checker = agent.llm.provider.key_checker  # type: ignore[attr-defined]
        checker.forget()
        spent = (await client.get("/api/v1/llm/health")).json()
        assert spent["status"] == "down" and spent["key"]["status"] == "no_credit"
        assert "spent" in spent["detail"]

        fake.known_keys = {}
        checker.forget()
        refused = (await client.get("/api/v1/llm/health")).json()
        assert refused["status"] == "down" and refused["key"]["status"] == "invalid"

        fake.enqueue_key(Scripted(500, error_body(500, "boom")))
        checker.forget()
        unreachable = (await client.get("/api/v1/llm/health")).json()
        assert unreachable["status"] == "degraded" and unreachable["key"]["status"] == "unreachable"


async def test_usage_of_the_stored_calls_admin_sees_all_an_account_key_its_own(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    async with running(_settings(database_url, tmp_path, fake), clock) as (agent, client):
        created = await client.post("/api/v1/accounts", json={"name": "second"})
        second = created.json()["id"]
        key = (await client.post(f"/api/v1/accounts/{second}/keys", json={"name": "bot"})).json()["key"]
        now = datetime.now(UTC)
        async with agent.sessions.begin() as session:
            for account, model, outcome, cost in (
                (1, "openai/gpt-5", "ok", 0.25),
                (1, "openai/gpt-5", "api_error", None),
                (second, "x-ai/grok-4", "ok", 0.5),
            ):
                session.add(
                    models.LLMCall(
                        account_id=account,
                        model_requested=model,
                        model_served=model if outcome == "ok" else None,
                        outcome=outcome,
                        prompt_tokens=100,
                        completion_tokens=10,
                        cost_usd=cost,
                        latency_ms=200.0,
                        created_at=now,
                    )
                )

        everyone = (await client.get("/api/v1/llm/usage")).json()
        assert (everyone["total_calls"], everyone["total_failures"], everyone["account_id"]) == (3, 1, None)
        assert everyone["total_cost_usd"] == pytest.approx(0.75)
        assert set(everyone["by_model"]) == {"openai/gpt-5", "x-ai/grok-4"}

        mine = await client.get("/api/v1/llm/usage", headers={"X-API-Key": key})
        assert mine.status_code == 200, mine.text
        assert (mine.json()["account_id"], mine.json()["total_calls"], set(mine.json()["by_model"])) == (
            second,
            1,
            {"x-ai/grok-4"},
        )
        foreign = await client.get("/api/v1/llm/usage", params={"account_id": 1}, headers={"X-API-Key": key})
        assert foreign.status_code == 404
        one = (await client.get("/api/v1/llm/usage", params={"account_id": 1})).json()
        assert one["total_calls"] == 2 and one["by_model"]["openai/gpt-5"]["failures"] == 1
        later = (await client.get("/api/v1/llm/usage", params={"since": "2999-01-01T00:00:00"})).json()
        assert later["total_calls"] == 0


async def test_public_health_shows_only_the_key_status_and_never_asks_the_provider(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    async with running(_settings(database_url, tmp_path, fake), clock) as (_agent, client):
        anonymous = httpx.AsyncClient(base_url=str(client.base_url), timeout=30)  # /health needs no key
        async with anonymous:
            before = (await anonymous.get("/health")).json()
            assert fake.key_requests == [], "an anonymous /health must not make the agent ask GET /key"
            assert before["model"]["key"]["status"] == "unchecked"

            keyed = (await client.get("/api/v1/llm/health")).json()  # the keyed one asks, and shows the credit
            assert keyed["key"]["limit_remaining_usd"] == 74.5 and keyed["key"]["fingerprint"].startswith("sha256:")
            assert len(fake.key_requests) == 1

            fake.known_keys = {ENV_KEY: key_info(limit=10.0, usage=10.0)}
            _agent.llm.provider.key_checker.forget()  # type: ignore[attr-defined]
            assert (await client.get("/api/v1/llm/health")).json()["key"]["status"] == "no_credit"
            after = await anonymous.get("/health")
        assert len(fake.key_requests) == 2, "only the keyed calls asked"
        key = after.json()["model"]["key"]
        assert key == {"status": "no_credit", "detail": "the key's credit limit is spent"}
        for leak in ("limit_usd", "usage_usd", "limit_remaining", "is_free_tier", "fingerprint", "sha256:", "10.0"):
            assert leak not in after.text, leak


async def test_another_endpoints_key_is_never_sent_to_its_key_url(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    fake.known_keys = {}  # like a proxy: its `/key` answers 401 to any key
    settings = _settings(
        database_url, tmp_path, fake, openrouter_api_key=None, llm_base_url=fake.base_url, llm_api_key="proxy-key-123"
    )
    async with running(settings, clock) as (agent, client):
        keyed = (await client.get("/api/v1/llm/health")).json()
        public = (await client.get("/health")).json()
        assert fake.key_requests == [], "LLM_API_KEY was sent to LLM_BASE_URL/key"
        assert keyed["status"] == "ok" and keyed["key"] is None
        assert public["model"]["status"] == "ok" and public["model"]["key"] is None
        assert not any(r.startswith("model") for r in public["reasons"]), public["reasons"]
        assert agent.llm.provider.key_checker is None  # type: ignore[attr-defined]


async def test_an_accounts_model_is_checked_against_the_catalog_like_the_default(
    database_url: str, tmp_path: Path, clock: ManualClock, fake: FakeOpenRouter
) -> None:
    async with running(_settings(database_url, tmp_path, fake), clock) as (agent, client):
        fake.enqueue_models(*[Scripted(503, error_body(503, "catalog down"))] * 2)
        down = await client.put("/api/v1/accounts/1/model", json={"model": "x-ai/grok-4"})
        assert down.status_code == 503 and "cannot be read" in down.json()["detail"], down.text
        down = await client.post("/api/v1/decisions/models/switch", json={"model": "x-ai/grok-4", "account_id": 1})
        assert down.status_code == 503 and "cannot be read" in down.json()["detail"], down.text

        unlisted = {"model": "nobody/no-such-model"}
        switched = await client.post("/api/v1/decisions/models/switch", json={**unlisted, "account_id": 1})
        assigned = await client.put("/api/v1/accounts/1/model", json=unlisted)
        created = await client.post("/api/v1/accounts", json={"name": "unlisted", **unlisted})
        for refused in (switched, assigned, created):
            assert refused.status_code == 404, refused.text
            assert "not in the model catalog" in refused.json()["detail"]

        async with agent.sessions() as session:
            account = await session.get(models.Account, 1)
            assert account is not None and account.model is None, "nothing saved"
            assert await session.scalar(select(models.Account).where(models.Account.name == "unlisted")) is None

        listed = await client.put("/api/v1/accounts/1/model", json={"model": "x-ai/grok-4"})
        assert listed.status_code == 200 and listed.json()["model"] == "x-ai/grok-4", listed.text
        again = await client.post("/api/v1/decisions/models/switch", json={"model": "openai/gpt-5", "account_id": 1})
        assert again.status_code == 200 and again.json()["models"][0] == "openai/gpt-5", again.text
