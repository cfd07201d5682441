"""The API's security promises, over a real socket:

- every route but `/health` (and the docs) refuses a missing, wrong or revoked key with 401;
- an account key cannot read or change another account (404, as if it did not exist) nor use admin routes (403);
- no secret (admin key, account key, OpenRouter key, exchange credentials) appears in a response, in the
  database in clear, or in the logs; a generated admin key is stored hashed and shown once;
- mutating requests are audited (also refused ones), bodies are size-limited (413), mutations are rate-limited
  per key (429 with Retry-After), and the request id is echoed.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy import select, text, update

from app.api.auth import VerifiedKeys
from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.logging import configure_logging
from app.core.security import hash_api_key
from app.db import models
from app.db.models import Base
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from app.web.router import DashboardRoute
from tests.conftest import ADMIN_KEY, IsolatedSettings
from tests.e2e.server import serve
from tests.factories import buy, trading_context, trading_decision
from tests.fakes.openrouter_server import FakeOpenRouter, chat_completion, error_body, hold_all, model_entry

pytestmark = pytest.mark.db

# Served without a key on purpose: liveness and the API's own description.
PUBLIC = {"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
ADMIN = {"X-API-Key": ADMIN_KEY}
A = 1  # the default paper account, created at first start

Operation = tuple[str, str]  # (method, path template)

ADMIN_ONLY: set[Operation] = {
    ("POST", "/api/v1/accounts"),
    ("PUT", "/api/v1/accounts/{account_id}/credentials"),
    ("POST", "/api/v1/accounts/{account_id}/keys"),
    ("GET", "/api/v1/accounts/{account_id}/keys"),
    ("DELETE", "/api/v1/accounts/{account_id}/keys/{key_id}"),
    ("POST", "/api/v1/strategies/custom"),
    ("GET", "/api/v1/strategies/custom"),  # custom strategies with why each cannot run and the accounts on it
    ("GET", "/api/v1/strategies/custom/{strategy_id}"),
    ("PUT", "/api/v1/strategies/custom/{strategy_id}"),
    ("PATCH", "/api/v1/strategies/custom/{strategy_id}"),
    ("POST", "/api/v1/strategies/custom/{strategy_id}/deactivate"),
    ("POST", "/api/v1/strategies/custom/{strategy_id}/activate"),
    ("GET", "/metrics"),  # every account's figures (equity per account)
    ("GET", "/api/v1/audit"),  # every key's requests
    ("GET", "/api/v1/llm/openrouter-key"),  # the agent's model provider key (its source and fingerprint)
    ("PUT", "/api/v1/llm/openrouter-key"),
    ("DELETE", "/api/v1/llm/openrouter-key"),
    ("POST", "/api/v1/backtests"),  # a job on this server's CPU
    ("GET", "/api/v1/backtests"),
    ("GET", "/api/v1/backtests/{backtest_id}"),
    ("GET", "/api/v1/backtests/{backtest_id}/report"),
    ("GET", "/api/v1/backtests/{backtest_id}/report.html"),
    ("GET", "/api/v1/backtests/{backtest_id}/report.png"),
}
# Any key may call these; what they answer is limited to what the key may see.
ANY_KEY: set[Operation] = {
    ("GET", "/api/v1/accounts"),
    ("GET", "/api/v1/strategies/available"),
    ("GET", "/api/v1/strategies/{strategy_id}/performance"),
    ("GET", "/api/v1/llm/health"),  # the circuits and the key's status: no account's data, never a key
    ("GET", "/api/v1/experiments"),  # an account key: the experiments on its account
    ("POST", "/api/v1/experiments"),  # an account key: on its own account only
}
# Scoped by the experiment named in the path: an account key reaches only those on its account (others: 404).
EXPERIMENT_IN_PATH: set[Operation] = {
    ("GET", "/api/v1/experiments/{experiment_id}"),
    ("GET", "/api/v1/experiments/{experiment_id}/results"),
    ("POST", "/api/v1/experiments/{experiment_id}/stop"),
}
# Scoped by the account of the decision named in the path (another account's decision: 404).
DECISION_IN_PATH: set[Operation] = {("GET", "/api/v1/decisions/{decision_id}")}
# The account is named in the query or the body rather than in the path.
ACCOUNT_IN_QUERY = {
    ("GET", "/api/v1/decisions/history"),
    ("GET", "/api/v1/decisions/metrics"),
    ("GET", "/api/v1/llm/usage"),  # without account_id: every account for an admin, its own for an account key
    ("GET", "/api/v1/alerts"),  # without account_id: every alert for an admin, its own and agent-wide ones
}
ACCOUNT_IN_BODY = {
    ("POST", "/api/v1/decisions/generate"),
    ("POST", "/api/v1/decisions/validate"),
    ("POST", "/api/v1/decisions/models/switch"),
}


def api_operations(app: FastAPI) -> set[Operation]:
    """(method, path) of every API route the app serves, HEAD and the dashboard's pages aside. FastAPI 0.16x keeps
    included routers nested
    in `app.routes`; `iter_route_contexts` flattens them (older versions list them flat)."""
    flatten: Callable[[Any], Any] = getattr(fastapi.routing, "iter_route_contexts", lambda routes: routes)
    found: set[Operation] = set()
    for route in flatten(app.routes):
        # `path_format`: the path as the schema names it (`/{decision_id}` for the route's `/{decision_id:int}`).
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        if path is None or not methods or isinstance(getattr(route, "original_route", route), DashboardRoute):
            continue  # the dashboard's pages take a session cookie, not a key (tests/integration/test_dashboard.py)
        found.update((method, path) for method in methods if method != "HEAD")
    return found


def account_scoped(operations: set[Operation]) -> set[Operation]:
    return {
        op
        for op in operations
        if op not in ADMIN_ONLY and ("{account_id}" in op[1] or op in ACCOUNT_IN_QUERY or op in ACCOUNT_IN_BODY)
    }


def custom_strategy(strategy_id: str) -> dict[str, Any]:
    return {
        "strategy": {
            "strategy_id": strategy_id,
            "strategy_name": "Intruder",
            "strategy_type": "custom",
            "prompt_template": "Trade {{ max_positions }} positions at most.",
            "risk_parameters": {
                "max_risk_per_trade": 1.0,
                "max_daily_loss": 3.0,
                "stop_loss_percentage": 2.0,
                "take_profit_ratio": 2.0,
                "max_leverage": 3.0,
                "cooldown_period": 300,
            },
            "timeframe_preference": ["5m", "4h"],
            "max_positions": 2,
        }
    }


def valid_body(op: Operation, account_id: int) -> Any:
    """A body the route accepts, so a refusal is about the key and never about the body."""
    path = op[1]
    context = trading_context().model_copy(update={"account_id": account_id})
    bodies: dict[Operation, Any] = {
        ("POST", "/api/v1/accounts"): {"name": f"intruder-{secrets.token_hex(4)}"},
        ("PUT", "/api/v1/accounts/{account_id}/model"): {"model": None},
        ("PUT", "/api/v1/accounts/{account_id}/credentials"): {"api_key": "intruder-key", "api_secret": "intruder"},
        ("POST", "/api/v1/strategies/account/{account_id}/switch"): {"strategy_id": "aggressive", "reason": "x"},
        ("POST", "/api/v1/strategies/custom"): custom_strategy("intruder_strategy"),
        ("PUT", "/api/v1/strategies/custom/{strategy_id}"): {
            "strategy": {
                k: v for k, v in custom_strategy("x")["strategy"].items() if k not in ("strategy_id", "strategy_type")
            }
        },
        ("PATCH", "/api/v1/strategies/custom/{strategy_id}"): {"strategy_name": "Intruder"},
        ("POST", "/api/v1/decisions/generate"): {"account_id": account_id, "force_refresh": True},
        ("POST", "/api/v1/decisions/validate"): {
            "decision": trading_decision([buy("BTC")]).model_dump(mode="json"),
            "context": context.model_dump(mode="json"),
        },
        ("POST", "/api/v1/decisions/models/switch"): {"model": "openai/gpt-5", "account_id": account_id},
        ("PUT", "/api/v1/llm/openrouter-key"): {"api_key": "sk-or-v1-intruder-0123456789abcdef", "verify": False},
        ("POST", "/api/v1/backtests"): {"from": "2025-03-01", "to": "2025-03-02", "data": "simulated"},
    }
    if op in bodies:
        return bodies[op]
    if path.endswith(("/pause", "/resume", "/reduce", "/halt")):
        return {"reason": "security test"}
    return None


def request_for(op: Operation, account_id: int) -> dict[str, Any]:
    method, path = op
    request: dict[str, Any] = {
        "method": method,
        "url": path.format(
            account_id=account_id, strategy_id="conservative", decision_id=1, key_id=1, experiment_id=1, backtest_id=1
        ),
    }
    if op in ACCOUNT_IN_QUERY:
        request["params"] = {"account_id": account_id}
    body = valid_body(op, account_id)
    if body is not None:
        request["json"] = body
    return request


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def agent(self) -> Agent:
        agent: Agent = self.app.state.agent
        return agent

    async def call(self, op: Operation, account_id: int, headers: dict[str, str]) -> httpx.Response:
        return await self.client.request(**request_for(op, account_id), headers=headers)

    async def new_account(self, name: str) -> tuple[int, str]:
        """An account and a key for it, made with the admin key."""
        created = await self.client.post("/api/v1/accounts", json={"name": name}, headers=ADMIN)
        assert created.status_code == 201, created.text
        account_id = int(created.json()["id"])
        key = await self.client.post(f"/api/v1/accounts/{account_id}/keys", headers=ADMIN)
        assert key.status_code == 201, key.text
        return account_id, str(key.json()["key"])

    async def state_of(self, account_id: int) -> dict[str, Any]:
        """Everything a foreign key could have changed about an account."""
        async with self.agent.sessions() as session:
            account = await session.get(models.Account, account_id)
            assert account is not None
            rows = {
                "decisions": models.Decision,
                "assignments": models.StrategyAssignment,
                "keys": models.ApiKey,
                "positions": models.Position,
            }
            counts = {
                name: len((await session.scalars(select(model).where(model.account_id == account_id))).all())
                for name, model in rows.items()
            }
        return {
            "status": account.status,
            "strategy": account.strategy_id,
            "model": account.model,
            "credentials": account.credentials_encrypted,
            "updated_at": account.updated_at,
            **counts,
        }


# The wall clock of the served agent: audit entries and rate limits run on it (the market on `clock`).
WALL_START = datetime(2031, 7, 14, 6, 2, tzinfo=UTC)


@asynccontextmanager
async def running(settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    wall = ManualClock(WALL_START)

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market, wall_clock=wall)

    app = create_app(settings, agent_factory=factory)
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield Api(client, app)


@pytest.fixture
async def api(settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    async with running(settings, clock) as served:
        yield served


def _detail(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), str), response.text
    return str(body["detail"])


# ------------------------------------------------------------------------------------------- keys: 401


async def test_every_route_but_health_refuses_a_missing_wrong_or_revoked_key(api: Api, clock: ManualClock) -> None:
    operations = api_operations(api.app)
    protected = {op for op in operations if op[1] not in PUBLIC}
    unclassified = protected - ADMIN_ONLY - ANY_KEY - DECISION_IN_PATH - EXPERIMENT_IN_PATH - account_scoped(protected)
    assert not unclassified, f"decide who may call these routes, then list them above: {sorted(unclassified)}"
    assert {path for _, path in operations} >= PUBLIC
    assert len(protected) >= 25

    revoked_id, revoked = await api.new_account("revoked")
    async with api.agent.sessions.begin() as session:
        await session.execute(
            update(models.ApiKey).where(models.ApiKey.account_id == revoked_id).values(revoked_at=clock.now())
        )
    admin_revoked = "ta_admin_" + secrets.token_urlsafe(32)  # well-formed, never issued
    refused = {
        "no key": {},
        "empty key": {"X-API-Key": ""},
        "unknown admin-looking key": {"X-API-Key": admin_revoked},
        "unknown bearer": {"Authorization": f"Bearer {admin_revoked}"},
        "admin key minus a character": {"X-API-Key": ADMIN_KEY[:-1]},
        "admin key upper-cased": {"X-API-Key": ADMIN_KEY.upper()},
        "admin key as Basic auth": {"Authorization": f"Basic {ADMIN_KEY}"},
        "bearer without a token": {"Authorization": "Bearer"},
        "revoked account key": {"X-API-Key": revoked},
        "revoked account key as bearer": {"Authorization": f"Bearer {revoked}"},
        "wrong X-API-Key beside a valid bearer": {"X-API-Key": admin_revoked, "Authorization": f"Bearer {ADMIN_KEY}"},
    }
    before = await api.state_of(A)
    accounts_before = len((await api.client.get("/api/v1/accounts", headers=ADMIN)).json())
    for op in sorted(protected):
        for why, headers in refused.items():
            response = await api.call(op, A, headers)
            assert response.status_code == 401, f"{op} with {why}: {response.status_code} {response.text}"
            assert response.headers.get("www-authenticate") == "Bearer"
            detail = _detail(response)
            assert ADMIN_KEY not in detail and revoked not in detail and admin_revoked not in detail

    assert await api.state_of(A) == before, "refused requests changed nothing"
    assert len((await api.client.get("/api/v1/accounts", headers=ADMIN)).json()) == accounts_before
    strategies = (await api.client.get("/api/v1/strategies/available", headers=ADMIN)).json()
    assert "intruder_strategy" not in {s["strategy_id"] for s in strategies}

    assert (await api.client.get("/health")).status_code == 200, "/health needs no key"
    assert (await api.client.get("/openapi.json")).status_code == 200
    assert (await api.client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).is_success


# ---------------------------------------------------------------------------------- scoping: 404 and 403


async def test_an_account_key_cannot_read_or_change_another_account(api: Api) -> None:
    generated = await api.client.post("/api/v1/decisions/generate", json={"account_id": A}, headers=ADMIN)
    assert generated.status_code == 200, generated.text
    b_id, b_key = await api.new_account("account-b")
    as_b = {"X-API-Key": b_key}
    operations = {op for op in api_operations(api.app) if op[1] not in PUBLIC}
    before = await api.state_of(A)
    audit_before = await _audit_count(api)

    for op in sorted(account_scoped(operations)):
        response = await api.call(op, A, as_b)
        assert response.status_code == 404, f"{op} on account {A} with B's key: {response.status_code} {response.text}"
        missing = await api.call(op, 424242, as_b)
        assert (missing.status_code, _detail(missing)) == (404, "account 424242 does not exist")
        assert _detail(response) == f"account {A} does not exist", "indistinguishable from a missing account"

    for op in sorted(ADMIN_ONLY):
        for target in (A, b_id):
            response = await api.call(op, target, as_b)
            assert response.status_code == 403, f"{op} on {target} with an account key: {response.text}"
            assert _detail(response) == "this needs an admin API key"
    default_model = await api.client.post("/api/v1/decisions/models/switch", json={"model": "x/y"}, headers=as_b)
    assert default_model.status_code == 403, "the default model is everyone's: admin only"

    decision = generated.json()["id"]
    for op in sorted(DECISION_IN_PATH):
        foreign = await api.client.request(op[0], op[1].format(decision_id=decision), headers=as_b)
        assert (foreign.status_code, _detail(foreign)) == (404, f"decision {decision} does not exist")
        missing = await api.client.request(op[0], op[1].format(decision_id=424242), headers=as_b)
        assert (missing.status_code, _detail(missing)) == (404, "decision 424242 does not exist")
        assert (await api.client.request(op[0], op[1].format(decision_id=decision), headers=ADMIN)).is_success

    assert await api.state_of(A) == before, "B's key changed nothing on A"
    assert await _audit_count(api) > audit_before, "the refused attempts are audited"

    listed = (await api.client.get("/api/v1/accounts", headers=as_b)).json()
    assert [a["id"] for a in listed] == [b_id], "an account key lists its own account only"
    mine = (await api.client.get("/api/v1/strategies/conservative/performance", headers=as_b)).json()
    everyone = (await api.client.get("/api/v1/strategies/conservative/performance", headers=ADMIN)).json()
    assert everyone["decisions"] >= 1 and mine["decisions"] == 0, "performance counts the caller's account only"

    # The same key does work on its own account: the 404s above are about scope, not a broken key.
    for op in sorted(account_scoped(operations)):
        own = await api.call(op, b_id, as_b)
        if op == ("POST", "/api/v1/decisions/models/switch"):
            assert own.status_code == 409 and "no LLM is configured" in _detail(own)
        else:
            assert own.is_success, f"{op} on its own account: {own.status_code} {own.text}"


async def test_an_admin_lists_and_revokes_an_accounts_keys(api: Api) -> None:
    """A revoked key is refused at once; the list shows it revoked and never a key or its hash; a key of
    another account cannot be revoked through this one."""
    b_id, b_key = await api.new_account("account-b")
    c_id, _c_key = await api.new_account("account-c")
    as_b = {"X-API-Key": b_key}
    assert (await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)).status_code == 200

    listed = await api.client.get(f"/api/v1/accounts/{b_id}/keys", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    (key,) = listed.json()
    assert key["account_id"] == b_id and key["revoked_at"] is None and b_key.startswith(key["prefix"])
    assert b_key not in listed.text and hash_api_key(b_key) not in listed.text

    wrong_account = await api.client.delete(f"/api/v1/accounts/{c_id}/keys/{key['id']}", headers=ADMIN)
    assert (wrong_account.status_code, _detail(wrong_account)) == (404, f"account {c_id} has no key {key['id']}")
    assert (await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)).status_code == 200

    revoked = await api.client.delete(f"/api/v1/accounts/{b_id}/keys/{key['id']}", headers=ADMIN)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    refused = await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)
    assert (refused.status_code, _detail(refused)) == (401, "invalid API key")
    again = await api.client.delete(f"/api/v1/accounts/{b_id}/keys/{key['id']}", headers=ADMIN)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"], "revoking twice keeps the first time"
    (after,) = (await api.client.get(f"/api/v1/accounts/{b_id}/keys", headers=ADMIN)).json()
    assert after["revoked_at"] == revoked.json()["revoked_at"]


async def test_a_key_revoked_behind_the_servers_back_is_refused_once_its_verification_expires(api: Api) -> None:
    """A verified key is trusted for `VerifiedKeys.ttl_s` (the lookup was the bulk of a small request); a key
    revoked by another process, or by hand in the database, is refused once that time has passed. One revoked
    through this API is refused at once (above)."""
    now = [1000.0]
    api.app.state.verified_keys = VerifiedKeys(ttl_s=1.0, now=lambda: now[0])
    b_id, b_key = await api.new_account("account-b")
    as_b = {"X-API-Key": b_key}
    assert (await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)).status_code == 200
    async with api.agent.sessions.begin() as session:  # as another process would
        await session.execute(
            update(models.ApiKey)
            .where(models.ApiKey.key_hash == hash_api_key(b_key))
            .values(revoked_at=api.agent.clock.now())
        )
    now[0] += 0.5
    assert (await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)).status_code == 200  # still trusted
    now[0] += 0.5
    refused = await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)
    assert (refused.status_code, _detail(refused)) == (401, "invalid API key")
    now[0] += 60  # and it stays refused: a refused key is never remembered
    assert (await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b)).status_code == 401
    assert (await api.client.get(f"/api/v1/accounts/{b_id}", headers=ADMIN)).status_code == 200


async def _audit_count(api: Api) -> int:
    async with api.agent.sessions() as session:
        return len((await session.scalars(select(models.AuditEntry))).all())


# ------------------------------------------------------------------------------------------------ secrets


OPENROUTER_KEY = "sk-or-v1-" + secrets.token_hex(32)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[list[str]], None]]:
    """`configure(secrets)`: the production logging set-up (redacting handler on stderr) at DEBUG, with pytest's
    capture handler put back so the raw records can be read too. Restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("uvicorn.access", "aiosqlite", "alembic")}

    def configure(secret_values: list[str]) -> None:
        configure_logging("DEBUG", secrets=secret_values)
        root.addHandler(caplog.handler)
        caplog.set_level(logging.DEBUG)

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)
    structlog.reset_defaults()


async def _every_row(agent: Agent) -> str:
    """Every row of every table, as text."""
    dump: list[str] = []
    async with agent.sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            dump.extend(f"{table.name}: {tuple(row)!r}" for row in rows)
    return "\n".join(dump)


async def test_no_secret_in_responses_the_database_or_the_logs(
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    logs: Callable[[list[str]], None],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FakeOpenRouter(models=[model_entry("openai/gpt-5", ["max_tokens"])]) as fake:  # the model switched to
        real_llm = IsolatedSettings(
            database_url=settings.database_url,
            admin_api_key=ADMIN_KEY,
            secret_key_file=str(tmp_path / "secret.key"),
            openrouter_api_key=OPENROUTER_KEY,
            openrouter_base_url=fake.base_url,
            llm_model="openai/gpt-5",
            llm_max_attempts=1,
        )
        logs(real_llm.secret_values())
        assert OPENROUTER_KEY in real_llm.secret_values() and ADMIN_KEY in real_llm.secret_values()
        credentials = {
            "api_key": "exch-key-" + secrets.token_hex(12),
            "api_secret": "exch-sec-" + secrets.token_hex(16),
        }
        async with running(real_llm, clock) as api:
            b_id, b_key = await api.new_account("account-b")
            as_b = {"X-API-Key": b_key}
            responses: list[httpx.Response] = []

            stored = await api.client.put(f"/api/v1/accounts/{b_id}/credentials", json=credentials, headers=ADMIN)
            assert stored.status_code == 204 and stored.content == b""
            # A refused body that carries a secret: the 422 names the field, never echoes the value.
            responses.append(
                await api.client.put(
                    f"/api/v1/accounts/{b_id}/credentials",
                    json={**credentials, "api_secret": "", "note": credentials["api_secret"]},
                    headers=ADMIN,
                )
            )
            assert responses[-1].status_code == 422
            # A secret sent as a key: refused without echo.
            responses.append(await api.client.get("/api/v1/accounts", headers={"X-API-Key": OPENROUTER_KEY}))
            responses.append(await api.client.get("/api/v1/accounts", headers={"X-API-Key": credentials["api_secret"]}))
            assert responses[-1].status_code == 401

            fake.reply(chat_completion(hold_all(), cost=0.001))
            responses.append(
                await api.client.post("/api/v1/decisions/generate", json={"account_id": b_id}, headers=as_b)
            )
            assert responses[-1].status_code == 200, responses[-1].text
            clock.advance(timedelta(minutes=5))
            fake.reply(error_body(401, "No auth credentials found"), status=401)
            responses.append(
                await api.client.post("/api/v1/decisions/generate", json={"account_id": b_id}, headers=as_b)
            )
            assert responses[-1].status_code == 200 and responses[-1].json()["status"] == "fallback"
            responses.append(
                await api.client.post(
                    "/api/v1/decisions/models/switch", json={"model": "openai/gpt-5", "account_id": b_id}, headers=as_b
                )
            )
            assert responses[-1].status_code == 200, responses[-1].text
            for url in (
                "/api/v1/accounts",
                f"/api/v1/accounts/{b_id}",
                f"/api/v1/accounts/{b_id}/positions?status=all",
                f"/api/v1/accounts/{b_id}/orders",
                f"/api/v1/accounts/{b_id}/fills",
                f"/api/v1/decisions/history?account_id={b_id}",
                f"/api/v1/decisions/metrics?account_id={b_id}",
                f"/api/v1/strategies/account/{b_id}/history",
                "/metrics",
                "/health",
                "/openapi.json",
            ):
                responses.append(await api.client.get(url, headers=ADMIN))
                assert responses[-1].status_code == 200, f"{url}: {responses[-1].text}"
            responses.append(await api.client.get(f"/api/v1/accounts/{b_id}", headers=as_b))
            assert responses[-1].json()["has_credentials"] is True, "stored, and only said to be"

            leaked = [OPENROUTER_KEY, ADMIN_KEY, b_key, *credentials.values()]
            for response in responses:
                for secret in leaked:
                    assert secret not in response.text, f"{response.request.url} answered a secret"
                    assert secret not in str(response.headers)

            assert fake.chat_requests[0].headers["authorization"] == f"Bearer {OPENROUTER_KEY}", "the key was used"

            async with api.agent.sessions() as session:
                token = await session.scalar(
                    select(models.Account.credentials_encrypted).where(models.Account.id == b_id)
                )
                key_rows = (await session.scalars(select(models.ApiKey))).all()
            assert token is not None and token.startswith("gAAAA"), "a Fernet token"
            assert json.loads(api.agent.secrets.decrypt(token)) == credentials
            assert {row.key_hash for row in key_rows} >= {hash_api_key(ADMIN_KEY), hash_api_key(b_key)}
            database = await _every_row(api.agent)
            for secret in leaked:
                assert secret not in database, "a secret is stored in clear"
            if settings.is_sqlite:
                raw = b"".join(p.read_bytes() for p in tmp_path.glob("test.db*"))  # noqa: ASYNC240
                assert raw, "the SQLite file"
                for secret in leaked:
                    assert secret.encode() not in raw

    raw_logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records, "DEBUG logging captured the run"
    printed = capsys.readouterr().err
    for secret in leaked:
        assert secret not in raw_logs, "the app logged a secret (before any redaction)"
        assert secret not in printed

    # And should a secret ever reach a log line or a traceback, the configured handler prints it redacted.
    try:
        raise RuntimeError(f"upstream said: bad key {OPENROUTER_KEY}")
    except RuntimeError:
        logging.getLogger("app.services.llm").exception("call failed, key %s, account key %s", OPENROUTER_KEY, b_key)
    printed = capsys.readouterr().err
    assert "call failed" in printed and "RuntimeError: upstream said: bad key ***" in printed
    assert OPENROUTER_KEY not in printed and b_key not in printed


async def test_a_generated_admin_key_is_stored_hashed_and_shown_once(
    database_url: str, tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    no_key = IsolatedSettings(database_url=database_url, secret_key_file=str(tmp_path / "secret.key"))
    async with running(no_key, clock) as api:
        shown = capsys.readouterr().out
        keys = re.findall(r"ta_admin_[A-Za-z0-9_-]+", shown)
        assert len(keys) == 1 and "shown only now" in shown, shown
        key = keys[0]
        assert api.agent.new_admin_key == key and api.agent.describe().count(key) == 1
        assert (await api.client.get("/api/v1/accounts", headers={"X-API-Key": key})).status_code == 200
        async with api.agent.sessions() as session:
            rows = (await session.scalars(select(models.ApiKey))).all()
        assert [(r.role, r.key_hash, r.prefix) for r in rows] == [("admin", hash_api_key(key), key[:12])]
        assert key not in await _every_row(api.agent)

    async with running(no_key, clock) as api:  # a restart: the key is not shown again, and still works
        again = capsys.readouterr().out
        assert key not in again and "Admin API key" not in again
        assert api.agent.new_admin_key is None
        assert (await api.client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {key}"})).is_success
        async with api.agent.sessions() as session:
            count = len((await session.scalars(select(models.ApiKey))).all())
        assert count == 1, "no second admin key"


# ------------------------------------------------------------------------------------------------- audit


async def test_mutating_requests_are_audited_with_who_what_when_and_status(api: Api, clock: ManualClock) -> None:
    b_id, b_key = await api.new_account("account-b")
    calls = [
        ("ok", "POST", f"/api/v1/accounts/{A}/pause", ADMIN, {"reason": "audit"}, 200),
        ("nokey", "POST", f"/api/v1/accounts/{A}/halt", {}, {}, 401),
        ("foreign", "POST", f"/api/v1/accounts/{A}/resume", {"X-API-Key": b_key}, {}, 404),
        ("notadmin", "POST", "/api/v1/accounts", {"X-API-Key": b_key}, {"name": "nope"}, 403),
        ("invalid", "POST", "/api/v1/decisions/generate", ADMIN, {"account_id": "one"}, 422),
        ("own", "PUT", f"/api/v1/accounts/{b_id}/model", {"X-API-Key": b_key}, {"model": None}, 200),
        ("read", "GET", f"/api/v1/accounts/{A}", ADMIN, None, 200),
    ]
    for request_id, method, url, headers, body, status in calls:
        response = await api.client.request(
            method, url, json=body, headers={**headers, "X-Request-ID": f"audit-{request_id}"}
        )
        assert response.status_code == status, f"{request_id}: {response.text}"
    async with api.agent.sessions() as session:
        rows = {
            r.request_id: r
            for r in (
                await session.scalars(select(models.AuditEntry).where(models.AuditEntry.request_id.like("audit-%")))
            ).all()
        }
    found = {
        request_id: (r.method, r.path, r.status_code, r.role, r.key_prefix, r.account_id)
        for request_id, r in rows.items()
    }
    assert found == {
        "audit-ok": ("POST", f"/api/v1/accounts/{A}/pause", 200, "admin", ADMIN_KEY[:12], A),
        "audit-nokey": ("POST", f"/api/v1/accounts/{A}/halt", 401, None, None, A),
        "audit-foreign": ("POST", f"/api/v1/accounts/{A}/resume", 404, "account", b_key[:12], b_id),
        "audit-notadmin": ("POST", "/api/v1/accounts", 403, "account", b_key[:12], b_id),
        "audit-invalid": ("POST", "/api/v1/decisions/generate", 422, "admin", ADMIN_KEY[:12], None),
        "audit-own": ("PUT", f"/api/v1/accounts/{b_id}/model", 200, "account", b_key[:12], b_id),
    }, "every mutating request (refused ones too) and no read"
    assert all(r.created_at == WALL_START for r in rows.values()), "when: the wall clock (not the market's)"

    # operators read it over the API (admin only), newest first, by account and page
    listed = await api.client.get("/api/v1/audit", params={"limit": 500}, headers=ADMIN)
    assert listed.status_code == 200, listed.text
    entries = [e for e in listed.json() if e["request_id"].startswith("audit-")]
    assert [e["request_id"] for e in entries] == [f"audit-{c[0]}" for c in reversed(calls) if c[0] != "read"]
    ok = next(e for e in entries if e["request_id"] == "audit-ok")
    assert (ok["method"], ok["path"], ok["status_code"], ok["role"], ok["key_prefix"]) == (
        "POST",
        f"/api/v1/accounts/{A}/pause",
        200,
        "admin",
        ADMIN_KEY[:12],
    )
    assert ADMIN_KEY not in listed.text and b_key not in listed.text, "prefixes only, never a key"
    of_b = await api.client.get("/api/v1/audit", params={"account_id": b_id}, headers=ADMIN)
    assert {e["account_id"] for e in of_b.json()} == {b_id}
    page = await api.client.get("/api/v1/audit", params={"limit": 1, "before_id": ok["id"]}, headers=ADMIN)
    assert [e["id"] for e in page.json()] == [max(e["id"] for e in listed.json() if e["id"] < ok["id"])]
    refused = await api.client.get("/api/v1/audit", headers={"X-API-Key": b_key})
    assert refused.status_code == 403


# ---------------------------------------------------------------------------------- limits and request ids


async def test_a_body_over_the_limit_is_refused_with_413(api: Api) -> None:
    limit = api.agent.settings.api_max_body_bytes
    big = json.dumps({"account_id": A, "symbols": ["BTC"], "pad": "x" * limit}).encode()
    sized = await api.client.post(
        "/api/v1/decisions/generate",
        content=big,
        headers={**ADMIN, "Content-Type": "application/json", "X-Request-ID": "too-big"},
    )
    assert sized.status_code == 413 and str(limit) in _detail(sized)
    assert sized.headers["x-request-id"] == "too-big"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the body is counted as it arrives
        for _ in range(8):
            yield b" " * (limit // 4)

    streamed = await api.client.post(
        "/api/v1/decisions/generate", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413

    async def small_chunks() -> AsyncIterator[bytes]:
        for part in (b'{"account_id"', b": ", str(A).encode(), b"}"):
            yield part

    within = await api.client.post(
        "/api/v1/decisions/generate", content=small_chunks(), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert within.status_code == 200, f"a chunked body within the limit reaches the route: {within.text}"
    unauthenticated = await api.client.post(
        "/api/v1/accounts", content=big, headers={"Content-Type": "application/json"}
    )
    assert unauthenticated.status_code == 413, "the size limit holds before authentication"
    small = await api.client.post("/api/v1/decisions/generate", json={"account_id": A}, headers=ADMIN)
    assert small.status_code == 200
    async with api.agent.sessions() as session:
        audited = await session.scalar(select(models.AuditEntry).where(models.AuditEntry.request_id == "too-big"))
    assert audited is not None and audited.status_code == 413


async def test_mutations_are_rate_limited_per_key(settings: Settings, clock: ManualClock) -> None:
    limited = settings.model_copy(update={"api_mutations_per_minute": 5})
    async with running(limited, clock) as api:
        b_id, b_key = await api.new_account("account-b")  # two admin mutations
        statuses = [
            (await api.client.post(f"/api/v1/accounts/{A}/pause", json={}, headers=ADMIN)).status_code for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429], "5 mutations a minute per key, the account set-up included"
        refused = await api.client.post(f"/api/v1/accounts/{A}/resume", json={}, headers=ADMIN)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "12", "60 s / 5"
        assert "at most 5 mutating requests per minute" in _detail(refused)
        admin_only = await api.client.post("/api/v1/accounts", json={"name": "one-more"}, headers=ADMIN)
        assert admin_only.status_code == 429, "admin-only mutations count too"
        assert (await api.client.get(f"/api/v1/accounts/{A}", headers=ADMIN)).status_code == 200, "reads are free"
        other_key = await api.client.post(f"/api/v1/accounts/{b_id}/pause", json={}, headers={"X-API-Key": b_key})
        assert other_key.status_code == 200, "the limit is per key"
        async with api.agent.sessions() as session:
            status = await session.scalar(text("SELECT status FROM accounts WHERE id = :id").bindparams(id=A))
        assert status == "PAUSED"


async def test_the_request_id_is_echoed_or_generated(api: Api) -> None:
    echoed = await api.client.get("/health", headers={"X-Request-ID": "req-123_ABC"})
    assert echoed.headers["x-request-id"] == "req-123_ABC"
    generated = await api.client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert generated.headers["x-request-id"] != (await api.client.get("/health")).headers["x-request-id"]
    cleaned = await api.client.get("/health", headers={"X-Request-ID": "a b<script>;" + "x" * 100})
    assert cleaned.headers["x-request-id"] == ("abscript" + "x" * 100)[:64], "only [A-Za-z0-9_-], 64 at most"
    refused = await api.client.get("/api/v1/accounts", headers={"X-Request-ID": "on-a-401"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "on-a-401"
    missing = await api.client.get("/api/v1/accounts/999", headers={**ADMIN, "X-Request-ID": "on-a-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "on-a-404"
