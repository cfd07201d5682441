"""A position the venue holds in an asset outside ASSETS (opened by hand in another coin, or left over after ASSETS
was narrowed): the adapter reads its orders and fills too, so the stop watchdog protects it once (not a new stop
every cycle, which on Binance ends at the venue's stop-order limit) and the stop's fill closes it in the history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.services.exchange.live import LiveExchange, VenueCredentials, reset_rate_limits
from app.services.execution.executor import ExecutionReport, OrderRun
from app.services.execution.watchdog import StopWatchdog
from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps


@pytest.fixture(autouse=True)
def _no_rate_limit_leaks() -> Iterator[None]:
    reset_rate_limits()
    yield
    reset_rate_limits()


def _adapter(venue: str, fake: Any) -> LiveExchange:
    credentials = (
        VenueCredentials(fake.API_KEY, fake.API_SECRET)
        if venue == "binanceusdm"
        else VenueCredentials(fake.WALLET, fake.PRIVATE_KEY)
    )
    return LiveExchange(
        venue,  # type: ignore[arg-type]
        credentials,
        network="testnet",
        assets=["BTC"],
        api_url=fake.base_url,
        rate_limit_ms=1.0,
        lookup_backoff_s=0.01,
    )


@pytest.mark.parametrize("venue", ["binanceusdm", "hyperliquid"])
async def test_a_position_outside_the_assets_gets_one_stop_and_its_stop_fill_is_read(venue: str) -> None:
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
