"""Reduce-only orders outlive their position at Binance: a target left after its stop fired, or a stop and target left
after a close, would act on the next position of that asset. The close and the watchdog cancel them; on the live
adapter against the Binance fake with the venue's behaviour (the book keeps reduce-only orders of a flat asset)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.services.exchange.base import OrderRequest
from app.services.exchange.live import LiveExchange, VenueCredentials
from app.services.execution.executor import ExecutionReport, OrderRun
from app.services.execution.watchdog import StopWatchdog
from tests.fakes.binance_trading import FakeBinanceFutures


@pytest.fixture
async def venue() -> AsyncIterator[tuple[LiveExchange, FakeBinanceFutures]]:
    with FakeBinanceFutures(["BTC"], balance=5_000.0) as fake:
        fake.book.keeps_orphans = True
        fake.book.set_price("BTC", 100_000.0)
        exchange = LiveExchange(
            "binanceusdm",
            VenueCredentials(fake.API_KEY, fake.API_SECRET),
            network="testnet",
            assets=["BTC"],
            api_url=fake.base_url,
            rate_limit_ms=1.0,
        )
        try:
            await exchange.start()
            await exchange.set_leverage("BTC", 5)
            yield exchange, fake
        finally:
            await exchange.close()


async def _protected_long(exchange: LiveExchange) -> None:
    entry = await exchange.place_order(OrderRequest("a1-d1-BTC-en", "BTC", "buy", "market", 0.01))
    assert entry.status == "filled"
    stop = OrderRequest("a1-d1-BTC-sl", "BTC", "sell", "stop_market", 0.01, 95_000.0, True, "stop_loss")
    target = OrderRequest("a1-d1-BTC-tp", "BTC", "sell", "take_profit_market", 0.01, 110_000.0, True, "take_profit")
    assert (await exchange.place_order(stop)).status == "open"
    assert (await exchange.place_order(target)).status == "open"


async def test_a_close_cancels_the_stop_and_target_the_venue_keeps(
    venue: tuple[LiveExchange, FakeBinanceFutures],
) -> None:
    exchange, fake = venue
    await _protected_long(exchange)
    [position] = await exchange.fetch_positions()
    run = OrderRun(exchange, 1, "d2", ExecutionReport(), 2)
    assert (await run.close(position)).status == "filled"
    assert await exchange.fetch_positions() == []
    assert await exchange.fetch_open_orders() == []
    assert {o.client_id: o.status for o in fake.book.orders() if o.type != "market"} == {
        "a1-d1-BTC-sl": "canceled",
        "a1-d1-BTC-tp": "canceled",
    }


async def test_the_watchdog_cancels_a_target_left_after_its_stop_fired(
    venue: tuple[LiveExchange, FakeBinanceFutures],
) -> None:
    exchange, fake = venue
    await _protected_long(exchange)
    fake.book.set_price("BTC", 94_000.0)  # the stop fires at the venue; the venue keeps the target open
    assert await exchange.fetch_positions() == []
    assert [o.client_order_id for o in await exchange.fetch_open_orders()] == ["a1-d1-BTC-tp"]
    guard = await StopWatchdog().check(
        exchange, OrderRun(exchange, 1, "w9", ExecutionReport()), levels={}, stop_loss_percentage=2
    )
    assert guard.cancelled == ["a1-d1-BTC-tp"] and await exchange.fetch_open_orders() == []
    # a new long is not closed early at the old target's level
    assert (await exchange.place_order(OrderRequest("a1-d3-BTC-en", "BTC", "buy", "market", 0.01))).status == "filled"
    fake.book.set_price("BTC", 111_000.0)
    assert len(await exchange.fetch_positions()) == 1
