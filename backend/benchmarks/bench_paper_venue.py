"""Candle-steps per second through the paper venue: 3 assets, positions kept open with a stop, a take-profit
and a resting reduce-only limit each (re-opened when an exit closes them), funding settled every 8 h (96
candles), seeded random-walk 5m candles generated with numpy. Prints figures only; asserts no timing.

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_paper_venue.py)
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from app.core.clock import ManualClock
from app.services.exchange.base import FEE_PROFILES, OrderRequest, OrderSide
from app.services.exchange.paper import PaperVenue
from app.services.market_data.base import Candle, MarketRules

T = TypeVar("T")
STEPS = 20_000  # candles per asset
SEED = 7
START = {"BTC": 100_000.0, "ETH": 3_000.0, "SOL": 150.0}
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", 0.1, 0.001, 100.0, 125.0),
    "ETH": MarketRules("ETH", "ETH/USDT:USDT", 0.01, 0.001, 20.0, 100.0),
    "SOL": MarketRules("SOL", "SOL/USDT:USDT", 0.01, 1.0, 5.0, 100.0),
}
QUANTITY = {"BTC": 0.02, "ETH": 0.6, "SOL": 12.0}


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the paper venue awaits nothing) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        value: T = done.value
        return value
    coro.close()
    raise RuntimeError("coroutine suspended")


def random_walk(rng: np.random.Generator, start: float, steps: int) -> np.ndarray:
    """Rows of open, high, low, close, volume: log-normal closes (0.15% per candle), wicks, volume."""
    closes = start * np.exp(np.cumsum(rng.normal(0.0, 0.0015, steps)))
    opens = np.concatenate(([start], closes[:-1]))
    wick = np.abs(rng.normal(0.0, 0.001, (steps, 2)))
    highs = np.maximum(opens, closes) * (1 + wick[:, 0])
    lows = np.minimum(opens, closes) * (1 - wick[:, 1])
    volumes = rng.uniform(50.0, 500.0, steps) * 100_000.0 / start
    return np.column_stack([opens, highs, lows, closes, volumes])


def protect(venue: PaperVenue, symbol: str, n: int) -> None:
    """Open a long or short with a stop 2%, a take-profit 2% and a reduce-only limit 1.5% away."""
    side: OrderSide = "buy" if n % 2 else "sell"
    exit_side: OrderSide = "sell" if side == "buy" else "buy"
    drive(venue.place_order(OrderRequest(f"{symbol}-e{n}", symbol, side, "market", QUANTITY[symbol])))
    [position] = [p for p in drive(venue.fetch_positions()) if p.symbol == symbol]
    sign = 1.0 if side == "buy" else -1.0
    entry, size = position.entry_price, position.size
    orders = [
        OrderRequest(f"{symbol}-s{n}", symbol, exit_side, "stop_market", size, entry * (1 - sign * 0.02), True),
        OrderRequest(f"{symbol}-t{n}", symbol, exit_side, "take_profit_market", size, entry * (1 + sign * 0.02), True),
        OrderRequest(
            f"{symbol}-l{n}", symbol, exit_side, "limit", size / 2, None, True, price=entry * (1 + sign * 0.015)
        ),
    ]
    for order in orders:
        drive(venue.place_order(order))


def main() -> None:
    rng = np.random.default_rng(SEED)
    series = {symbol: random_walk(rng, price, STEPS) for symbol, price in START.items()}
    candles = {
        symbol: [Candle(i * 300_000, *(float(x) for x in row)) for i, row in enumerate(rows)]
        for symbol, rows in series.items()
    }
    clock = ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
    venue = PaperVenue(
        initial_balance=1_000_000.0, rules=RULES, fees=FEE_PROFILES["binanceusdm"], clock=clock, default_leverage=5
    )
    for symbol, price in START.items():
        venue.set_mark_price(symbol, price)
    reopened = 0
    in_venue = 0.0
    step = timedelta(minutes=5)
    started = time.perf_counter()
    for i in range(STEPS):
        clock.advance(step)
        held = {p.symbol for p in drive(venue.fetch_positions())}
        for symbol in START:
            if symbol not in held:
                reopened += 1
                protect(venue, symbol, reopened)
            if i % 96 == 0:
                venue.apply_funding(symbol, 0.0001, clock.now())
            t0 = time.perf_counter()
            venue.on_candle(symbol, candles[symbol][i])
            in_venue += time.perf_counter() - t0
    total = time.perf_counter() - started
    steps = STEPS * len(START)
    fills = drive(venue.fetch_fills())
    balance = drive(venue.fetch_balance())
    print(f"paper venue, {len(START)} assets x {STEPS} candles = {steps} candle-steps, positions always open")
    print(f"  on_candle only      : {steps / in_venue:,.0f} candle-steps/s  ({in_venue / steps * 1e6:.1f} µs per step)")
    print(f"  with the strategy   : {steps / total:,.0f} candle-steps/s  ({total / steps * 1e6:.1f} µs per step)")
    print(
        f"  {len(fills)} fills, {reopened} entries with 3 resting exits each, "
        f"{len(drive(venue.fetch_funding_payments()))} funding payments, equity {balance.equity:,.2f}"
    )


if __name__ == "__main__":
    main()
