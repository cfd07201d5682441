"""Issue 17's proof for alerts: on the whole agent (real engine, database, paper venue, loop and API), every kind of
alert fires once through the code path where its event happens, is stored, and reaches a webhook receiver on
127.0.0.1 through apprise (`json://`, with a password in the URL). A repeat inside the quiet period is counted on the
stored alert and not sent again. No body carries the URL's secret nor an API key. An account key sees its account's
alerts and the agent-wide ones, not another account's.

Driven: an account halted and paused through the API; a daily loss limit reached (the day began with twice the
equity); a model failing until its circuit opens, then answering so that it closes; an account whose daily LLM budget
is spent; a position opened by hand on the venue (adopted: a reconciliation mismatch); an entry whose stop the paper
venue refuses (the order rejected, the position closed); a market that does not answer; the loop running late on the
wall clock (candles skipped)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import Depends
from pydantic import SecretStr
from sqlalchemy import select

from app.api import protocol
from app.api.v1 import alerts as alerts_api
from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock, WallClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.alerts.events import AGENT_WIDE, AlertKind
from app.services.exchange.base import OrderRequest
from app.services.llm.llm_exceptions import LLMAPIError
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.market_data.availability import MarketAvailability
from app.services.market_data.ccxt_source import CcxtMarketData, local_api_urls
from app.services.market_data.simulator import MarketSimulator
from tests import factories as f
from tests.conftest import ADMIN_KEY, START, IsolatedSettings
from tests.e2e.server import free_port, serve
from tests.fakes.scripted_model import answer
from tests.fakes.webhook_receiver import WebhookReceiver, receiver_fixture  # noqa: F401 (fixture)

pytestmark = pytest.mark.db

URL_SECRET = "Wh00kS3cretT0ken"


class Switchboard:
    """A remote model (not simulated: budgets apply) that fails, holds or buys BTC with a stop, as told."""

    name = "test/switchboard"
    is_simulated = False

    def __init__(self) -> None:
        self.mode = "hold"
        self.hooks: list[Callable[[], None]] = []  # run one per call, in order, while any are left

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if self.hooks:
            self.hooks.pop(0)()
        if self.mode == "fail":
            raise LLMAPIError("the provider answered 503: upstream unavailable", status_code=503)
        assets = request.context.market_data.assets
        items = [f.decision(asset) for asset in assets]
        if self.mode == "buy":
            price = assets["BTC"].current_price
            items = [
                f.decision("BTC", "buy", allocation_usd=500.0, sl_price=price * 0.95, tp_price=price * 1.1)
                if asset == "BTC"
                else f.decision(asset)
                for asset in assets
            ]
        return answer(request, f.trading_decision(items), served_by=self.name)


async def _generate(client: httpx.AsyncClient, account_id: int) -> dict[str, object]:
    response = await client.post("/api/v1/decisions/generate", json={"account_id": account_id, "force_refresh": True})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _set_budget(agent: Agent, account_id: int, budget: float | None) -> None:
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, account_id)
        assert account is not None
        account.daily_llm_budget_usd = budget


async def test_every_alert_fires_once_through_its_code_path_and_reaches_the_receiver(
    database_url: str, tmp_path: object, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = IsolatedSettings(
        database_url=database_url,
        admin_api_key=ADMIN_KEY,
        secret_key_file=str(tmp_path) + "/secret.key",
        alert_urls=SecretStr(receiver.url(user="agent", password=URL_SECRET)),
        llm_circuit_failure_threshold=1,
        llm_circuit_recovery_s=0.001,  # the circuit lets a trial call through on the next decision
    )
    clock = ManualClock(START)
    model = Switchboard()

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=clock, market=market, provider=model)

    app = create_app(settings, agent_factory=factory)
    if not any(getattr(r, "path", None) == "/api/v1/alerts" for r in app.routes):  # until main.py includes it
        app.include_router(alerts_api.router, dependencies=[Depends(protocol.json_body)])
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        agent: Agent = app.state.agent
        assert any(p.name == "alerts" and p.what == "apprise to 1 URL(s) (schemes: json)" for p in agent.parts)
        assert URL_SECRET not in agent.describe()

        # daily loss limit: account 2's day began with twice its equity
        created = await client.post("/api/v1/accounts", json={"name": "second", "strategy_id": "conservative"})
        assert created.status_code == 201, created.text
        async with agent.sessions.begin() as session:
            session.add(
                models.EquitySnapshot(
                    account_id=2,
                    taken_at=START - timedelta(hours=13),
                    wallet_balance=20_000.0,
                    unrealized_pnl=0.0,
                    equity=20_000.0,
                    margin_used=0.0,
                    realized_pnl=0.0,
                    fees_paid=0.0,
                    funding_net=0.0,
                )
            )
        await _generate(client, 2)

        # paused, then halted, through the API
        paused = await client.post("/api/v1/accounts/2/pause", json={"reason": "checking the day's loss"})
        assert paused.status_code == 200, paused.text
        halted = await client.post("/api/v1/accounts/2/halt", json={"reason": "loss too large"})
        assert halted.status_code == 200, halted.text

        # a model's circuit opens on its failure, and closes when it answers again
        model.mode = "fail"
        failed = await _generate(client, 1)
        assert failed["is_fallback"] is True
        model.mode = "hold"
        await _generate(client, 1)

        # the daily LLM budget spent: no model call
        await _set_budget(agent, 1, 0.0)
        held = await _generate(client, 1)
        assert held["failure"] == "budget"
        await _set_budget(agent, 1, None)

        # a position opened by hand on the venue: adopted at the next reconciliation
        venue = await agent.venues.exchange_for(1)
        await venue.set_leverage("ETH", 2)
        by_hand = await venue.place_order(OrderRequest("by-hand-1", "ETH", "buy", "market", 0.5))
        assert by_hand.status == "filled", by_hand
        await _generate(client, 1)

        # an entry whose stop the venue refuses (its trigger sent on the wrong side): rejected, position closed
        place = venue.place_order

        async def wrong_side_stops(request: OrderRequest) -> object:
            if request.type == "stop_market" and request.symbol == "BTC" and request.trigger_price:
                request = dataclasses.replace(request, trigger_price=request.trigger_price * 1.5)
            return await place(request)

        monkeypatch.setattr(venue, "place_order", wrong_side_stops)
        model.mode = "buy"
        bought = await _generate(client, 1)
        assert any("the stop could not be placed" in e for e in bought["execution_errors"])  # type: ignore[attr-defined]
        assert all(p.symbol != "BTC" for p in await venue.fetch_positions())
        monkeypatch.setattr(venue, "place_order", place)
        model.mode = "hold"

        # a market that does not answer
        async def unreachable() -> None:
            raise ConnectionError("the venue does not answer")

        assert await MarketAvailability(agent.market.name, unreachable, alerts=agent.alerts).check() is False

        # the loop on the wall clock: its first cycle takes 17 minutes, two candles go by undecided
        clock.advance(timedelta(minutes=5))
        model.hooks = [lambda: clock.advance(timedelta(minutes=17)), agent.loop.stop]
        await agent.loop.run_forever()
        assert agent.loop.heartbeat.late_cycles == 1

        await agent.alerts.flush()
        async with agent.sessions() as session:
            rows = list((await session.scalars(select(models.Alert).order_by(models.Alert.id))).all())
        assert sorted(r.kind for r in rows) == sorted(k.value for k in AlertKind), [(r.kind, r.subject) for r in rows]
        assert all(r.delivery == "delivered" for r in rows), [(r.kind, r.delivery) for r in rows]
        assert len(receiver.received) == len(AlertKind) == 11
        by_kind = {r.kind: r for r in rows}
        assert by_kind["account_paused"].message.endswith("Reason: checking the day's loss")
        assert "admin API key ta_admin_tes..." in by_kind["account_halted"].message
        assert "daily loss limit reached: down 50.00% today" in by_kind["daily_loss_limit"].message
        assert by_kind["model_circuit_open"].subject == by_kind["model_circuit_closed"].subject
        assert "daily LLM budget spent" in by_kind["llm_budget_spent"].message
        assert by_kind["reconciliation_mismatch"].subject == "account 1 ETH"
        assert "trigger" in by_kind["order_rejected"].message and "wrong side" in by_kind["order_rejected"].message
        assert by_kind["stop_failed_position_closed"].subject == "account 1 BTC"
        assert "skipped 2 candle(s)" in by_kind["loop_behind"].message
        assert "does not answer" in by_kind["market_data_stale"].message
        titles = receiver.titles()
        for row in rows:
            assert f"[{row.severity.upper()}] {row.title}" in titles
        for sent in receiver.received:
            assert URL_SECRET not in sent.raw and ADMIN_KEY not in sent.raw
        assert all(r.headers["Authorization"].startswith("Basic ") for r in receiver.received)

        # the same event again inside the quiet period: counted, not sent
        assert (await client.post("/api/v1/accounts/2/resume")).status_code == 200
        assert (await client.post("/api/v1/accounts/2/halt", json={"reason": "again"})).status_code == 200
        await agent.alerts.flush()
        async with agent.sessions() as session:
            halt = await session.scalar(select(models.Alert).where(models.Alert.kind == "account_halted"))
        assert halt is not None and halt.repeats == 1 and len(receiver.received) == 11
        metrics = (await client.get("/metrics")).text
        assert 'agent_alerts_total{kind="account_halted",outcome="repeat"} 1.0' in metrics
        assert 'agent_alerts_total{kind="loop_behind",outcome="delivered"} 1.0' in metrics

        # the API: an admin sees every alert, an account key its account's and the agent-wide ones
        listed = await client.get("/api/v1/alerts", params={"limit": 100})
        assert listed.status_code == 200 and len(listed.json()) == 11
        key = (await client.post("/api/v1/accounts/2/keys", json={"name": "trader"})).json()["key"]
        mine = await client.get("/api/v1/alerts", headers={"X-API-Key": key})
        assert mine.status_code == 200
        seen = {a["kind"] for a in mine.json()}
        assert seen == {"daily_loss_limit", "account_paused", "account_halted"} | {k.value for k in AGENT_WIDE}
        other = await client.get("/api/v1/alerts", params={"account_id": 1}, headers={"X-API-Key": key})
        assert other.status_code == 404


async def test_the_agents_market_check_alerts_once_per_outage(
    database_url: str, tmp_path: object, receiver: WebhookReceiver
) -> None:
    """The agent's own market availability (wired by bootstrap) on a venue nothing answers at: one alert for the
    outage, however many attempts fail."""
    settings: Settings = IsolatedSettings(
        database_url=database_url,
        admin_api_key=ADMIN_KEY,
        secret_key_file=str(tmp_path) + "/secret.key",
        alert_urls=SecretStr(receiver.url()),
    )
    market = CcxtMarketData(
        "binanceusdm",
        settings.assets,
        api_overrides=local_api_urls("binanceusdm", f"http://127.0.0.1:{free_port()}"),  # nothing listens there
        clock=WallClock(),
        attempts=1,
        backoff_s=0.01,
        rate_limit_ms=1,
    )
    agent = await build_agent(settings, clock=WallClock(), market=market)
    try:
        agent.market_status.first_backoff_s = 0.0  # every check asks again
        for _ in range(3):
            assert await agent.market_status.check() is False
        await agent.alerts.flush()
        async with agent.sessions() as session:
            [row] = (await session.scalars(select(models.Alert))).all()
    finally:
        await agent.close()
    assert (row.kind, row.subject, row.account_id, row.repeats) == ("market_data_stale", "market binanceusdm", None, 0)
    assert "cannot be reached" in row.message and row.delivery == "delivered"
    assert receiver.titles() == ["[CRITICAL] Market binanceusdm: no market data"]
