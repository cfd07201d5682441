"""The dashboard over a real socket, without a browser (the browser tests are in tests/browser): its login and
sessions, the account key's scope on every page, the controls with their CSRF check, the version the pages poll,
and pages that load nothing from anywhere else."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from urllib.parse import unquote

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.security import hash_api_key
from app.db import models
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from app.web.charts import drawdown, line_chart
from app.web.router import router as dashboard_router
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.fakes.scripted_model import ScriptedModel

pytestmark = pytest.mark.db
ADMIN = {"X-API-Key": ADMIN_KEY}
PAGES = ["/", "/accounts/1", "/accounts/1/decisions", "/models", "/experiments", "/backtests", "/alerts"]


@asynccontextmanager
async def _served(agent: Agent, settings: Settings) -> AsyncIterator[str]:
    async def prebuilt(_s: Settings) -> Agent:
        return agent

    async with serve(create_app(settings, agent_factory=prebuilt)) as url:
        yield url


@pytest.fixture
async def base_url(agent: Agent, settings: Settings) -> AsyncIterator[str]:
    async with _served(agent, settings) as url:
        yield url


async def _decide(client: httpx.AsyncClient, clock: ManualClock, cycles: int) -> None:
    """`cycles` decisions of account 1 through the API, one candle apart."""
    for _ in range(cycles):
        made = await client.post("/api/v1/decisions/generate", json={"account_id": 1}, headers=ADMIN)
        assert made.status_code == 200, made.text
        clock.advance(timedelta(minutes=5))


async def _login(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/login", data={"api_key": key})


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def _second_account_with_key(client: httpx.AsyncClient) -> tuple[int, str]:
    created = await client.post("/api/v1/accounts", json={"name": "second"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    account_id = created.json()["id"]
    key = await client.post(f"/api/v1/accounts/{account_id}/keys", json={}, headers=ADMIN)
    assert key.status_code == 201, key.text
    return account_id, key.json()["key"]


async def test_a_page_without_a_session_asks_to_log_in_and_a_wrong_key_is_refused(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for path in PAGES:
            answer = await client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == f"/login?next={path}", path
        assert (await client.get("/events")).status_code == 401
        wrong = await _login(client, "ta_admin_not-a-key")
        assert wrong.status_code == 401 and 'class="error"' in wrong.text and "invalid API key" in wrong.text
        assert "ta_session" not in wrong.cookies


async def test_every_dashboard_route_but_the_login_form_needs_a_session(base_url: str) -> None:
    """Every route of the dashboard's router, found on the router (a new page cannot be left open by mistake)."""
    routes = {(m, r.path) for r in dashboard_router.routes if isinstance(r, APIRoute) for m in r.methods}
    assert len(routes) >= 15
    async with httpx.AsyncClient(base_url=base_url) as client:
        for method, path in sorted(routes):
            if path == "/login":
                continue
            url = path.replace("{account_id}", "1").replace("{decision_id}", "1").replace("{backtest_id}", "1")
            answer = await client.request(method, url, data={"action": "pause"} if method == "POST" else None)
            if path == "/events":
                assert answer.status_code == 401, (method, path)
            else:
                assert answer.status_code == 303, (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/login"), (method, path)


async def test_the_session_cookie_names_the_key_but_never_holds_it(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await _login(client, ADMIN_KEY)
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        header = answer.headers["set-cookie"]
        assert "httponly" in header.lower() and "samesite=strict" in header.lower()
        cookie = client.cookies["ta_session"]
        assert ADMIN_KEY not in cookie and hash_api_key(ADMIN_KEY) not in cookie
        overview = await client.get("/")
    assert overview.status_code == 200 and 'id="accounts"' in overview.text
    assert ADMIN_KEY not in overview.text


async def test_a_forged_cookie_and_a_revoked_key_end_the_session(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as admin:
        account_id, key = await _second_account_with_key(admin)
    async with httpx.AsyncClient(base_url=base_url) as client:
        assert (await _login(client, key)).status_code == 303
        assert (await client.get(f"/accounts/{account_id}")).status_code == 200
        key_id, issued, signature = client.cookies["ta_session"].split(".")
        for forged in (f"1.{issued}.{signature}", f"{key_id}.{int(issued) + 1}.{signature}", f"{key_id}.{issued}.0"):
            client.cookies.set("ta_session", forged)
            answer = await client.get(f"/accounts/{account_id}")
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), forged
        client.cookies.set("ta_session", f"{key_id}.{issued}.{signature}")
        assert (await client.get(f"/accounts/{account_id}")).status_code == 200
        revoked = await client.delete(f"/api/v1/accounts/{account_id}/keys/{key_id}", headers=ADMIN)
        assert revoked.status_code == 200, revoked.text
        answer = await client.get(f"/accounts/{account_id}")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


async def test_an_account_key_sees_only_its_account_on_every_page(base_url: str, agent: Agent) -> None:
    async with httpx.AsyncClient(base_url=base_url) as admin:
        account_id, key = await _second_account_with_key(admin)
        first = await admin.post("/api/v1/decisions/generate", json={"account_id": 1}, headers=ADMIN)
        assert first.status_code == 200, first.text
        other_decision = first.json()["id"]
    async with httpx.AsyncClient(base_url=base_url) as client:
        landed = await _login(client, key)
        assert landed.headers["location"] == f"/accounts/{account_id}"
        home = await client.get("/")
        assert home.status_code == 303 and home.headers["location"] == f"/accounts/{account_id}"
        assert (await client.get(f"/accounts/{account_id}")).status_code == 200
        for path in ("/accounts/1", "/accounts/1/decisions", f"/decisions/{other_decision}"):
            refused = await client.get(path)
            assert refused.status_code == 404, path
            assert 'class="error"' in refused.text and "does not exist" in refused.text, path
        assert "account 1 does not exist" in (await client.get("/accounts/1")).text  # the API's own words
        assert (await client.get("/backtests")).status_code == 403
        alerts = await client.get("/alerts")
        assert alerts.status_code == 200
        page = (await client.get(f"/accounts/{account_id}")).text
        refused = await client.post("/accounts/1/control", data={"csrf": _csrf(page), "action": "pause"})
        assert refused.status_code == 404
    async with agent.sessions() as session:
        assert (await session.get(models.Account, 1)).status == "ACTIVE"  # type: ignore[union-attr]


async def test_controls_need_the_sessions_csrf_token_and_are_audited_like_the_api(base_url: str, agent: Agent) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await _login(client, ADMIN_KEY)
        page = (await client.get("/accounts/1")).text
        assert 'data-action="halt"' in page and 'id="halt-confirm"' in page
        assert (await client.post("/accounts/1/control", data={"action": "pause"})).status_code == 403
        forged = await client.post("/accounts/1/control", data={"action": "pause", "csrf": "0" * 64})
        assert forged.status_code == 403
        unconfirmed = await client.post("/accounts/1/control", data={"action": "halt", "csrf": _csrf(page)})
        assert unconfirmed.status_code == 303
        assert "confirm" in unquote(unconfirmed.cookies.get("ta_flash") or "")
        async with agent.sessions() as session:
            assert (await session.get(models.Account, 1)).status == "ACTIVE"  # type: ignore[union-attr]
        paused = await client.post(
            "/accounts/1/control", data={"action": "pause", "csrf": _csrf(page), "reason": "lunch"}
        )
        assert paused.status_code == 303 and paused.headers["location"] == "/accounts/1"
        after = (await client.get("/accounts/1")).text
    assert re.search(r'id="account-status">paused<', after)
    assert 'class="flash"' in after and "PAUSED" in after
    async with agent.sessions() as session:
        change = await session.scalar(select(models.AccountStatusChange).order_by(models.AccountStatusChange.id.desc()))
        audit = (
            await session.scalars(select(models.AuditEntry).where(models.AuditEntry.path == "/accounts/1/control"))
        ).all()
    assert change is not None and change.to_status == "PAUSED" and change.reason == "lunch"
    assert change.key_prefix == ADMIN_KEY[:12]
    assert [a.status_code for a in audit] == [403, 403, 303, 303] and audit[-1].key_prefix == ADMIN_KEY[:12]


async def test_a_halt_from_the_dashboard_keeps_a_paper_accounts_stops(
    agent: Agent, settings: Settings, clock: ManualClock
) -> None:
    agent.llm.provider = ScriptedModel(seed=5, invalid_rate=0.0)  # opens positions, each with its stop
    async with _served(agent, settings) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        await _decide(client, clock, 6)
        positions = (await client.get("/api/v1/accounts/1/positions", headers=ADMIN)).json()
        assert positions, "the scripted model opened no position"
        await _login(client, ADMIN_KEY)
        page = (await client.get("/accounts/1")).text
        halted = await client.post(
            "/accounts/1/control", data={"action": "halt", "confirm": "yes", "csrf": _csrf(page)}
        )
        assert halted.status_code == 303
        after = (await client.get("/accounts/1")).text
        orders = (await client.get("/api/v1/accounts/1/orders", headers=ADMIN)).json()
    assert re.search(r'id="account-status">halted<', after)
    open_stops = {o["symbol"] for o in orders if o["kind"] == "stop_loss" and o["status"] == "open"}
    assert open_stops >= {p["symbol"] for p in positions}
    for symbol in open_stops:  # each position's row, and its stop's row still open
        assert f'<tr data-asset="{symbol}">' in after, symbol
        assert re.search(rf'data-symbol="{symbol}" data-order-kind="stop_loss" data-order-status="open"', after), symbol


async def test_the_polled_version_changes_with_what_the_key_can_see_and_only_then(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as admin:
        account_id, key = await _second_account_with_key(admin)
        await _login(admin, ADMIN_KEY)
        async with httpx.AsyncClient(base_url=base_url) as own:
            await _login(own, key)
            before_admin = (await admin.get("/events")).json()["version"]
            before_own = (await own.get("/events")).json()["version"]
            assert (await admin.get("/events")).json()["version"] == before_admin, "nothing happened"
            made = await admin.post("/api/v1/decisions/generate", json={"account_id": 1}, headers=ADMIN)
            assert made.status_code == 200
            assert (await admin.get("/events")).json()["version"] != before_admin
            assert (await own.get("/events")).json()["version"] == before_own, "another account's decision"
            made = await admin.post("/api/v1/decisions/generate", json={"account_id": account_id}, headers=ADMIN)
            assert made.status_code == 200
            assert (await own.get("/events")).json()["version"] != before_own


async def test_pages_load_nothing_from_elsewhere_and_swap_only_their_main(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        made = await client.post("/api/v1/decisions/generate", json={"account_id": 1}, headers=ADMIN)
        await _login(client, ADMIN_KEY)
        for path in [*PAGES, f"/decisions/{made.json()['id']}", "/login"]:
            page = await client.get(path, follow_redirects=True)
            assert page.status_code == 200, path
            assert "script-src 'self'" in page.headers["content-security-policy"]
            for url in re.findall(r'(?<![\w-])(?:src|href|action)="([^"]*)"', page.text):
                assert url.startswith(("/", "#", "?", "data:")), f"{path} loads {url}"
            for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
                assert (await client.get(asset)).status_code == 200, asset
        fragment = await client.get("/accounts/1", headers={"X-Dashboard-Fragment": "main"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and 'id="positions"' in fragment.text


async def test_login_never_redirects_to_another_site(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/models"):
            answer = await client.post("/login", data={"api_key": ADMIN_KEY, "next": target})
            assert answer.headers["location"] == ("/models" if target == "/models" else "/"), target


async def test_models_page_sums_cost_per_model_and_day(settings: Settings, clock: ManualClock) -> None:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    model = ScriptedModel(seed=3, invalid_rate=0.0)
    agent = await build_agent(settings, clock=clock, market=market, provider=model)

    try:
        async with _served(agent, settings) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            await _decide(client, clock, 3)
            await _login(client, ADMIN_KEY)
            page = (await client.get("/models")).text
        async with agent.sessions() as session:
            calls = (await session.scalars(select(models.LLMCall))).all()
    finally:
        await agent.close()
    day = calls[0].created_at.date().isoformat()
    total = sum(c.cost_usd or 0 for c in calls)
    row = re.search(rf'<tr data-day="{day}" data-model="{re.escape(model.name)}">(.*?)</tr>', page, flags=re.S)
    assert row, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[2] == str(len(calls)) and cells[5] == f"${total:.4f}"


def test_drawdown_is_the_fall_from_the_running_peak() -> None:
    assert drawdown([100, 110, 99, 121, 60.5]) == pytest.approx([0, 0, -10, 0, -50])
    assert drawdown([]) == []


def test_a_chart_escapes_its_label_and_says_when_it_has_no_data() -> None:
    from datetime import UTC, datetime

    empty = line_chart("c", [], [], label="<b>x</b>")
    assert "no data yet" in empty and "<b>" not in empty
    times = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(3)]
    drawn = line_chart("c", times, [1.0, 2.0, 1.5], label="Equity")
    assert 'data-points="3"' in drawn and drawn.count(",") >= 3


async def test_switching_strategy_and_model_from_the_dashboard_says_what_happened(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await _login(client, ADMIN_KEY)
        csrf = _csrf((await client.get("/accounts/1")).text)
        switched = await client.post("/accounts/1/strategy", data={"csrf": csrf, "strategy_id": "aggressive"})
        assert switched.status_code == 303
        assert "now runs aggressive" in unquote(switched.cookies["ta_flash"])
        unknown = await client.post("/accounts/1/strategy", data={"csrf": csrf, "strategy_id": "no-such-one"})
        assert "strategy not switched" in unquote(unknown.cookies["ta_flash"])
        model = await client.post("/accounts/1/model", data={"csrf": csrf, "model": "x-ai/grok-4"})
        assert "model not changed" in unquote(model.cookies["ta_flash"])
        assert "no LLM is configured" in unquote(model.cookies["ta_flash"])  # the API's 409, in its words
        long_reason = await client.post(
            "/accounts/1/control", data={"csrf": csrf, "action": "pause", "reason": "x" * 501}
        )
        assert "not done (pause)" in unquote(long_reason.cookies["ta_flash"])
        account = (await client.get("/api/v1/accounts/1", headers=ADMIN)).json()
    assert account["strategy_id"] == "aggressive" and account["model"] is None and account["status"] == "ACTIVE"
