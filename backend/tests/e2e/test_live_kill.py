"""Kill the real agent (`trading-agent run`, TRADING_MODE=live) while it trades a live account on a fake venue, and
count at the fake what every restart left behind (issue 16: "the agent killed between entry and stop (the restart
must place the stop); the agent killed mid-cycle many times").

The fake venue (FakeBinanceFutures or FakeHyperliquidPerps: real socket, driven through ccxt by the agent's
LiveExchange) runs in the test process with its BTC price pinned (`live_support.fake_venue`), and so does an
OpenRouter-compatible fake model whose answer follows the venue: a buy of BTC (stop 1% below and take-profit 8% above
the venue's price and the last candles' closes) while the venue has no BTC position, else a close or a hold (seeded),
so that positions open and close across rounds. The agent runs on the wall clock (INTERVAL=5m): a restart within a
candle would get the candle's decision from the cache, so fresh decisions are forced (`POST
/api/v1/decisions/generate` with `force_refresh`). The live account, its strategy (no cooldown) and its credentials
are created through the API of the first process.

Rounds, on one database (SQLite and PostgreSQL), per venue:
- killed between entry and stop: once the entry is placed, the stop's create request is held at the fake (never
  processed) and the agent is SIGKILLed while it waits for the answer; the restart's start-up check must give the
  position its stop, with exactly one entry at the fake for that decision, which is marked interrupted;
- killed after the stop was placed but before its answer came back (processed, the answer withheld): the restart
  keeps that stop (no second one) and records it;
- killed at random moments (SIGKILL or SIGTERM, both at least once; KILL_TEST_SEED) within a forced decision's
  life, measured on this machine by decisions left alone: alternately a time within its duration, or the arrival at
  the fake of its n-th venue request (so kills land in every phase: reconciliation, entry, stop, target, watchdog).

After every restart (its start-up check done: `/health` counts a first loop cycle, which comes after the check),
counted at the fake:
- no duplicate orders: every order at the fake carries one of our client ids, no client id was sent in two create
  requests, and there is at most one entry per (decision, asset);
- every open position at the fake has an open reduce-only stop covering it;
- unprotected stretches (`book.unprotected_spans()`): each one ends no later than the first moment after it began at
  which the agent was seen done with the account: a forced decision answered (the position was opened by a decision
  and protected before that decision, or the one queued behind it on the account's lock, ended) or a restarted agent
  reporting its first cycle (after its start-up check). So a position is never without a stop for longer than the
  time from the kill to the restart's start-up check, plus the decision it was opened in; orderings, not durations;
- the database equals the exchange: open positions (symbol, side, size), open orders by client id, and every fill
  at the fake is in the database's fills (by venue fill id);
- after a SIGTERM no decision is left pending; after a SIGKILL, none once the restart has marked the orphans.

Speed: ccxt throttles its own requests (`enableRateLimit`; Binance: 50 ms per unit of request weight), which makes one
live decision on Binance wait about 20 s between its requests, and the agent has no setting to lower it (the
LiveExchange's `rate_limit_ms` is for tests that build it in-process). The agent processes of this test get a
`sitecustomize` (on PYTHONPATH, written by the test) that sets ccxt's `rateLimit` to `CCXT_RATE_LIMIT_MS`: a speed
knob like SIM_SPEED, the only change to the process under test; the throttle is not what this test is about.

Killed mid-flatten (per venue, on its own database): a live account with positions in BTC, ETH and SOL, each with
its stop and target, is halted (`POST /api/v1/accounts/{id}/halt`: the kill switch closes each position, then
cancels its reduce-only orders left) and the venue is frozen at one moment of that flatten (`Freeze`: after the 1st
close, its answer withheld; after the 1st cancel; after the 2nd close) while the agent is SIGKILLed; once more with a
SIGTERM, which must let the halt in flight finish. The restart must find the account still HALTED, every position
left protected, the orders left on closed positions cancelled and the database equal to the venue; halting again
closes the rest, with one close request per position in all.

The moments and signals come from a seeded generator (KILL_TEST_SEED, printed on failure) so a failing run can be
replayed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.exchange.live import cloid_for
from app.services.execution import client_ids
from tests.conftest import ADMIN_KEY
from tests.e2e.live_support import LOST_ANSWER_S, VENUES, VenueName, credentials_of, fake_venue
from tests.e2e.server import free_port
from tests.e2e.sql import rows
from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion
from tests.fakes.venue_book import BookOrder

pytestmark = pytest.mark.db

BIN = Path(sys.executable).parent / "trading-agent"
SEED = int(os.environ.get("KILL_TEST_SEED", "20261216"))
KILL, TERM = signal.SIGKILL, signal.SIGTERM
RANDOM_ROUNDS = 10
HANG_GUARD_S = 90  # a process that does not start, answer or stop within this is a failure, not a slow machine
SETTLE_S = 10  # how long the database may take to catch up with the venue once the agent is idle
CCXT_RATE_LIMIT_MS = 2
SITECUSTOMIZE = f"""
import ccxt.async_support
from ccxt.async_support.base.exchange import Exchange as _Exchange

_init = _Exchange.__init__


def _fast_init(self, config={{}}):  # the kill test's speed knob: ccxt's throttle at {CCXT_RATE_LIMIT_MS} ms a unit
    _init(self, {{**config, "rateLimit": {CCXT_RATE_LIMIT_MS}}})


_Exchange.__init__ = _fast_init
"""
FAKE_KEY = "sk-or-v1-live-kill-test-0123456789abcdef"
ADMIN = {"X-API-Key": ADMIN_KEY}
STOP_PATH = "POST /fapi/v1/algoOrder"  # ccxt 4.5.90 sends Binance USD-M stops to the algo service
CREATE_PATHS = {"POST /fapi/v1/order": "newClientOrderId", STOP_PATH: "clientAlgoId"}
STRATEGY = {
    "strategy_id": "live-kill",
    "strategy_name": "Live kill test",
    "strategy_type": "custom",
    "prompt_template": "Risk {{ risk.max_risk_per_trade }}% a trade, at most {{ max_positions }} positions.",
    "risk_parameters": {
        "max_risk_per_trade": 2.0,
        "max_daily_loss": 50.0,
        "stop_loss_percentage": 3.0,
        "take_profit_ratio": 1.5,
        "max_leverage": 3.0,
        "cooldown_period": 0,  # positions open and close within seconds, round after round
    },
    "timeframe_preference": ["5m", "4h"],
    "max_positions": 3,
}


def now_ms() -> int:
    """The fake's clock (the wall clock: `fake_venue` gives it no fixed time)."""
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------------- the model
class VenueModel:
    """The fake model's answers, read off the fake venue: for each of the venue's assets, buy when flat, else close
    (with probability `close_p`, seeded) or hold."""

    def __init__(self, fake: Any, rng: random.Random) -> None:
        self.fake = fake
        self.rng = rng
        self.close_p = 0.6
        self.answers: list[str] = []

    def __call__(self, body: Any) -> Scripted:
        held = {p.asset for p in self.fake.book.positions()}
        now = self.fake.now_ms
        items: list[dict[str, Any]] = []
        for asset in self.fake.assets:
            # The venue's (pinned) price, and the closes the agent's context may show as the price: the levels are
            # on the right side of all of them (a stop above the venue's price would trigger at once).
            candles = self.fake.candles(asset, "5m", now - 600_000, now)
            prices = [self.fake.book.mark(asset), *(row[4] for row in candles)]
            item: dict[str, Any] = {
                "asset": asset,
                "exit_plan": "stop or take-profit",
                "rationale": "kill test",
                "confidence": 70,
                "risk_level": "medium",
                "allocation_usd": 0,
            }
            if asset not in held:
                sl, tp = min(prices) * 0.99, max(prices) * 1.08
                item |= {"action": "buy", "allocation_usd": 300, "sl_price": sl, "tp_price": tp}
            else:
                item["action"] = "close_position" if self.rng.random() < self.close_p else "hold"
            self.answers.append(item["action"])
            items.append(item)
        content = {
            "decisions": items,
            "portfolio_rationale": "kill test",
            "total_allocation_usd": sum(item["allocation_usd"] for item in items),
            "portfolio_risk_level": "medium",
        }
        return Scripted(200, chat_completion(json.dumps(content)))


# ------------------------------------------------------------------------------------------------- the agent
class Agent:
    """One `trading-agent run` process (live mode) on the test's database, the fake venue and the fake model."""

    def __init__(self, database_url: str, workdir: Path, fake: Any, model: FakeOpenRouter) -> None:
        self.port = free_port()
        drop = ("OPENROUTER_API_KEY", "LLM_BASE_URL", "ASSETS", "SIM_SPEED", "LLM_MODEL", "INTERVAL")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        knob = workdir / "ccxt-speed"
        knob.mkdir(exist_ok=True)
        (knob / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(knob), *filter(None, [os.environ.get("PYTHONPATH")])]),
                "DATABASE_URL": database_url,
                "ADMIN_API_KEY": ADMIN_KEY,
                "API_PORT": str(self.port),
                "LOG_LEVEL": "WARNING",
                "SECRET_KEY_FILE": str(workdir / "secret.key"),  # the same key every run: the credentials decrypt
                "SHUTDOWN_GRACE_S": "20",
                "TRADING_MODE": "live",
                "MARKET_SOURCE": fake.name,
                "VENUE": fake.name,
                "VENUE_API_URL": fake.base_url,
                "ASSETS": ",".join(fake.assets),
                "INTERVAL": "5m",
                "OPENROUTER_API_KEY": FAKE_KEY,
                "OPENROUTER_BASE_URL": model.base_url,
                "LLM_MODEL": "openai/gpt-5",
                "DECISION_REFRESHES_PER_HOUR": "100000",
                "API_MUTATIONS_PER_MINUTE": "100000",
                "LLM_REQUESTS_PER_MINUTE": "100000",
                "LLM_DAILY_BUDGET_USD": "1000000",
            }
        )
        self.log = (workdir / f"agent-{self.port}.log").open("w+")
        self.started_ms = now_ms()
        self.proc = subprocess.Popen([BIN, "run"], env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", headers=ADMIN, timeout=HANG_GUARD_S)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    async def ready(self) -> int:
        """Until /health counts a first loop cycle (the start-up check of every account comes before it); returns
        the moment it was seen (fake clock, ms)."""
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the agent exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            try:
                health = (await self.client.get("/health")).json()
                if health["loop"]["cycles"] >= 1:
                    return now_ms() + 1
            except (httpx.TransportError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"no first cycle within {HANG_GUARD_S} s:\n{self.output()[-3000:]}")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.client.request(method, path, json=body)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    async def decide(self, account_id: int) -> dict[str, Any]:
        """One forced decision of the account, through the API."""
        result: dict[str, Any] = await self.call(
            "POST", "/api/v1/decisions/generate", {"account_id": account_id, "force_refresh": True}
        )
        return result

    async def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return await self.exited()

    async def exited(self) -> int:
        """Wait for the process to exit (a signal was sent); its exit code."""
        try:
            code = await asyncio.to_thread(self.proc.wait, HANG_GUARD_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            await self.client.aclose()
            self.log.flush()
        return code


async def _set_up_account(agent: Agent, fake: Any) -> int:
    """The live account, its strategy and credentials through the API; the default paper account paused (its model
    calls would only slow the test)."""
    await agent.call("POST", "/api/v1/strategies/custom", {"strategy": STRATEGY})
    for account in await agent.call("GET", "/api/v1/accounts"):
        await agent.call("POST", f"/api/v1/accounts/{account['id']}/pause", {"reason": "not in this test"})
    created = await agent.call(
        "POST",
        "/api/v1/accounts",
        {
            "name": "live-kill",
            "mode": "live",
            "venue": fake.name,
            "network": "testnet",
            "strategy_id": STRATEGY["strategy_id"],
            "max_leverage": 3,
        },
    )
    api_key, api_secret = credentials_of(fake)
    await agent.call(
        "PUT", f"/api/v1/accounts/{created['id']}/credentials", {"api_key": api_key, "api_secret": api_secret}
    )
    return int(created["id"])


# ------------------------------------------------------------------------------------------------- the checks
def _origin(cid: str) -> tuple[str, str, str]:
    """(origin, asset, leg without its number) of one of our client ids."""
    _account, origin, asset, leg = cid.split("-")
    return origin, asset, leg.rstrip("0123456789")


class Venue:
    """What the checks need to know of one fake venue: the ids it keeps for our orders (Binance: our client ids;
    Hyperliquid: cloids, derived from them by a hash, mapped back from the ids the database and the decisions
    name), the create requests it got, and how to hold or lose the answer to a stop."""

    def __init__(self, fake: Any, account_id: int = 0) -> None:
        self.fake = fake
        self.account_id = account_id
        self.hyperliquid = isinstance(fake, FakeHyperliquidPerps)
        self._ours: dict[str, str] = {}  # id at the fake -> our client id

    def at_fake(self, cid: str) -> str:
        """The id the fake keeps for one of our client ids (or for an id the database keeps of a venue's order)."""
        if not self.hyperliquid or cid.startswith("0x") or cid.isdigit():
            return cid
        return cloid_for(cid)

    async def learn_ids(self, db: AsyncEngine) -> None:
        """Hyperliquid: every id the database knows, and every leg of every decision so far, mapped from its cloid."""
        if not self.hyperliquid:
            return
        known = [cid for (cid,) in await rows(db, "SELECT client_order_id FROM orders")]
        [(last,)] = await rows(db, "SELECT coalesce(max(id), 0) FROM decisions")
        for decision in range(1, last + 1):
            for asset in self.fake.assets:
                for leg in client_ids.LEGS:
                    for repeat in range(1, 5):
                        known.append(client_ids.client_order_id(self.account_id, f"d{decision}", asset, leg, repeat))
        self._ours.update({self.at_fake(cid): cid for cid in known})

    def ours(self, order: BookOrder) -> str | None:
        """Our client id of an order at the fake, when it can be told (a Hyperliquid cloid of a watchdog's order that
        the database never recorded cannot)."""
        if order.client_id is None:
            return None
        return self._ours.get(order.client_id) if self.hyperliquid else order.client_id

    def sent(self) -> dict[str, int]:
        """How many create requests carried each id (at the fake)."""
        counts: dict[str, int] = {}
        for request in list(self.fake.requests):
            for cid in self._created_ids(request):
                counts[cid] = counts.get(cid, 0) + 1
        return counts

    def _created_ids(self, request: Any) -> list[str]:
        if self.hyperliquid:
            action = (request.json or {}).get("action") if request.path == "/exchange" else None
            if not isinstance(action, dict) or action.get("type") != "order":
                return []
            return [str(o["c"]).lower() for o in action.get("orders") or [] if isinstance(o, dict) and o.get("c")]
        field = CREATE_PATHS.get(f"{request.method} {request.path}")
        cid = request.query.get(field) if field else None
        return [cid] if cid else []

    def stop_sent_since(self, seen: int) -> bool:
        """A request that may carry the stop has come since the first `seen` requests (the next order after the
        entry: Binance's algo service; Hyperliquid's order action)."""
        for request in list(self.fake.requests)[seen:]:
            if self.hyperliquid and self._created_ids(request):
                return True
            if not self.hyperliquid and f"{request.method} {request.path}" == STOP_PATH:
                return True
        return False

    def after_next_entry(self, lose: bool) -> list[int]:
        """Once the next entry is placed at the fake, the stop that follows it is held: never processed (a 5xx
        after `HANG_GUARD_S`, which no one waits for), or with `lose` processed and its answer withheld. Returns a
        list that gets the request count at that moment."""
        book, fake, marker = self.fake.book, self.fake, []
        original = book.place

        def place(*args: Any, **kwargs: Any) -> BookOrder:
            order = original(*args, **kwargs)
            if book.__dict__.get("place") is place and not order.reduce_only and not order.close_position:
                del book.place
                marker.append(len(fake.requests))
                if self.hyperliquid and lose:
                    # Hyperliquid's answer-side faults are taken once the request is processed: armed now, the
                    # entry's own answer would be the one lost. Armed once the entry is answered instead.
                    entry = next(r for r in reversed(list(fake.requests)) if self._created_ids(r))

                    def arm() -> None:
                        while entry.status == 0:
                            time.sleep(0.001)
                        fake.lose_answer("order", delay_s=HANG_GUARD_S)

                    threading.Thread(target=arm, daemon=True).start()
                elif self.hyperliquid:
                    fake.fail(500, match="order", delay_s=HANG_GUARD_S)
                elif lose:
                    fake.hold_s = HANG_GUARD_S
                    fake.lose_answer(STOP_PATH)
                else:
                    fake.fail(503, match=STOP_PATH, delay_s=HANG_GUARD_S)
            return order

        book.place = place
        return marker


def _check_orders_at_fake(venue: Venue, where: str) -> None:
    """No duplicate orders: ours only (on Hyperliquid: each with a cloid), each id created once, at most one entry
    per (decision, asset)."""
    placed = [o for o in venue.fake.book.orders() if o.parent_id is None]  # a fired stop's child was not sent
    for order in placed:
        assert order.client_id is not None, f"{where}: an order at the fake without a client id: {order}"
        cid = venue.ours(order)
        if not venue.hyperliquid:
            assert cid is not None and client_ids.account_of(cid) == venue.account_id, (
                f"{where}: an order at the fake that is not ours: {order}"
            )
    ids = [o.client_id for o in placed]
    assert len(ids) == len(set(ids)), f"{where}: one client id on two orders: {ids}"
    resent = {cid: n for cid, n in venue.sent().items() if n > 1}
    assert not resent, f"{where}: orders sent again under the same client id: {resent}"
    entries: dict[tuple[str, str], list[str]] = {}
    for order in placed:
        cid = venue.ours(order)
        if cid is not None and _origin(cid)[2] == "en":
            origin, asset, _leg = _origin(cid)
            entries.setdefault((origin, asset), []).append(cid)
    doubled = {k: v for k, v in entries.items() if len(v) > 1}
    assert not doubled, f"{where}: two entries for one decision and asset: {doubled}"
    unnamed = [o for o in placed if venue.ours(o) is None and not o.reduce_only and not o.close_position]
    assert not unnamed, f"{where}: entries at the fake that no decision of ours names: {unnamed}"


def _check_protected(fake: Any, where: str) -> None:
    """Every open position at the fake has an open reduce-only stop on its closing side covering its size."""
    for position in fake.book.positions():
        closing = "sell" if position.size > 0 else "buy"
        stops = [
            o
            for o in fake.book.open_orders(position.asset)
            if o.type == "stop_market"
            and o.side == closing
            and (o.close_position or (o.reduce_only and o.quantity >= abs(position.size) - 1e-12))
        ]
        assert stops, f"{where}: {position.asset} position of {position.size} without a stop at the fake"


def _check_spans(fake: Any, checkpoints: list[int], where: str) -> None:
    """Each unprotected stretch ended by the first checkpoint after it began (see the module docstring)."""
    for asset, began, ended in fake.book.unprotected_spans():
        due = min((c for c in checkpoints if c >= began), default=None)
        if due is None:
            continue  # nothing has been seen done with the account since: not yet due
        assert ended is not None and ended <= due, (
            f"{where}: {asset} had no stop from {began} to {ended or 'now'} (ms), past {due}, when the agent was seen "
            f"done with the account (checkpoints {checkpoints})"
        )


async def _db_state(db: AsyncEngine, venue: Venue) -> tuple[set[tuple[str, str, float]], set[str], set[str]]:
    account_id = venue.account_id
    positions = {
        (symbol, side, round(size, 9))
        for symbol, side, size in await rows(
            db, f"SELECT symbol, side, size FROM positions WHERE account_id = {account_id} AND status = 'open'"
        )
    }
    orders = {
        venue.at_fake(cid)
        for (cid,) in await rows(
            db, f"SELECT client_order_id FROM orders WHERE account_id = {account_id} AND status = 'open'"
        )
    }
    fills = {fid for (fid,) in await rows(db, f"SELECT venue_fill_id FROM fills WHERE account_id = {account_id}")}
    return positions, orders, fills


def _fake_state(fake: Any) -> tuple[set[tuple[str, str, float]], set[str], set[str]]:
    positions = {(p.asset, "long" if p.size > 0 else "short", round(abs(p.size), 9)) for p in fake.book.positions()}
    orders = {o.client_id or f"#{o.id}" for o in fake.book.open_orders()}
    binance = isinstance(fake, FakeBinanceFutures)  # Binance trade ids are per symbol: the adapter names them ASSET-id
    fills = {f"{f.asset}-{f.id}" if binance else str(f.id) for f in fake.book.fills()}
    return positions, orders, fills


async def _check_db_equals_exchange(db: AsyncEngine, venue: Venue, where: str) -> None:
    """The database mirrors the venue: open positions, open orders by client id, every venue fill recorded. The
    agent is idle here (no forced decision in flight); a loop cycle on a candle that closes meanwhile may still be
    writing, so the comparison is repeated while the venue is being asked (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + SETTLE_S
    fake = venue.fake
    while True:
        seen = len(fake.requests)
        at_fake = _fake_state(fake)
        stored = await _db_state(db, venue)
        quiet = len(fake.requests) == seen
        positions_ok = at_fake[0] == stored[0]
        orders_ok = at_fake[1] == stored[1]
        fills_ok = at_fake[2] <= stored[2]
        if quiet and positions_ok and orders_ok and fills_ok:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert positions_ok, f"{where}: open positions: venue {at_fake[0]}, database {stored[0]}"
    assert orders_ok, (
        f"{where}: open orders: only at the venue {at_fake[1] - stored[1]}, only in the database "
        f"{stored[1] - at_fake[1]}"
    )
    assert fills_ok, f"{where}: venue fills missing from the database: {sorted(at_fake[2] - stored[2])}"


async def _check_nothing_pending(db: AsyncEngine, where: str) -> None:
    pending = await rows(db, "SELECT id, cycle_time FROM decisions WHERE status = 'pending'")
    assert not pending, f"{where}: decisions left pending: {pending}"


async def _check_all(db: AsyncEngine, venue: Venue, checkpoints: list[int], where: str) -> None:
    await venue.learn_ids(db)
    _check_orders_at_fake(venue, where)
    _check_protected(venue.fake, where)
    _check_spans(venue.fake, checkpoints, where)
    await _check_db_equals_exchange(db, venue, where)
    await _check_nothing_pending(db, where)


async def _wait_for(condition: Any, what: str, agent: Agent | None = None) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        if condition():
            return
        if agent is not None:
            assert agent.proc.poll() is None, f"the agent exited while waiting for {what}:\n{agent.output()[-3000:]}"
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: not within {HANG_GUARD_S} s")


def _decision_of(cid: str) -> int:
    origin = _origin(cid)[0]
    assert origin.startswith("d"), cid
    return int(origin[1:])


# ------------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("venue_name", VENUES)
async def test_killing_a_live_agent_leaves_every_position_protected_and_the_database_equal_to_the_venue(
    venue_name: VenueName, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    with fake_venue(venue_name) as fake, FakeOpenRouter() as model:
        brain = VenueModel(fake, random.Random(SEED + 1))
        model.responder = brain
        checkpoints: list[int] = []
        agents: list[Agent] = []
        kills: list[str] = []
        mid_decision = 0  # random kills sent while the forced decision was still in flight

        def start() -> Agent:
            agent = Agent(database_url, tmp_path, fake, model)
            agents.append(agent)
            return agent

        agent = start()
        where = f"seed {SEED}, first run"
        try:
            checkpoints.append(await agent.ready())
            account_id = await _set_up_account(agent, fake)
            venue = Venue(fake, account_id)

            # A decision left alone: the entry, its stop and take-profit; how long a decision lives here.
            began, seen = time.monotonic(), len(fake.requests)
            first = await agent.decide(account_id)
            lifetime = time.monotonic() - began
            venue_requests = len(fake.requests) - seen  # the venue requests of a decision (and the adapter's start)
            checkpoints.append(now_ms() + 1)
            assert first["status"] == "executed", json.dumps(first)[:3000]
            assert [p.asset for p in fake.book.positions()] == ["BTC"], "the first decision opened no position"
            await _check_all(db, venue, checkpoints, where)

            async def flatten() -> float:
                """Close the position with forced decisions (a loop cycle on a candle that closes meanwhile may open
                one again); returns how long the last decision took."""
                brain.close_p = 1.0
                for _ in range(3):
                    began = time.monotonic()
                    await agent.decide(account_id)
                    took = time.monotonic() - began
                    checkpoints.append(now_ms() + 1)
                    if not fake.book.positions():
                        return took
                raise AssertionError(f"{where}: the closes did not flatten the account")

            def entries(decision_id: int | None = None) -> list[str]:
                """Our entries at the fake (of one decision)."""
                named = [venue.ours(o) for o in fake.book.orders() if o.parent_id is None]
                return [
                    cid
                    for cid in named
                    if cid is not None
                    and _origin(cid)[2] == "en"
                    and (decision_id is None or _origin(cid)[0] == f"d{decision_id}")
                ]

            # (a) Killed between entry and stop: flat first, then an entry whose stop request is held at the fake
            # (never processed: a 503 after the hold, which no one waits for) while the agent is SIGKILLed.
            where = f"seed {SEED}, killed between entry and stop"
            lifetime = min(lifetime, await flatten())  # the first decision also started the venue adapter
            marker = venue.after_next_entry(lose=False)
            deciding = asyncio.create_task(agent.decide(account_id))
            await _wait_for(lambda: bool(marker) and venue.stop_sent_since(marker[0]), "the stop request", agent)
            killed_at = now_ms()
            assert await agent.stop(KILL) == -KILL
            kills.append("SIGKILL (stop request held)")
            with pytest.raises(httpx.TransportError):
                await deciding
            [position] = fake.book.positions()
            assert not fake.book.open_orders("BTC"), "the held stop was placed after all: the round proved nothing"
            await venue.learn_ids(db)
            entry = entries()[-1]
            decision_id = _decision_of(entry)
            spans = [s for s in fake.book.unprotected_spans() if s[2] is None]
            assert spans and spans[0][1] <= killed_at, f"no open unprotected span at the kill: {spans}"

            brain.close_p = 0.0  # the restart's first cycle decides this candle again: it must not close the position
            agent = start()
            checkpoints.append(await agent.ready())
            await venue.learn_ids(db)
            stops = [o for o in fake.book.open_orders("BTC") if o.type == "stop_market"]
            assert len(stops) == 1, stops
            placed_by = venue.ours(stops[0])
            assert placed_by is not None and _origin(placed_by)[0].startswith("w"), (
                f"the stop was not placed by the start-up check: {placed_by or stops[0].client_id}"
            )
            assert stops[0].quantity >= abs(position.size) - 1e-12 and stops[0].reduce_only
            assert entries(decision_id) == [entry], f"entries of decision {decision_id} at the fake"
            status = await rows(db, f"SELECT status FROM decisions WHERE id = {decision_id}")
            assert status == [("interrupted",)], status
            await _check_all(db, venue, checkpoints, where)

            # (a') Killed after the stop was placed but before its answer came back (processed at the fake, the
            # answer withheld): the restart must see that stop (no second one) and record it.
            where = f"seed {SEED}, killed while the placed stop's answer was withheld"
            await flatten()
            venue.after_next_entry(lose=True)
            deciding = asyncio.create_task(agent.decide(account_id))
            await _wait_for(lambda: bool(fake.book.open_orders("BTC")), "the stop at the fake", agent)
            assert await agent.stop(KILL) == -KILL
            kills.append("SIGKILL (stop placed, answer withheld)")
            if not venue.hyperliquid:
                fake.hold_s = LOST_ANSWER_S
            with pytest.raises(httpx.TransportError):
                await deciding
            [stop] = fake.book.open_orders("BTC")
            await venue.learn_ids(db)
            stop_id = venue.ours(stop)
            assert stop_id is not None and _origin(stop_id)[2] == "sl", stop
            agent = start()
            checkpoints.append(await agent.ready())
            stops = [o.client_id for o in fake.book.open_orders("BTC") if o.type == "stop_market"]
            assert stops == [stop.client_id], f"{where}: the stop was placed again: {stops}"
            assert len(entries(_decision_of(stop_id))) == 1
            await _check_all(db, venue, checkpoints, where)
            brain.close_p = 0.6

            # (b) Killed at random moments within a decision's life, by either signal.
            signals = [KILL, TERM] + [rng.choice([KILL, TERM]) for _ in range(RANDOM_ROUNDS - 2)]
            rng.shuffle(signals)
            for round_no, sig in enumerate(signals):
                # The moment: alternately a time within a decision's life, or the arrival at the fake of one of its
                # venue requests (spread over its phases: reconciliation reads, entry, stop, target, watchdog).
                seen = len(fake.requests)
                if round_no % 2:
                    moment = rng.uniform(0.0, 1.0) * lifetime
                    when = f"after {moment:.3f} s of a decision"
                    deciding = asyncio.create_task(agent.decide(account_id))
                    await asyncio.sleep(moment)
                else:
                    nth = rng.randint(1, venue_requests)
                    when = f"at the arrival of a decision's venue request {nth}"
                    deciding = asyncio.create_task(agent.decide(account_id))
                    arrived = seen + nth

                    def due(task: asyncio.Task[Any] = deciding, arrived: int = arrived) -> bool:
                        return task.done() or len(fake.requests) >= arrived

                    await _wait_for(due, when, agent)
                where = f"seed {SEED}, random round {round_no}, {sig.name} {when}"
                if not deciding.done():
                    mid_decision += 1
                code = await agent.stop(sig)
                kills.append(sig.name)
                try:
                    await deciding
                    checkpoints.append(now_ms() + 1)  # answered before the stop (SIGTERM lets it finish)
                except httpx.TransportError:
                    pass
                output = agent.output()
                if sig == TERM:
                    # uvicorn stops gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop.
                    assert code in (0, -TERM), f"{where}: exit {code}\n{output[-3000:]}"
                    assert "Traceback" not in output, f"{where}:\n{output[-4000:]}"
                    await _check_nothing_pending(db, f"{where}, after the graceful stop")
                else:
                    assert code == -KILL, f"{where}: exit {code}"
                agent = start()
                checkpoints.append(await agent.ready())
                await _check_all(db, venue, checkpoints, where)

            where = f"seed {SEED}, last graceful stop"
            code = await agent.stop(TERM)
            assert code in (0, -TERM), f"{where}: exit {code}\n{agent.output()[-3000:]}"
            await _check_nothing_pending(db, where)
            await venue.learn_ids(db)
            _check_orders_at_fake(venue, where)
            _check_protected(fake, where)
            await _check_db_equals_exchange(db, venue, where)
        except BaseException:
            print(f"{where}; the agent's output:\n{agent.output()[-4000:]}")
            raise
        finally:
            for running in agents:
                if running.proc.poll() is None:
                    running.proc.kill()
                    running.proc.wait()

        entered = entries()
        interrupted = await rows(db, "SELECT count(*) FROM decisions WHERE status = 'interrupted'")
        print(
            f"seed {SEED}: kills {kills} ({mid_decision} random ones mid-decision); decision lifetime "
            f"{lifetime:.2f} s; {len(entered)} entries at the fake; model answers {brain.answers}; "
            f"{interrupted[0][0]} decisions interrupted"
        )
        assert len(entered) >= 3, "positions hardly opened: the test proved little"
        assert mid_decision >= 1, "no random kill landed while a decision was in flight: the test proved little"
        assert "close_position" in brain.answers, "no position was closed by a decision: the test proved little"


# ------------------------------------------------------------------------------------------------- killed mid-flatten
FLATTEN_ASSETS = ["BTC", "ETH", "SOL"]


def _closed_assets(fake: Any, method: str, path: str, query: dict[str, str], body: Any) -> list[str]:
    """The assets a request closes: a reduce-only market order's create request (the kill switch's close)."""
    if isinstance(fake, FakeHyperliquidPerps):
        action = body.get("action") if path == "/exchange" and isinstance(body, dict) else None
        if not isinstance(action, dict) or action.get("type") != "order":
            return []
        orders = [o for o in action.get("orders") or [] if isinstance(o, dict)]
        return [fake._asset_at(o["a"]) for o in orders if o.get("r") and "trigger" not in (o.get("t") or {})]
    plain_reduce = method == "POST" and path == "/fapi/v1/order" and query.get("reduceOnly", "").lower() == "true"
    return [query["symbol"].removesuffix("USDT")] if plain_reduce and query.get("type") == "MARKET" else []


def _is_cancel(fake: Any, method: str, path: str, query: dict[str, str], body: Any) -> bool:
    """A request cancelling an order (Binance: a plain or an algo order; Hyperliquid: by oid or by cloid)."""
    if isinstance(fake, FakeHyperliquidPerps):
        action = body.get("action") if path == "/exchange" and isinstance(body, dict) else None
        return isinstance(action, dict) and action.get("type") in ("cancel", "cancelByCloid")
    return method == "DELETE" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder")


class Freeze:
    """Freezes the fake venue at one moment of a flatten: once the `nth` request that `matches` is processed, every
    later request is held before it is processed (with `answered=False` that request's own answer is held too), so
    the agent is caught waiting for the venue with the venue's state exactly as that request left it. `frozen` is set
    once something is held. `thaw()` lets the held requests go: answered 503 unprocessed (the agent that sent them was
    killed: a dead process's order must not reach the book), or with `process` handled as usual (a graceful stop
    finishing what it was doing). The fake's own routing (`_route`) is wrapped while the freeze lasts."""

    def __init__(self, fake: Any, matches: Any, nth: int, *, answered: bool) -> None:
        self.fake, self.matches, self.nth, self.answered = fake, matches, nth, answered
        self.frozen = threading.Event()
        self._thawed = threading.Event()
        self._process = False
        self._lock = threading.Lock()
        self._seen = 0
        self._shadowed = fake.__dict__.get("_route")
        self._original = fake._route
        fake._route = self._route

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        with self._lock:
            hold = self._seen >= self.nth and not self._thawed.is_set()
        if hold:
            self.frozen.set()
            self._thawed.wait(HANG_GUARD_S)
            if not self._process:
                return 503, {"code": -1001, "msg": "frozen by the kill test, not processed"}, {}
        answer = self._original(method, path, query, body)
        if self.matches(method, path, query, body):
            with self._lock:
                self._seen += 1
                withhold = self._seen == self.nth and not self.answered
            if withhold:
                self.frozen.set()
                self._thawed.wait(HANG_GUARD_S)
        return answer

    def thaw(self, *, process: bool = False) -> None:
        self._process = process
        self._thawed.set()
        if self._shadowed is None:
            del self.fake._route
        else:
            self.fake._route = self._shadowed


async def _shutting_down(agent: Agent) -> bool:
    """True once the agent's API refuses new connections (a graceful stop begins by closing its listening socket)."""
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    except OSError:
        return True
    writer.close()
    return False


def _orphans(fake: Any) -> list[BookOrder]:
    """Open reduce-only orders of assets the account holds no position in (they would act on the next position)."""
    held = {p.asset for p in fake.book.positions()}
    return [o for o in fake.book.open_orders() if (o.reduce_only or o.close_position) and o.asset not in held]


# (what the freeze counts, its number, whether that request is answered, the signal)
FLATTEN_KILLS: list[tuple[str, int, bool, signal.Signals]] = [
    ("close", 1, False, KILL),  # the 1st close processed at the venue, its answer withheld
    ("cancel", 1, True, KILL),  # the 1st cancel (the closed position's stop or target) done, the next request held
    ("close", 2, True, KILL),  # the 2nd close done, the next request held
    ("close", 1, True, TERM),  # the 1st close done, then a graceful stop: the halt in flight must finish
]


@pytest.mark.parametrize("venue_name", VENUES)
async def test_killing_a_live_agent_mid_flatten_keeps_the_halt_and_halting_again_finishes_it(
    venue_name: VenueName, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    """The kill switch (`POST /accounts/{id}/halt`) of a live account with positions in three assets, each with its
    stop and target, killed while it flattens: the venue is frozen at one moment of the flatten (`Freeze`; what
    `FLATTEN_KILLS` names) and the agent gets SIGKILL (or SIGTERM) while it waits for the venue. The venue keeps the
    stop and target of a closed position (`keeps_orphans`, as Binance does), so the flatten has cancels to be killed
    at: for each position a close, then the cancels of its reduce-only orders left.

    At the kill: at least one position closed and at least one still open at the fake, the halt not answered. After
    the restart's start-up check, counted at the fake: no client id sent twice and no order that is not ours, every
    position still open covered by a reduce-only stop, no reduce-only order left on an asset without a position (the
    start-up check cancels them), the account still HALTED (the halt was stored before the first order), the
    database equal to the venue (positions, open orders, fills), nothing pending. Halting again finishes the flatten:
    answered 200 (nothing remains), no position and no open order left at the fake, and each position was closed by
    one close request in all (none sent again, under its id or a new one). After a SIGTERM the halt in flight is
    answered before the process exits, and there is nothing left to do."""
    with fake_venue(venue_name, FLATTEN_ASSETS) as fake, FakeOpenRouter() as model:
        fake.book.keeps_orphans = True
        brain = VenueModel(fake, random.Random(SEED))
        brain.close_p = 0.0  # buy every flat asset, hold the others
        model.responder = brain
        checkpoints: list[int] = []
        agents: list[Agent] = []
        seen: list[str] = []  # what each kill left and what the restart did (printed at the end)

        def start() -> Agent:
            agent = Agent(database_url, tmp_path, fake, model)
            agents.append(agent)
            return agent

        agent = start()
        where = "first run"
        try:
            checkpoints.append(await agent.ready())
            account_id = await _set_up_account(agent, fake)
            venue = Venue(fake, account_id)
            halt_path = f"/api/v1/accounts/{account_id}/halt"

            async def status() -> str:
                return str((await agent.call("GET", f"/api/v1/accounts/{account_id}"))["status"])

            for round_no, (counted, nth, answered, sig) in enumerate(FLATTEN_KILLS):
                moment = f"{sig.name} after the {counted} #{nth} {'answered' if answered else 'processed, unanswered'}"
                where = f"mid-flatten round {round_no} ({moment})"
                if round_no:
                    await agent.call("POST", f"/api/v1/accounts/{account_id}/resume", {"reason": "next round"})
                result = await agent.decide(account_id)
                checkpoints.append(now_ms() + 1)
                assert sorted(p.asset for p in fake.book.positions()) == FLATTEN_ASSETS, (
                    f"{where}: the decision did not open every position: {json.dumps(result)[:3000]}"
                )
                _check_protected(fake, f"{where}, before the halt")
                round_began = len(fake.requests)

                # The halt, frozen at the venue at the round's moment, and the signal while the agent waits.
                if counted == "close":
                    matches: Any = lambda *request: bool(_closed_assets(fake, *request))  # noqa: E731
                else:
                    matches = lambda *request: _is_cancel(fake, *request)  # noqa: E731
                freeze = Freeze(fake, matches, nth, answered=answered)
                halting = asyncio.create_task(agent.call("POST", halt_path, {"reason": "kill test"}))

                def at_moment(freeze: Freeze = freeze, halting: asyncio.Task[Any] = halting) -> bool:
                    return freeze.frozen.is_set() or halting.done()

                await _wait_for(at_moment, f"{where}: the moment", agent)
                assert not halting.done(), f"{where}: the halt was answered before the moment: the round proved nothing"
                left = sorted(p.asset for p in fake.book.positions())
                orphaned = sorted(f"{o.asset} {o.type}" for o in _orphans(fake))
                assert 0 < len(left) < len(FLATTEN_ASSETS), f"{where}: not mid-flatten at the kill: open {left}"
                if sig == KILL:
                    assert await agent.stop(KILL) == -KILL
                    freeze.thaw()
                    with pytest.raises(httpx.TransportError):
                        await halting
                else:
                    agent.proc.send_signal(TERM)
                    deadline = time.monotonic() + HANG_GUARD_S
                    while not await _shutting_down(agent):
                        assert time.monotonic() < deadline, f"{where}: the agent did not begin to stop"
                        await asyncio.sleep(0.01)
                    freeze.thaw(process=True)
                    answer = await halting  # the graceful stop finished the halt in flight (200: nothing remains)
                    assert answer["status"] == "HALTED", answer
                    code = await agent.exited()
                    assert code in (0, -TERM), f"{where}: exit {code}\n{agent.output()[-3000:]}"
                    assert "Traceback" not in agent.output(), f"{where}:\n{agent.output()[-4000:]}"
                    assert not fake.book.positions() and not fake.book.open_orders(), f"{where}: the halt was cut short"
                    await _check_nothing_pending(db, f"{where}, after the graceful stop")
                at_kill = f"open {left}, orphans {orphaned}"

                # The restart: its start-up check done, the account still halted and the venue's state mirrored.
                orders_before = {o.id for o in fake.book.orders()}
                open_before = {o.id for o in fake.book.open_orders()}
                agent = start()
                checkpoints.append(await agent.ready())
                assert await status() == "HALTED", f"{where}: the halt did not survive the {sig.name}"
                placed = sorted(f"{o.asset} {o.type}" for o in fake.book.orders() if o.id not in orders_before)
                ended = sorted(
                    f"{o.asset} {o.type} {o.status}"
                    for o in fake.book.orders()
                    if o.id in open_before and o.status != "open"
                )
                assert not _orphans(fake), f"{where}: reduce-only orders left without a position: {_orphans(fake)}"
                await _check_all(db, venue, checkpoints, f"{where}, after the restart")
                restart_left = sorted(p.asset for p in fake.book.positions())
                halts = await rows(db, "SELECT client_order_id, status FROM orders WHERE client_order_id LIKE '%-h%'")
                seen.append(
                    f"{where}: at the kill {at_kill}; after the restart open {restart_left}, placed {placed}, "
                    f"ended {ended}; the halts' orders in the database {sorted(halts)}"
                )

                # Halting again finishes the flatten; each position closed by exactly one close request.
                answer = await agent.call("POST", halt_path, {"reason": "kill test, again"})
                assert answer["status"] == "HALTED", answer
                assert not fake.book.positions(), f"{where}: positions left after the second halt"
                assert not fake.book.open_orders(), f"{where}: orders left after the second halt"
                closes: dict[str, int] = {}
                for request in list(fake.requests)[round_began:]:
                    for asset in _closed_assets(fake, request.method, request.path, request.query, request.json):
                        closes[asset] = closes.get(asset, 0) + 1
                assert closes == dict.fromkeys(FLATTEN_ASSETS, 1), f"{where}: close requests per asset {closes}"
                await venue.learn_ids(db)
                _check_orders_at_fake(venue, f"{where}, after halting again")
                await _check_db_equals_exchange(db, venue, f"{where}, after halting again")
                await _check_nothing_pending(db, f"{where}, after halting again")

            where = "last graceful stop"
            code = await agent.stop(TERM)
            assert code in (0, -TERM), f"{where}: exit {code}\n{agent.output()[-3000:]}"
        except BaseException:
            print(f"{where}; the agent's output:\n{agent.output()[-4000:]}")
            raise
        finally:
            for running in agents:
                if running.proc.poll() is None:
                    running.proc.kill()
                    running.proc.wait()
        print("\n".join(seen))
