"""The live adapter keeps the answers of its reads for one moment: a cycle's reconciliation, execution, stop watchdog
and mirror read the positions, orders, fills and balance many times, and asking the venue each time spent its
request weight. Kept until the adapter's next write (whatever its outcome), `refresh()`, or READ_CACHE_S on the wall
clock; counted at the fake venues over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.clock import ManualClock
from app.services.exchange.base import OrderRequest
from app.services.exchange.live import READ_CACHE_S, LiveExchange, VenueCredentials, reset_rate_limits
from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps

VENUES = ["binanceusdm", "hyperliquid"]


@pytest.fixture(autouse=True)
def _no_rate_limit_leaks() -> Iterator[None]:
    reset_rate_limits()
    yield
    reset_rate_limits()


def _fake(venue: str) -> Any:
    return (FakeBinanceFutures if venue == "binanceusdm" else FakeHyperliquidPerps)(["BTC", "ETH"], balance=10_000.0)


def _adapter(venue: str, fake: Any, clock: ManualClock) -> LiveExchange:
    credentials = (
        VenueCredentials(fake.API_KEY, fake.API_SECRET)
        if venue == "binanceusdm"
        else VenueCredentials(fake.WALLET, fake.PRIVATE_KEY)
    )
    return LiveExchange(
        venue,  # type: ignore[arg-type]
        credentials,
        network="testnet",
        assets=["BTC", "ETH"],
        api_url=fake.base_url,
        rate_limit_ms=1.0,
        lookup_backoff_s=0.01,
        wall_clock=clock,
    )


async def _reads(fake: Any, exchange: LiveExchange) -> int:
    """How many requests one look at the account (positions, open orders, fills, balance) sends."""
    before = len(fake.requests)
    await exchange.fetch_positions()
    await exchange.fetch_open_orders()
    await exchange.fetch_fills()
    await exchange.fetch_balance()
    return len(fake.requests) - before


@pytest.mark.parametrize("venue", VENUES)
async def test_reads_are_kept_until_a_write_a_refresh_or_their_time_is_up(venue: str) -> None:
    clock = ManualClock(datetime.now(UTC))
    with _fake(venue) as fake:
        exchange = _adapter(venue, fake, clock)
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
