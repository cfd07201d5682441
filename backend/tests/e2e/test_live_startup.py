"""What a live agent says about its live accounts, and when: the start-up banner of a real `trading-agent run` process,
`/health` and the account's `live_refusal`. Which accounts trade real money (a confirmed mainnet account), which a
test network, which are refused and why (an unconfirmed mainnet account; a venue that cannot be read or refuses the
account, until it can again), and that a live account created without a network is on the test network.

The venue is a fake Binance USD-M (or Hyperliquid) over a real socket; the agent is pointed at it with
VENUE_API_URL, so a "mainnet" account trades on the fake too (the fake cannot tell the networks apart; the banner,
`/health` and the gate go by the account's network)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import build_agent
from app.core.config import Settings
from app.services.exchange.registry import LiveAccountRefusedError
from tests.conftest import ADMIN_KEY
from tests.e2e.live_support import (
    VENUES,
    FlatThenHold,
    LiveRig,
    add_live_account,
    credentials_of,
    entries_at,
    fake_venue,
    fast_live_requests,
    live_agent,
    live_settings,
    order_creates,
    private_requests,
    served,
    stops_at,
)
from tests.e2e.process_env import stop_process
from tests.e2e.server import free_port

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}
BIN = Path(sys.executable).parent / "trading-agent"
UNCONFIRMED = "a mainnet account trades real money: set LIVE_MAINNET_CONFIRM=real-money to allow it"
HANG_GUARD_S = 240  # a hang guard, not a performance assertion (ccxt's throttle for the real venue is kept)


# ------------------------------------------------------------------------ the start-up of `trading-agent run`


def _agent_env(database_url: str, tmp_path: Path, fake: Any, port: int, **extra: str) -> dict[str, str]:
    """A live agent process on `fake`: none of the caller's settings, the test's database, key and secret key file."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.update(
        {
            "DATABASE_URL": database_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "SECRET_KEY_FILE": str(tmp_path / "secret.key"),
            "LOG_LEVEL": "WARNING",
            "COLUMNS": "250",  # rich wraps at 80 columns without a terminal
            "API_PORT": str(port),
            "ASSETS": ",".join(fake.assets),
            "TRADING_MODE": "live",
            "MARKET_SOURCE": fake.name,
            "VENUE": fake.name,
            "VENUE_API_URL": fake.base_url,
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def _running_agent(env: dict[str, str], workdir: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([BIN, "run"], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def _after_first_cycle(
    proc: subprocess.Popen[bytes], port: int, log: Path, account_ids: list[int]
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """/health and the accounts' views once the loop has checked every account at start-up and run its first
    cycle."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        with contextlib.suppress(httpx.TransportError):
            health = httpx.get(f"{base}/health", timeout=10)
            if health.status_code == 200 and health.json()["loop"]["cycles"] >= 1:
                views = {i: httpx.get(f"{base}/api/v1/accounts/{i}", headers=ADMIN, timeout=10) for i in account_ids}
                assert all(v.status_code == 200 for v in views.values()), views
                return dict(health.json()), {i: dict(v.json()) for i, v in views.items()}
        time.sleep(0.5)
    raise AssertionError(f"no cycle within {HANG_GUARD_S} s:\n{log.read_text(errors='replace')[-4000:]}")


def _banner_line(output: str, account_id: int) -> str:
    """The banner's line for one live account (`live  real  account N 'name': venue network (money)  (why)`)."""
    lines = [line for line in output.splitlines() if re.search(rf"\blive\b.*\baccount {account_id} '", line)]
    assert len(lines) == 1, f"no single banner line for account {account_id}:\n{output[:4000]}"
    return " ".join(lines[0].split())


async def _add_accounts(settings: Settings, fake: Any, *networks: str) -> list[int]:
    agent = await build_agent(settings)
    try:
        return [
            await add_live_account(agent, fake, name=f"{network}-{i}", network=network)  # type: ignore[arg-type]
            for i, network in enumerate(networks)
        ]
    finally:
        await agent.close()


async def test_start_up_and_health_say_which_live_accounts_trade_real_money(database_url: str, tmp_path: Path) -> None:
    """Without LIVE_MAINNET_CONFIRM a mainnet account is named as real money and NOT TRADED (the venue is never
    asked for it); with it, the banner and /health tell the mainnet account (REAL MONEY) from the testnet one."""
    with fast_live_requests(), fake_venue("binanceusdm") as fake:
        fake.book.place("BTC", "buy", "market", 0.01)  # opened by hand: a traded account would adopt it, stop it
        settings = live_settings(fake, database_url=database_url, tmp_path=tmp_path, live_mainnet_confirm="real-money")
        [mainnet] = await _add_accounts(settings, fake, "mainnet")
        orders_before = [o.id for o in fake.book.orders()]

        # 1. no confirmation: named, refused, and nothing asked of the venue on its behalf
        port, log = free_port(), tmp_path / "unconfirmed.log"
        with _running_agent(_agent_env(database_url, tmp_path, fake, port), tmp_path, log) as proc:
            health, views = _after_first_cycle(proc, port, log, [mainnet])
        output = log.read_text(errors="replace")
        line = _banner_line(output, mainnet)
        assert "binanceusdm mainnet (REAL MONEY)" in line and f"NOT TRADED: {UNCONFIRMED}" in line, line
        [live] = health["live_accounts"]
        assert (live["id"], live["network"], live["real_money"], live["refused"]) == (
            mainnet,
            "mainnet",
            True,
            UNCONFIRMED,
        )
        assert health["status"] == "degraded"
        assert f"live account {mainnet} is not traded: {UNCONFIRMED}" in health["reasons"]
        assert views[mainnet]["live_refusal"] == UNCONFIRMED
        assert private_requests(fake) == [], "the venue was asked on behalf of an unconfirmed mainnet account"
        assert [o.id for o in fake.book.orders()] == orders_before

        # 2. confirmed, with a testnet account beside it: each named for what it trades
        [testnet] = await _add_accounts(settings, fake, "testnet")
        port, log = free_port(), tmp_path / "confirmed.log"
        env = _agent_env(database_url, tmp_path, fake, port, LIVE_MAINNET_CONFIRM="real-money")
        with _running_agent(env, tmp_path, log) as proc:
            health, views = _after_first_cycle(proc, port, log, [mainnet, testnet])
        output = log.read_text(errors="replace")
        main_line, test_line = _banner_line(output, mainnet), _banner_line(output, testnet)
        assert "binanceusdm mainnet (REAL MONEY)" in main_line and "NOT TRADED" not in main_line, main_line
        assert "binanceusdm testnet (test network, no real money)" in test_line, test_line
        assert "REAL MONEY" not in test_line and "NOT TRADED" not in test_line, test_line
        assert f"live account {mainnet} trades on binanceusdm mainnet WITH REAL MONEY" in output, output[-4000:]
        assert f"live account {testnet} trades on binanceusdm testnet (the venue's test network)" in output
        by_id = {a["id"]: a for a in health["live_accounts"]}
        assert {i: (a["network"], a["real_money"], a["refused"]) for i, a in by_id.items()} == {
            mainnet: ("mainnet", True, None),
            testnet: ("testnet", False, None),
        }
        assert not [r for r in health["reasons"] if "live account" in r], health["reasons"]
        assert [views[i]["live_refusal"] for i in (mainnet, testnet)] == [None, None]
        # the control: once confirmed, the same mainnet account is traded (its start-up check stops the position; the
        # first cycle's baseline may close it again on the fake's wall-clock trend, so any such stop counts)
        watchdog = [o for o in fake.book.orders() if (o.client_id or "").startswith(f"a{mainnet}-w")]
        assert [o for o in watchdog if o.type == "stop_market"], fake.book.orders()


# ------------------------------------------------------------------------------------- in-process helpers


async def _live_state(client: httpx.AsyncClient, account_id: int) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(/health, the account's /health entry, the account's live_refusal)."""
    health = (await client.get("/health")).json()
    [entry] = [a for a in health["live_accounts"] if a["id"] == account_id]
    view = (await client.get(f"/api/v1/accounts/{account_id}")).json()
    return health, entry, view["live_refusal"]


# --------------------------------------------------------------------- a venue that cannot be read or refuses


def _break(rig: LiveRig, fault: str) -> str:
    """Make the venue fail the account's reads until `_heal`; returns what the refusal must say."""
    fake = rig.fake
    if fault == "key_revoked":  # Binance: the key is no longer known (-2015), every signed request refused
        fake.API_KEY = "revokedBinanceTestKey000000000000000000000000000000000000000000"
        return "invalid API key"
    if rig.venue == "hyperliquid":
        fake.fail(500, b"", match="clearinghouseState", times=1_000_000)
        return "hyperliquid: account state"
    fake.fail(503, b"", match="/fapi/v3/positionRisk", times=1_000_000)
    return "binanceusdm: positions"


def _heal(rig: LiveRig) -> None:
    fake = rig.fake
    with fake._lock:
        fake._faults.clear()
    fake.__dict__.pop("API_KEY", None)  # the class's key again


READ_FAULTS = [("binanceusdm", "unreadable"), ("binanceusdm", "key_revoked"), ("hyperliquid", "unreadable")]


@pytest.mark.parametrize(("venue", "fault"), READ_FAULTS, ids=[f"{v}-{f}" for v, f in READ_FAULTS])
async def test_an_account_its_venue_cannot_read_is_refused_in_health_and_on_the_account_until_it_can(
    venue: str, fault: str, database_url: str, tmp_path: Path
) -> None:
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        fake, account_id = rig.fake, rig.account_id
        rig.model.opening = False
        await rig.cycle()  # the adapter is up, the account flat
        rig.model.opening = True  # asked, the model would buy
        async with served(rig.settings, rig.agent) as client:
            health, entry, refusal = await _live_state(client, account_id)
            assert entry["refused"] is None and refusal is None and health["status"] == "ok", health["reasons"]

            says = _break(rig, fault)
            asked, sent = len(rig.model.requests), len(order_creates(fake))
            with pytest.raises(LiveAccountRefusedError, match="could not reconcile with the venue"):
                await rig.cycle()
            health, entry, refusal = await _live_state(client, account_id)
            assert len(rig.model.requests) == asked, "the model was asked for a refused account"
            assert len(order_creates(fake)) == sent and entries_at(fake) == [], "an order was sent"
            assert entry["refused"] is not None and entry["refused"].startswith("could not reconcile with the venue")
            assert says in entry["refused"], entry["refused"]
            assert health["status"] == "degraded"
            assert f"live account {account_id} is not traded: {entry['refused']}" in health["reasons"]
            assert refusal == entry["refused"]
            secret = credentials_of(fake)[1]
            assert secret not in str(health) and secret not in str(refusal)

            _heal(rig)
            result = await rig.cycle()
            assert result.status == "executed", (result.error, result.execution_errors)
            assert len(entries_at(fake)) == 1 and len(stops_at(fake)) == 1
            health, entry, refusal = await _live_state(client, account_id)
            assert entry["refused"] is None and refusal is None
            assert health["status"] == "ok", health["reasons"]


# ------------------------------------------------------------------------------- the network's default


@pytest.mark.parametrize("venue", VENUES)
async def test_a_live_account_created_without_a_network_is_on_the_test_network(
    venue: str, database_url: str, tmp_path: Path
) -> None:
    """No `network` in the request: testnet (no LIVE_MAINNET_CONFIRM needed), no real money in /health, and the
    adapter trades the test network (the fake Hyperliquid refuses an action signed for mainnet)."""
    with fast_live_requests(), fake_venue(venue) as fake:  # type: ignore[arg-type]
        settings = live_settings(fake, database_url=database_url, tmp_path=tmp_path)
        agent = await build_agent(settings, provider=FlatThenHold(at_price=fake.book.set_price))
        async with served(settings, agent) as client:
            created = await client.post("/api/v1/accounts", json={"name": "no-network", "mode": "live", "venue": venue})
            assert created.status_code == 201, created.text
            account_id = created.json()["id"]
            assert created.json()["network"] == "testnet"
            key, secret = credentials_of(fake)
            stored = await client.put(
                f"/api/v1/accounts/{account_id}/credentials", json={"api_key": key, "api_secret": secret}
            )
            assert stored.status_code == 204, stored.text
            decided = await client.post(
                "/api/v1/decisions/generate", json={"account_id": account_id, "force_refresh": True}
            )
            assert decided.status_code == 200, decided.text
            assert decided.json()["status"] == "executed", decided.text
            _, entry, refusal = await _live_state(client, account_id)
            adapter = agent.venues._live[account_id]
        assert (entry["network"], entry["real_money"], entry["refused"], refusal) == ("testnet", False, None, None)
        assert adapter.network == "testnet"
        assert len(entries_at(fake)) == 1 and len(stops_at(fake)) == 1
