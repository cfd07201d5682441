"""Request handling over a real socket: a 500 is a complete answer on a connection that stays usable, bad input
(times without a zone, lone surrogates, integers beyond 64 bits, booleans as ids) gets a clear answer and saves
nothing, status changes take an optional reason that is kept, keys keep their names, and a decision can be made
with another strategy than the account's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.factories import buy, trading_context, trading_decision

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}
SECRET_MESSAGE = "the-secret-inner-detail-9f3a"


@dataclass
class Served:
    base_url: str
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def agent(self) -> Agent:
        agent: Agent = self.app.state.agent
        return agent


@pytest.fixture
async def served(settings: Settings, clock: ManualClock) -> AsyncIterator[Served]:
    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market)

    app = create_app(settings, agent_factory=factory)

    async def explode() -> None:
        raise RuntimeError(SECRET_MESSAGE)

    # A route that fails as an unexpected bug would: mutating, so its 500 must be audited too.
    app.add_api_route("/api/v1/test-explode", explode, methods=["POST"])
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN) as client:
        yield Served(base_url, client, app)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read to its end (Content-Length), as a keep-alive client reads it."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout=30)
    return status, headers, body


# ------------------------------------------------------------------------------------------------- 500


async def test_a_500_is_a_complete_answer_and_the_connection_stays_usable(served: Served) -> None:
    """After an unexpected error the client gets the whole answer (it used to be followed by the server dropping
    the connection: clients saw "connection reset"), the answer names neither the exception nor its message, and
    the same connection serves the next request."""
    host, port = served.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /api/v1/test-explode HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nX-Request-ID: explode-1\r\n\r\n"
        )
        await writer.drain()
        status, headers, body = await _read_response(reader)
        assert status == 500
        assert headers.get("connection", "").lower() != "close"
        detail = json.loads(body)["detail"]
        assert "RuntimeError" not in detail and SECRET_MESSAGE not in detail, detail
        assert "explode-1" in detail, "the answer names the request, to find it in the server log"

        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        status, _, body = await _read_response(reader)
        assert status == 200, "the connection that carried the 500 still serves requests"
        assert json.loads(body)["database"] == "ok"
    finally:
        writer.close()
    async with served.agent.sessions() as session:
        audited = await session.scalar(select(models.AuditEntry).where(models.AuditEntry.request_id == "explode-1"))
    assert audited is not None and audited.status_code == 500


# --------------------------------------------------------------------------------------------- bad input


async def test_since_and_until_without_a_zone_or_as_a_date_are_read_as_utc(served: Served, clock: ManualClock) -> None:
    client = served.client
    for _ in range(3):
        assert (await client.post("/api/v1/decisions/generate", json={"account_id": 1})).status_code == 200
        clock.advance(timedelta(minutes=5))
    history = "/api/v1/decisions/history"
    every = [d["cycle_time"] for d in (await client.get(history, params={"account_id": 1})).json()]
    assert len(every) == 3
    cases = {
        ("since", "2026-03-02T12:05:00"): ("since", "2026-03-02T12:05:00+00:00"),
        ("until", "2026-03-02T12:05:00"): ("until", "2026-03-02T12:05:00Z"),
        ("since", "2026-03-02"): ("since", "2026-03-02T00:00:00Z"),
        ("until", "2026-03-01"): ("until", "2026-03-01T00:00:00Z"),
    }
    for (name, naive), (_, aware) in cases.items():
        plain = await client.get(history, params={"account_id": 1, name: naive})
        zoned = await client.get(history, params={"account_id": 1, name: aware})
        assert plain.status_code == 200, f"{name}={naive}: {plain.status_code} {plain.text}"
        assert plain.json() == zoned.json(), f"{name}={naive} is read as {aware}"
    since = await client.get(history, params={"account_id": 1, "since": "2026-03-02T12:05:00"})
    assert [d["cycle_time"] for d in since.json()] == every[:2]
    assert (await client.get(history, params={"account_id": 1, "until": "2026-03-01"})).json() == []


LONE_SURROGATE = '"\\ud800"'
FIFTY_DIGITS = "1" * 50


async def test_bodies_the_agent_cannot_store_or_answer_get_a_clear_422_and_save_nothing(served: Served) -> None:
    client = served.client
    context = trading_context().model_dump(mode="json")
    decision = trading_decision([buy("BTC")]).model_dump(mode="json")

    def validate(where: str) -> str:
        """A validate body with `%s` in place of the decision's rationale or the context's account id."""
        body = {"decision": decision | {"portfolio_rationale": "@@"}, "context": context}
        if where == "account_id":
            body = {"decision": decision, "context": context | {"account_id": "@@"}}
        return json.dumps(body).replace('"@@"', "%s")

    bodies = [
        ("POST", "/api/v1/accounts", '{"name": %s}'),
        ("POST", "/api/v1/accounts", '{"name": "big-balance", "initial_balance": %s}'),
        ("POST", "/api/v1/accounts/1/pause", '{"reason": %s}'),
        ("POST", "/api/v1/accounts/1/keys", '{"name": %s}'),
        ("PUT", "/api/v1/accounts/1/model", '{"model": %s}'),
        ("POST", "/api/v1/decisions/generate", '{"account_id": %s}'),
        ("POST", "/api/v1/decisions/generate", '{"account_id": 1, "symbols": [%s]}'),
        ("POST", "/api/v1/decisions/models/switch", '{"model": "a/b", "account_id": %s}'),
        ("POST", "/api/v1/decisions/validate", validate("rationale")),
        ("POST", "/api/v1/decisions/validate", validate("account_id")),
    ]
    async with served.agent.sessions() as session:
        before = {
            table: await session.scalar(select(func.count()).select_from(table))
            for table in (models.Account, models.ApiKey, models.Decision)
        }
    for method, path, template in bodies:
        assert template.count("%s") == 1, template
        for value in (LONE_SURROGATE, FIFTY_DIGITS, "-" + FIFTY_DIGITS, "Infinity", "1e400"):
            body = template.replace("%s", value, 1)
            answer = await client.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, f"{method} {path} with {value[:8]}: {answer.status_code} {answer.text}"
            assert answer.json()["detail"].startswith("invalid request"), answer.text
    async with served.agent.sessions() as session:
        after = {
            table: await session.scalar(select(func.count()).select_from(table))
            for table in (models.Account, models.ApiKey, models.Decision)
        }
        account = await session.get(models.Account, 1)
    assert after == before, "a refused request saves nothing"
    assert account is not None and account.status == "ACTIVE" and account.model is None
    # A well-formed surrogate pair is text like any other.
    paired = await client.post(
        "/api/v1/accounts/1/pause", content='{"reason": "\\ud83d\\ude00 maintenance"}', headers=_json()
    )
    assert paired.status_code == 200, paired.text


def _validate_body(**context: Any) -> dict[str, Any]:
    decision = trading_decision([buy("BTC")]).model_dump(mode="json")
    return {"decision": decision, "context": trading_context().model_dump(mode="json") | context}


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


async def test_booleans_are_not_ids(served: Served) -> None:
    client = served.client
    for path, body in [
        ("/api/v1/decisions/generate", {"account_id": True}),
        ("/api/v1/decisions/generate", {"account_id": "1"}),
        ("/api/v1/decisions/models/switch", {"model": "a/b", "account_id": True}),
        ("/api/v1/decisions/validate", _validate_body(account_id=True)),
        ("/api/v1/decisions/validate", _validate_body(account_id=0)),
    ]:
        answer = await client.post(path, json=body)
        assert answer.status_code == 422, f"{path} {body}: {answer.status_code} {answer.text}"
        assert "account_id" in answer.json()["detail"]
    async with served.agent.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(models.Decision)) == 0


# --------------------------------------------------------------------------------------- status changes


async def test_status_changes_take_no_body_or_a_reason_that_is_kept(served: Served) -> None:
    """Pause, resume, reduce and halt need no body; a reason given is stored in the audit log and in the
    account's history (it used to be thrown away)."""
    client = served.client
    steps = [
        ("pause", None, "PAUSED"),
        ("resume", {}, "ACTIVE"),
        ("reduce", {"reason": "deleveraging before the FOMC"}, "REDUCING"),
        ("halt", {"reason": "exchange incident"}, "HALTED"),
    ]
    for i, (action, body, status) in enumerate(steps):
        kwargs: dict[str, Any] = {"headers": {"X-Request-ID": f"status-{i}"}}
        if body is not None:
            kwargs["json"] = body
        answer = await client.post(f"/api/v1/accounts/1/{action}", **kwargs)
        assert answer.status_code == 200, f"{action}: {answer.text}"
        assert answer.json()["status"] == status
    bad = await client.post("/api/v1/accounts/1/resume", json={"reason": "x", "other": 1})
    assert bad.status_code == 422, "unknown fields are still refused"
    assert (await client.post("/api/v1/accounts/1/resume", json={"reason": "a\nb"})).status_code == 422

    history = await client.get("/api/v1/accounts/1/history")
    assert history.status_code == 200, history.text
    assert [(h["from_status"], h["to_status"], h["reason"]) for h in history.json()] == [
        ("REDUCING", "HALTED", "exchange incident"),
        ("ACTIVE", "REDUCING", "deleveraging before the FOMC"),
        ("PAUSED", "ACTIVE", None),
        ("ACTIVE", "PAUSED", None),
    ]
    assert all(h["key_prefix"] == ADMIN_KEY[:12] for h in history.json())
    page = await client.get("/api/v1/accounts/1/history", params={"limit": 1, "before_id": history.json()[0]["id"]})
    assert [h["to_status"] for h in page.json()] == ["REDUCING"]

    audit = (await client.get("/api/v1/audit", params={"account_id": 1})).json()
    details = {e["request_id"]: e["detail"] for e in audit if e["request_id"].startswith("status-")}
    assert details == {
        "status-0": None,
        "status-1": None,
        "status-2": "deleveraging before the FOMC",
        "status-3": "exchange incident",
    }
    async with served.agent.sessions() as session:
        rows = (await session.scalars(select(models.AccountStatusChange))).all()
    assert {r.request_id for r in rows} == set(details), "each change names its audit entry"


async def test_a_key_keeps_the_name_it_was_created_with(served: Served) -> None:
    client = served.client
    named = await client.post("/api/v1/accounts/1/keys", json={"name": "bot"})
    assert named.status_code == 201, named.text
    assert named.json()["name"] == "bot"
    unnamed = await client.post("/api/v1/accounts/1/keys")
    assert unnamed.status_code == 201 and unnamed.json()["name"] == "account 1"
    listed = {k["id"]: k["name"] for k in (await client.get("/api/v1/accounts/1/keys")).json()}
    assert listed[named.json()["id"]] == "bot" and listed[unnamed.json()["id"]] == "account 1"
    assert (await client.post("/api/v1/accounts/1/keys", json={"name": ""})).status_code == 422


# ------------------------------------------------------------------------------------- strategy override


async def test_a_decision_can_be_made_with_another_active_strategy(served: Served) -> None:
    client = served.client
    override = await client.post(
        "/api/v1/decisions/generate", json={"account_id": 1, "strategy_override": "aggressive"}
    )
    assert override.status_code == 200, override.text
    assert override.json()["strategy_id"] == "aggressive"
    own = await client.post("/api/v1/decisions/generate", json={"account_id": 1})
    assert own.json()["strategy_id"] == "conservative", "the account keeps its own strategy"
    assert own.json()["id"] != override.json()["id"]
    assert (await client.get("/api/v1/accounts/1")).json()["strategy_id"] == "conservative"

    unknown = await client.post("/api/v1/decisions/generate", json={"account_id": 1, "strategy_override": "nope"})
    assert unknown.status_code == 404 and "unknown strategy 'nope'" in unknown.json()["detail"]
    async with served.agent.sessions.begin() as session:
        await session.execute(
            update(models.Strategy).where(models.Strategy.strategy_id == "swing").values(is_active=False)
        )
    inactive = await client.post("/api/v1/decisions/generate", json={"account_id": 1, "strategy_override": "swing"})
    assert inactive.status_code == 409 and "deactivated" in inactive.json()["detail"]
    async with served.agent.sessions() as session:
        strategies = (await session.scalars(select(models.Decision.strategy_id).order_by(models.Decision.id))).all()
    assert strategies == ["aggressive", "conservative"], "a refused override decides nothing"


async def test_an_accounts_view_is_read_after_its_write_transaction_ends(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view reads the strategy in a session of its own: inside the write transaction it took a second
    connection while the first held the write lock (pool exhaustion under load, a longer write lock)."""
    agent = served.agent
    held: list[int] = []
    notice = agent.strategies.strategy_notice

    async def counting(strategy_id: str) -> str | None:
        await agent.alerts.flush()  # the pause's alert is stored by the alert center on a connection of its own
        held.append(agent.db.pool.checkedout())  # type: ignore[attr-defined]
        return await notice(strategy_id)

    monkeypatch.setattr(agent.strategies, "strategy_notice", counting)
    created = await served.client.post("/api/v1/accounts", json={"name": "viewed"})
    assert created.status_code == 201, created.text
    account = created.json()["id"]
    assert (await served.client.post(f"/api/v1/accounts/{account}/pause")).status_code == 200
    assert (await served.client.put(f"/api/v1/accounts/{account}/model", json={"model": None})).status_code == 200
    assert held == [0, 0, 0], f"connections held while the view was read: {held}"


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "\\ud800"}',
        '{"name": "inf", "initial_balance": Infinity}',
        '{"name": "big", "initial_balance": 1e400}',
    ],
)
async def test_a_bad_json_body_gets_one_answer_with_or_without_a_content_type(served: Served, raw: str) -> None:
    """The body is read as JSON either way (FastAPI reads a body without a Content-Type as JSON): the same check
    and the same 422, whether the header is sent or not."""
    with_type = await served.client.post("/api/v1/accounts", content=raw.encode(), headers=_json())
    without = await served.client.post("/api/v1/accounts", content=raw.encode())
    assert "content-type" not in without.request.headers
    assert with_type.status_code == 422, with_type.text
    assert (without.status_code, without.json()) == (with_type.status_code, with_type.json())
    async with served.agent.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(models.Account)) == 1, "nothing saved"
