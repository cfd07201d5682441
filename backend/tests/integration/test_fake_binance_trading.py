"""The fake Binance USD-M futures (tests/fakes/binance_trading.py) driven by the real ccxt async binanceusdm client."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import ccxt.async_support as ccxt
import pytest

from tests.fakes.binance_trading import FakeBinanceFutures, binance_api_urls, use_fake

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
BACKEND = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeBinanceFutures]:
    with FakeBinanceFutures(["BTC", "ETH", "SOL"]) as venue:
        yield venue


def client(fake: FakeBinanceFutures, **config: object) -> ccxt.binanceusdm:
    exchange = ccxt.binanceusdm({"apiKey": fake.API_KEY, "secret": fake.API_SECRET, "timeout": 5000, **config})
    use_fake(exchange, fake.base_url)
    return exchange


@pytest.fixture
async def exchange(fake: FakeBinanceFutures) -> AsyncIterator[ccxt.binanceusdm]:
    ex = client(fake)
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


def test_every_ccxt_api_entry_points_at_the_fake() -> None:
    urls = binance_api_urls("http://127.0.0.1:9/")
    reference = ccxt.binanceusdm().urls["api"]
    assert set(urls) == set(reference)
    for key, url in reference.items():
        assert urls[key] == "http://127.0.0.1:9" + url.split(".com", 1)[1]


async def test_entry_stop_fire_and_trades(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    assert fake.matching("/sapi/v1/capital/config/getall")  # load_markets with keys makes this private call
    await exchange.set_margin_mode("isolated", BTC)
    assert (await exchange.set_leverage(10, BTC))["leverage"] == 10
    entry = await exchange.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "a1-d7-BTC-en"})
    assert (entry["status"], entry["filled"], entry["clientOrderId"]) == ("closed", 0.01, "a1-d7-BTC-en")
    mark = fake.book.mark("BTC")
    assert entry["average"] == pytest.approx(mark)

    stop_price = round(mark * 0.95, 1)
    stop = await exchange.create_order(
        BTC,
        "market",
        "sell",
        0.01,
        params={"stopLossPrice": stop_price, "reduceOnly": True, "clientOrderId": "a1-d7-BTC-sl"},
    )
    [sent] = fake.matching("POST /fapi/v1/algoOrder")  # ccxt routes conditionals to the algo service
    assert sent.query["type"] == "STOP_MARKET" and sent.query["clientAlgoId"] == "a1-d7-BTC-sl"
    assert sent.query["reduceOnly"] == "true" and float(sent.query["triggerPrice"]) == stop_price
    assert (stop["status"], stop["triggerPrice"], stop["reduceOnly"]) == ("open", stop_price, True)

    by_client = await exchange.fetch_order(None, BTC, params={"clientOrderId": "a1-d7-BTC-sl", "trigger": True})
    assert by_client["id"] == stop["id"] and by_client["status"] == "open"
    plain = await exchange.fetch_order(None, BTC, params={"clientOrderId": "a1-d7-BTC-en"})
    assert plain["id"] == entry["id"] and plain["status"] == "closed"
    assert [o["id"] for o in await exchange.fetch_open_orders(BTC, params={"trigger": True})] == [stop["id"]]
    [position] = await exchange.fetch_positions([BTC])
    assert (position["side"], position["contracts"], position["marginMode"]) == ("long", 0.01, "isolated")
    assert position["liquidationPrice"] == pytest.approx(fake.book.positions()[0].liquidation_price, rel=1e-6)

    fake.book.set_price("BTC", stop_price - 100)  # through the stop: it fires at the next request
    trades = await exchange.fetch_my_trades(BTC)
    fired = await exchange.fetch_order(None, BTC, params={"clientOrderId": "a1-d7-BTC-sl", "trigger": True})
    assert fired["status"] == "closed" and fired["info"]["algoStatus"] == "FINISHED"
    assert [(t["side"], t["amount"], t["order"]) for t in trades] == [
        ("buy", 0.01, entry["id"]),
        ("sell", 0.01, fired["info"]["actualOrderId"]),
    ]
    assert trades[1]["price"] == pytest.approx(stop_price - 100)
    assert trades[1]["fee"]["cost"] == pytest.approx(0.01 * (stop_price - 100) * 0.0005)
    assert float(trades[1]["info"]["realizedPnl"]) == pytest.approx(0.01 * (stop_price - 100 - mark))
    assert await exchange.fetch_positions([BTC]) == []
    assert await exchange.fetch_open_orders(BTC, params={"trigger": True}) == []
    child = await exchange.fetch_order(fired["info"]["actualOrderId"], BTC)
    assert child["clientOrderId"] == "a1-d7-BTC-sl" and child["info"]["origType"] == "STOP_MARKET"


async def test_close_position_stop_and_take_profit(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    await exchange.create_order(BTC, "market", "sell", 0.01)
    mark = fake.book.mark("BTC")
    stop = await exchange.create_order(
        BTC, "STOP_MARKET", "buy", None, None, {"triggerPrice": round(mark * 1.05, 1), "closePosition": True}
    )
    take = await exchange.create_order(
        BTC, "market", "buy", 0.01, params={"takeProfitPrice": round(mark * 0.9, 1), "reduceOnly": True}
    )
    sent = fake.matching("POST /fapi/v1/algoOrder")
    assert [r.query["type"] for r in sent] == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert sent[0].query["closePosition"] == "true" and "quantity" not in sent[0].query
    assert stop["info"]["closePosition"] is True and take["info"]["orderType"] == "TAKE_PROFIT_MARKET"
    fake.book.set_price("BTC", round(mark * 0.89, 1))  # the take-profit fires; the stop has nothing left to close
    assert await exchange.fetch_positions([BTC]) == []
    after = await exchange.fetch_order(stop["id"], BTC, params={"trigger": True})
    assert after["status"] == "expired" and after["info"]["algoStatus"] == "EXPIRED"  # cancelled by the system


async def test_cancel_plain_and_algo_orders(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    await exchange.create_order(BTC, "market", "buy", 0.01)
    mark = fake.book.mark("BTC")
    limit = await exchange.create_order(BTC, "limit", "buy", 0.01, round(mark * 0.9, 1), {"clientOrderId": "lim-1"})
    assert limit["status"] == "open"
    stop = await exchange.create_order(BTC, "market", "sell", 0.01, params={"stopLossPrice": round(mark * 0.9, 1)})
    canceled = await exchange.cancel_order(None, BTC, params={"clientOrderId": "lim-1"})
    assert canceled["status"] == "canceled"
    await exchange.cancel_order(stop["id"], BTC, params={"trigger": True})
    assert (await exchange.fetch_order(stop["id"], BTC, params={"trigger": True}))["status"] == "canceled"
    assert fake.book.open_orders() == []
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.cancel_order(stop["id"], BTC, params={"trigger": True})
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.cancel_order(limit["id"], BTC)


async def test_refusals_surface_as_ccxt_errors(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
        await exchange.create_order(BTC, "market", "buy", 10)
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):  # BTCUSDT: 100 USDT minimum
        await exchange.create_order(BTC, "market", "buy", 0.001)
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # nothing to reduce
        await exchange.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    await exchange.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        await exchange.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    mark = fake.book.mark("BTC")
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="-2021"):  # a long's stop above the price
        await exchange.create_order(
            BTC, "market", "sell", 0.01, params={"stopLossPrice": mark + 50, "reduceOnly": True}
        )
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        await exchange.fetch_order("123", BTC)
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        await exchange.fetch_order(None, BTC, params={"clientOrderId": "nope", "trigger": True})
    with pytest.raises(ccxt.BadRequest, match="-4028"):  # SOL's brackets top out at 75x
        await exchange.set_leverage(100, "SOL/USDT:USDT")
    with pytest.raises(ccxt.BadRequest, match="-4015"):
        await exchange.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "has space"})
    assert len(fake.book.orders()) == 1  # nothing refused was booked


async def test_authentication_and_clock(fake: FakeBinanceFutures) -> None:
    for config, error, code in [
        ({"secret": "not-the-secret"}, ccxt.AuthenticationError, "-1022"),
        ({"apiKey": "someone-else"}, ccxt.AuthenticationError, "-2015"),
    ]:
        ex = client(fake, **config)
        try:
            with pytest.raises(error, match=code):
                await ex.fetch_balance()
        finally:
            await ex.close()
    ex = client(fake)
    try:
        assert (await ex.fetch_balance())["USDT"]["free"] == pytest.approx(10_000)
        fake.skew_clock(-3_000)  # the server's clock is behind: the client is more than 1 s ahead
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await ex.fetch_balance()
        fake.skew_clock(3_000 + 30_000)  # now 30 s ahead: the request is outside the 10 s recvWindow
        with pytest.raises(ccxt.InvalidNonce, match="outside of the recvWindow"):
            await ex.fetch_balance()
        await ex.load_time_difference()  # a re-sync fixes it
        ex.options["adjustForTimeDifference"] = True
        assert (await ex.fetch_balance())["USDT"]["total"] == pytest.approx(10_000)
    finally:
        await ex.close()
    assert not any(fake.API_SECRET in repr(r) for r in fake.requests)  # the log never holds the secret


async def test_fixed_clock_after_time_sync() -> None:
    with FakeBinanceFutures(["BTC"], now_ms=1_760_000_000_000) as venue:
        ex = client(venue, options={"adjustForTimeDifference": True})
        try:
            with pytest.raises(ccxt.InvalidNonce):  # load_markets' first private call precedes ccxt's own sync
                await ex.load_markets()
            await ex.load_time_difference()  # so sync first
            await ex.load_markets()
            order = await ex.create_order(BTC, "market", "buy", 0.01)
            assert abs(order["timestamp"] - 1_760_000_000_000) < 60_000
        finally:
            await ex.close()


async def test_rate_limits_and_weight_header(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    await exchange.fetch_balance()
    assert int(exchange.last_response_headers["X-MBX-USED-WEIGHT-1M"]) >= 5
    body = {"code": -1003, "msg": "Too many requests; current limit of IP is 2400 requests per minute."}
    fake.fail(429, body, match="GET /fapi/v3/account", headers={"Retry-After": "7"})
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.fetch_balance()
    assert exchange.last_response_headers["Retry-After"] == "7"
    fake.fail(418, match="/fapi/v1/order", times=2)  # Binance's body and Retry-After by default
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):
        await exchange.create_order(BTC, "market", "buy", 0.01)
    assert exchange.last_response_headers["Retry-After"] == "120"
    assert fake.book.orders() == []  # refused before processing
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.fetch_order("1", BTC)


async def test_lost_answer_times_out_but_the_order_exists(fake: FakeBinanceFutures) -> None:
    ex = client(fake, timeout=800)
    try:
        await ex.load_markets()
        fake.lose_answer("POST /fapi/v1/order")
        with pytest.raises(ccxt.RequestTimeout):
            await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "a1-d9-BTC-en"})
        [booked] = [o for o in fake.book.orders() if o.client_id == "a1-d9-BTC-en"]
        assert booked.status == "filled"
        found = await ex.fetch_order(None, BTC, params={"clientOrderId": "a1-d9-BTC-en"})  # answered again
        assert found["id"] == str(booked.id) and found["status"] == "closed"
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):  # sending it again is refused
            await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "a1-d9-BTC-en"})
        assert len(fake.book.fills()) == 1
    finally:
        await ex.close()


async def test_error_after_processing(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    await exchange.create_order(BTC, "market", "buy", 0.01)
    fake.fail_after("POST /fapi/v1/algoOrder", status=503)  # Binance -1007: execution status unknown
    with pytest.raises(ccxt.RequestTimeout, match="-1007"):
        await exchange.create_order(
            BTC, "market", "sell", 0.01, params={"stopLossPrice": 1000, "clientAlgoId": "s1", "reduceOnly": True}
        )
    found = await exchange.fetch_order(None, BTC, params={"clientOrderId": "s1", "trigger": True})
    assert found["status"] == "open"  # the stop was placed although the answer said otherwise
    fake.fail_after("POST /fapi/v1/order", status=502, body=b"")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.create_order(BTC, "market", "sell", 0.01, params={"clientOrderId": "c1", "reduceOnly": True})
    assert fake.book.order(client_id="c1") is not None and fake.book.positions() == []


async def test_balance_positions_funding_and_liquidation(fake: FakeBinanceFutures, exchange: ccxt.binanceusdm) -> None:
    await exchange.set_margin_mode("isolated", ETH)
    await exchange.set_leverage(20, ETH)
    await exchange.create_order(ETH, "market", "buy", 1.0)
    mark = fake.book.mark("ETH")
    balance = await exchange.fetch_balance()
    assert balance["USDT"]["used"] == pytest.approx(mark / 20)
    assert balance["USDT"]["free"] == pytest.approx(10_000 - mark / 20 - mark * 0.0005)
    fake.book.settle_funding("ETH", 0.0001, fake.now_ms)
    [funding] = await exchange.fetch_funding_history(ETH)
    assert funding["amount"] == pytest.approx(-mark * 0.0001) and funding["code"] == "USDT"
    lp = fake.book.positions()[0].liquidation_price
    assert lp is not None
    fake.book.set_price("ETH", round(lp - 50, 2))
    trades = await exchange.fetch_my_trades(ETH)
    assert trades[-1]["side"] == "sell" and trades[-1]["price"] == pytest.approx(lp)
    liquidation = await exchange.fetch_order(trades[-1]["order"], ETH)
    assert liquidation["clientOrderId"].startswith("autoclose-")
    assert await exchange.fetch_positions([ETH]) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_standalone_mode_prints_credentials_and_orders() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tests.fakes.binance_trading", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=BACKEND, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []

    def read_until(marker: str, seconds: float) -> None:
        assert proc.stdout is not None
        deadline = time.monotonic() + seconds
        while not any(marker in line for line in lines) and time.monotonic() < deadline and proc.poll() is None:
            lines.append(proc.stdout.readline())

    async def place() -> None:
        ex = ccxt.binanceusdm({"apiKey": FakeBinanceFutures.API_KEY, "secret": FakeBinanceFutures.API_SECRET})
        use_fake(ex, f"http://127.0.0.1:{port}")
        try:
            await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dry-1"})
        finally:
            await ex.close()

    try:
        read_until("Ctrl-C", 30)
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}" in text
        assert FakeBinanceFutures.API_KEY in text and FakeBinanceFutures.API_SECRET in text
        asyncio.run(place())
        read_until("filled BUY", 10)
        text = "".join(lines)
        assert "placed MARKET BUY 0.01 BTC" in text and "client dry-1" in text and "filled BUY 0.01 BTC" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
