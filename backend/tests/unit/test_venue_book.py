"""The fake venues' matching core (tests/fakes/venue_book.py): fills, fees, margin, triggers, faults."""

from __future__ import annotations

import pytest

from tests.fakes.venue_book import BookOrder, VenueBook, VenueReject


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def make(balance: float = 10_000.0, **kw: object) -> tuple[VenueBook, Clock]:
    clock = Clock()
    prices = {"BTC": 100_000.0, "ETH": 4_000.0}
    book = VenueBook(
        balance=balance,
        maker_bps=2,
        taker_bps=5,
        min_notional=5,
        price_of=lambda a: prices[a],
        now_ms=clock,
        max_leverage=lambda a: 125 if a == "BTC" else 50,
        lot=lambda a: 0.001,
        **kw,  # type: ignore[arg-type]
    )
    book.set_leverage("BTC", 10)
    return book, clock


def rejected(kind: str, fn: object, *args: object, **kw: object) -> VenueReject:
    with pytest.raises(VenueReject) as info:
        fn(*args, **kw)  # type: ignore[operator]
    assert info.value.kind == kind
    return info.value


def test_market_fill_at_mark_with_taker_fee_and_margin() -> None:
    book, _ = make()
    order = book.place("BTC", "buy", "market", 0.01, client_id="a1-d1-BTC-en")
    assert (order.status, order.filled, order.avg_price) == ("filled", 0.01, 100_000.0)
    [fill] = book.fills()
    assert fill.fee == pytest.approx(1000 * 0.0005) and not fill.maker and fill.client_id == "a1-d1-BTC-en"
    [pos] = book.positions()
    assert (pos.size, pos.entry_price, pos.margin, pos.leverage) == (0.01, 100_000.0, pytest.approx(100.0), 10)
    assert pos.liquidation_price == pytest.approx(900 / (0.01 * 0.996))  # FACTS.md: about 90,361
    bal = book.balance()
    assert bal["wallet"] == pytest.approx(9_999.5) and bal["margin_used"] == pytest.approx(100.0)
    assert bal["available"] == pytest.approx(9_899.5)
    book.set_price("BTC", 101_000)
    assert book.balance()["unrealized"] == pytest.approx(10.0)
    close = book.place("BTC", "sell", "market", 0.01, reduce_only=True)
    assert close.status == "filled"
    assert book.fills()[-1].realized_pnl == pytest.approx(10.0)
    assert book.positions() == []
    assert book.balance()["wallet"] == pytest.approx(10_000 - 0.5 + 10 - 1010 * 0.0005)


def test_limit_rests_then_fills_as_maker_and_ioc_expires() -> None:
    book, _ = make()
    limit = book.place("BTC", "buy", "limit", 0.01, price=99_000)
    assert limit.status == "open" and book.balance()["margin_used"] == pytest.approx(99.0)
    ioc = book.place("BTC", "buy", "limit", 0.01, price=98_000, ioc=True)
    assert ioc.status == "expired" and ioc.filled == 0
    fills = book.set_price("BTC", 98_500)
    assert [(f.price, f.maker) for f in fills] == [(99_000, True)]
    assert fills[0].fee == pytest.approx(990 * 0.0002)
    assert book.order(order_id=limit.id).status == "filled"  # type: ignore[union-attr]
    marketable = book.place("BTC", "buy", "limit", 0.01, price=99_000)
    assert marketable.status == "filled" and marketable.avg_price == 98_500 and not book.fills()[-1].maker


def test_market_with_slippage_cap_expires_beyond_it() -> None:
    book, _ = make()
    assert book.place("BTC", "buy", "market", 0.01, price=99_000).status == "expired"
    assert book.place("BTC", "buy", "market", 0.01, price=101_000).status == "filled"


def test_margin_check_and_min_notional() -> None:
    book, _ = make(balance=100.0)
    err = rejected("insufficient_margin", book.place, "BTC", "buy", "market", 0.01)  # needs 100 + 0.5 fee
    assert "insufficient" in err.message
    assert book.orders() == []
    assert book.place("BTC", "buy", "market", 0.009).status == "filled"
    rejected("min_notional", book.place, "ETH", "buy", "market", 0.001)  # 4 USDT < 5
    rejected("bad_quantity", book.place, "BTC", "buy", "market", 0.0005)
    rejected("bad_quantity", book.place, "BTC", "buy", "market", 0)


def test_reduce_only_clips_and_is_refused_without_a_position() -> None:
    book, _ = make()
    rejected("reduce_only", book.place, "BTC", "sell", "market", 0.01, reduce_only=True)
    book.place("BTC", "buy", "market", 0.01)
    rejected("reduce_only", book.place, "BTC", "buy", "market", 0.01, reduce_only=True)  # would increase
    order = book.place("BTC", "sell", "market", 0.05, reduce_only=True)
    assert order.filled == pytest.approx(0.01) and order.status == "filled"
    assert book.positions() == []  # clipped: never flipped short


def test_non_reduce_only_order_flips_the_position() -> None:
    book, _ = make()
    book.place("BTC", "buy", "market", 0.01)
    book.place("BTC", "sell", "market", 0.03)
    [pos] = book.positions()
    assert pos.size == pytest.approx(-0.02) and pos.margin == pytest.approx(200.0)


@pytest.mark.parametrize(
    ("side", "type_", "trigger", "move", "fires"),
    [
        ("sell", "stop_market", 95_000, 94_000, True),  # long's stop: fires on the way down
        ("sell", "stop_market", 95_000, 105_000, False),
        ("sell", "take_profit_market", 105_000, 106_000, True),  # long's take-profit: on the way up
        ("sell", "take_profit_market", 105_000, 94_000, False),
        ("buy", "stop_market", 105_000, 105_000, True),  # short's stop: up (at the trigger exactly)
        ("buy", "stop_market", 105_000, 94_000, False),
        ("buy", "take_profit_market", 95_000, 95_000, True),  # short's take-profit: down
        ("buy", "take_profit_market", 95_000, 104_000, False),
    ],
)
def test_conditional_triggers_both_ways(side: str, type_: str, trigger: float, move: float, fires: bool) -> None:
    book, _ = make()
    book.place("BTC", "buy" if side == "sell" else "sell", "market", 0.01)
    stop = book.place("BTC", side, type_, 0.01, trigger=trigger, reduce_only=True, client_id="a1-d1-BTC-x")  # type: ignore[arg-type]
    fills = book.set_price("BTC", move)
    parent = book.order(client_id="a1-d1-BTC-x")
    assert parent is not None
    if fires:
        assert parent.status == "triggered" and parent.child_id is not None
        child = book.order(order_id=parent.child_id)
        assert child is not None and child.type == "market" and child.client_id == "a1-d1-BTC-x"
        assert [(f.order_id, f.price, f.maker) for f in fills] == [(child.id, move, False)]
        assert book.positions() == []
    else:
        assert parent.status == "open" and fills == [] and book.open_orders("BTC")[0].id == stop.id


def test_stop_that_would_trigger_immediately_is_refused() -> None:
    book, _ = make()
    book.place("BTC", "buy", "market", 0.01)
    err = rejected(
        "would_trigger_immediately", book.place, "BTC", "sell", "stop_market", 0.01, trigger=100_500, reduce_only=True
    )
    assert err.message == "Order would immediately trigger."
    rejected(
        "would_trigger_immediately",
        book.place,
        "BTC",
        "sell",
        "take_profit_market",
        0.01,
        trigger=99_000,
        reduce_only=True,
    )


def test_duplicate_client_id_any_status_ever() -> None:
    book, _ = make()
    book.place("BTC", "buy", "limit", 0.01, price=90_000, client_id="a1-d1-BTC-en")
    book.cancel(client_id="a1-d1-BTC-en")
    rejected("duplicate_client_id", book.place, "BTC", "buy", "market", 0.01, client_id="a1-d1-BTC-en")
    # a refused placement does not use the id up
    rejected("insufficient_margin", book.place, "BTC", "buy", "market", 10, client_id="a1-d2-BTC-en")
    assert book.place("BTC", "buy", "market", 0.01, client_id="a1-d2-BTC-en").status == "filled"
    assert len(book.orders()) == 2


def test_cancel_and_lookup() -> None:
    book, _ = make()
    order = book.place("BTC", "buy", "limit", 0.01, price=90_000, client_id="c1")
    assert book.order(client_id="c1") == order and book.order(order_id=order.id) == order
    assert book.cancel(order_id=order.id).status == "canceled"
    rejected("unknown_order", book.cancel, order_id=order.id)
    rejected("unknown_order", book.cancel, client_id="nope")
    assert book.order(client_id="nope") is None and book.open_orders() == []


def test_partial_next_fills_a_fraction_and_expires_the_rest() -> None:
    book, _ = make()
    book.partial_next(0.4)
    order = book.place("BTC", "buy", "market", 0.01)
    assert order.status == "expired" and order.filled == pytest.approx(0.004)
    assert book.positions()[0].size == pytest.approx(0.004)
    assert book.place("BTC", "buy", "market", 0.01).status == "filled"  # only the next one


def test_reject_next_matches_and_counts() -> None:
    book, _ = make()
    book.place("BTC", "buy", "market", 0.01)

    def is_stop(o: BookOrder) -> bool:
        return o.type == "stop_market"

    book.reject_next(is_stop, "reduce_only", "ReduceOnly Order is rejected.", times=2)
    assert book.place("ETH", "buy", "market", 0.01).status == "filled"  # not matched
    for _ in range(2):
        err = rejected("reduce_only", book.place, "BTC", "sell", "stop_market", 0.01, trigger=90_000, reduce_only=True)
        assert err.message == "ReduceOnly Order is rejected."
    assert book.place("BTC", "sell", "stop_market", 0.01, trigger=90_000, reduce_only=True).status == "open"


def test_liquidation_takes_the_isolated_margin() -> None:
    book, _ = make(balance=1_000.0)
    book.place("BTC", "buy", "market", 0.01)  # margin 100 at 10x
    lp = book.positions()[0].liquidation_price
    assert lp is not None
    wallet = book.balance()["wallet"]
    assert book.set_price("BTC", lp + 50) == []
    [fill] = book.set_price("BTC", 85_000)  # gaps through the liquidation price
    assert fill.liquidation and fill.price == pytest.approx(lp) and fill.side == "sell"
    assert book.positions() == []
    assert book.balance()["wallet"] == pytest.approx(wallet - 100.0)


def test_stop_above_the_liquidation_price_fires_first_on_a_gap() -> None:
    book, _ = make()
    book.place("BTC", "buy", "market", 0.01)
    book.place("BTC", "sell", "stop_market", 0, trigger=95_000, close_position=True, client_id="sl")
    [fill] = book.set_price("BTC", 80_000)
    assert not fill.liquidation and fill.client_id == "sl" and fill.quantity == pytest.approx(0.01)


def test_reduce_only_conditionals_are_cancelled_when_the_position_is_gone() -> None:
    book, _ = make()
    book.place("BTC", "buy", "market", 0.01)
    sl = book.place("BTC", "sell", "stop_market", 0.01, trigger=95_000, reduce_only=True)
    tp = book.place("BTC", "sell", "take_profit_market", 0.01, trigger=110_000, reduce_only=True)
    book.set_price("BTC", 94_000)  # the stop fires; the take-profit has nothing left to protect
    assert book.order(order_id=sl.id).status == "triggered"  # type: ignore[union-attr]
    assert book.order(order_id=tp.id).status == "canceled"  # type: ignore[union-attr]
    book.place("BTC", "buy", "market", 0.01)
    keep = book.place("BTC", "buy", "limit", 0.01, price=80_000)
    stop = book.place("BTC", "sell", "stop_market", 0.01, trigger=90_000, reduce_only=True)
    book.place("BTC", "sell", "market", 0.01, reduce_only=True)  # closed by hand
    assert book.order(order_id=stop.id).status == "canceled"  # type: ignore[union-attr]
    assert book.order(order_id=keep.id).status == "open"  # type: ignore[union-attr]


def test_unprotected_spans() -> None:
    book, clock = make()
    book.place("BTC", "buy", "market", 0.01)
    t0 = clock.ms
    clock.ms += 5_000
    book.place("BTC", "sell", "take_profit_market", 0.01, trigger=110_000, reduce_only=True)  # not a stop
    assert book.unprotected_spans() == [("BTC", t0, None)]
    clock.ms += 5_000
    stop = book.place("BTC", "sell", "stop_market", 0.01, trigger=90_000, reduce_only=True)
    assert book.unprotected_spans() == [("BTC", t0, t0 + 10_000)]
    clock.ms += 1_000
    book.cancel(order_id=stop.id)
    assert book.unprotected_spans()[-1] == ("BTC", t0 + 11_000, None)
    clock.ms += 1_000
    book.place("BTC", "sell", "market", 0.01, reduce_only=True)
    assert book.unprotected_spans()[-1] == ("BTC", t0 + 11_000, t0 + 12_000)


def test_tick_reads_prices_unless_pinned() -> None:
    clock = Clock()
    prices = {"BTC": 100_000.0}
    book = VenueBook(
        balance=10_000, maker_bps=2, taker_bps=5, min_notional=5, price_of=lambda a: prices[a], now_ms=clock
    )
    assert book.leverage("BTC") == 20
    book.place("BTC", "buy", "market", 0.01)
    book.place("BTC", "sell", "stop_market", 0.01, trigger=97_000, reduce_only=True)  # above the 20x liquidation
    prices["BTC"] = 96_000.0
    [fill] = book.tick()
    assert fill.price == 96_000 and book.mark("BTC") == 96_000 and not fill.liquidation
    book.place("BTC", "buy", "market", 0.01)
    book.set_price("BTC", 100_000)
    assert book.tick() == [] and book.mark("BTC") == 100_000  # pinned: the source is ignored


def test_leverage_bounds_and_margin_mode() -> None:
    book, _ = make()
    rejected("bad_leverage", book.set_leverage, "ETH", 51)
    assert book.set_leverage("ETH", 50) == 50 and book.leverage("ETH") == 50
    book.set_margin_mode("BTC", "isolated")
    assert book.margin_mode("BTC") == "isolated"


def test_funding_settles_on_the_position() -> None:
    book, clock = make()
    assert book.funding() == []
    book.settle_funding("BTC", 0.0001, clock.ms)  # no position: nothing
    book.place("BTC", "buy", "market", 0.01)
    wallet = book.balance()["wallet"]
    book.settle_funding("BTC", 0.0001, clock.ms + 1)
    [row] = book.funding()
    assert row["payment"] == pytest.approx(-0.1)  # a long pays a positive rate
    assert book.balance()["wallet"] == pytest.approx(wallet - 0.1)
    assert book.funding(since_ms=clock.ms + 2) == []


def test_an_asset_without_orders_or_position_is_priced_afresh() -> None:
    clock = Clock()
    prices = {"BTC": 100_000.0}
    book = VenueBook(
        balance=10_000, maker_bps=2, taker_bps=5, min_notional=5, price_of=lambda a: prices[a], now_ms=clock
    )
    book.place("BTC", "buy", "market", 0.01)
    book.place("BTC", "sell", "market", 0.01, reduce_only=True)
    prices["BTC"] = 90_000.0  # no tick follows BTC now: nothing is open on it
    assert book.tick() == [] and book.mark("BTC") == 90_000
    assert book.place("BTC", "buy", "market", 0.01).avg_price == 90_000
