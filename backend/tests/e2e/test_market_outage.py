"""A venue that cannot be reached at start-up does not stop `run`: the API comes up, `/health` and one log line
say why no decision is made, the market is asked again with a growing pause, and the agent trades once the
venue answers. Over real sockets: the agent's API under uvicorn, and the fake Binance USD-M that is down (nothing
listens on its port) and then comes up; the ccxt session is closed at the end."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from app.bootstrap import Agent, build_agent
from app.core.clock import WallClock
from app.core.config import Settings
from app.main import create_app
from app.services.market_data.ccxt_source import CcxtMarketData, local_api_urls
from tests.conftest import ADMIN_KEY
from tests.e2e.server import free_port, serve
from tests.fakes.exchange_servers import FakeBinance

pytestmark = pytest.mark.db


def _venue_on(base_url: str, settings: Settings, **options: Any) -> CcxtMarketData:
    """Binance USD-M's public data read from `base_url`; by default one attempt per read (no waiting on retries)."""
    return CcxtMarketData(
        "binanceusdm",
        settings.assets,
        api_overrides=local_api_urls("binanceusdm", base_url),
        clock=WallClock(),
        **{"attempts": 1, "backoff_s": 0.01, "rate_limit_ms": 1, **options},
    )


async def _poll(client: httpx.AsyncClient, path: str, done: Any) -> Any:
    """GET `path` until `done(body)` holds (a hang guard of 60 s, not a performance assertion)."""
    async with asyncio.timeout(60):
        while True:
            response = await client.get(path)
            if response.status_code == 200 and done(response.json()):
                return response.json()
            await asyncio.sleep(0.05)


async def test_run_starts_while_the_venue_is_down_and_trades_once_it_answers(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens here yet: connections are refused, as without a network
    market = _venue_on(f"http://127.0.0.1:{port}", settings)

    async def with_the_venue(s: Settings) -> Agent:
        agent = await build_agent(s, clock=WallClock(), market=market)
        agent.market_status.first_backoff_s, agent.market_status.max_backoff_s = 0.05, 0.4  # short pauses
        return agent

    caplog.set_level(logging.WARNING)
    app = create_app(settings, run_loop=True, agent_factory=with_the_venue)
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        down = await _poll(client, "/health", lambda h: h["market"]["failed_attempts"] >= 3)
        assert down["status"] == "degraded" and down["loop"]["cycles"] == 0
        assert down["market"]["reachable"] is False and "binanceusdm" in down["market"]["error"]
        assert any("cannot be reached" in r and "no decision is made" in r for r in down["reasons"])
        assert (await client.get("/api/v1/decisions/history", params={"account_id": 1})).json() == []

        with FakeBinance(port=port):
            decisions = await _poll(
                client, "/api/v1/decisions/history?account_id=1", lambda body: isinstance(body, list) and body
            )
            up = (await client.get("/health")).json()
    assert decisions[0]["trigger"] == "loop" and decisions[0]["status"] != "error", decisions[0]
    assert up["market"]["reachable"] is True and not any("cannot be reached" in r for r in up["reasons"])
    said = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(said) == 1 and "no decision is made until it answers" in said[0], said
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert market.exchange.session is None and market.exchange.closed_by_user, "the ccxt session is closed"


async def test_a_decision_on_request_without_the_loop_reads_the_venue_rules(settings: Settings) -> None:
    """Start-up no longer asks the market for its rules; a decision made without the loop (`serve`, `decide`)
    still sizes and caps orders with them: the executor shares the table the venue fills when first asked."""
    with FakeBinance() as venue:
        market = _venue_on(venue.base_url, settings, attempts=4)
        agent = await build_agent(settings, clock=WallClock(), market=market)
        try:
            assert agent.engine.executor.rules == {} and not venue.requests, "start-up asked the venue nothing"
            result = await agent.engine.make_trading_decision(None, 1)
            rules = dict(agent.engine.executor.rules)
        finally:
            await agent.close()
    assert result.status != "error", result.error
    assert sorted(rules) == sorted(settings.assets) and rules["BTC"].market_symbol == "BTC/USDT:USDT"


async def test_a_stop_does_not_wait_for_a_venue_that_does_not_answer(settings: Settings) -> None:
    with FakeBinance() as venue:
        venue.slow(30, match="exchangeInfo", times=5)  # the venue takes 30 s to answer its markets
        market = _venue_on(venue.base_url, settings, timeout_ms=60_000)
        agent = await build_agent(settings, clock=WallClock(), market=market)
        try:
            task = asyncio.create_task(agent.loop.run_forever())
            async with asyncio.timeout(30):
                while True:  # until the loop is asking the venue (the fake's log is in its own thread)
                    if venue.matching("exchangeInfo"):
                        break
                    await asyncio.sleep(0.02)
            agent.loop.stop()
            async with asyncio.timeout(10):  # well before the venue's answer: the question is dropped
                await task
        finally:
            await agent.close()
    assert agent.loop.heartbeat.cycles == 0 and not agent.market_status.ready


async def test_a_decision_asked_while_the_venue_is_down_answers_503_and_stores_nothing(settings: Settings) -> None:
    port = free_port()  # nothing listens: the venue cannot be reached
    market = _venue_on(f"http://127.0.0.1:{port}", settings)

    async def with_the_venue(s: Settings) -> Agent:
        return await build_agent(s, clock=WallClock(), market=market)

    app = create_app(settings, agent_factory=with_the_venue)
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        refused = await client.post("/api/v1/decisions/generate", json={"account_id": 1})
        history = (await client.get("/api/v1/decisions/history", params={"account_id": 1})).json()
        still_up = await client.get("/health")
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"].startswith("temporarily unavailable, try again later: binanceusdm")
    assert int(refused.headers["retry-after"]) > 0
    assert history == [] and still_up.status_code == 200
