"""Property test: random orders (market, limit, protective), candles, marks and funding settlements keep the
paper venue's books exact on both venue profiles.

After every step: equity = initial + realized + unrealized - fees - funding paid + funding received, the
ledger totals match the fills and funding payments, margin_used = position margin + limit reservations, and
nothing a price move reached survives it (triggers, limits, liquidations); no position is left beyond its
liquidation price. At the end a restored venue equals the original and continues identically.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.core.clock import ManualClock
from app.services.exchange import paper_math as pm
from app.services.exchange.base import FEE_PROFILES, Fill, OrderRequest, OrderSide, OrderType
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
class Limit:
    symbol: str
    side: OrderSide
    lots: int
    offset: float  # limit price = mark * (1 + offset); a buy above the mark is marketable
    reduce_only: bool


@dataclass(frozen=True)
class Funding:
    symbol: str
    rate: float
    repeat: bool  # settle the same funding time twice: the second must do nothing


@dataclass(frozen=True)
class Bar:
    symbol: str
    gap: float
    body: float
    up: float
    down: float
    quote_volume: float = 1e6


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
    st.builds(
        Limit, symbols, st.sampled_from(["buy", "sell"]), st.integers(1, 60), st.floats(-0.08, 0.02), st.booleans()
    ),
    st.builds(Funding, symbols, st.floats(-0.003, 0.003), st.booleans()),
    st.builds(Bar, symbols, moves, moves, st.floats(0, 0.1), st.floats(0, 0.1), st.floats(1e3, 1e7)),
    st.builds(Bar, symbols, moves, moves, st.floats(0, 0.1), st.floats(0, 0.1), st.floats(1e3, 1e7)),
    st.builds(Mark, symbols, moves),
    st.builds(Leverage, symbols, st.integers(1, 60)),
    st.builds(Cancel, st.integers(0, 10)),
)


def check_books(venue: PaperVenue) -> None:
    balance = run(venue.fetch_balance())
    positions = run(venue.fetch_positions())
    fills = run(venue.fetch_fills())
    payments = run(venue.fetch_funding_payments())
    snapshot = venue.snapshot()
    assert balance.equity == pytest.approx(
        INITIAL
        + balance.realized_pnl
        + balance.unrealized_pnl
        - balance.fees_paid
        - balance.funding_paid
        + balance.funding_received,
        abs=1e-6,
    )
    open_orders = {o.client_order_id: o for o in run(venue.fetch_open_orders())}
    maker = venue.fees.maker_bps / 1e4
    reserved = sum(
        open_orders[cid].quantity * (open_orders[cid].price or 0.0) * (1 / leverage + maker)
        for cid, leverage in snapshot["order_leverage"].items()
    )
    assert set(snapshot["order_leverage"]) == {
        cid for cid, o in open_orders.items() if o.type == "limit" and not o.reduce_only
    }
    assert venue.order_margin() == pytest.approx(reserved, abs=1e-9)
    assert balance.margin_used == pytest.approx(sum(p.margin for p in positions) + reserved, abs=1e-9)
    assert balance.available == pytest.approx(balance.wallet_balance - balance.margin_used, abs=1e-9)
    assert balance.available >= -balance.funding_paid - 1e-6  # only funding paid can push it below zero
    assert balance.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills), abs=1e-6)
    assert balance.fees_paid == pytest.approx(sum(f.fee for f in fills), abs=1e-6)
    assert balance.funding_paid == pytest.approx(-sum(min(0.0, p.amount) for p in payments), abs=1e-9)
    assert balance.funding_received == pytest.approx(sum(max(0.0, p.amount) for p in payments), abs=1e-9)
    assert len({f.fill_id for f in fills}) == len(fills)
    for fill in fills:  # maker fills come from resting limits only, and pay the maker fee
        if fill.liquidity == "maker":
            assert fill.client_order_id.startswith("l")
            assert fill.fee == pytest.approx(fill.quantity * fill.price * maker, rel=1e-9)
    by_symbol = {p.symbol: p for p in positions}
    for position in positions:
        assert position.size > 0
        assert position.margin > 0
        lp = position.liquidation_price
        if lp is not None:  # the mark is the last point every walk reached: it must not be beyond liquidation
            assert position.mark_price > lp if position.side == "long" else position.mark_price < lp
    for order in open_orders.values():
        if not order.reduce_only:
            assert order.type == "limit"
            continue
        held = by_symbol.get(order.symbol)
        assert held is not None, "a flat symbol kept a reduce-only order"
        assert order.side == pm.closing_side(held.side)


def check_price_move(
    venue: PaperVenue, symbol: str, before: PaperVenueSnapshot, low: float, high: float, fills: list[Fill]
) -> None:
    """Nothing the move reached may survive it: crossed triggers and limits fired (or were canceled), the
    position held before it was closed if it crossed its liquidation price (unless a limit grew it first) or a
    stop of its full size."""
    old = next((p for p in before["positions"] if p.symbol == symbol), None)
    reduced = sum(
        f.quantity for f in fills if f.reason in ("decrease", "close", "stop_loss", "take_profit", "liquidation")
    )
    old_survived = old is not None and reduced < old.size - 1e-12
    grown = any(f.reason == "increase" for f in fills)  # a limit that grew it moved the liquidation price
    lp = old.liquidation_price if old is not None else None
    if old is not None and lp is not None and not grown:
        crossed = low <= lp if old.side == "long" else high >= lp
        assert not (crossed and old_survived), "position survived its liquidation price"
    open_ids = {o.client_order_id for o in run(venue.fetch_open_orders(symbol))}
    for order in before["open_orders"]:
        if order.symbol == symbol and order.type == "limit" and order.price is not None:
            crossed = low <= order.price if order.side == "buy" else high >= order.price
            assert not (crossed and order.client_order_id in open_ids), "a crossed limit is still resting"
        if order.symbol != symbol or order.trigger_price is None:
            continue
        direction = pm.trigger_direction(order.side, order.type)
        crossed = low <= order.trigger_price if direction == "down" else high >= order.trigger_price
        if crossed:
            assert order.client_order_id not in open_ids, "a crossed trigger is still resting"
            if order.type == "stop_market" and old is not None and order.quantity >= old.size:
                assert not old_survived, "position survived a crossed stop"


def apply(venue: PaperVenue, action: object, n: int, marks: dict[str, float], clock: ManualClock) -> None:
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
        apply(venue, Protect(action.symbol, "stop_market", action.stop_offset, 1.0), n, marks, clock)
        apply(venue, Protect(action.symbol, "take_profit_market", action.tp_offset, 1.0), n, marks, clock)
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
        fills = venue.on_candle(action.symbol, Candle(n, o, high, low, c, action.quote_volume / c))
        for fill in fills:
            event(f"candle fill: {fill.reason} ({fill.liquidity})")
        marks[action.symbol] = c
        check_price_move(venue, action.symbol, before, low, high, fills)
    elif isinstance(action, Mark):
        price = marks[action.symbol] * (1 + action.move)
        before = venue.snapshot()
        fills = venue.set_mark_price(action.symbol, price)
        marks[action.symbol] = price
        check_price_move(venue, action.symbol, before, price, price, fills)
    elif isinstance(action, Limit):
        lots = action.lots * RULES[action.symbol].lot_size
        request = OrderRequest(f"l{n}", action.symbol, action.side, "limit", lots, reduce_only=action.reduce_only)
        placed = run(venue.place_order(replace(request, price=marks[action.symbol] * (1 + action.offset))))
        event(f"limit placed: {placed.status}")
        if placed.status == "open":
            assert placed.price is not None
            assert placed.price < marks[action.symbol] if action.side == "buy" else placed.price > marks[action.symbol]
    elif isinstance(action, Funding):
        funding_time = clock.now()
        payment = venue.apply_funding(action.symbol, action.rate, funding_time)
        held = {p.symbol: p for p in run(venue.fetch_positions())}.get(action.symbol)
        assert (payment is None) == (held is None)
        event(f"funding: {'none' if payment is None else 'paid' if payment.amount < 0 else 'received'}")
        if payment is not None and held is not None:
            expected = (-1 if held.side == "long" else 1) * held.size * marks[action.symbol] * action.rate
            assert payment.amount == pytest.approx(expected, rel=1e-12, abs=1e-12)
        if action.repeat:
            assert venue.apply_funding(action.symbol, action.rate, funding_time) is None
    elif isinstance(action, Leverage):
        maximum = min(RULES[action.symbol].max_leverage, venue.fees.max_leverage.get(action.symbol, 1e9))
        run(venue.set_leverage(action.symbol, min(action.leverage, maximum)))
    elif isinstance(action, Cancel):
        orders = run(venue.fetch_open_orders())
        if orders:
            target = orders[action.index % len(orders)]
            run(venue.cancel_order(target.symbol, target.client_order_id))


@pytest.mark.parametrize("venue_name", ["binanceusdm", "hyperliquid"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    leverage=st.integers(1, 50),
    actions=st.lists(step, min_size=10, max_size=40),
    extra=st.builds(Bar, symbols, moves, moves, st.floats(0, 0.1), st.floats(0, 0.1), st.floats(1e3, 1e7)),
)
def test_books_stay_exact(venue_name: str, leverage: int, actions: list[object], extra: Bar) -> None:
    fees = FEE_PROFILES[venue_name]
    clock = ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
    venue = PaperVenue(initial_balance=INITIAL, rules=RULES, fees=fees, clock=clock, default_leverage=leverage)
    marks = dict(START)
    for symbol, price in marks.items():
        venue.set_mark_price(symbol, price)
    for n, action in enumerate(actions):
        clock.advance(timedelta(minutes=1))
        apply(venue, action, n, marks, clock)
        check_books(venue)

    restored = PaperVenue(initial_balance=0.0, rules=RULES, fees=fees, clock=clock)
    restored.restore(**venue.snapshot())
    assert run(restored.fetch_balance()) == run(venue.fetch_balance())
    assert run(restored.fetch_positions()) == run(venue.fetch_positions())
    assert run(restored.fetch_open_orders()) == run(venue.fetch_open_orders())
    assert restored.snapshot() == venue.snapshot()
    # ... and both continue identically.
    before = len(run(venue.fetch_fills()))
    apply(venue, extra, len(actions), dict(marks), clock)
    apply(restored, extra, len(actions), dict(marks), clock)
    assert run(restored.fetch_fills()) == run(venue.fetch_fills())[before:]
    assert run(restored.fetch_balance()) == run(venue.fetch_balance())
