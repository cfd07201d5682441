"""Contract tests of the `Exchange` port: every adapter (the paper venue today, the live adapter later) must
pass them, so code above the port can rely on the same behaviour everywhere.

The tests drive an adapter through a `VenueHarness`: the adapter itself (`exchange`), a way to move the
market (`set_price`) and a way to restart the adapter over the same account (`restart`), plus the symbol and
order size to trade. `HARNESSES` lists one factory per adapter and the `harness` fixture runs every test on
each of them.

How a live adapter joins: write a fake venue server (a real HTTP server on 127.0.0.1 in a thread, like
`tests/fakes/openrouter_server.py` for the LLM) that speaks the endpoints the adapter calls through ccxt and
keeps one account's orders, positions and balance, matching orders against a price the test sets. Its
harness factory starts the server, points the adapter at it (ccxt `urls` override), implements `set_price`
by pushing the price to the server and `restart` by building a new adapter against the same server (orders
in flight stay on the venue), and `close` by stopping the server. Add the factory to `HARNESSES`; nothing
else changes. A test that needs a behaviour a venue does not offer should be made to skip through a flag
on the harness, not deleted.

Prices are given relative to `harness.price` so that any market works; `harness.quantity` must be above the
venue's minimum notional at that price and affordable at the harness's balance and leverage, and
`harness.small_quantity` a whole number of lots below the minimum notional.

Flags (behaviour that differs by venue, asserted either way): `duplicate_returns_existing` - a live adapter
answers a duplicate client id with the existing order (the venue refused the repeat: the order is ours), the
paper venue with a rejected order; either way the original is kept and nothing is added.

Live harnesses: `LiveExchange` over the fake Binance USD-M (`FakeBinanceFutures`) and Hyperliquid
(`FakeHyperliquidPerps`) servers, real sockets and the real ccxt client; `set_price` pins the fake's book price,
`restart` builds a new adapter on the same account and gives it the client ids the old one knew (as the engine
does from its database: Hyperliquid's cloids are hashes of them). A market move is a new moment: `set_price` calls
`refresh()`, as the engine does at each cycle (a live adapter keeps its reads until its next write or `refresh()`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from app.core.clock import ManualClock
from app.services.exchange.base import FEE_PROFILES, Exchange, ExchangeError, OrderRequest, OrderSide
from app.services.exchange.live import LiveExchange, VenueCredentials, round_down
from app.services.exchange.paper import PaperVenue
from app.services.market_data.base import MarketRules
from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps


class VenueHarness(Protocol):
    """One adapter under contract, with the controls the tests need beyond the port."""

    @property
    def exchange(self) -> Exchange: ...  # the adapter (after `restart`, the new one)

    symbol: str
    price: float  # the market price when the test starts
    quantity: float  # an order size above the minimum notional, affordable with the balance
    small_quantity: float  # a size the venue accepts by lot size but rejects by minimum notional
    balance: float  # the account's starting wallet balance
    leverage: float
    duplicate_returns_existing: bool  # see the module docstring

    async def set_price(self, price: float) -> None: ...

    async def restart(self) -> Exchange: ...

    async def close(self) -> None: ...


@dataclass
class PaperHarness:
    """The paper venue: the market moves through `set_mark_price`; a restart is snapshot -> restore."""

    exchange: PaperVenue
    clock: ManualClock
    rules: dict[str, MarketRules]
    symbol: str = "BTC"
    price: float = 100_000.0
    quantity: float = 0.01
    small_quantity: float = 0.0005  # 50 USD < 100
    balance: float = 1_000.0
    leverage: float = 5.0
    duplicate_returns_existing: bool = False

    async def set_price(self, price: float) -> None:
        self.exchange.set_mark_price(self.symbol, price)
        self.exchange.refresh()

    async def restart(self) -> Exchange:
        fresh = PaperVenue(initial_balance=0.0, rules=self.rules, fees=self.exchange.fees, clock=self.clock)
        fresh.restore(**self.exchange.snapshot())
        self.exchange = fresh
        return fresh

    async def close(self) -> None:
        return None


def paper_harness(venue: str) -> Callable[[], Awaitable[VenueHarness]]:
    async def build() -> VenueHarness:
        rules = {"BTC": MarketRules("BTC", "BTC/USDT:USDT", 0.1, 0.0001, 100.0, 125.0)}
        clock = ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
        fees = FEE_PROFILES[venue]
        exchange = PaperVenue(initial_balance=1_000.0, rules=rules, fees=fees, clock=clock)
        harness = PaperHarness(exchange, clock, rules)
        await exchange.set_leverage(harness.symbol, harness.leverage)
        await harness.set_price(harness.price)
        return harness

    return build


@dataclass
class LiveHarness:
    """`LiveExchange` on a fake venue server (a `FakeBinanceFutures` or `FakeHyperliquidPerps`, running)."""

    fake: Any
    exchange: LiveExchange
    make: Callable[[], LiveExchange]
    price: float
    quantity: float
    small_quantity: float
    symbol: str = "BTC"
    balance: float = 1_000.0
    leverage: float = 5.0
    duplicate_returns_existing: bool = True

    async def set_price(self, price: float) -> None:
        self.fake.book.set_price(self.symbol, price)
        self.exchange.refresh()  # a new moment: the adapter's kept reads are of the old one

    async def restart(self) -> Exchange:
        fresh = self.make()
        await fresh.start()
        fresh.register_client_ids(self.exchange.client_ids)
        await self.exchange.close()
        self.exchange = fresh
        return fresh

    async def close(self) -> None:
        try:
            await self.exchange.close()
        finally:
            self.fake.__exit__(None, None, None)


def live_harness(venue: str) -> Callable[[], Awaitable[VenueHarness]]:
    async def build() -> VenueHarness:
        fake: Any
        if venue == "hyperliquid":
            fake = FakeHyperliquidPerps(["BTC"], balance=1_000.0).__enter__()
            credentials = VenueCredentials(fake.WALLET, fake.PRIVATE_KEY)
        else:
            fake = FakeBinanceFutures(["BTC"], balance=1_000.0).__enter__()
            credentials = VenueCredentials(fake.API_KEY, fake.API_SECRET)

        def make() -> LiveExchange:
            return LiveExchange(
                venue,  # type: ignore[arg-type]
                credentials,
                network="testnet",
                assets=["BTC"],
                api_url=fake.base_url,
                timeout_ms=5_000,
                lookup_backoff_s=0.05,
                rate_limit_ms=1.0,
            )

        exchange = make()
        try:
            await exchange.start()
            rules = await exchange.market_rules("BTC")
            # near the fake's own market price (Hyperliquid's market orders are capped 5% from the venue's mark),
            # round so that the tests' price multiples fit the venue's precision (Hyperliquid: 5 significant figures)
            price = round(fake.book.mark("BTC"), -3)
            quantity = round_down(1_000.0 / price, rules.lot_size)  # 1000 USD notional: 200 of margin at 5x
            small = round_down(rules.min_notional / 2 / price, rules.lot_size) or rules.lot_size
            assert 0 < small * price < rules.min_notional, "no whole lot below the minimum notional at this price"
            harness = LiveHarness(fake, exchange, make, price, quantity, small)
            await exchange.set_leverage(harness.symbol, harness.leverage)
            await harness.set_price(price)
        except BaseException:
            await exchange.close()
            fake.__exit__(None, None, None)
            raise
        return harness

    return build


HARNESSES: dict[str, Callable[[], Awaitable[VenueHarness]]] = {
    "paper-binanceusdm": paper_harness("binanceusdm"),
    "paper-hyperliquid": paper_harness("hyperliquid"),
    "live-binanceusdm": live_harness("binanceusdm"),
    "live-hyperliquid": live_harness("hyperliquid"),
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[VenueHarness]:
    built = await HARNESSES[request.param]()
    try:
        yield built
    finally:
        await built.close()


def market(
    h: VenueHarness, cid: str, side: OrderSide, qty: float | None = None, reduce_only: bool = False
) -> OrderRequest:
    return OrderRequest(cid, h.symbol, side, "market", qty if qty is not None else h.quantity, reduce_only=reduce_only)


def stop(h: VenueHarness, cid: str, side: OrderSide, trigger: float) -> OrderRequest:
    return OrderRequest(cid, h.symbol, side, "stop_market", h.quantity, trigger, reduce_only=True, reason="stop_loss")


def limit(h: VenueHarness, cid: str, side: OrderSide, price: float, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(cid, h.symbol, side, "limit", h.quantity, reduce_only=reduce_only, price=price)


async def open_long(h: VenueHarness) -> None:
    order = await h.exchange.place_order(market(h, "entry", "buy"))
    assert order.status == "filled", order.reject_reason


# ---- orders -------------------------------------------------------------------------------------------


async def test_market_order_fills_and_opens_a_position(harness: VenueHarness) -> None:
    ex = harness.exchange
    order = await ex.place_order(market(harness, "entry", "buy"))
    assert order.status == "filled"
    assert order.filled_quantity == pytest.approx(harness.quantity)
    assert order.avg_fill_price == pytest.approx(harness.price, rel=0.01)
    [position] = await ex.fetch_positions()
    assert (position.symbol, position.side) == (harness.symbol, "long")
    assert position.size == pytest.approx(harness.quantity)
    assert position.liquidation_price is None or position.liquidation_price < harness.price
    [fill] = await ex.fetch_fills()
    assert (fill.client_order_id, fill.side, fill.reason) == ("entry", "buy", "entry")
    assert fill.fee > 0


async def test_stop_rests_then_triggers_and_closes_the_position(harness: VenueHarness) -> None:
    ex = harness.exchange
    await open_long(harness)
    placed = await ex.place_order(stop(harness, "sl", "sell", harness.price * 0.97))
    assert placed.status == "open"
    assert [o.client_order_id for o in await ex.fetch_open_orders(harness.symbol)] == ["sl"]
    await harness.set_price(harness.price * 0.99)
    assert [o.client_order_id for o in await ex.fetch_open_orders()] == ["sl"]
    await harness.set_price(harness.price * 0.96)
    order = await ex.fetch_order(harness.symbol, "sl")
    assert order is not None
    assert order.status == "filled"
    assert await ex.fetch_positions() == []
    assert await ex.fetch_open_orders() == []
    assert (await ex.fetch_fills())[-1].reason == "stop_loss"


async def test_limit_order_rests_until_the_price_reaches_it(harness: VenueHarness) -> None:
    ex = harness.exchange
    placed = await ex.place_order(limit(harness, "lim", "buy", harness.price * 0.98))
    assert placed.status == "open"
    assert placed.price == pytest.approx(harness.price * 0.98, rel=1e-6)
    assert await ex.fetch_positions() == []
    await harness.set_price(harness.price * 0.97)
    order = await ex.fetch_order(harness.symbol, "lim")
    assert order is not None
    assert order.status == "filled"
    assert order.avg_fill_price is not None
    assert order.avg_fill_price <= harness.price * 0.98 + 1e-6
    [position] = await ex.fetch_positions()
    assert position.side == "long"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown symbol", "unknown symbol"),
        ("min notional", "minimum"),
        ("insufficient margin", "insufficient"),
        ("reduce-only without a position", "reduce"),
    ],
)
async def test_rejections_come_back_as_orders_with_a_reason(harness: VenueHarness, case: str, needle: str) -> None:
    ex = harness.exchange
    request = {
        "unknown symbol": replace(market(harness, "r", "buy"), symbol="NOPE"),
        "min notional": market(harness, "r", "buy", harness.small_quantity),
        "insufficient margin": market(harness, "r", "buy", harness.balance * harness.leverage * 2 / harness.price),
        "reduce-only without a position": market(harness, "r", "sell", reduce_only=True),
    }[case]
    order = await ex.place_order(request)
    assert order.status == "rejected"
    assert needle in (order.reject_reason or "").lower()
    assert await ex.fetch_positions() == []
    balance = await ex.fetch_balance()
    assert balance.wallet_balance == pytest.approx(harness.balance)


async def test_duplicate_client_order_id_is_rejected_and_the_original_kept(harness: VenueHarness) -> None:
    ex = harness.exchange
    await open_long(harness)
    again = await ex.place_order(market(harness, "entry", "buy", harness.quantity * 2))
    if harness.duplicate_returns_existing:  # the venue refused the repeat: the order it has is ours
        assert (again.client_order_id, again.status) == ("entry", "filled")
        assert again.quantity == pytest.approx(harness.quantity)
    else:
        assert again.status == "rejected"
        assert "duplicate" in (again.reject_reason or "")
    original = await ex.fetch_order(harness.symbol, "entry")
    assert original is not None
    assert (original.status, original.quantity) == ("filled", pytest.approx(harness.quantity))
    [position] = await ex.fetch_positions()
    assert position.size == pytest.approx(harness.quantity)


async def test_cancel_open_order_and_errors(harness: VenueHarness) -> None:
    ex = harness.exchange
    await open_long(harness)
    await ex.place_order(stop(harness, "sl", "sell", harness.price * 0.95))
    canceled = await ex.cancel_order(harness.symbol, "sl")
    assert canceled.status == "canceled"
    assert await ex.fetch_open_orders() == []
    with pytest.raises(ExchangeError):
        await ex.cancel_order(harness.symbol, "sl")  # no longer open
    with pytest.raises(ExchangeError):
        await ex.cancel_order(harness.symbol, "never-sent")
    await harness.set_price(harness.price * 0.90)  # a canceled stop never fires (5x: liquidation is lower)
    assert len(await ex.fetch_positions()) == 1


async def test_fetch_order_by_client_order_id(harness: VenueHarness) -> None:
    ex = harness.exchange
    assert await ex.fetch_order(harness.symbol, "unknown") is None
    await ex.place_order(limit(harness, "lim", "buy", harness.price * 0.9))
    order = await ex.fetch_order(harness.symbol, "lim")
    assert order is not None
    assert (order.client_order_id, order.status, order.type, order.side) == ("lim", "open", "limit", "buy")
    assert order.venue_order_id
    rejected = await ex.place_order(replace(market(harness, "rej", "buy"), symbol="NOPE"))
    assert rejected.status == "rejected"


async def test_positions_and_balance_are_consistent(harness: VenueHarness) -> None:
    ex = harness.exchange
    await open_long(harness)
    await ex.place_order(limit(harness, "lim", "buy", harness.price * 0.9))
    await harness.set_price(harness.price * 1.01)
    balance = await ex.fetch_balance()
    positions = await ex.fetch_positions()
    assert balance.equity == pytest.approx(balance.wallet_balance + balance.unrealized_pnl)
    assert balance.unrealized_pnl == pytest.approx(sum(p.unrealized_pnl for p in positions), rel=1e-6, abs=1e-6)
    assert balance.unrealized_pnl > 0
    assert balance.margin_used >= sum(p.margin for p in positions) - 1e-9  # plus what resting orders hold
    assert balance.available <= balance.wallet_balance - sum(p.margin for p in positions) + 1e-9
    await ex.place_order(market(harness, "out", "sell", reduce_only=True))
    await ex.cancel_order(harness.symbol, "lim")
    fills = await ex.fetch_fills()
    flat = await ex.fetch_balance()
    assert flat.unrealized_pnl == 0.0
    assert flat.margin_used == pytest.approx(0.0, abs=1e-9)
    assert flat.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills))
    assert flat.fees_paid == pytest.approx(sum(f.fee for f in fills))
    assert flat.wallet_balance == pytest.approx(
        harness.balance + flat.realized_pnl - flat.fees_paid - flat.funding_paid + flat.funding_received
    )
    assert flat.available == pytest.approx(flat.wallet_balance)


async def test_restart_with_orders_in_flight(harness: VenueHarness) -> None:
    ex = harness.exchange
    await open_long(harness)
    await ex.place_order(stop(harness, "sl", "sell", harness.price * 0.97))
    await ex.place_order(limit(harness, "tp", "sell", harness.price * 1.05, reduce_only=True))
    await ex.place_order(limit(harness, "add", "buy", harness.price * 0.99))
    before = (await ex.fetch_balance(), await ex.fetch_positions(), await ex.fetch_open_orders())

    restarted = await harness.restart()
    assert restarted is not ex
    assert await restarted.fetch_balance() == before[0]
    assert await restarted.fetch_positions() == before[1]
    assert [
        (o.client_order_id, o.venue_order_id, o.price, o.trigger_price) for o in await restarted.fetch_open_orders()
    ] == [(o.client_order_id, o.venue_order_id, o.price, o.trigger_price) for o in before[2]]
    await harness.set_price(harness.price * 0.985)  # the resting buy limit fills after the restart
    added = await restarted.fetch_order(harness.symbol, "add")
    assert added is not None
    assert added.status == "filled"
    [position] = await restarted.fetch_positions()
    assert position.size == pytest.approx(2 * harness.quantity)
    await harness.set_price(harness.price * 0.96)  # ... and the stop still fires
    stop_order = await restarted.fetch_order(harness.symbol, "sl")
    assert stop_order is not None
    assert stop_order.status == "filled"
    fresh = await restarted.place_order(market(harness, "after", "buy"))
    assert fresh.status == "filled"
    assert fresh.venue_order_id not in {o.venue_order_id for o in before[2]}
