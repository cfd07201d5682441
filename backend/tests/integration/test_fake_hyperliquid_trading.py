"""The fake Hyperliquid perpetuals (`FakeHyperliquidPerps`) driven by the real ccxt async hyperliquid client over a
real socket: signed orders with cloids, trigger stops, lookups by cloid, fills, positions, the venue's refusals as
ccxt's exception classes, signature and nonce checks, and the faults (answer lost, 5xx after processing, 429)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest

from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps, address_of, hyperliquid_api_urls, msgpack

SYMBOL = "BTC/USDC:USDC"
CLOID_ENTRY = "0x" + "0a" * 16
CLOID_STOP = "0x" + "0b" * 16
BACKEND = Path(__file__).resolve().parents[2]


def make_client(base_url: str, *, private_key: str = FakeHyperliquidPerps.PRIVATE_KEY, testnet: bool = True) -> Any:
    config = {"walletAddress": FakeHyperliquidPerps.WALLET, "privateKey": private_key, "timeout": 3000}
    client = ccxt.hyperliquid(config | {"enableRateLimit": False})  # ccxt spaces info requests 0.5 s apart
    if testnet:
        client.set_sandbox_mode(True)
    client.urls["api"] = hyperliquid_api_urls(base_url)
    return client


@pytest.fixture
def fake() -> Iterator[FakeHyperliquidPerps]:
    with FakeHyperliquidPerps(["BTC", "ETH", "SOL"], balance=10_000.0) as venue:
        venue.book.set_price("BTC", 100_000.0)
        yield venue


@pytest.fixture
async def client(fake: FakeHyperliquidPerps) -> AsyncIterator[Any]:
    exchange = make_client(fake.base_url)
    await exchange.load_markets()
    yield exchange
    await exchange.close()


async def market_buy(client: Any, amount: float, cloid: str | None = None, **params: Any) -> Any:
    extra = {"clientOrderId": cloid} if cloid else {}
    return await client.create_order(SYMBOL, "market", "buy", amount, 100_000, extra | params)


def post(base_url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        base_url + "/exchange", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def test_wallet_is_derived_from_the_private_key_and_msgpack_is_canonical() -> None:
    assert address_of(FakeHyperliquidPerps.PRIVATE_KEY) == FakeHyperliquidPerps.WALLET
    assert FakeHyperliquidPerps.WALLET.startswith("0x") and len(FakeHyperliquidPerps.WALLET) == 42
    assert msgpack({"a": 1, "b": [True, None, "x"]}) == bytes.fromhex("82a16101a16293c3c0a178")
    assert msgpack(-33) == b"\xd0\xdf" and msgpack(1 << 40) == b"\xcf" + (1 << 40).to_bytes(8, "big")


async def test_entry_stop_fill_and_position_gone(fake: FakeHyperliquidPerps, client: Any) -> None:
    await client.set_leverage(10, SYMBOL, {"marginMode": "isolated"})
    assert fake.book.leverage("BTC") == 10 and fake.book.margin_mode("BTC") == "isolated"

    entry = await market_buy(client, 0.01, CLOID_ENTRY)
    assert entry["id"] and entry["clientOrderId"] == CLOID_ENTRY
    assert entry["filled"] == 0.01 and entry["average"] == 100_000
    sent = fake.matching("order")[-1].json["action"]["orders"][0]
    assert sent["t"] == {"limit": {"tif": "Ioc"}} and sent["c"] == CLOID_ENTRY and sent["p"] == "105000"

    [position] = await client.fetch_positions([SYMBOL])
    assert position["side"] == "long" and position["contracts"] == 0.01 and position["entryPrice"] == 100_000
    assert position["leverage"] == 10 and position["marginMode"] == "isolated"
    assert position["liquidationPrice"] is not None and position["liquidationPrice"] < 100_000

    stop = await client.create_order(
        SYMBOL,
        "market",
        "sell",
        0.01,
        95_000,
        {"stopLossPrice": 95_000, "reduceOnly": True, "clientOrderId": CLOID_STOP},
    )
    assert stop["id"] and stop["clientOrderId"] == CLOID_STOP
    wire = fake.matching("order")[-1].json["action"]["orders"][0]
    assert wire["t"] == {"trigger": {"isMarket": True, "triggerPx": "95000", "tpsl": "sl"}} and wire["r"] is True

    found = await client.fetch_order("", SYMBOL, {"clientOrderId": CLOID_STOP})
    assert found["id"] == stop["id"] and found["status"] == "open" and found["triggerPrice"] == 95_000
    assert found["reduceOnly"] is True and found["side"] == "sell" and found["stopLossPrice"] == 95_000
    [open_stop] = await client.fetch_open_orders(SYMBOL)
    assert open_stop["clientOrderId"] == CLOID_STOP and open_stop["info"]["orderType"] == "Stop Market"
    assert open_stop["info"]["triggerCondition"] == "Price below 95000.0"

    fake.book.set_price("BTC", 94_000.0)  # the stop fires between two requests

    fired = await client.fetch_order(CLOID_STOP, SYMBOL)  # a 34-character id is looked up as a cloid
    assert fired["id"] == stop["id"] and fired["status"] == "closed" and fired["filled"] == 0.01
    trades = await client.fetch_my_trades(SYMBOL)
    assert [t["order"] for t in trades] == [entry["id"], stop["id"]]
    close = trades[-1]
    assert close["side"] == "sell" and close["price"] == 94_000 and close["amount"] == 0.01
    assert close["info"]["cloid"] == CLOID_STOP and close["info"]["dir"] == "Close Long"
    assert float(close["info"]["closedPnl"]) == pytest.approx(-60.0)
    assert close["fee"]["cost"] == pytest.approx(0.01 * 94_000 * 0.00045, abs=1e-6)
    since = await client.fetch_my_trades(SYMBOL, trades[-1]["timestamp"])
    assert trades[-1]["id"] in [t["id"] for t in since]

    assert await client.fetch_positions([SYMBOL]) == []
    assert await client.fetch_open_orders(SYMBOL) == []
    balance = await client.fetch_balance()
    fees = 0.01 * 100_000 * 0.00045 + 0.01 * 94_000 * 0.00045
    assert balance["USDC"]["total"] == pytest.approx(10_000 - 60 - fees, abs=1e-5)
    assert balance["USDC"]["used"] == 0


async def test_cancel_by_cloid_and_by_oid(fake: FakeHyperliquidPerps, client: Any) -> None:
    await market_buy(client, 0.01)
    resting = await client.create_order(SYMBOL, "limit", "buy", 0.001, 90_000, {"clientOrderId": CLOID_ENTRY})
    stop = await client.create_order(
        SYMBOL, "market", "sell", 0.01, 95_000, {"stopLossPrice": 95_000, "reduceOnly": True}
    )
    assert {o["id"] for o in await client.fetch_open_orders(SYMBOL)} == {resting["id"], stop["id"]}

    await client.cancel_order("", SYMBOL, {"clientOrderId": CLOID_ENTRY})
    assert fake.matching("cancelByCloid")
    await client.cancel_order(stop["id"], SYMBOL)
    assert await client.fetch_open_orders(SYMBOL) == []
    assert (await client.fetch_order(resting["id"], SYMBOL))["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        await client.cancel_order(stop["id"], SYMBOL)  # already cancelled
    with pytest.raises(ccxt.OrderNotFound):
        await client.cancel_order("", SYMBOL, {"clientOrderId": "0x" + "ee" * 16})


async def test_refusals_surface_as_ccxt_exceptions(fake: FakeHyperliquidPerps, client: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="Insufficient margin to place order"):
        await market_buy(client, 5.0)
    with pytest.raises(ccxt.InvalidOrder, match=r"minimum value of \$10"):
        await market_buy(client, 0.00005)
    with pytest.raises(ccxt.InvalidOrder, match="Reduce only order would increase position"):
        await client.create_order(SYMBOL, "market", "sell", 0.01, 100_000, {"reduceOnly": True})
    with pytest.raises(ccxt.OrderNotFound):
        await client.fetch_order("", SYMBOL, {"clientOrderId": "0x" + "cc" * 16})  # {"status": "unknownOid"}
    with pytest.raises(ccxt.InvalidOrder, match="Order could not immediately match"):
        await client.create_order(SYMBOL, "limit", "buy", 0.01, 99_000, {"timeInForce": "Ioc"})
    with pytest.raises(ccxt.InvalidOrder, match="Post only order would have immediately matched"):
        await client.create_order(SYMBOL, "limit", "buy", 0.01, 100_500, {"postOnly": True})
    assert fake.book.orders()[-1].status == "expired"  # the IOC was recorded and expired; nothing else placed
    assert len(fake.book.orders()) == 1

    await market_buy(client, 0.01, CLOID_ENTRY)
    with pytest.raises(ccxt.ExchangeError, match="Duplicate cloid"):
        await market_buy(client, 0.01, CLOID_ENTRY)
    assert [o.client_id for o in fake.book.orders()].count(CLOID_ENTRY) == 1

    with pytest.raises(ccxt.ExchangeError, match="Invalid leverage value"):
        await client.set_leverage(50, SYMBOL, {"marginMode": "isolated"})  # BTC's maximum is 40
    with pytest.raises(ccxt.ExchangeError, match="Cannot switch leverage type with open position"):
        await client.set_margin_mode("isolated", SYMBOL, {"leverage": 5})  # the position is cross (the default)


async def test_a_malformed_order_refuses_the_whole_batch_before_processing(
    fake: FakeHyperliquidPerps, client: Any
) -> None:
    good = {"symbol": SYMBOL, "type": "market", "side": "buy", "amount": 0.01, "price": 100_000}
    bad = good | {"params": {"clientOrderId": "0x1234"}}  # a cloid is 0x + 32 hex digits
    with pytest.raises(ccxt.ExchangeError, match="422"):
        await client.create_orders([good | {"params": {"clientOrderId": CLOID_ENTRY}}, bad])
    assert fake.book.orders() == [] and fake.matching("order")[-1].status == 422


async def test_rate_limits_refuse_before_processing(fake: FakeHyperliquidPerps, client: Any) -> None:
    fake.rate_limit("order")
    with pytest.raises(ccxt.RateLimitExceeded):
        await market_buy(client, 0.01)
    fake.rate_limit("order", address_based=True)
    with pytest.raises(ccxt.RateLimitExceeded, match="Too many cumulative requests sent"):
        await market_buy(client, 0.01)
    fake.rate_limit("clearinghouseState", retry_after_s=7)
    with pytest.raises(ccxt.RateLimitExceeded):
        await client.fetch_positions([SYMBOL])
    assert client.last_response_headers["Retry-After"] == "7"
    assert fake.book.orders() == []
    assert [r.status for r in fake.matching("order")][-2:] == [429, 200]


async def test_a_signature_by_another_key_or_for_another_network_is_refused(fake: FakeHyperliquidPerps) -> None:
    stranger = make_client(fake.base_url, private_key="0x" + "77" * 32)
    mainnet = make_client(fake.base_url, testnet=False)
    try:
        await stranger.load_markets()
        with pytest.raises(ccxt.InvalidOrder, match=f"User or API Wallet {address_of('0x' + '77' * 32)} does not"):
            await market_buy(stranger, 0.01)
        await mainnet.load_markets()
        with pytest.raises(ccxt.InvalidOrder, match=r"User or API Wallet 0x[0-9a-f]{40} does not exist"):
            await market_buy(mainnet, 0.01)
    finally:
        await stranger.close()
        await mainnet.close()
    assert fake.book.orders() == []

    agent_key = "0x" + "55" * 32
    fake.add_agent(agent_key)  # an approved API wallet signs for the wallet
    agent = make_client(fake.base_url, private_key=agent_key)
    try:
        order = await market_buy(agent, 0.01, CLOID_ENTRY)
        assert order["filled"] == 0.01
    finally:
        await agent.close()


async def test_nonces_are_never_reused_and_stay_near_the_clock(fake: FakeHyperliquidPerps, client: Any) -> None:
    await market_buy(client, 0.01)
    replay = fake.matching("order")[-1].json
    assert post(fake.base_url, replay) == {
        "status": "err",
        "response": f"Invalid nonce: duplicate nonce {replay['nonce']}",
    }
    action = {"type": "cancel", "cancels": [{"a": 0, "o": 1}]}
    stale = fake.now_ms - 3 * 86_400_000
    body = {"action": action, "nonce": stale, "signature": client.sign_l1_action(action, stale)}
    answer = post(fake.base_url, body)
    assert answer["status"] == "err" and answer["response"].startswith(f"Invalid nonce: nonce {stale} is too far")
    assert len(fake.book.orders()) == 1


async def test_lost_answer_times_out_while_the_order_exists(fake: FakeHyperliquidPerps, client: Any) -> None:
    client.timeout = 400
    fake.lose_answer("order", delay_s=1.2)
    with pytest.raises(ccxt.RequestTimeout):
        await market_buy(client, 0.01, CLOID_ENTRY)
    [placed] = fake.book.orders()
    assert placed.client_id == CLOID_ENTRY and placed.status == "filled"
    client.timeout = 3000
    found = await client.fetch_order("", SYMBOL, {"clientOrderId": CLOID_ENTRY})
    assert found["status"] == "closed" and found["filled"] == 0.01 and found["id"] == str(placed.id)


async def test_5xx_after_processing(fake: FakeHyperliquidPerps, client: Any) -> None:
    resting = await client.create_order(SYMBOL, "limit", "buy", 0.001, 90_000, {"clientOrderId": CLOID_ENTRY})
    fake.fail_after("cancelByCloid", status=500)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await client.cancel_order("", SYMBOL, {"clientOrderId": CLOID_ENTRY})
    assert (await client.fetch_order(resting["id"], SYMBOL))["status"] == "canceled"


async def test_partial_fill_and_funding(fake: FakeHyperliquidPerps, client: Any) -> None:
    fake.book.partial_next(0.5)
    order = await market_buy(client, 0.02, CLOID_ENTRY)
    assert order["filled"] == 0.01  # the IOC's totalSz is what filled
    found = await client.fetch_order(order["id"], SYMBOL)
    assert found["amount"] == 0.02 and found["filled"] == 0.01 and found["status"] == "canceled"

    fake.book.settle_funding("BTC", 0.0001, fake.now_ms)
    [payment] = await client.fetch_funding_history(SYMBOL)
    assert payment["amount"] == pytest.approx(-0.01 * 100_000 * 0.0001) and payment["rate"] == 0.0001
    [position] = await client.fetch_positions([SYMBOL])
    assert float(position["info"]["position"]["cumFunding"]["sinceOpen"]) == pytest.approx(0.1)


async def test_grouped_position_tpsl_closes_the_whole_position(fake: FakeHyperliquidPerps, client: Any) -> None:
    await market_buy(client, 0.02)
    created = await client.create_order(
        SYMBOL,
        "market",
        "buy",
        0.02,
        100_000,
        {"grouping": "positionTpsl", "stopLoss": {"triggerPrice": 97_000}, "takeProfit": {"triggerPrice": 104_000}},
    )
    assert created["status"] == "waitingForTrigger"  # ccxt keeps the venue's word for a grouped TP/SL
    sent = fake.matching("order")[-1].json["action"]
    assert sent["grouping"] == "positionTpsl" and [o["s"] for o in sent["orders"]] == ["0", "0"]
    orders = await client.fetch_open_orders(SYMBOL)
    assert sorted(o["info"]["orderType"] for o in orders) == ["Stop Market", "Take Profit Market"]
    assert all(o["info"]["isPositionTpsl"] for o in orders)
    fake.book.set_price("BTC", 104_500.0)
    assert await client.fetch_positions([SYMBOL]) == []
    assert await client.fetch_open_orders(SYMBOL) == []  # the stop went with the position


async def test_normal_tpsl_group_places_stops_after_the_entry_fills(fake: FakeHyperliquidPerps, client: Any) -> None:
    params = {"stopLoss": {"triggerPrice": 97_000, "type": "market"}, "takeProfit": {"triggerPrice": 104_000}}
    request = {"symbol": SYMBOL, "type": "market", "side": "buy", "amount": 0.01, "price": 100_000, "params": params}
    entry, *children = await client.create_orders([request])
    assert entry["filled"] == 0.01 and [c["status"] for c in children] == ["waitingForTrigger"] * 2
    sent = fake.matching("order")[-1].json["action"]
    assert sent["grouping"] == "normalTpsl" and len(sent["orders"]) == 3
    stops = await client.fetch_open_orders(SYMBOL)
    assert sorted((o["info"]["orderType"], o["amount"], o["reduceOnly"]) for o in stops) == [
        ("Stop Market", 0.01, True),
        ("Take Profit Market", 0.01, True),
    ]


async def test_liquidation_fill_is_reported_as_the_venue_does(fake: FakeHyperliquidPerps, client: Any) -> None:
    await client.set_leverage(40, SYMBOL, {"marginMode": "isolated"})
    await market_buy(client, 0.01)
    [position] = await client.fetch_positions([SYMBOL])
    liquidation_price = position["liquidationPrice"]
    assert 97_000 < liquidation_price < 100_000
    fake.book.set_price("BTC", 95_000.0)
    assert await client.fetch_positions([SYMBOL]) == []
    last = (await client.fetch_my_trades(SYMBOL))[-1]
    assert last["side"] == "sell" and last["price"] == pytest.approx(liquidation_price, rel=1e-6)
    assert last["info"]["liquidation"]["liquidatedUser"] == FakeHyperliquidPerps.WALLET
    [liquidation] = await client.fetch_my_liquidations(SYMBOL)
    assert liquidation["contracts"] == 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_standalone_mode_prints_credentials_and_orders() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.hyperliquid_trading", "--port", str(port)],
        cwd=BACKEND,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def until(predicate: Callable[[str], bool]) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            if predicate(seen[-1]):
                return seen
        raise AssertionError(f"no such line in {seen}")

    async def trade() -> None:
        exchange = make_client(f"http://127.0.0.1:{port}")
        try:
            await exchange.load_markets()
            mark = (await exchange.fetch_ticker(SYMBOL))["last"]
            await exchange.create_order(SYMBOL, "market", "buy", 0.001, mark, {"clientOrderId": CLOID_ENTRY})
        finally:
            await exchange.close()

    try:
        head = until(lambda line: line.startswith("Ctrl-C"))
        assert f"http://127.0.0.1:{port}" in head[0]
        assert FakeHyperliquidPerps.WALLET in head[1] and FakeHyperliquidPerps.PRIVATE_KEY in head[2]
        asyncio.run(trade())
        events = until(lambda line: line.startswith("filled"))
        assert any(line.startswith("placed") and CLOID_ENTRY in line for line in events)
        assert "buy 0.001 BTC" in events[-1]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
