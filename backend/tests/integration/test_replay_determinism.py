"""Replay of real Binance USD-M 5m candles and funding rates through the paper venue with a scripted strategy:
the same trade list (fills and funding payments) twice, byte for byte.

Data: `../shared/data/market/binance_usdm_typhonun_mit/` ({BTC,ETH,SOL}_USDT-5m.csv with header
`timestamp_ms,open,high,low,close,volume`, {...}-funding.csv with `timestamp_ms,funding_rate`); the test
skips when the directory is absent. The replay covers the candles all three assets share (about 8,600 per
asset). A funding rate stamped at T (the stamps carry millisecond jitter) is settled at the open of the
first candle whose open time is >= T, at that candle's open price, before the candle is walked.

Strategy (per asset, on closed candles): EMA(12) / EMA(48) of the closes (TA-Lib definition: seeded with
the SMA). A cross up opens a long, a cross down a short, worth 2,000 USD at 5x; signals alternate between a
market entry and a limit entry 0.1% better than the close (canceled if it has not filled after 6 candles).
Every position gets a stop 1.5% and a target 3% from its entry as soon as it is seen unprotected; targets
alternate between take-profit market orders and reduce-only limits. An opposite cross closes the position
at market.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from app.core.clock import ManualClock
from app.services.exchange.base import FEE_PROFILES, Fill, FundingPayment, OrderRequest, OrderSide
from app.services.exchange.paper import PaperVenue
from app.services.exchange.paper_math import round_down_to_step, round_to_tick
from app.services.market_data.base import Candle, MarketRules

pytestmark = pytest.mark.shared_data

DATASET = "market/binance_usdm_typhonun_mit"
SYMBOLS = ("BTC", "ETH", "SOL")
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=100.0, max_leverage=125),
    "ETH": MarketRules("ETH", "ETH/USDT:USDT", tick_size=0.01, lot_size=0.001, min_notional=20.0, max_leverage=100),
    "SOL": MarketRules("SOL", "SOL/USDT:USDT", tick_size=0.01, lot_size=1.0, min_notional=5.0, max_leverage=100),
}
INITIAL = 10_000.0
LEVERAGE = 5.0
NOTIONAL = 2_000.0
FAST, SLOW = 12, 48
STOP, TARGET, LIMIT_OFFSET, LIMIT_BARS = 0.015, 0.03, 0.001, 6
STEP = timedelta(minutes=5)
Floats = npt.NDArray[np.float64]


@dataclass
class Market:
    open_ms: npt.NDArray[np.int64]
    ohlcv: Floats  # rows: open, high, low, close, volume
    fast: Floats
    slow: Floats
    funding: dict[int, tuple[int, float]]  # candle index -> (funding time ms, rate)


@dataclass
class Book:
    signals: int = 0
    pending: dict[str, int] = field(default_factory=dict)  # resting entry limit -> candle index placed
    protections: int = 0


def load_csv(path: Path, header: str) -> Floats:
    with path.open() as handle:
        assert handle.readline().strip() == header, f"unexpected header in {path}"
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def ema(values: Floats, period: int) -> Floats:
    """TA-Lib EMA: k = 2 / (n + 1), seeded with the SMA of the first n values; NaN before index n - 1."""
    out = np.full(values.shape, np.nan)
    k = 2.0 / (period + 1)
    out[period - 1] = values[:period].mean()
    for i in range(period, len(values)):
        out[i] = values[i] * k + out[i - 1] * (1 - k)
    return out


def load_markets(root: Path) -> dict[str, Market]:
    candles = {s: load_csv(root / f"{s}_USDT-5m.csv", "timestamp_ms,open,high,low,close,volume") for s in SYMBOLS}
    common = candles[SYMBOLS[0]][:, 0]
    for symbol in SYMBOLS[1:]:
        common = np.intersect1d(common, candles[symbol][:, 0])
    markets = {}
    for symbol in SYMBOLS:
        table = candles[symbol][np.isin(candles[symbol][:, 0], common)]
        open_ms = table[:, 0].astype(np.int64)
        assert np.all(np.diff(open_ms) > 0)
        funding_rows = load_csv(root / f"{symbol}_USDT-funding.csv", "timestamp_ms,funding_rate")
        funding: dict[int, tuple[int, float]] = {}
        for stamp, rate in funding_rows:
            index = int(np.searchsorted(open_ms, int(stamp), side="left"))  # first candle opening at or after it
            if int(stamp) >= open_ms[0] and index < len(open_ms):
                funding[index] = (int(stamp), float(rate))
        closes = table[:, 4].copy()
        markets[symbol] = Market(open_ms, table[:, 1:6].copy(), ema(closes, FAST), ema(closes, SLOW), funding)
    return markets


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def protect(venue: PaperVenue, symbol: str, book: Book, mark: float) -> None:
    """Give an unprotected position its stop and target (or close it if the stop would already be hit)."""
    position = next((p for p in await venue.fetch_positions() if p.symbol == symbol), None)
    if position is None or await venue.fetch_open_orders(symbol):
        return
    book.protections += 1
    n, sign = book.protections, 1.0 if position.side == "long" else -1.0
    side: OrderSide = "sell" if position.side == "long" else "buy"
    stop_price = round_to_tick(position.entry_price * (1 - sign * STOP), RULES[symbol].tick_size)
    target = round_to_tick(position.entry_price * (1 + sign * TARGET), RULES[symbol].tick_size)
    if (stop_price >= mark) if sign > 0 else (stop_price <= mark):
        await venue.place_order(OrderRequest(f"{symbol}-x{n}", symbol, side, "market", position.size, reduce_only=True))
        return
    stop = OrderRequest(f"{symbol}-sl{n}", symbol, side, "stop_market", position.size, stop_price, True, "stop_loss")
    await venue.place_order(stop)
    if n % 2:
        tp = OrderRequest(f"{symbol}-tp{n}", symbol, side, "take_profit_market", position.size, target, True)
    else:
        tp = OrderRequest(f"{symbol}-tl{n}", symbol, side, "limit", position.size, None, True, "take_profit", target)
    await venue.place_order(tp)


async def decide(venue: PaperVenue, symbol: str, market: Market, i: int, book: Book) -> None:
    close = float(market.ohlcv[i, 3])
    for cid, placed in list(book.pending.items()):
        order = await venue.fetch_order(symbol, cid)
        if order is None or order.status != "open":
            del book.pending[cid]
        elif i - placed >= LIMIT_BARS:
            await venue.cancel_order(symbol, cid)
            del book.pending[cid]
    await protect(venue, symbol, book, close)
    if i < SLOW:
        return
    up = market.fast[i - 1] <= market.slow[i - 1] and market.fast[i] > market.slow[i]
    down = market.fast[i - 1] >= market.slow[i - 1] and market.fast[i] < market.slow[i]
    if not (up or down):
        return
    book.signals += 1
    n = book.signals
    side: OrderSide = "buy" if up else "sell"
    position = next((p for p in await venue.fetch_positions() if p.symbol == symbol), None)
    if position is not None:
        if (position.side == "long") != up:
            exit_side: OrderSide = "sell" if position.side == "long" else "buy"
            request = OrderRequest(f"{symbol}-c{n}", symbol, exit_side, "market", position.size, reduce_only=True)
            await venue.place_order(request)
        else:
            return
    if book.pending:
        return
    quantity = round_down_to_step(NOTIONAL / close, RULES[symbol].lot_size)
    if n % 2:
        await venue.place_order(OrderRequest(f"{symbol}-e{n}", symbol, side, "market", quantity))
        await protect(venue, symbol, book, close)
        return
    sign = -1.0 if up else 1.0
    price = round_to_tick(close * (1 + sign * LIMIT_OFFSET), RULES[symbol].tick_size)
    entry = await venue.place_order(OrderRequest(f"{symbol}-l{n}", symbol, side, "limit", quantity, price=price))
    if entry.status == "open":
        book.pending[entry.client_order_id] = i


async def replay(markets: dict[str, Market]) -> tuple[PaperVenue, list[Fill], list[FundingPayment]]:
    first = markets[SYMBOLS[0]].open_ms
    clock = ManualClock(at(int(first[0])))
    venue = PaperVenue(
        initial_balance=INITIAL, rules=RULES, fees=FEE_PROFILES["binanceusdm"], clock=clock, default_leverage=LEVERAGE
    )
    books = {symbol: Book() for symbol in SYMBOLS}
    for i in range(len(first)):
        clock.set(at(int(first[i])))
        for symbol in SYMBOLS:
            market = markets[symbol]
            o, h, low, c, v = (float(x) for x in market.ohlcv[i])
            if i in market.funding:
                stamp, rate = market.funding[i]
                venue.apply_funding(symbol, rate, at(stamp), mark_price=o)
            if i == 0:
                venue.set_mark_price(symbol, o)
            venue.on_candle(symbol, Candle(int(market.open_ms[i]), o, h, low, c, v))
        clock.set(at(int(first[i])) + STEP)  # decisions at the close
        for symbol in SYMBOLS:
            await decide(venue, symbol, markets[symbol], i, books[symbol])
    return venue, await venue.fetch_fills(), await venue.fetch_funding_payments()


def trade_hash(fills: list[Fill], payments: list[FundingPayment]) -> str:
    """sha256 of a canonical text of the trade list, floats rounded to 8 significant decimals."""
    rows: list[tuple[object, ...]] = [
        (
            "fill",
            f.fill_id,
            f.client_order_id,
            f.symbol,
            f.side,
            f"{f.quantity:.8g}",
            f"{f.price:.10g}",
            f"{f.fee:.8g}",
            f"{f.realized_pnl:.8g}",
            f.liquidity,
            f.reason,
            f.timestamp.isoformat(),
        )
        for f in fills
    ]
    rows += [
        (
            "funding",
            p.symbol,
            p.funding_time.isoformat(),
            f"{p.rate:.8g}",
            p.position_side,
            f"{p.position_size:.8g}",
            f"{p.mark_price:.10g}",
            f"{p.amount:.8g}",
        )
        for p in payments
    ]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


async def test_replay_is_deterministic(shared_data: Path) -> None:
    root = shared_data / DATASET
    if not root.is_dir():
        pytest.skip(f"needs {root}")
    markets = load_markets(root)
    candles = len(markets[SYMBOLS[0]].open_ms)
    assert candles > 8_000

    venue, fills, payments = await replay(markets)
    _, fills_again, payments_again = await replay(load_markets(root))
    first, second = trade_hash(fills, payments), trade_hash(fills_again, payments_again)
    assert first == second
    assert fills == fills_again
    assert payments == payments_again

    reasons = {r: sum(f.reason == r for f in fills) for r in sorted({f.reason for f in fills})}
    makers = sum(f.liquidity == "maker" for f in fills)
    print(
        f"\nreplay: {candles} candles x {len(SYMBOLS)} assets, {len(fills)} fills ({makers} maker) {reasons}, "
        f"{len(payments)} funding payments, trade list sha256 {first}"
    )
    assert len(fills) > 20
    assert makers > 0
    assert {"stop_loss", "take_profit"} <= set(reasons)
    assert len(payments) > 0
    assert any(p.amount < 0 for p in payments) and any(p.amount > 0 for p in payments)

    balance = await venue.fetch_balance()
    assert balance.equity == pytest.approx(
        INITIAL
        + balance.realized_pnl
        + balance.unrealized_pnl
        - balance.fees_paid
        - balance.funding_paid
        + balance.funding_received,
        abs=1e-6,
    )
    assert balance.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills), abs=1e-6)
    assert balance.fees_paid == pytest.approx(sum(f.fee for f in fills), abs=1e-6)
    assert balance.funding_paid - balance.funding_received == pytest.approx(-sum(p.amount for p in payments), abs=1e-9)
