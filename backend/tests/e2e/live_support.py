"""A live agent on a fake venue, in-process: what the live e2e tests (trading faults, kills) share.

    async with live_agent("binanceusdm", tmp_path) as rig:   # fake venue + agent (TRADING_MODE=live) + live account
        result = await rig.cycle()                            # one forced decision: entry, stop, take-profit
        assert stops_at(rig.fake) and rig.book_order(f"a{rig.account_id}-d{result.id}-BTC-sl")
        await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)

Building blocks (for a test that builds its own agent, e.g. several starts on one database):
- `fake_venue(venue, assets=["BTC"], balance=...)`: a started FakeBinanceFutures / FakeHyperliquidPerps whose prices
  are pinned at the last closed 5m candle's close (`last_close`: the price the agent's context shows; the fake's own
  would be the forming candle's close, up to 2% away), so orders fill at a known, constant price; a lost answer
  (`lose_answer`) is withheld `LOST_ANSWER_S`, then the connection is dropped. Past the next 5m close the agent's
  price moves to the next candle's close while the pin stays: a decision's stop (1% off) may then be on the wrong
  side of the venue's price; `FlatThenHold(at_price=fake.book.set_price)` (what `live_agent` does) re-pins the venue
  at the price each entry is decided on.
- `live_settings(fake, database_url=..., tmp_path=..., trading_mode="live", market_source=None, **more)`: settings of
  an agent whose market data and orders go to the fake (VENUE_API_URL), forced decisions unlimited, no LLM budget.
- `fast_live_requests()`: while open, the LiveExchange adapters the agent builds space their requests 1 ms per unit of
  weight (ccxt's throttle for the real venues makes a Binance cycle wait some 20 s) and look lost orders up quickly.
- `add_live_account(agent, fake, network="testnet", credentials="fake" | (key, secret) | None)`: a live account on the
  fake's venue, its credentials stored encrypted as `PUT /accounts/{id}/credentials` stores them; returns its id.
- `FlatThenHold(sl_pct=1.0, tp_pct=3.5, allocation_usd=200.0)`: a DecisionModel that buys every flat asset with a stop
  `sl_pct` below and a take-profit `tp_pct` above the context's price and holds assets it has a position in;
  `opening = False` makes it hold everywhere; `requests` keeps what it was asked (the contexts the model saw);
  `at_price(asset, price)` is called for each entry or stop move it decides; `when_held = "close_position"` or
  `"move_stop"` closes a held asset or moves its stop to `move_stop_pct` below the context's price instead of holding.
- `cycle(agent, account_id)`: one forced decision (trigger "test").
- At the fake: `venue_client_id(fake, our_id)` (Hyperliquid: the cloid), `stops_at(fake)`, `entries_at(fake)`,
  `order_creates(fake)` (every order-creating request received), `private_requests(fake)`, `is_entry_create` /
  `is_stop_create` + `before_request(fake, when, then)` (arm a fault for one precise request),
  `no_position_left_unprotected(fake)` (every unprotected span of the book has ended).
- In the database: `db_orders`, `db_positions`, `assert_db_matches_venue(agent, account_id, fake)`.
- `credentials_of(fake)`, `secrets_of(fake)` (what must never leak).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.config import ExplicitSettings, Settings
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.main import create_app
from app.schemas.decision_result import DecisionResult
from app.schemas.trading_decision import AssetDecision, OrderAdjustment, TradingDecision
from app.services.account.new_account import new_account
from app.services.exchange import live as live_module
from app.services.exchange.live import cloid_for
from app.services.llm.providers.base import ModelRequest, ModelResponse
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.exchange_servers import Recorded
from tests.fakes.hyperliquid_trading import PRIVATE_INFO, FakeHyperliquidPerps
from tests.fakes.scripted_model import answer
from tests.fakes.venue_book import BookOrder

VenueName = Literal["binanceusdm", "hyperliquid"]
VENUES: tuple[VenueName, ...] = ("binanceusdm", "hyperliquid")
LOST_ANSWER_S = 1.0  # how long a fake withholds a lost answer before dropping the connection
FAST_RATE_LIMIT_MS = 1.0  # ccxt's request spacing per unit of weight on a fake (the venues': 50 ms and more)


@contextlib.contextmanager
def fast_live_requests() -> Iterator[None]:
    """While open, every `LiveExchange` the agent builds spaces its requests by `FAST_RATE_LIMIT_MS` per unit of
    weight instead of the venue's (ccxt's throttle makes one Binance cycle wait some 20 s, for no purpose on a fake).
    The registry builds its adapters with no way to say so (LivePolicy has no rate limit), hence the patch."""
    original = live_module.LiveExchange

    class QuickLiveExchange(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("rate_limit_ms", FAST_RATE_LIMIT_MS)
            kwargs.setdefault("lookup_backoff_s", 0.1)
            super().__init__(*args, **kwargs)

    live_module.LiveExchange = QuickLiveExchange  # type: ignore[misc]
    try:
        yield
    finally:
        live_module.LiveExchange = original  # type: ignore[misc]


@contextlib.contextmanager
def fake_venue(venue: VenueName, assets: list[str] | None = None, *, balance: float = 10_000.0) -> Iterator[Any]:
    """A running fake of `venue`, its assets' prices pinned at the simulator's price now."""
    assets = assets or ["BTC"]
    fake: Any
    if venue == "hyperliquid":
        fake = FakeHyperliquidPerps(assets, balance=balance)
    else:
        fake = FakeBinanceFutures(assets, balance=balance, hold_s=LOST_ANSWER_S)
    with fake:
        _answer_without_delay(fake)
        if venue == "hyperliquid":
            original = fake.lose_answer

            def lose_answer(match: str | None = None, *, times: int = 1, delay_s: float = LOST_ANSWER_S) -> None:
                original(match, times=times, delay_s=delay_s)

            fake.lose_answer = lose_answer
        for asset in assets:
            fake.book.set_price(asset, last_close(fake, asset))
        yield fake


def last_close(fake: Any, asset: str) -> float:
    """The close of the last closed 5m candle the fake serves: the price the agent's context shows (the venue's own
    price is the forming candle's close, which the simulator may have moved 1-2% away)."""
    now = fake.now_ms
    rows = fake.candles(asset, "5m", now - 900_000, now)
    return float([r for r in rows if r[0] + 300_000 <= now][-1][4])


def _answer_without_delay(fake: Any) -> None:
    """Serve the fake's answers with TCP_NODELAY: its handler writes the headers and the body apart, and Nagle's
    algorithm against the client's delayed ACK makes every answer wait some 40 ms (a cycle makes dozens)."""
    server = fake._server
    handler = server.RequestHandlerClass
    server.RequestHandlerClass = type(f"Quick{handler.__name__}", (handler,), {"disable_nagle_algorithm": True})


def credentials_of(fake: Any) -> tuple[str, str]:
    """(api_key, api_secret) as an account stores them: Binance key and secret; Hyperliquid wallet and private key."""
    if isinstance(fake, FakeHyperliquidPerps):
        return fake.WALLET, fake.PRIVATE_KEY
    return fake.API_KEY, fake.API_SECRET


def secrets_of(fake: Any) -> list[str]:
    """What must never appear in a log, a database column or an API answer: Hyperliquid's private key; Binance's API
    secret and its API key (the key alone identifies the account and is sent in a header, never to be shown)."""
    if isinstance(fake, FakeHyperliquidPerps):
        return [fake.PRIVATE_KEY, fake.PRIVATE_KEY.removeprefix("0x")]
    return [fake.API_SECRET, fake.API_KEY]


def live_settings(
    fake: Any,
    *,
    database_url: str,
    tmp_path: Path,
    trading_mode: Literal["paper", "live"] = "live",
    market_source: str | None = None,
    **extra: Any,
) -> Settings:
    """Settings of an agent trading live accounts on `fake`: its market data and orders go to the fake."""
    return ExplicitSettings(
        database_url=database_url,
        admin_api_key=ADMIN_KEY,
        secret_key_file=str(tmp_path / "secret.key"),
        assets=list(fake.assets),
        trading_mode=trading_mode,
        market_source=market_source or fake.name,
        venue=fake.name,
        venue_api_url=fake.base_url,
        decision_refreshes_per_hour=10_000,
        llm_daily_budget_usd=None,
        **extra,
    )


async def add_live_account(
    agent: Agent,
    fake: Any,
    *,
    name: str = "live-1",
    network: Literal["testnet", "mainnet"] = "testnet",
    credentials: tuple[str, str] | Literal["fake"] | None = "fake",
    max_leverage: float = 5.0,
) -> int:
    """A live account on the fake's venue; its credentials stored encrypted (as the API stores them)."""
    pair = credentials_of(fake) if credentials == "fake" else credentials
    now = agent.wall_clock.now()
    async with agent.sessions.begin() as session:
        account = new_account(name, now=now, venue=fake.name, mode="live", network=network, max_leverage=max_leverage)
        if pair is not None:
            account.credentials_encrypted = agent.secrets.encrypt(
                json.dumps({"api_key": pair[0], "api_secret": pair[1]})
            )
        account = await AccountRepository(session).add(account, reason="live e2e test", now=agent.clock.now())
        return account.id


class FlatThenHold:
    """Opens a long with a stop and a take-profit on every flat asset; holds every asset with a position."""

    name = "test/flat-then-hold"
    is_simulated = True

    def __init__(
        self,
        *,
        sl_pct: float = 1.0,
        tp_pct: float = 3.5,
        allocation_usd: float = 200.0,
        at_price: Callable[[str, float], None] | None = None,
    ) -> None:
        """`at_price(asset, price)`: called with the context's price of each asset it buys or moves a stop for
        (`live_agent` pins the venue's price there, so the orders meet the price the decision was made on, whatever
        candle closed since the venue was pinned)."""
        self.sl_pct, self.tp_pct, self.allocation_usd = sl_pct, tp_pct, allocation_usd
        self.at_price = at_price
        self.opening = True
        # what it does with an asset it has a position in: hold, close it, or move its stop to `move_stop_pct` below
        # the context's price (adjust_orders)
        self.when_held: Literal["hold", "close_position", "move_stop"] = "hold"
        self.move_stop_pct = 0.5
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        held = {p.symbol for p in request.context.account_state.open_positions}
        decisions = []
        for asset in request.symbols:
            base: dict[str, Any] = {
                "asset": asset,
                "exit_plan": "stop or take-profit",
                "rationale": "e2e",
                "confidence": 70.0,
                "risk_level": "medium",
                "allocation_usd": 0.0,
            }
            if self.opening and asset not in held:
                price = request.context.market_data.assets[asset].current_price
                if self.at_price is not None:
                    self.at_price(asset, price)
                base |= {
                    "action": "buy",
                    "allocation_usd": self.allocation_usd,
                    "sl_price": price * (1 - self.sl_pct / 100),
                    "tp_price": price * (1 + self.tp_pct / 100),
                }
            elif asset in held and self.when_held == "move_stop":
                price = request.context.market_data.assets[asset].current_price
                if self.at_price is not None:
                    self.at_price(asset, price)
                level = price * (1 - self.move_stop_pct / 100)
                base |= {
                    "action": "adjust_orders",
                    "order_adjustment": OrderAdjustment(adjust_sl=True, new_sl_price=level),
                }
            elif asset in held and self.when_held == "close_position":
                base["action"] = "close_position"
            else:
                base["action"] = "hold"
            decisions.append(AssetDecision(**base))
        decision = TradingDecision(
            decisions=decisions,
            portfolio_rationale="e2e",
            total_allocation_usd=sum(d.allocation_usd for d in decisions),
            portfolio_risk_level="medium",
        )
        return answer(request, decision, served_by=self.name)


async def cycle(agent: Agent, account_id: int) -> DecisionResult:
    """One forced decision of the account (its reconciliation, the model, the orders, the stop watchdog)."""
    return await agent.engine.make_trading_decision(None, account_id, trigger="test", force_refresh=True)


# ------------------------------------------------------------------------------------------------ the rig


@dataclass
class LiveRig:
    """A live agent (in-process, real engine) trading one live account on a fake venue."""

    fake: Any
    agent: Agent
    model: FlatThenHold
    account_id: int
    settings: Settings

    @property
    def venue(self) -> VenueName:
        return cast(VenueName, self.fake.name)

    async def cycle(self) -> DecisionResult:
        return await cycle(self.agent, self.account_id)

    def venue_id(self, our_id: str) -> str:
        return venue_client_id(self.fake, our_id)

    def book_order(self, our_id: str) -> BookOrder | None:
        return self.fake.book.order(client_id=self.venue_id(our_id))


@contextlib.asynccontextmanager
async def live_agent(
    venue: VenueName,
    tmp_path: Path,
    *,
    database_url: str | None = None,
    model: FlatThenHold | None = None,
    assets: list[str] | None = None,
    balance: float = 10_000.0,
    **settings: Any,
) -> AsyncIterator[LiveRig]:
    """A fake venue, an agent built on it (TRADING_MODE=live, its market data and orders on the fake) and a live
    testnet account with the fake's credentials; everything closed afterwards."""
    model = model or FlatThenHold()
    with fast_live_requests(), fake_venue(venue, assets, balance=balance) as fake:
        config = live_settings(
            fake,
            database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
            tmp_path=tmp_path,
            **settings,
        )
        if model.at_price is None:
            model.at_price = fake.book.set_price
        agent = await build_agent(config, provider=model)
        try:
            account_id = await add_live_account(agent, fake)
            yield LiveRig(fake, agent, model, account_id, config)
        finally:
            await agent.close()


def venue_client_id(fake: Any, our_id: str) -> str:
    """The client id the venue knows one of our orders by (Hyperliquid: the cloid derived from it)."""
    return cloid_for(our_id) if isinstance(fake, FakeHyperliquidPerps) else our_id


def is_private(fake: Any, request: Recorded) -> bool:
    """A request on the account (signed), as opposed to public market data."""
    if isinstance(fake, FakeHyperliquidPerps):
        body = request.json if isinstance(request.json, dict) else {}
        return request.path == "/exchange" or (request.path == "/info" and body.get("type") in PRIVATE_INFO)
    return "signature" in request.query or request.path.startswith("/sapi/")


def private_requests(fake: Any) -> list[Recorded]:
    return [r for r in list(fake.requests) if is_private(fake, r)]


def order_creates(fake: Any) -> list[Recorded]:
    """Every order-creating request the fake received (Binance: plain and algo; Hyperliquid: `order` actions)."""
    if isinstance(fake, FakeHyperliquidPerps):
        return list(fake.matching("order"))
    return [*fake.matching("POST /fapi/v1/order"), *fake.matching("POST /fapi/v1/algoOrder")]


def is_stop_create(fake: Any, method: str, path: str, query: dict[str, str], body: Any) -> bool:
    """The request placing a stop-loss order."""
    if isinstance(fake, FakeHyperliquidPerps):
        action = body.get("action") if isinstance(body, dict) else None
        if path != "/exchange" or not isinstance(action, dict) or action.get("type") != "order":
            return False
        return any((o.get("t") or {}).get("trigger", {}).get("tpsl") == "sl" for o in action.get("orders", []))
    return method == "POST" and path == "/fapi/v1/algoOrder" and query.get("type") == "STOP_MARKET"


def is_entry_create(fake: Any, method: str, path: str, query: dict[str, str], body: Any) -> bool:
    """The request placing an order that is neither reduce-only nor a trigger (an entry or an increase)."""
    if isinstance(fake, FakeHyperliquidPerps):
        action = body.get("action") if isinstance(body, dict) else None
        if path != "/exchange" or not isinstance(action, dict) or action.get("type") != "order":
            return False
        return any("trigger" not in (o.get("t") or {}) and not o.get("r") for o in action.get("orders", []))
    return method == "POST" and path == "/fapi/v1/order" and query.get("reduceOnly", "false").lower() != "true"


def before_request(
    fake: Any, when: Callable[[str, str, dict[str, str], Any], bool], then: Callable[[], None], *, times: int = 1
) -> None:
    """Call `then` just before the fake processes the next `times` requests that `when` matches (to arm an
    answer-side fault, `lose_answer` / `fail_after`, for one precise request)."""
    original = fake._route
    left = [times]

    def route(method: str, path: str, query: dict[str, str], body: Any) -> Any:
        if left[0] > 0 and when(method, path, query, body):
            left[0] -= 1
            then()
        return original(method, path, query, body)

    fake._route = route


def stops_at(fake: Any, asset: str = "BTC") -> list[BookOrder]:
    """The open protective stops of `asset` at the venue (reduce-only or close-position stop_market orders)."""
    return [o for o in fake.book.open_orders(asset) if o.type == "stop_market" and (o.reduce_only or o.close_position)]


def entries_at(fake: Any) -> list[BookOrder]:
    """Every order that could open or grow a position, ever placed at the venue (not reduce-only, not a stop)."""
    return [
        o
        for o in fake.book.orders()
        if not o.reduce_only and not o.close_position and o.type in ("market", "limit") and o.parent_id is None
    ]


async def db_orders(agent: Agent, account_id: int) -> list[models.Order]:
    async with agent.sessions() as session:
        rows = await session.scalars(
            select(models.Order).where(models.Order.account_id == account_id).order_by(models.Order.id)
        )
        return list(rows)


async def db_positions(agent: Agent, account_id: int, status: str | None = None) -> list[models.Position]:
    async with agent.sessions() as session:
        query = select(models.Position).where(models.Position.account_id == account_id)
        if status is not None:
            query = query.where(models.Position.status == status)
        return list(await session.scalars(query.order_by(models.Position.id)))


async def assert_db_matches_venue(agent: Agent, account_id: int, fake: Any) -> None:
    """The database mirrors the venue: each order of ours is at the venue, open exactly when the venue has it open,
    with the venue's quantity, trigger and fills; the open positions are the venue's (side, size, entry); every open
    order of the venue placed by us is in the database."""
    rows = await db_orders(agent, account_id)
    for row in rows:
        if row.status == "rejected":
            continue
        venue = fake.book.order(client_id=venue_client_id(fake, row.client_order_id))
        assert venue is not None, f"{row.client_order_id} is in the database but not at the venue"
        assert (row.status == "open") == (venue.status == "open"), (row.client_order_id, row.status, venue.status)
        assert row.quantity == pytest.approx(venue.quantity, rel=1e-9) or venue.close_position, row.client_order_id
        if venue.trigger is not None:
            assert row.trigger_price == pytest.approx(venue.trigger, rel=1e-9), row.client_order_id
        if venue.type in ("market", "limit"):
            assert row.filled_quantity == pytest.approx(venue.filled, rel=1e-9), row.client_order_id
    ours = {venue_client_id(fake, r.client_order_id) for r in rows}
    stray = [o for o in fake.book.open_orders() if o.client_id is not None and o.client_id not in ours]
    assert not stray, f"open at the venue, not in the database: {stray}"
    positions = {p.symbol: p for p in await db_positions(agent, account_id, "open")}
    at_venue = {p.asset: p for p in fake.book.positions()}
    assert set(positions) == set(at_venue), (positions, at_venue)
    for asset, venue_position in at_venue.items():
        held = positions[asset]
        assert held.side == ("long" if venue_position.size > 0 else "short")
        assert held.size == pytest.approx(abs(venue_position.size), rel=1e-9)
        assert held.entry_price == pytest.approx(venue_position.entry_price, rel=1e-6)


def no_position_left_unprotected(fake: Any) -> None:
    """Every stretch a position spent without a stop at the venue has ended (none is open now)."""
    spans = fake.book.unprotected_spans()
    assert all(end is not None for _, _, end in spans), f"a position is without a stop at the venue: {spans}"


# ------------------------------------------------------------------------------------------------ the API


@contextlib.asynccontextmanager
async def served(settings: Settings, agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    """The agent's HTTP API over a real socket, as an admin (no loop: the test runs the cycles). The app's shutdown
    closes the agent."""

    async def prebuilt(_s: Settings) -> Agent:
        return agent

    async with (
        serve(create_app(settings, agent_factory=prebuilt)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60, headers={"X-API-Key": ADMIN_KEY}) as client,
    ):
        yield client


async def halt(client: httpx.AsyncClient, rig: LiveRig) -> httpx.Response:
    """The kill switch through the API."""
    return await client.post(f"/api/v1/accounts/{rig.account_id}/halt", json={"reason": "e2e kill switch"})
