"""Strategies over the API, on a real socket and both databases (issue 13, point 9 and, from point 14, custom
strategies editable and deactivatable):

- a custom strategy with a number that is not finite or out of bounds, text that cannot be stored, or a
  timeframe the agent cannot serve answers 4xx with the reason, and nothing is saved;
- a bad row already in the database never breaks `available`, is reported by `GET .../custom`, is never
  assigned (409, nothing saved), and an account already on it decides "error" with the reason (no 500);
- an admin edits a custom strategy (PUT or PATCH, checked like a new one, audited with what changed; built-in
  strategies refused), deactivates it (no longer offered nor assignable; the account on it holds with the
  reason and says so) and activates it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.db.repositories.strategies import StrategyRepository
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.integration.test_strategy_validation import plant_bad_row

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}


def definition(strategy_id: str = "api-trend", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "strategy_id": strategy_id,
        "strategy_name": "Trend over the API",
        "strategy_type": "custom",
        "prompt_template": "Risk {{ risk.max_risk_per_trade }}% a trade, at most {{ max_positions }} positions.",
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
    body.update(fields)
    return body


def replacement(**fields: Any) -> dict[str, Any]:
    """A whole definition for PUT: the id is the path's, the type `custom`, the activity left alone."""
    body = definition(**fields)
    for key in ("strategy_id", "strategy_type", "is_active"):
        body.pop(key, None)
    return body


class Api:
    def __init__(self, client: httpx.AsyncClient, agent: Agent) -> None:
        self.client = client
        self.agent = agent

    async def raw_post(self, path: str, raw: str) -> httpx.Response:
        """A body as raw JSON text (Infinity, lone surrogates and huge integers cannot be built with `json=`)."""
        return await self.client.post(path, content=raw.encode(), headers={**ADMIN, "Content-Type": "application/json"})

    async def strategy_rows(self) -> dict[str, dict[str, Any]]:
        async with self.agent.sessions() as session:
            rows = (await session.scalars(select(models.Strategy))).all()
            return {
                r.strategy_id: {"risk": r.risk_parameters, "name": r.strategy_name, "active": r.is_active} for r in rows
            }

    async def assignments(self) -> int:
        async with self.agent.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(models.StrategyAssignment)) or 0)

    async def account_strategy(self, account_id: int = 1) -> str:
        async with self.agent.sessions() as session:
            account = await session.get(models.Account, account_id)
            assert account is not None
            return account.strategy_id

    async def available(self, **params: Any) -> list[str]:
        response = await self.client.get("/api/v1/strategies/available", headers=ADMIN, params=params)
        assert response.status_code == 200, response.text
        return [s["strategy_id"] for s in response.json()]

    async def decide(self) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/decisions/generate", json={"account_id": 1, "force_refresh": True}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def last_audit(self, method: str, path: str) -> dict[str, Any]:
        entries = (await self.client.get("/api/v1/audit", headers=ADMIN, params={"limit": 50})).json()
        found = [e for e in entries if e["method"] == method and e["path"] == path]
        assert found, f"no audit entry for {method} {path}"
        entry: dict[str, Any] = found[0]
        return entry


@pytest.fixture
async def api(settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    async def factory(s: Settings) -> Agent:
        return await build_agent(s, clock=clock, market=MarketSimulator(s.assets, base_timeframe=s.interval, seed=7))

    app = create_app(settings, agent_factory=factory)
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield Api(client, app.state.agent)


# ---- point 9: refused with the reason, nothing saved ---------------------------------------------------

RAW_REFUSALS = {
    "infinite-take-profit": json.dumps({"strategy": definition()}).replace(
        '"take_profit_ratio": 2.0', '"take_profit_ratio": Infinity'
    ),
    "nan-leverage": json.dumps({"strategy": definition()}).replace('"max_leverage": 3.0', '"max_leverage": NaN'),
    "overflowing-float": json.dumps({"strategy": definition()}).replace(
        '"max_daily_loss": 3.0', '"max_daily_loss": 1e400'
    ),
    "50-digit-integer": json.dumps({"strategy": definition()}).replace(
        '"max_positions": 2', f'"max_positions": {10**49}'
    ),
    "50-digit-cooldown": json.dumps({"strategy": definition()}).replace(
        '"cooldown_period": 300', f'"cooldown_period": {10**49}'
    ),
    "lone-surrogate-name": json.dumps({"strategy": definition(strategy_name="Trend \\ud800")}).replace("\\\\", "\\"),
    "lone-surrogate-template": json.dumps({"strategy": definition(prompt_template="Go \\udfff")}).replace("\\\\", "\\"),
    "nul-in-template": json.dumps({"strategy": definition(prompt_template="Go\u0000 {{ max_positions }}")}),
    "boolean-leverage": json.dumps({"strategy": definition()}).replace('"max_leverage": 3.0', '"max_leverage": true'),
}


@pytest.mark.parametrize("case", sorted(RAW_REFUSALS))
async def test_a_strategy_that_cannot_be_stored_is_refused_with_4xx_and_nothing_saved(api: Api, case: str) -> None:
    before = await api.strategy_rows()
    response = await api.raw_post("/api/v1/strategies/custom", RAW_REFUSALS[case])
    assert response.status_code in (400, 422), f"{case}: {response.status_code} {response.text}"
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert await api.strategy_rows() == before, "nothing saved"
    assert "api-trend" not in await api.available(), "and the listing still answers"


@pytest.mark.parametrize(
    ("timeframes", "reason"),
    [
        (["7m", "4h"], "timeframe '7m' cannot be served"),
        (["5m", "90m"], "timeframe '90m' cannot be served"),
        (["4h", "1h"], "the trend timeframe (1h) must be longer"),
    ],
)
async def test_a_timeframe_that_can_never_be_served_is_refused(api: Api, timeframes: list[str], reason: str) -> None:
    response = await api.client.post(
        "/api/v1/strategies/custom", json={"strategy": definition(timeframe_preference=timeframes)}, headers=ADMIN
    )
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    assert "api-trend" not in await api.strategy_rows()


async def test_a_bad_stored_row_never_breaks_the_api_and_an_account_on_it_is_told(api: Api) -> None:
    await plant_bad_row(api.agent, "old-null", "null")
    await plant_bad_row(api.agent, "old-7m", "7m")

    listed = await api.available()
    assert "conservative" in listed and "old-null" not in listed
    custom = {s["strategy_id"]: s for s in (await api.client.get("/api/v1/strategies/custom", headers=ADMIN)).json()}
    assert custom["old-null"]["usable"] is False and custom["old-null"]["strategy"] is None
    assert "take_profit_ratio" in custom["old-null"]["problem"]
    assert custom["old-7m"]["usable"] is False and "'7m'" in custom["old-7m"]["problem"]

    assignments = await api.assignments()
    for strategy_id in ("old-null", "old-7m"):
        switched = await api.client.post(
            "/api/v1/strategies/account/1/switch", json={"strategy_id": strategy_id}, headers=ADMIN
        )
        assert switched.status_code == 409, switched.text
        assert strategy_id in switched.json()["detail"]
    unknown = await api.client.post(
        "/api/v1/strategies/account/1/switch", json={"strategy_id": "never-stored"}, headers=ADMIN
    )
    assert unknown.status_code == 404, unknown.text
    created = await api.client.post(
        "/api/v1/accounts", json={"name": "on-a-bad-one", "strategy_id": "old-null"}, headers=ADMIN
    )
    assert created.status_code == 409, created.text
    assert await api.assignments() == assignments and await api.account_strategy() == "conservative"

    # an account already on it (as an older version could have left it): told, not broken
    async with api.agent.sessions.begin() as session:
        await session.execute(update(models.Account).where(models.Account.id == 1).values(strategy_id="old-null"))
    decision = await api.decide()
    assert decision["status"] == "error" and "the stored definition is invalid" in decision["error"]
    assert "the account holds" in decision["error"]
    view = await api.client.get("/api/v1/strategies/account/1", headers=ADMIN)
    assert view.status_code == 409 and "the stored definition is invalid" in view.json()["detail"]
    account = (await api.client.get("/api/v1/accounts/1", headers=ADMIN)).json()
    assert "the stored definition is invalid" in account["strategy_notice"]
    assert "the account holds" in account["strategy_notice"]
    history = await api.client.get("/api/v1/strategies/account/1/history", headers=ADMIN)
    assert history.status_code == 200
    performance = await api.client.get("/api/v1/strategies/old-null/performance", headers=ADMIN)
    assert performance.status_code == 200 and performance.json()["decisions"] == 1

    # the admin fixes it in place: the account decides again
    fixed = await api.client.put("/api/v1/strategies/custom/old-null", json={"strategy": replacement()}, headers=ADMIN)
    assert fixed.status_code == 200, fixed.text
    assert (await api.decide())["status"] != "error"
    assert "old-null" in await api.available()


# ---- point 14: editable ----------------------------------------------------------------------------------


async def test_an_admin_edits_a_custom_strategy_checked_and_audited(api: Api) -> None:
    created = await api.client.post("/api/v1/strategies/custom", json={"strategy": definition()}, headers=ADMIN)
    assert created.status_code == 201, created.text
    again = await api.client.post("/api/v1/strategies/custom", json={"strategy": definition()}, headers=ADMIN)
    assert again.status_code == 409 and "the id 'api-trend' is taken" in again.json()["detail"]

    put = await api.client.put(
        "/api/v1/strategies/custom/api-trend",
        json={"strategy": replacement(strategy_name="Renamed", timeframe_preference=["15m", "1d"]), "reason": "slower"},
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text
    assert (put.json()["strategy_name"], put.json()["timeframe_preference"]) == ("Renamed", ["15m", "1d"])
    audit = await api.last_audit("PUT", "/api/v1/strategies/custom/api-trend")
    assert audit["status_code"] == 200
    assert "strategy_name: 'Trend over the API' -> 'Renamed'" in audit["detail"]
    assert "timeframe_preference: ['5m', '4h'] -> ['15m', '1d']" in audit["detail"] and "slower" in audit["detail"]

    patch = await api.client.patch(
        "/api/v1/strategies/custom/api-trend",
        json={"risk_parameters": {"max_leverage": 5.0}, "reason": "more room"},
        headers=ADMIN,
    )
    assert patch.status_code == 200, patch.text
    risk = patch.json()["risk_parameters"]
    assert risk["max_leverage"] == 5.0 and risk["take_profit_ratio"] == 2.0, "the other parameters stay"
    audit = await api.last_audit("PATCH", "/api/v1/strategies/custom/api-trend")
    assert "risk_parameters.max_leverage: 3.0 -> 5.0" in audit["detail"] and "more room" in audit["detail"]
    stored = (await api.strategy_rows())["api-trend"]
    assert stored["name"] == "Renamed" and stored["risk"]["max_leverage"] == 5.0

    # refused edits change nothing
    before = await api.strategy_rows()
    refusals = [
        ("PATCH", {"risk_parameters": {"take_profit_ratio": None}}, 400),
        ("PATCH", {"timeframe_preference": ["7m", "4h"]}, 400),
        ("PATCH", {"prompt_template": "{{ no_such_variable }}"}, 400),
        ("PATCH", {"strategy_id": "renamed-id"}, 422),
        # a replacement names no id (the path's), type or activity (deactivate/activate)
        ("PUT", {"strategy": definition("other-id")}, 422),
        ("PUT", {"strategy": {**replacement(), "is_active": False}}, 422),
        ("PUT", {"strategy": replacement(timeframe_preference=["7m"])}, 400),
    ]
    for method, body, status in refusals:
        response = await api.client.request(method, "/api/v1/strategies/custom/api-trend", json=body, headers=ADMIN)
        assert response.status_code == status, f"{method} {body}: {response.status_code} {response.text}"
    raw = json.dumps({"risk_parameters": {"max_leverage": 4.0}}).replace("4.0", "Infinity")
    response = await api.client.patch(
        "/api/v1/strategies/custom/api-trend",
        content=raw.encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert await api.strategy_rows() == before

    for method, body in (("PUT", {"strategy": replacement()}), ("PATCH", {"strategy_name": "Mine"})):
        builtin = await api.client.request(method, "/api/v1/strategies/custom/conservative", json=body, headers=ADMIN)
        assert builtin.status_code == 409 and "built in" in builtin.json()["detail"]
    missing = await api.client.patch(
        "/api/v1/strategies/custom/no-such-one", json={"strategy_name": "x"}, headers=ADMIN
    )
    assert missing.status_code == 404
    assert await api.strategy_rows() == before


# ---- point 14: deactivatable -------------------------------------------------------------------------------


async def test_a_deactivated_strategy_is_not_offered_nor_assigned_and_its_account_is_told(api: Api) -> None:
    assert (
        await api.client.post("/api/v1/strategies/custom", json={"strategy": definition()}, headers=ADMIN)
    ).is_success
    switched = await api.client.post(
        "/api/v1/strategies/account/1/switch", json={"strategy_id": "api-trend"}, headers=ADMIN
    )
    assert switched.status_code == 200, switched.text

    deactivated = await api.client.post(
        "/api/v1/strategies/custom/api-trend/deactivate", json={"reason": "losing money"}, headers=ADMIN
    )
    assert deactivated.status_code == 200, deactivated.text
    status = deactivated.json()
    assert (status["is_active"], status["usable"], status["accounts"]) == (False, False, [1])
    assert "deactivated" in status["problem"]
    audit = await api.last_audit("POST", "/api/v1/strategies/custom/api-trend/deactivate")
    assert (
        "deactivated" in audit["detail"]
        and "accounts on it: 1" in audit["detail"]
        and "losing money" in audit["detail"]
    )

    assert "api-trend" not in await api.available()
    assert "api-trend" in await api.available(include_inactive="true")
    # not newly assignable, nothing saved
    assignments = await api.assignments()
    account_b = await api.client.post("/api/v1/accounts", json={"name": "b", "strategy_id": "api-trend"}, headers=ADMIN)
    assert account_b.status_code == 409 and "deactivated" in account_b.json()["detail"]
    async with api.agent.sessions.begin() as session:  # a second account, to switch
        await session.execute(update(models.Account).where(models.Account.id == 1).values(strategy_id="conservative"))
    again = await api.client.post(
        "/api/v1/strategies/account/1/switch", json={"strategy_id": "api-trend"}, headers=ADMIN
    )
    assert again.status_code == 409 and "deactivated" in again.json()["detail"]
    assert await api.assignments() == assignments and await api.account_strategy() == "conservative"

    # the account that was on it: told on its decisions and in its strategy view, not broken
    async with api.agent.sessions.begin() as session:
        await session.execute(update(models.Account).where(models.Account.id == 1).values(strategy_id="api-trend"))
    decision = await api.decide()
    assert decision["status"] == "error" and "strategy 'api-trend' is deactivated" in decision["error"]
    view = await api.client.get("/api/v1/strategies/account/1", headers=ADMIN)
    assert view.status_code == 200 and view.json()["is_active"] is False
    listed = (await api.client.get("/api/v1/accounts", headers=ADMIN)).json()
    assert "strategy 'api-trend' is deactivated" in next(a for a in listed if a["id"] == 1)["strategy_notice"]

    # built-in ones cannot be deactivated; an unknown one is 404
    builtin = await api.client.post("/api/v1/strategies/custom/conservative/deactivate", headers=ADMIN)
    assert builtin.status_code == 409
    assert (await api.client.post("/api/v1/strategies/custom/no-such-one/deactivate", headers=ADMIN)).status_code == 404

    activated = await api.client.post("/api/v1/strategies/custom/api-trend/activate", headers=ADMIN)
    assert activated.status_code == 200 and activated.json()["usable"] is True
    assert "api-trend" in await api.available()
    assert (await api.decide())["status"] != "error"
    assert (await api.client.get("/api/v1/accounts/1", headers=ADMIN)).json()["strategy_notice"] is None


async def test_a_strategy_whose_stored_definition_is_invalid_cannot_be_activated(api: Api) -> None:
    await plant_bad_row(api.agent, "old-null", "null")
    async with api.agent.sessions.begin() as session:
        await session.execute(
            update(models.Strategy).values(is_active=False).where(models.Strategy.strategy_id == "old-null")
        )
    response = await api.client.post("/api/v1/strategies/custom/old-null/activate", headers=ADMIN)
    assert response.status_code == 409 and "fix it with PUT or PATCH first" in response.json()["detail"]
    assert (await api.strategy_rows())["old-null"]["active"] is False


async def test_a_switch_reason_that_cannot_be_stored_is_refused_and_nothing_saved(api: Api) -> None:
    assignments = await api.assignments()
    for reason in ("with a NUL\u0000", "two\nlines"):
        response = await api.client.post(
            "/api/v1/strategies/account/1/switch", json={"strategy_id": "aggressive", "reason": reason}, headers=ADMIN
        )
        assert response.status_code in (400, 422), response.text
    assert await api.assignments() == assignments and await api.account_strategy() == "conservative"


# ---- races: two requests at once get 4xx answers and lose nothing ---------------------------------------


def _meet_before_writing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Hold each strategy write until a second one arrives (or a moment passes, when the code makes the second
    wait for the first): both requests have read before either writes, the race made certain."""
    arrived: list[int] = []
    both = asyncio.Event()
    upsert = StrategyRepository.upsert

    async def meeting(self: StrategyRepository, *args: Any, **kwargs: Any) -> None:
        arrived.append(1)
        if len(arrived) >= 2:
            both.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both.wait(), timeout=2)
        await upsert(self, *args, **kwargs)

    monkeypatch.setattr(StrategyRepository, "upsert", meeting)
    return arrived


async def test_two_creates_of_one_id_at_once_answer_201_and_409(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _meet_before_writing(monkeypatch)
    answers = await asyncio.gather(
        *(
            api.client.post(
                "/api/v1/strategies/custom", json={"strategy": definition(strategy_name=name)}, headers=ADMIN
            )
            for name in ("First", "Second")
        )
    )
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    assert len(writes) == 2, "both requests reached the write: the race was made"
    refused = next(a for a in answers if a.status_code == 409)
    assert "the id 'api-trend' is taken" in refused.json()["detail"]
    stored = (await api.strategy_rows())["api-trend"]
    assert stored["name"] == next(a for a in answers if a.status_code == 201).json()["strategy_name"]


async def test_two_patches_at_once_both_keep_their_change(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    created = await api.client.post("/api/v1/strategies/custom", json={"strategy": definition()}, headers=ADMIN)
    assert created.status_code == 201, created.text
    writes = _meet_before_writing(monkeypatch)
    answers = await asyncio.gather(  # each changes one key of risk_parameters: the other keys must stay
        *(
            api.client.patch("/api/v1/strategies/custom/api-trend", json={"risk_parameters": risk}, headers=ADMIN)
            for risk in ({"max_leverage": 5.0}, {"take_profit_ratio": 3.0})
        )
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert len(writes) == 2, "both requests reached the write"
    stored = (await api.strategy_rows())["api-trend"]["risk"]
    assert (stored["max_leverage"], stored["take_profit_ratio"]) == (5.0, 3.0), "one patch lost the other's change"
