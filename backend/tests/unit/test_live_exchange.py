"""`LiveExchange` (the ccxt adapter): the pure parts (ids, rounding, error classes, secrets) and the outcome
policy over real sockets against the fake venues."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import ccxt.async_support as ccxt
import pytest

from app.core.clock import ManualClock
from app.services.exchange.base import ExchangeError, ExchangeUnavailableError, OrderRequest
from app.services.exchange.live import (
    READ_CACHE_S,
    LiveExchange,
    OutcomeUnknownError,
    RateLimitedError,
    VenueCredentials,
    cloid_for,
    reset_rate_limits,
    round_down,
)
from app.services.exchange.live_errors import classify, scrub
from app.services.execution.executor import ExecutionReport, OrderRun
from app.services.execution.watchdog import StopWatchdog
from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.exchange_servers import FakeBinance, FakeHyperliquid
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps
from tests.fakes.venue_book import BookOrder

SECRET = "s3cr3t-0123456789abcdefABCDEF"
KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"  # 64 hex, like a private key
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_rate_limit_leaks() -> Iterator[None]:
    """Rate-limit blocks are shared by every adapter of a venue and host: none carries over between tests."""
    reset_rate_limits()
    yield
    reset_rate_limits()


# ---- pure parts ----------------------------------------------------------------------------------------


def test_cloid_is_128_bit_hex_derived_from_the_client_id() -> None:
    cloid = cloid_for("a3-d1207-BTC-sl")
    assert re.fullmatch(r"0x[0-9a-f]{32}", cloid)
    assert cloid == cloid_for("a3-d1207-BTC-sl")
    assert cloid != cloid_for("a3-d1207-BTC-sl2")


@pytest.mark.parametrize(
    ("quantity", "step", "expected"),
    [(0.3, 0.1, 0.3), (0.0123, 0.001, 0.012), (0.01, 0.0001, 0.01), (0.00049, 0.001, 0.0), (7.0, 1.0, 7.0)],
)
def test_round_down_to_the_lot(quantity: float, step: float, expected: float) -> None:
    assert round_down(quantity, step) == expected


def test_credentials_repr_masks_both_fields() -> None:
    creds = VenueCredentials(api_key="ABCDEFGHIJKLMNOP", api_secret=SECRET)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in text
        assert "ABCDEFGHIJKLMNOP" not in text
    exchange = LiveExchange("binanceusdm", creds, network="testnet", assets=["BTC"])
    assert SECRET not in repr(exchange) and "ABCDEFGHIJKLMNOP" not in repr(exchange)


def test_scrub_removes_signatures_keys_and_secrets() -> None:
    text = (
        f"binanceusdm POST https://x/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=abc123def"
        f" headers X-MBX-APIKEY: MYKEY42 privateKey={KEY} secret {SECRET}"
    )
    clean = scrub(text, [SECRET])
    assert "abc123def" not in clean and "MYKEY42" not in clean and KEY not in clean and SECRET not in clean
    assert "symbol=BTCUSDT" in clean  # the rest stays readable


@pytest.mark.parametrize(
    ("exc", "kind", "needle"),
    [
        (
            ccxt.InsufficientFunds('binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'),
            "refused",
            "insufficient",
        ),
        (ccxt.OperationFailed('binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'), "refused", "insufficient"),
        (
            ccxt.InvalidOrder('binanceusdm {"code":-4164,"msg":"Order\'s notional must be no smaller than 100"}'),
            "refused",
            "minimum notional of 100 USDT",
        ),
        (ccxt.InvalidOrder('binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}'), "refused", "reduce"),
        (
            ccxt.OperationRejected(
                'binanceusdm {"code":-4118,"msg":"ReduceOnly Order Failed. Please check your existing position and '
                'open orders."}'
            ),
            "refused",
            "reduce-only order refused",
        ),
        (ccxt.BadRequest('binanceusdm {"code":-4045,"msg":"Reach max stop order limit."}'), "refused", "stop orders"),
        (
            ccxt.PermissionDenied(
                'binanceusdm {"code":-4400,"msg":"Futures Trading Quantitative Rules violated, only reduceOnly order '
                'is allowed, please try again later."}'
            ),
            "refused",
            "only reduce-only",
        ),
        (
            ccxt.OrderImmediatelyFillable('binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}'),
            "refused",
            "would trigger immediately",
        ),
        (
            ccxt.InvalidOrder('binanceusdm {"code":-4116,"msg":"ClientOrderId is duplicated."}'),
            "duplicate",
            "duplicate",
        ),
        (
            ccxt.InvalidNonce(
                'binanceusdm {"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}'
            ),
            "clock",
            "clock",
        ),
        (ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}'), "not_found", "not exist"),
        (
            ccxt.AuthenticationError('binanceusdm {"code":-2015,"msg":"Invalid API-key, IP, or permissions"}'),
            "auth",
            "API key",
        ),
        (ccxt.RequestTimeout("binanceusdm POST https://x/fapi/v1/order request timeout"), "ambiguous", "Timeout"),
        (ccxt.ExchangeNotAvailable("binanceusdm 503 Service Unavailable"), "ambiguous", "503"),
        (ccxt.RateLimitExceeded('binanceusdm {"code":-1003,"msg":"Too many requests"}'), "rate_limited", "rate"),
        (ccxt.DDoSProtection("binanceusdm 418 I'm a teapot"), "rate_limited", "rate"),
    ],
)
def test_binance_errors_are_classified(exc: Exception, kind: str, needle: str) -> None:
    got = classify(exc, "binanceusdm", notional="100 USDT")
    assert got.kind == kind
    assert needle.lower() in got.reason.lower()


@pytest.mark.parametrize(
    ("message", "cls", "kind", "needle"),
    [
        ("Insufficient margin to place order. asset=0", ccxt.InsufficientFunds, "refused", "insufficient margin"),
        ("Order must have minimum value of $10. asset=0", ccxt.InvalidOrder, "refused", "minimum notional of 10 USDC"),
        ("Reduce only order would increase position. asset=0", ccxt.InvalidOrder, "refused", "reduce-only"),
        (
            "Order could not immediately match against any resting orders. asset=0",
            ccxt.InvalidOrder,
            "refused",
            "liquidity",
        ),
        ("Order was never placed, already canceled, or filled. asset=0", ccxt.OrderNotFound, "not_found", "unknown"),
        ("User or API Wallet 0xabc does not exist.", ccxt.InvalidOrder, "auth", "wallet"),
        ('{"status":"unknownOid"}', ccxt.OrderNotFound, "not_found", "not found"),
    ],
)
def test_hyperliquid_errors_are_classified(message: str, cls: type[Exception], kind: str, needle: str) -> None:
    got = classify(cls(f"hyperliquid {message}"), "hyperliquid", notional="10 USDC")
    assert got.kind == kind
    assert needle.lower() in got.reason.lower()


def test_classified_reasons_never_carry_secrets() -> None:
    exc = ccxt.ExchangeNotAvailable(f"binanceusdm GET https://x/fapi/v3/account?timestamp=1&signature=f00d {SECRET}")
    reason = classify(exc, "binanceusdm", secrets=[SECRET]).reason
    assert SECRET not in reason and "f00d" not in reason


def test_urls_point_at_the_given_api_url_and_testnets_by_default() -> None:
    creds = VenueCredentials("k" * 16, SECRET)
    binance = LiveExchange("binanceusdm", creds, network="testnet", assets=["BTC"], api_url="http://127.0.0.1:9/")
    urls = binance._ex.urls["api"]
    assert urls["fapiPrivate"] == "http://127.0.0.1:9/fapi/v1"
    assert urls["fapiPrivateV3"] == "http://127.0.0.1:9/fapi/v3"
    assert all(str(u).startswith("http://127.0.0.1:9/") for u in urls.values())
    demo = LiveExchange("binanceusdm", creds, network="testnet", assets=["BTC"])
    assert demo._ex.urls["api"]["fapiPrivate"].startswith("https://demo-fapi.binance.com")
    main = LiveExchange("binanceusdm", creds, network="mainnet", assets=["BTC"])
    assert main._ex.urls["api"]["fapiPrivate"].startswith("https://fapi.binance.com")
    hl_creds = VenueCredentials("0x" + "1" * 40, "0x" + KEY)
    hl_test = LiveExchange("hyperliquid", hl_creds, network="testnet", assets=["BTC"])
    assert hl_test._ex.urls["api"]["private"] == "https://api.hyperliquid-testnet.xyz"
    hl_fake = LiveExchange("hyperliquid", hl_creds, network="testnet", assets=["BTC"], api_url="http://127.0.0.1:9")
    assert set(hl_fake._ex.urls["api"].values()) == {"http://127.0.0.1:9"}
    assert hl_fake._ex.options["sandboxMode"] is True  # signatures for testnet (phantom agent source "b")


# ---- over the public fakes (markets, rate limit): no private endpoint needed ------------------------------


@pytest.fixture
async def binance_public() -> AsyncIterator[tuple[LiveExchange, FakeBinance, ManualClock]]:
    clock = ManualClock(T0)
    with FakeBinance(["BTC", "ETH"]) as fake:
        exchange = LiveExchange(
            "binanceusdm",
            VenueCredentials("k" * 16, SECRET),
            network="testnet",
            assets=["BTC", "ETH"],
            api_url=fake.base_url,
            wall_clock=clock,
            lookup_backoff_s=0.0,
        )
        await exchange._ex.load_markets()
        try:
            yield exchange, fake, clock
        finally:
            await exchange.close()


def _order(cid: str, quantity: float, symbol: str = "BTC", **kw: object) -> OrderRequest:
    return OrderRequest(cid, symbol, "buy", "market", quantity, **kw)  # type: ignore[arg-type]


async def test_rules_come_from_the_venue(binance_public: tuple[LiveExchange, FakeBinance, ManualClock]) -> None:
    exchange, _, _ = binance_public
    rules = await exchange.market_rules("BTC")
    assert rules.market_symbol == "BTC/USDT:USDT"
    assert rules.tick_size > 0 and rules.lot_size > 0 and rules.min_notional > 0 and rules.max_leverage >= 1


async def test_orders_refused_locally_are_not_sent(
    binance_public: tuple[LiveExchange, FakeBinance, ManualClock],
) -> None:
    exchange, fake, _ = binance_public
    rules = await exchange.market_rules("BTC")
    tiny = await exchange.place_order(_order("a1-d1-BTC-en", rules.lot_size * 0.4))
    assert tiny.status == "rejected"
    assert "rounds to 0" in (tiny.reject_reason or "")
    unknown = await exchange.place_order(_order("a1-d1-NOPE-en", 1.0, symbol="NOPE"))
    assert unknown.status == "rejected"
    assert "unknown symbol" in (unknown.reject_reason or "")
    no_price = await exchange.place_order(OrderRequest("a1-d2-BTC-en", "BTC", "buy", "limit", 0.01))
    assert (no_price.status, no_price.reject_reason) == ("rejected", "a limit order needs a price")
    assert not [r for r in fake.requests if r.path.endswith(("/order", "/algoOrder"))]


async def test_rate_limit_blocks_every_request_until_the_wait_has_passed(
    binance_public: tuple[LiveExchange, FakeBinance, ManualClock],
) -> None:
    exchange, fake, clock = binance_public
    await exchange.market_rules("BTC")
    fake.fail(429, {"code": -1003, "msg": "Too many requests."}, headers={"Retry-After": "12"}, match="premiumIndex")
    with pytest.raises(ExchangeUnavailableError, match=r"rate limited.*retry after 12 s"):
        await exchange.place_order(_order("a1-d1-BTC-en", 0.01))
    sent = len(fake.requests)
    clock.advance(timedelta(seconds=5))
    with pytest.raises(ExchangeUnavailableError, match="retry after 7 s"):
        await exchange.place_order(_order("a1-d1-BTC-en", 0.01))
    with pytest.raises(ExchangeUnavailableError, match="rate limited"):
        await exchange.fetch_open_orders()
    assert len(fake.requests) == sent  # nothing reached the venue during the wait
    clock.advance(timedelta(seconds=8))
    assert await exchange._mark(await exchange.market_rules("BTC")) > 0
    assert len(fake.requests) == sent + 1


async def test_hyperliquid_markets_and_precision_over_the_public_fake() -> None:
    with FakeHyperliquid(["BTC"]) as fake:
        exchange = LiveExchange(
            "hyperliquid",
            VenueCredentials("0x" + "1" * 40, "0x" + KEY),
            network="testnet",
            assets=["BTC"],
            api_url=fake.base_url,
        )
        try:
            await exchange._ex.load_markets()
            rules = await exchange.market_rules("BTC")
            assert rules.market_symbol == "BTC/USDC:USDC"
            assert rules.max_leverage == 40
            assert exchange._price(rules, 98_765.4321) == 98_765.0  # 5 significant figures
        finally:
            await exchange.close()


# ---- the outcome policy on the trading fakes (real sockets, the real ccxt client) ----------------------------

VENUES = ["binanceusdm", "hyperliquid"]
CREATE = {"binanceusdm": "POST /fapi/v1/order", "hyperliquid": "order"}
CREATE_STOP = {"binanceusdm": "POST /fapi/v1/algoOrder", "hyperliquid": "order"}


def _fake(venue: str) -> FakeBinanceFutures | FakeHyperliquidPerps:
    if venue == "binanceusdm":
        return FakeBinanceFutures(["BTC"], balance=1_000.0)
    return FakeHyperliquidPerps(["BTC"], balance=1_000.0)


def _adapter(venue: str, fake: FakeBinanceFutures | FakeHyperliquidPerps, **kw: object) -> LiveExchange:
    if isinstance(fake, FakeBinanceFutures):
        credentials = VenueCredentials(fake.API_KEY, fake.API_SECRET)
    else:
        credentials = VenueCredentials(fake.WALLET, fake.PRIVATE_KEY)
    options: dict[str, object] = {
        "timeout_ms": 1_000,
        "lookup_backoff_s": 0.05,
        "rate_limit_ms": 1.0,
        "assets": ["BTC"],
    } | kw
    return LiveExchange(venue, credentials, network="testnet", api_url=fake.base_url, **options)  # type: ignore[arg-type]


class Live:
    """An adapter on a running trading fake."""

    def faults_left(self) -> int:
        """Faults scripted to strike after processing that have not struck yet."""
        fake = self.fake
        return len(fake._post) if isinstance(fake, FakeBinanceFutures) else len(fake._post_faults)

    def __init__(self, venue: str, fake: FakeBinanceFutures | FakeHyperliquidPerps, exchange: LiveExchange) -> None:
        self.venue, self.fake, self.exchange = venue, fake, exchange
        self.mark = fake.book.mark("BTC")
        self.quantity = round_down(1_000.0 / self.mark, 0.001)  # 1000 USD, a whole lot on both venues

    def created(self, cid: str) -> list[BookOrder]:
        """The book's orders with this client id (Hyperliquid: its cloid), children of triggers left out."""
        key = cid if self.venue == "binanceusdm" else cloid_for(cid)
        return [o for o in self.fake.book.orders() if o.client_id == key and o.parent_id is None]

    def market(self, cid: str, side: str = "buy", **kw: object) -> OrderRequest:
        return OrderRequest(cid, "BTC", side, "market", self.quantity, **kw)  # type: ignore[arg-type]

    def stop(self, cid: str, trigger: float, kind: str = "stop_market", reduce_only: bool = True) -> OrderRequest:
        reason = "stop_loss" if kind == "stop_market" else "take_profit"
        return OrderRequest(cid, "BTC", "sell", kind, self.quantity, trigger, reduce_only, reason)  # type: ignore[arg-type]


@pytest.fixture(params=VENUES)
async def live(request: pytest.FixtureRequest) -> AsyncIterator[Live]:
    venue = str(request.param)
    with _fake(venue) as fake:
        exchange = _adapter(venue, fake)
        try:
            await exchange.start()
            await exchange.set_leverage("BTC", 5)
            yield Live(venue, fake, exchange)
        finally:
            await exchange.close()


async def test_a_lost_answer_is_resolved_by_client_id_and_never_sent_again(live: Live) -> None:
    live.fake.lose_answer(CREATE[live.venue])
    order = await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    assert live.faults_left() == 0
    assert (order.client_order_id, order.status) == ("a1-d1-BTC-en", "filled")
    assert order.filled_quantity == pytest.approx(live.quantity)
    assert len(live.fake.matching(CREATE[live.venue])) == 1  # one create request: the order was not sent again
    assert len(live.created("a1-d1-BTC-en")) == 1
    [position] = await live.exchange.fetch_positions()
    assert position.size == pytest.approx(live.quantity)


async def test_a_5xx_after_processing_is_resolved_by_client_id(live: Live) -> None:
    live.fake.fail_after(CREATE_STOP[live.venue], status=503)
    await live.exchange.place_order(live.market("a1-d1-BTC-en"))  # Hyperliquid: this create takes the fault
    if live.venue == "binanceusdm":
        assert len(live.created("a1-d1-BTC-en")) == 1
    else:
        live.fake.fail_after("order", status=500)
    order = await live.exchange.place_order(live.stop("a1-d1-BTC-sl", live.mark * 0.9))
    assert live.faults_left() == 0
    assert (order.client_order_id, order.status, order.type) == ("a1-d1-BTC-sl", "open", "stop_market")
    assert len(live.created("a1-d1-BTC-sl")) == 1
    assert len(live.created("a1-d1-BTC-en")) == 1


async def test_an_order_the_venue_never_got_is_an_unknown_outcome_not_a_resend(live: Live) -> None:
    body = {"code": -1001, "msg": "Internal error."} if live.venue == "binanceusdm" else None
    live.fake.fail(503, body, match=CREATE[live.venue])  # refused before processing: nothing was created
    live.exchange._lookup_attempts = 2
    with pytest.raises(OutcomeUnknownError, match=r"outcome unknown for a1-d1-BTC-en.*never sent again") as unknown:
        await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    assert unknown.value.client_order_id == "a1-d1-BTC-en"
    assert len(live.fake.matching(CREATE[live.venue])) == 1
    assert live.created("a1-d1-BTC-en") == []


async def test_a_duplicate_client_id_returns_the_existing_order(live: Live) -> None:
    first = await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    again = await live.exchange.place_order(replace(live.market("a1-d1-BTC-en"), quantity=live.quantity * 2))
    assert (again.client_order_id, again.venue_order_id, again.status) == (
        "a1-d1-BTC-en",
        first.venue_order_id,
        "filled",
    )
    assert again.quantity == pytest.approx(live.quantity)
    stop = await live.exchange.place_order(live.stop("a1-d1-BTC-sl", live.mark * 0.9))
    repeat = await live.exchange.place_order(live.stop("a1-d1-BTC-sl", live.mark * 0.8))
    assert (repeat.venue_order_id, repeat.status, repeat.trigger_price) == (
        stop.venue_order_id,
        "open",
        stop.trigger_price,
    )
    assert len(live.created("a1-d1-BTC-en")) == len(live.created("a1-d1-BTC-sl")) == 1
    [position] = await live.exchange.fetch_positions()
    assert position.size == pytest.approx(live.quantity)


async def test_a_rate_limit_holds_every_request_until_its_wait_has_passed(live: Live) -> None:
    clock = ManualClock(T0)
    live.exchange._clock = clock
    if live.venue == "binanceusdm":
        body = {"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."}
        live.fake.fail(429, body, headers={"Retry-After": "12"}, match=CREATE[live.venue])
        wait = 12
    else:
        assert isinstance(live.fake, FakeHyperliquidPerps)
        live.fake.rate_limit("order")  # a bare 429
        wait = 10  # DEFAULT_RATE_LIMIT_WAIT_S
    with pytest.raises(RateLimitedError, match=rf"rate limited: retry after {wait} s") as limited:
        await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    assert limited.value.retry_after_s == wait
    sent = len(live.fake.requests)
    clock.advance(timedelta(seconds=wait - 1))
    with pytest.raises(ExchangeUnavailableError, match="retry after 1 s"):
        await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    with pytest.raises(ExchangeUnavailableError, match="rate limited"):
        await live.exchange.fetch_positions()
    assert len(live.fake.requests) == sent  # nothing reached the venue while waiting
    assert live.created("a1-d1-BTC-en") == []  # the refused create was not processed
    clock.advance(timedelta(seconds=1))
    order = await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    assert order.status == "filled"


async def test_stops_are_reduce_only_and_their_fills_carry_their_reason(live: Live) -> None:
    ex = live.exchange
    await ex.place_order(live.market("a1-d1-BTC-en"))
    stop = await ex.place_order(live.stop("a1-d1-BTC-sl", live.mark * 0.97, reduce_only=False))
    target = await ex.place_order(live.stop("a1-d1-BTC-tp", live.mark * 1.05, "take_profit_market"))
    assert (stop.status, stop.reduce_only, target.status) == ("open", True, "open")
    [book_stop] = live.created("a1-d1-BTC-sl")
    assert (book_stop.type, book_stop.reduce_only, book_stop.trigger) == ("stop_market", True, stop.trigger_price)
    assert len(live.fake.matching(CREATE_STOP[live.venue])) >= 2
    assert {o.client_order_id for o in await ex.fetch_open_orders("BTC")} == {"a1-d1-BTC-sl", "a1-d1-BTC-tp"}
    live.fake.book.set_price("BTC", live.mark * 0.96)
    ex.refresh()  # a new moment (the engine's next cycle): the kept reads are of the last one
    fired = await ex.fetch_order("BTC", "a1-d1-BTC-sl")
    assert fired is not None
    assert (fired.status, fired.filled_quantity) == ("filled", pytest.approx(live.quantity))
    assert fired.avg_fill_price == pytest.approx(live.mark * 0.96, rel=1e-4)
    canceled = await ex.fetch_order("BTC", "a1-d1-BTC-tp")  # the position is gone: the venue dropped it
    assert canceled is not None and canceled.status == "canceled"
    fills = await ex.fetch_fills()
    assert [(f.client_order_id, f.reason) for f in fills] == [("a1-d1-BTC-en", "entry"), ("a1-d1-BTC-sl", "stop_loss")]
    assert fills[1].realized_pnl < 0 and all(f.fee > 0 for f in fills)
    assert await ex.fetch_positions() == []
    assert await ex.fetch_open_orders() == []
    balance = await ex.fetch_balance()
    assert balance.realized_pnl == pytest.approx(fills[1].realized_pnl)
    assert balance.wallet_balance == pytest.approx(1_000.0 + balance.realized_pnl - balance.fees_paid)


async def test_a_restarted_adapter_sees_the_orders_and_maps_ids_back(live: Live) -> None:
    await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    await live.exchange.place_order(live.stop("a1-d1-BTC-sl", live.mark * 0.97))
    fresh = _adapter(live.venue, live.fake)
    try:
        await fresh.start()
        [before] = await fresh.fetch_open_orders()
        if live.venue == "hyperliquid":  # a cloid is a hash: our id comes back once the database has told us
            assert before.client_order_id == cloid_for("a1-d1-BTC-sl")
        fresh.register_client_ids(["a1-d1-BTC-en", "a1-d1-BTC-sl"])
        [after] = await fresh.fetch_open_orders()
        assert (after.client_order_id, after.type, after.reduce_only) == ("a1-d1-BTC-sl", "stop_market", True)
        assert await fresh.fetch_order("BTC", "a1-d1-BTC-sl") is not None
        [fill] = await fresh.fetch_fills()
        assert (fill.client_order_id, fill.reason) == ("a1-d1-BTC-en", "entry")
        [position] = await fresh.fetch_positions()
        assert position.opened_at == fill.timestamp
        assert await fresh.fetch_positions() == await live.exchange.fetch_positions()
    finally:
        await fresh.close()


async def test_a_liquidation_is_reported_as_one(live: Live) -> None:
    await live.exchange.set_leverage("BTC", 20)
    await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    [position] = await live.exchange.fetch_positions()
    assert position.liquidation_price is not None and position.leverage == 20
    live.fake.book.set_price("BTC", position.liquidation_price * 0.99)
    live.exchange.refresh()
    assert await live.exchange.fetch_positions() == []
    fills = await live.exchange.fetch_fills()
    assert [f.reason for f in fills] == ["entry", "liquidation"]


async def test_a_timestamp_drift_is_resynced_and_the_order_reported_refused() -> None:
    with FakeBinanceFutures(["BTC"], balance=1_000.0) as fake:
        exchange = _adapter("binanceusdm", fake)
        try:
            await exchange.start()
            live = Live("binanceusdm", fake, exchange)
            fake.skew_clock(-3_000)  # the venue's clock is now 3 s behind ours
            refused = await exchange.place_order(live.market("a1-d1-BTC-en"))
            assert refused.status == "rejected"
            assert "clock drift" in (refused.reject_reason or "")
            assert live.created("a1-d1-BTC-en") == []
            placed = await exchange.place_order(live.market("a1-d2-BTC-en"))  # the time difference was re-synced
            assert placed.status == "filled"
            fake.skew_clock(-3_000)
            assert len(await exchange.fetch_positions()) == 1  # a read is retried once after a re-sync
        finally:
            await exchange.close()


async def test_a_partial_fill_is_filled_for_what_filled(live: Live) -> None:
    live.fake.book.partial_next(0.5)
    order = await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    assert order.status == "filled"
    assert live.quantity / 2 - 0.001 <= order.filled_quantity <= live.quantity / 2 + 1e-9  # down to the lot
    [position] = await live.exchange.fetch_positions()
    assert position.size == pytest.approx(order.filled_quantity)
    again = await live.exchange.fetch_order("BTC", "a1-d1-BTC-en")
    assert again is not None
    assert (again.status, again.filled_quantity) == ("filled", pytest.approx(order.filled_quantity))


async def test_venue_refusals_come_back_as_rejected_orders_with_clear_reasons(live: Live) -> None:
    ex = live.exchange
    broke = await ex.place_order(replace(live.market("a1-d1-BTC-en"), quantity=live.quantity * 10))
    assert (broke.status, broke.reject_reason) == ("rejected", "insufficient margin")
    nothing = await ex.place_order(live.market("a1-d1-BTC-cl", "sell", reduce_only=True))
    assert nothing.status == "rejected"
    assert "reduce-only order would increase the position" in (nothing.reject_reason or "")
    await ex.place_order(live.market("a1-d2-BTC-en"))
    late = await ex.place_order(live.stop("a1-d2-BTC-sl", live.mark * 1.02))  # a sell stop above the mark
    assert late.status == "rejected"
    assert "would trigger immediately" in (late.reject_reason or "")
    assert live.created("a1-d2-BTC-sl") == []


async def test_funding_payments_and_the_wallet_identity(live: Live) -> None:
    await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    live.fake.book.settle_funding("BTC", 0.0001, live.fake.now_ms)
    [payment] = await live.exchange.fetch_funding_payments()
    assert payment.symbol == "BTC"
    assert payment.amount == pytest.approx(-live.quantity * live.fake.book.mark("BTC") * 0.0001, rel=1e-3)
    balance = await live.exchange.fetch_balance()
    assert balance.funding_paid == pytest.approx(-payment.amount)
    assert balance.wallet_balance == pytest.approx(
        1_000.0 + balance.realized_pnl - balance.fees_paid - balance.funding_paid + balance.funding_received
    )


async def test_refused_credentials_stop_the_start_and_no_secret_leaks() -> None:
    with FakeBinanceFutures(["BTC"], balance=1_000.0) as fake:
        wrong = "wrongSecret" + "9" * 40
        exchange = LiveExchange(
            "binanceusdm",
            VenueCredentials(fake.API_KEY, wrong),
            network="testnet",
            assets=["BTC"],
            api_url=fake.base_url,
            rate_limit_ms=1.0,
        )
        try:
            with pytest.raises(ExchangeError, match="refused") as refused:
                await exchange.start()
            text = str(refused.value)
            assert wrong not in text and fake.API_KEY not in text
            assert not re.search(r"signature=[0-9a-f]{8}", text)
        finally:
            await exchange.close()


def test_an_exception_inside_the_client_is_an_unknown_outcome() -> None:
    assert classify(KeyError("avgPx"), "hyperliquid").kind == "ambiguous"
    assert classify(ValueError("bad json"), "binanceusdm").kind == "ambiguous"


async def test_hyperliquid_start_checks_the_key_with_a_signed_noop() -> None:
    with FakeHyperliquidPerps(["BTC"], balance=1_000.0) as fake:
        stranger = "0x" + "7" * 64
        refused = _adapter("hyperliquid", fake)
        refused._ex.privateKey = stranger  # a key the venue does not know for this wallet
        try:
            with pytest.raises(ExchangeError, match=r"refused the credentials.*not known"):
                await refused.start()
        finally:
            await refused.close()
        agent_key = "0x" + "5" * 64
        fake.add_agent(agent_key)
        agent = LiveExchange(
            "hyperliquid",
            VenueCredentials(fake.WALLET, agent_key),  # an API wallet signing for the account
            network="testnet",
            assets=["BTC"],
            api_url=fake.base_url,
            rate_limit_ms=1.0,
        )
        try:
            await agent.start()
            assert len(fake.matching("noop")) == 2
        finally:
            await agent.close()


async def test_no_secret_reaches_the_logs(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    fake = live.fake  # ccxt logs every request at DEBUG, with the API key header and the signature
    secrets = [fake.API_SECRET, fake.API_KEY] if isinstance(fake, FakeBinanceFutures) else [fake.PRIVATE_KEY]
    live.fake.lose_answer(CREATE[live.venue])  # lookups log warnings with the failed requests
    await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    live.fake.fail(503, match=CREATE[live.venue])
    live.exchange._lookup_attempts = 1
    with pytest.raises(OutcomeUnknownError) as unknown:
        await live.exchange.place_order(live.market("a1-d2-BTC-en"))
    text = caplog.text + str(unknown.value)
    assert "a1-d1-BTC-en" in caplog.text  # the lookup was logged
    for secret in secrets:
        assert secret not in text
        assert secret.removeprefix("0x") not in text
    assert not re.search(r"signature=[0-9a-f]{16}", text)


async def test_fills_after_an_empty_first_read_are_seen(live: Live) -> None:
    """The first read of the venue's fills finds none; the fills that come later are read all the same (Binance
    once asked for the first week of 1970 from then on)."""
    assert await live.exchange.fetch_fills() == []
    order = await live.exchange.place_order(live.market("a1-d1-BTC-en"))
    assert order.status == "filled"
    fills = await live.exchange.fetch_fills()
    assert [(f.client_order_id, f.reason) for f in fills] == [("a1-d1-BTC-en", "entry")]


async def test_an_order_placed_by_hand_without_a_client_id_can_be_cancelled(live: Live) -> None:
    """Listed under the id the venue gave it; looked up and cancelled by that id (the halt cancels such entries)."""
    live.fake.book.place("BTC", "buy", "limit", live.quantity, price=round(live.mark * 0.8))
    [listed] = await live.exchange.fetch_open_orders("BTC")
    assert (await live.exchange.fetch_order("BTC", listed.client_order_id)) is not None
    cancelled = await live.exchange.cancel_order("BTC", listed.client_order_id)
    assert cancelled.status == "canceled" and await live.exchange.fetch_open_orders("BTC") == []
    assert [o.status for o in live.fake.book.orders()] == ["canceled"]


class _Binance75(FakeBinanceFutures):
    """BTC's top leverage bracket at 75x (the fake's default is 125x, the adapter's fallback when brackets are
    unreadable is 125x too): a maximum only the brackets can give."""

    MAX_LEVERAGE: ClassVar[dict[str, int]] = {**FakeBinanceFutures.MAX_LEVERAGE, "BTC": 75}


async def test_binance_max_leverage_is_the_top_of_the_symbols_leverage_brackets() -> None:
    """Binance's maximum leverage comes from the signed `/fapi/v1/leverageBracket` (the markets do not carry it): the
    top bracket's 75x; an entry asking for more is set at 75x, and the position at the venue is at 75x."""
    with _Binance75(["BTC"], balance=1_000.0) as fake:
        [top, *rest] = fake._brackets("BTC")
        assert top["initialLeverage"] == 75 and all(b["initialLeverage"] < 75 for b in rest)
        fake.book.set_price("BTC", fake.book.mark("BTC"))  # the position's mark is its entry: leverage = 75 exactly
        exchange = _adapter("binanceusdm", fake)
        try:
            await exchange.start()
            rules = await exchange.market_rules("BTC")
            assert rules.max_leverage == 75
            assert [r.status for r in fake.matching("GET /fapi/v1/leverageBracket")] == [200]
            assert await exchange.set_leverage("BTC", 100) == 75
            [asked] = fake.matching("POST /fapi/v1/leverage")
            assert (asked.query["symbol"], asked.query["leverage"], asked.status) == ("BTCUSDT", "75", 200)
            assert fake.book.leverage("BTC") == 75
            live = Live("binanceusdm", fake, exchange)
            assert (await exchange.place_order(live.market("a1-d1-BTC-en"))).status == "filled"
            [position] = await exchange.fetch_positions()
            assert position.leverage == pytest.approx(75)
            [venue_position] = fake.book.positions()
            assert venue_position.margin == pytest.approx(venue_position.size * venue_position.entry_price / 75)
        finally:
            await exchange.close()


# ---- review fixes: a venue-wide rate limit, late market fills, Hyperliquid funding pages, per-symbol trade ids ----


@pytest.mark.parametrize("venue", VENUES)
async def test_a_rate_limit_on_one_account_silences_every_adapter_of_the_venue(venue: str) -> None:
    """Binance limits per IP: after a 429 on one account, no adapter on that venue sends anything until the wait
    has passed (ignoring a 429 escalates to 418 bans)."""
    clock = ManualClock(T0)
    with _fake(venue) as fake:
        first, second = _adapter(venue, fake, wall_clock=clock), _adapter(venue, fake, wall_clock=clock)
        try:
            await first.start()
            await second.start()
            live = Live(venue, fake, first)
            if isinstance(fake, FakeBinanceFutures):
                fake.fail(
                    429,
                    {"code": -1003, "msg": "Too many requests."},
                    headers={"Retry-After": "12"},
                    match=CREATE[venue],
                )
                wait = 12
            else:
                fake.rate_limit("order")
                wait = 10
            with pytest.raises(RateLimitedError):
                await first.place_order(live.market("a1-d1-BTC-en"))
            sent = len(fake.requests)
            with pytest.raises(RateLimitedError, match=rf"retry after {wait} s"):
                await second.place_order(live.market("a2-d1-BTC-en"))
            with pytest.raises(RateLimitedError):
                await second.fetch_positions()
            assert len(fake.requests) == sent  # the second account sent nothing either
            clock.advance(timedelta(seconds=wait))
            assert (await second.place_order(live.market("a2-d1-BTC-en"))).status == "filled"
        finally:
            await first.close()
            await second.close()


async def test_a_binance_market_order_answered_new_is_looked_up_until_it_shows_its_fill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The venue may answer a market order `NEW, executedQty 0` and match it just after: the adapter asks again."""
    with FakeBinanceFutures(["BTC"], balance=1_000.0) as fake:
        exchange = _adapter("binanceusdm", fake)
        try:
            await exchange.start()
            live = Live("binanceusdm", fake, exchange)
            original = fake._new_order
            answered: list[str] = []

            def answer_new_once(params: dict[str, str]) -> dict[str, object]:
                body = original(params)
                if not answered:  # the book filled it; the answer says it was not matched yet
                    answered.append(str(body["status"]))
                    body |= {"status": "NEW", "executedQty": "0", "cumQty": "0", "avgPrice": "0.00", "cumQuote": "0"}
                return body

            monkeypatch.setattr(fake, "_new_order", answer_new_once)
            order = await exchange.place_order(live.market("a1-d1-BTC-en"))
            assert answered == ["FILLED"]
            assert (order.status, order.filled_quantity) == ("filled", pytest.approx(live.quantity))
            assert order.avg_fill_price is not None and order.avg_fill_price > 0
            assert len(live.created("a1-d1-BTC-en")) == 1  # looked up, never sent again
        finally:
            await exchange.close()


async def test_hyperliquid_funding_is_read_from_the_newest_payment_seen_page_by_page() -> None:
    """userFunding answers at most 500 payments, oldest first: the newest ones come from later pages."""
    with FakeHyperliquidPerps(["BTC"], balance=1_000.0) as fake:
        exchange = _adapter("hyperliquid", fake)
        try:
            await exchange.start()
            live = Live("hyperliquid", fake, exchange)
            await exchange.place_order(live.market("a1-d1-BTC-en"))
            now = fake.now_ms
            fake.book.settle_funding("BTC", 0.00001, now - 30 * 86_400_000)  # a month ago: before the window
            times = [now - (600 - i) * 600_000 for i in range(600)]  # every 10 minutes over the last 100 hours
            for time_ms in times:
                fake.book.settle_funding("BTC", 0.00001, time_ms)
            payments = await exchange.fetch_funding_payments()
            assert [_ms_of(p.funding_time) for p in payments] == times
            fake.book.settle_funding("BTC", 0.00001, now + 1)
            again = await exchange.fetch_funding_payments()
            assert [_ms_of(p.funding_time) for p in again] == [*times, now + 1]
            starts = [int(r.json["startTime"]) for r in fake.matching("userFunding")]
            assert starts[0] >= now - 7 * 86_400_000 - 60_000 and starts[-1] == times[-1]  # from the newest seen
            since = datetime.fromtimestamp(times[-2] / 1000, UTC)
            assert [_ms_of(p.funding_time) for p in await exchange.fetch_funding_payments(since)] == [
                times[-2],
                times[-1],
                now + 1,
            ]
        finally:
            await exchange.close()


def _ms_of(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


async def test_binance_fills_of_two_assets_with_the_same_trade_id_both_come_back() -> None:
    """Binance trade ids are unique per symbol only: fill ids are `ASSET-id`."""
    with FakeBinanceFutures(["BTC", "ETH"], balance=10_000.0) as fake:
        exchange = LiveExchange(
            "binanceusdm",
            VenueCredentials(fake.API_KEY, fake.API_SECRET),
            network="testnet",
            assets=["BTC", "ETH"],
            api_url=fake.base_url,
            timeout_ms=1_000,
            lookup_backoff_s=0.05,
            rate_limit_ms=1.0,
        )
        try:
            await exchange.start()
            for asset in ("BTC", "ETH"):
                quantity = round_down(1_000.0 / fake.book.mark(asset), 0.001)
                placed = await exchange.place_order(OrderRequest(f"a1-d1-{asset}-en", asset, "buy", "market", quantity))
                assert placed.status == "filled"
            with fake.book.lock:
                btc, eth = fake.book._s.fills
                eth.id = btc.id  # the same trade id on two symbols
            fills = await exchange.fetch_fills()
            assert sorted((f.symbol, f.fill_id, f.client_order_id) for f in fills) == [
                ("BTC", f"BTC-{btc.id}", "a1-d1-BTC-en"),
                ("ETH", f"ETH-{btc.id}", "a1-d1-ETH-en"),
            ]
        finally:
            await exchange.close()


# ---- other assets and kept reads -------------------------------------------------------------------------


@pytest.mark.parametrize("venue", ["binanceusdm", "hyperliquid"])
async def test_a_position_outside_the_assets_gets_one_stop_and_its_stop_fill_is_read(venue: str) -> None:
    """A position in an asset outside ASSETS (opened by hand in another coin, or left after ASSETS was narrowed): its
    orders and fills are read too, so the stop watchdog protects it once (not with a new stop every cycle, which on
    Binance ends at the venue's stop-order limit) and its stop's fill is in the history."""
    fake_type = FakeBinanceFutures if venue == "binanceusdm" else FakeHyperliquidPerps
    with fake_type(["BTC", "ETH"], balance=10_000.0) as fake:
        exchange = _adapter(venue, fake)
        await exchange.start()
        try:
            fake.book.place("ETH", "buy", "market", 0.5, client_id="web_by_hand")  # by hand, in a coin not traded
            placed: list[list[str]] = []
            for cycle in range(3):
                run = OrderRun(exchange, 1, f"w{cycle}", ExecutionReport())
                report = await StopWatchdog().check(exchange, run, levels={}, stop_loss_percentage=3.0)
                placed.append(report.placed)
                exchange.refresh()
            stops = [o for o in fake.book.open_orders("ETH") if o.type == "stop_market"]
            assert placed == [["ETH"], [], []]
            assert len(stops) == 1, stops
            [position] = await exchange.fetch_positions()
            assert position.symbol == "ETH"
            [stop] = await exchange.fetch_open_orders()
            assert (stop.symbol, stop.reason, stop.quantity) == ("ETH", "stop_loss", position.size)

            fake.book.set_price("ETH", stops[0].trigger * 0.99)  # the stop fires at the venue
            exchange.refresh()
            assert await exchange.fetch_positions() == []
            fills = [f for f in await exchange.fetch_fills() if f.symbol == "ETH"]
            assert [(f.side, f.reason) for f in fills] == [("buy", "entry"), ("sell", "stop_loss")]
            assert await exchange.fetch_open_orders() == []
        finally:
            await exchange.close()


async def _reads(fake: FakeBinanceFutures | FakeHyperliquidPerps, exchange: LiveExchange) -> int:
    """How many requests one look at the account (positions, open orders, fills, balance) sends."""
    before = len(fake.requests)
    await exchange.fetch_positions()
    await exchange.fetch_open_orders()
    await exchange.fetch_fills()
    await exchange.fetch_balance()
    return len(fake.requests) - before


@pytest.mark.parametrize("venue", ["binanceusdm", "hyperliquid"])
async def test_reads_are_kept_until_a_write_a_refresh_or_their_time_is_up(venue: str) -> None:
    """A cycle's reconciliation, execution, stop watchdog and mirror read the positions, orders, fills and balance many
    times; asking the venue each time spent its request weight. The answers are kept until the adapter's next write
    (whatever its outcome), `refresh()`, or READ_CACHE_S on the wall clock."""
    clock = ManualClock(datetime.now(UTC))
    fake_type = FakeBinanceFutures if venue == "binanceusdm" else FakeHyperliquidPerps
    with fake_type(["BTC", "ETH"], balance=10_000.0) as fake:
        exchange = _adapter(venue, fake, assets=["BTC", "ETH"], wall_clock=clock)
        await exchange.start()
        try:
            exchange.refresh()
            assert await _reads(fake, exchange) > 0
            assert await _reads(fake, exchange) == 0, "the same moment: nothing asked again"

            # a change at the venue the adapter did not make: seen after refresh(), not before
            fake.book.place("ETH", "buy", "market", 0.5, client_id="web_by_hand")
            assert await exchange.fetch_positions() == []
            exchange.refresh()
            assert [p.symbol for p in await exchange.fetch_positions()] == ["ETH"]

            # the adapter's own write: everything after it is read anew, and shows the write
            await exchange.set_leverage("BTC", 2)
            order = await exchange.place_order(OrderRequest("a1-d1-BTC-en", "BTC", "buy", "market", 0.01))
            assert order.status == "filled"
            assert [p.symbol for p in await exchange.fetch_positions()] == ["BTC", "ETH"]
            assert [f.client_order_id for f in await exchange.fetch_fills() if f.symbol == "BTC"] == ["a1-d1-BTC-en"]
            await _reads(fake, exchange)
            assert await _reads(fake, exchange) == 0

            # a refused write changes nothing at the venue, but is not trusted to: read anew
            refused = await exchange.place_order(OrderRequest("a1-d1-BTC-en2", "BTC", "buy", "market", 1_000.0))
            assert refused.status == "rejected"
            assert await _reads(fake, exchange) > 0

            # on its own, the moment ends after READ_CACHE_S on the wall clock
            fake.book.place("ETH", "sell", "market", 0.5, client_id="web_by_hand_close", reduce_only=True)
            clock.advance(timedelta(seconds=READ_CACHE_S - 0.1))
            assert [p.symbol for p in await exchange.fetch_positions()] == ["BTC", "ETH"]
            clock.advance(timedelta(seconds=0.2))
            assert [p.symbol for p in await exchange.fetch_positions()] == ["BTC"]
        finally:
            await exchange.close()
