"""What one cycle's venue reads cost a live account, through ccxt with the venue's own request weights, against the
fake venues over a real socket (reported, not asserted).

Each line: one `LiveExchange` call on a 3-asset account, its wall time and the HTTP requests it made. The time is
mostly ccxt's rate limiter (Binance weighs requests: an account read 5, fills 5 per asset, income 30): what the
same reads would wait on the real venue. Run: `make bench` (or `.venv/bin/python benchmarks/bench_live_reads.py`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fakes live in tests/

from tests.fakes.binance_trading import FakeBinanceFutures
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps

from app.services.exchange.live import LiveExchange, VenueCredentials

ASSETS = ["BTC", "ETH", "SOL"]


async def measure(venue: str) -> None:
    fake: FakeBinanceFutures | FakeHyperliquidPerps
    if venue == "binanceusdm":
        fake = FakeBinanceFutures(ASSETS)
        credentials = VenueCredentials(fake.API_KEY, fake.API_SECRET)
    else:
        fake = FakeHyperliquidPerps(ASSETS)
        credentials = VenueCredentials(fake.WALLET, fake.PRIVATE_KEY)
    with fake:
        exchange = LiveExchange(venue, credentials, network="testnet", assets=ASSETS, api_url=fake.base_url)  # type: ignore[arg-type]
        calls = [
            ("start", exchange.start),
            ("fetch_positions", exchange.fetch_positions),
            ("fetch_open_orders", exchange.fetch_open_orders),
            ("fetch_balance", exchange.fetch_balance),
            ("fetch_fills", exchange.fetch_fills),
            ("fetch_funding_payments", exchange.fetch_funding_payments),
        ]
        total = 0.0
        try:
            for name, call in calls:
                before, started = len(fake.requests), time.perf_counter()
                await call()
                spent = time.perf_counter() - started
                total += spent if name != "start" else 0.0
                print(f"  {venue:<12} {name:<24} {spent:6.2f} s  {len(fake.requests) - before:3d} requests")
        finally:
            await exchange.close()
        print(f"  {venue:<12} {'reads of one cycle':<24} {total:6.2f} s")


async def main() -> None:
    for venue in ("binanceusdm", "hyperliquid"):
        await measure(venue)


if __name__ == "__main__":
    asyncio.run(main())
