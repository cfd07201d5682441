"""`LiveExchange` (the ccxt adapter): the pure parts (ids, rounding, error classes, secrets) and the outcome
policy over real sockets against the fake venues."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import ccxt.async_support as ccxt
import pytest

from app.core.clock import ManualClock
from app.services.exchange.base import ExchangeUnavailableError, OrderRequest
from app.services.exchange.live import LiveExchange, VenueCredentials, cloid_for, round_down
from app.services.exchange.live_errors import classify, scrub
from tests.fakes.exchange_servers import FakeBinance, FakeHyperliquid

SECRET = "s3cr3t-0123456789abcdefABCDEF"
KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"  # 64 hex, like a private key
T0 = datetime(2026, 3, 1, tzinfo=UTC)


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
