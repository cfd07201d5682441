"""Property test: random orders, protective orders, candles and marks keep the paper venue's books exact."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.services.exchange import paper_math as pm
from app.services.exchange.base import FEE_PROFILES, FeeProfile, OrderRequest, OrderSide, OrderType
from app.services.exchange.paper import PaperVenue, PaperVenueSnapshot
from app.services.market_data.base import Candle, MarketRules

T = TypeVar("T")
INITIAL = 5_000.0
SYMBOLS = ("BTC", "ETH")
START = {"BTC": 100_000.0, "ETH": 3_000.0}
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", 0.1, 0.001, 100.0, 125.0),
    "ETH": MarketRules("ETH", "ETH/USDT:USDT", 0.01, 0.01, 20.0, 100.0),
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (the paper venue awaits nothing) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        value: T = done.value
        return value
    coro.close()
    raise AssertionError("coroutine suspended")


@dataclass(frozen=True)
class Market:
    symbol: str
    side: OrderSide
    lots: int
    reduce_only: bool


@dataclass(frozen=True)
class Protect:
    symbol: str
    kind: OrderType  # stop_market | take_profit_market
    offset: float  # fraction of the mark
    size_fraction: float


@dataclass(frozen=True)
class Bracket:
    symbol: str
    side: OrderSide
    lots: int
    stop_offset: float
    tp_offset: float


@dataclass(frozen=True)
class Bar:
    symbol: str
    gap: float
    body: float
    up: float
    down: float


@dataclass(frozen=True)
class Mark:
    symbol: str
    move: float


@dataclass(frozen=True)
class Leverage:
    symbol: str
    leverage: int


@dataclass(frozen=True)
class Cancel:
    index: int


symbols = st.sampled_from(SYMBOLS)
moves = st.floats(-0.12, 0.12, allow_nan=False)
offsets = st.floats(0.001, 0.15)
step = st.one_of(
    st.builds(Bracket, symbols, st.sampled_from(["buy", "sell"]), st.integers(1, 60), offsets, offsets),
    st.builds(Market, symbols, st.sampled_from(["buy", "sell"]), st.integers(1, 60), st.booleans()),
    st.builds(
        Protect,
        symbols,
        st.sampled_from(["stop_market", "take_profit_market"]),
        offsets,
        st.floats(0.3, 1.5),
    ),
    st.builds(Bar, symbols, moves, moves, st.floats(0, 0.1), st.floats(0, 0.1)),
    st.builds(Bar, symbols, moves, moves, st.floats(0, 0.1), st.floats(0, 0.1)),
    st.builds(Mark, symbols, moves),
    st.builds(Leverage, symbols, st.integers(1, 60)),
    st.builds(Cancel, st.integers(0, 10)),
)


def check_books(venue: PaperVenue) -> None:
    balance = run(venue.fetch_balance())
    positions = run(venue.fetch_positions())
    fills = run(venue.fetch_fills())
    assert balance.equity == pytest.approx(
        INITIAL + balance.realized_pnl + balance.unrealized_pnl - balance.fees_paid, abs=1e-6
    )
    assert balance.margin_used == pytest.approx(sum(p.margin for p in positions), abs=1e-9)
    assert balance.available == pytest.approx(balance.wallet_balance - balance.margin_used, abs=1e-9)
    assert balance.available >= -1e-6
    assert balance.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills), abs=1e-6)
    assert balance.fees_paid == pytest.approx(sum(f.fee for f in fills), abs=1e-6)
    assert len({f.fill_id for f in fills}) == len(fills)
    by_symbol = {p.symbol: p for p in positions}
    for position in positions:
        assert position.size > 0
        assert position.margin > 0
    for order in run(venue.fetch_open_orders()):
        assert order.reduce_only
        assert order.type in ("stop_market", "take_profit_market")
        held = by_symbol.get(order.symbol)
        assert held is not None, "a flat symbol kept a reduce-only order"
        assert order.side == pm.closing_side(held.side)


def check_price_move(venue: PaperVenue, symbol: str, before: PaperVenueSnapshot, low: float, high: float) -> None:
    """Nothing the move reached may survive it: crossed triggers fired, crossed liquidations happened."""
    positions = {p.symbol: p for p in run(venue.fetch_positions())}
    old = next((p for p in before["positions"] if p.symbol == symbol), None)
    if old is None:
        return
    now = positions.get(symbol)
    lp = old.liquidation_price
    if lp is not None:
        crossed = low <= lp if old.side == "long" else high >= lp
        assert not (crossed and now is not None), "position survived its liquidation price"
    open_ids = {o.client_order_id for o in run(venue.fetch_open_orders(symbol))}
    for order in before["open_orders"]:
        if order.symbol != symbol or order.trigger_price is None:
            continue
        direction = pm.trigger_direction(order.side, order.type)
        crossed = low <= order.trigger_price if direction == "down" else high >= order.trigger_price
        if crossed:
            assert order.client_order_id not in open_ids, "a crossed trigger is still resting"
            if order.type == "stop_market" and order.quantity >= old.size:
                assert now is None, "position survived a candle that crossed its stop"


def apply(venue: PaperVenue, action: object, n: int, marks: dict[str, float]) -> None:
    if isinstance(action, Market):
        lots = action.lots * RULES[action.symbol].lot_size
        run(
            venue.place_order(
                OrderRequest(f"m{n}", action.symbol, action.side, "market", lots, None, action.reduce_only)
            )
        )
    elif isinstance(action, Bracket):
        lots = action.lots * RULES[action.symbol].lot_size
        run(venue.place_order(OrderRequest(f"b{n}", action.symbol, action.side, "market", lots)))
        apply(venue, Protect(action.symbol, "stop_market", action.stop_offset, 1.0), n, marks)
        apply(venue, Protect(action.symbol, "take_profit_market", action.tp_offset, 1.0), n, marks)
    elif isinstance(action, Protect):
        held = {p.symbol: p for p in run(venue.fetch_positions())}.get(action.symbol)
        if held is None:
            return
        side = pm.closing_side(held.side)
        direction = pm.trigger_direction(side, action.kind)
        sign = -1.0 if direction == "down" else 1.0
        trigger = marks[action.symbol] * (1 + sign * action.offset)
        request = OrderRequest(
            f"p{n}-{action.kind}",
            action.symbol,
            side,
            action.kind,
            held.size * action.size_fraction,
            trigger,
            True,
        )
        run(venue.place_order(request))
    elif isinstance(action, Bar):
        mark = marks[action.symbol]
        o, c = mark * (1 + action.gap), mark * (1 + action.body)
        high, low = max(o, c) * (1 + action.up), min(o, c) * (1 - action.down)
        before = venue.snapshot()
        venue.on_candle(action.symbol, Candle(n, o, high, low, c, 1.0))
        marks[action.symbol] = c
        check_price_move(venue, action.symbol, before, low, high)
    elif isinstance(action, Mark):
        price = marks[action.symbol] * (1 + action.move)
        before = venue.snapshot()
        venue.set_mark_price(action.symbol, price)
        marks[action.symbol] = price
        check_price_move(venue, action.symbol, before, price, price)
    elif isinstance(action, Leverage):
        run(venue.set_leverage(action.symbol, min(action.leverage, RULES[action.symbol].max_leverage)))
    elif isinstance(action, Cancel):
        orders = run(venue.fetch_open_orders())
        if orders:
            target = orders[action.index % len(orders)]
            run(venue.cancel_order(target.symbol, target.client_order_id))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fees=st.sampled_from([FEE_PROFILES["binanceusdm"], FEE_PROFILES["hyperliquid"]]),
    leverage=st.integers(1, 50),
    actions=st.lists(step, min_size=10, max_size=40),
)
def test_books_stay_exact(fees: FeeProfile, leverage: int, actions: list[object]) -> None:
    clock = ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
    venue = PaperVenue(initial_balance=INITIAL, rules=RULES, fees=fees, clock=clock, default_leverage=leverage)
    marks = dict(START)
    for symbol, price in marks.items():
        venue.set_mark_price(symbol, price)
    for n, action in enumerate(actions):
        clock.advance(timedelta(minutes=1))
        apply(venue, action, n, marks)
        check_books(venue)

    restored = PaperVenue(initial_balance=0.0, rules=RULES, fees=fees, clock=clock)
    restored.restore(**venue.snapshot())
    assert run(restored.fetch_balance()) == run(venue.fetch_balance())
    assert run(restored.fetch_positions()) == run(venue.fetch_positions())
    assert run(restored.fetch_open_orders()) == run(venue.fetch_open_orders())
