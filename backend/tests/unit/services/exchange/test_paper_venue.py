"""Unit tests of `PaperVenue`: rejections, fees, triggers, protective orders, liquidation and restart."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.core.clock import ManualClock
from app.services.exchange import paper_math as pm
from app.services.exchange.base import (
    FEE_PROFILES,
    Exchange,
    ExchangeError,
    FeeProfile,
    OrderRequest,
    OrderSide,
)
from app.services.exchange.paper import PaperVenue
from app.services.market_data.base import Candle, MarketRules, UnknownSymbolError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=100.0, max_leverage=125),
    "ETH": MarketRules("ETH", "ETH/USDT:USDT", tick_size=0.01, lot_size=0.001, min_notional=20.0, max_leverage=100),
}
BINANCE = FEE_PROFILES["binanceusdm"]
NO_SLIP = replace(BINANCE, slippage_bps=0.0, impact_bps_per_pct_volume=0.0)  # no slippage at all


def make_venue(
    fees: FeeProfile = NO_SLIP, balance: float = 10_000.0, leverage: float = 10.0
) -> tuple[PaperVenue, ManualClock]:
    clock = ManualClock(T0)
    return PaperVenue(initial_balance=balance, rules=RULES, fees=fees, clock=clock, default_leverage=leverage), clock


def candle(o: float, h: float, low: float, c: float) -> Candle:
    return Candle(0, o, h, low, c, 1.0)


def market(cid: str, side: OrderSide, qty: float, symbol: str = "BTC", reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(cid, symbol, side, "market", qty, reduce_only=reduce_only)


def stop(cid: str, side: OrderSide, qty: float, trigger: float, symbol: str = "BTC") -> OrderRequest:
    return OrderRequest(cid, symbol, side, "stop_market", qty, trigger, reduce_only=True)


def take_profit(cid: str, side: OrderSide, qty: float, trigger: float, symbol: str = "BTC") -> OrderRequest:
    return OrderRequest(cid, symbol, side, "take_profit_market", qty, trigger, reduce_only=True)


async def open_long(venue: PaperVenue, qty: float = 0.01, price: float = 100_000.0) -> None:
    venue.set_mark_price("BTC", price)
    order = await venue.place_order(market("entry", "buy", qty))
    assert order.status == "filled", order.reject_reason


async def assert_identity(venue: PaperVenue, initial: float = 10_000.0) -> None:
    b = await venue.fetch_balance()
    assert b.equity == pytest.approx(initial + b.realized_pnl + b.unrealized_pnl - b.fees_paid, abs=1e-6)
    assert b.available == pytest.approx(b.wallet_balance - b.margin_used, abs=1e-9)
    assert b.available >= -1e-9


def test_satisfies_the_exchange_port() -> None:
    venue, _ = make_venue()
    port: Exchange = venue
    assert port.name == "paper-binanceusdm"
    assert port.is_simulated is True


# ---- rejections ---------------------------------------------------------------------------------------


async def test_rejects_unknown_symbol() -> None:
    venue, _ = make_venue()
    order = await venue.place_order(market("a", "buy", 1.0, symbol="DOGE"))
    assert order.status == "rejected"
    assert "unknown symbol" in (order.reject_reason or "")


async def test_rejects_without_mark_price() -> None:
    venue, _ = make_venue()
    order = await venue.place_order(market("a", "buy", 0.01))
    assert order.status == "rejected"
    assert "no mark price" in (order.reject_reason or "")


async def test_rejects_quantity_zero_after_rounding() -> None:
    venue, _ = make_venue()
    venue.set_mark_price("BTC", 100_000.0)
    order = await venue.place_order(market("a", "buy", 0.0009))
    assert order.status == "rejected"
    assert "zero after rounding" in (order.reject_reason or "")


async def test_rejects_notional_below_minimum_but_not_reduce_only() -> None:
    venue, _ = make_venue()
    venue.set_mark_price("BTC", 50_000.0)
    small = await venue.place_order(market("a", "buy", 0.001))  # 50 USDT < BTC minimum 100
    assert small.status == "rejected"
    assert "below the minimum 100" in (small.reject_reason or "")
    assert (await venue.place_order(market("b", "buy", 0.01))).status == "filled"
    reduce = await venue.place_order(market("c", "sell", 0.001, reduce_only=True))
    assert reduce.status == "filled"


async def test_venue_minimum_applies_when_above_market_minimum() -> None:
    fees = replace(NO_SLIP, min_notional=60.0)
    venue, _ = make_venue(fees)
    venue.set_mark_price("ETH", 1_000.0)
    order = await venue.place_order(market("a", "buy", 0.05, symbol="ETH"))  # 50 > 20 but < 60
    assert order.status == "rejected"
    assert "minimum 60" in (order.reject_reason or "")


async def test_rejects_insufficient_balance() -> None:
    venue, _ = make_venue(balance=1_000.0, leverage=10.0)
    venue.set_mark_price("BTC", 100_000.0)
    order = await venue.place_order(market("a", "buy", 0.1))  # margin 1000 + fee 5 > 1000
    assert order.status == "rejected"
    assert "insufficient available balance" in (order.reject_reason or "")
    assert (await venue.fetch_balance()).wallet_balance == 1_000.0
    assert await venue.fetch_positions() == []


async def test_rejects_reduce_only_that_would_not_reduce() -> None:
    venue, _ = make_venue()
    venue.set_mark_price("BTC", 100_000.0)
    flat = await venue.place_order(market("a", "sell", 0.01, reduce_only=True))
    assert flat.status == "rejected"
    assert "would not reduce" in (flat.reject_reason or "")
    await venue.place_order(market("b", "buy", 0.01))
    same_side = await venue.place_order(market("c", "buy", 0.01, reduce_only=True))
    assert same_side.status == "rejected"
    assert "would not reduce" in (same_side.reject_reason or "")
    same_side_stop = await venue.place_order(stop("d", "buy", 0.01, 110_000.0))
    assert same_side_stop.status == "rejected"


async def test_rejects_conditional_order_that_is_not_reduce_only() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    request = replace(stop("s", "sell", 0.01, 95_000.0), reduce_only=False)
    order = await venue.place_order(request)
    assert order.status == "rejected"
    assert "reduce_only" in (order.reject_reason or "")


async def test_rejects_conditional_order_without_trigger() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    order = await venue.place_order(replace(stop("s", "sell", 0.01, 95_000.0), trigger_price=None))
    assert order.status == "rejected"
    assert "trigger price" in (order.reject_reason or "")


@pytest.mark.parametrize(
    ("request_", "position_side"),
    [
        (stop("s", "sell", 0.01, 100_000.0), "long"),  # a long's stop at the mark
        (stop("s", "sell", 0.01, 101_000.0), "long"),  # ... or above it
        (take_profit("t", "sell", 0.01, 99_000.0), "long"),  # a long's target below the mark
        (stop("s", "buy", 0.01, 99_000.0), "short"),  # a short's stop below the mark
        (take_profit("t", "buy", 0.01, 100_000.0), "short"),  # a short's target at the mark
    ],
)
async def test_rejects_trigger_on_wrong_side_of_mark(request_: OrderRequest, position_side: str) -> None:
    venue, _ = make_venue()
    venue.set_mark_price("BTC", 100_000.0)
    await venue.place_order(market("entry", "buy" if position_side == "long" else "sell", 0.01))
    order = await venue.place_order(request_)
    assert order.status == "rejected"
    assert "wrong side of the mark" in (order.reject_reason or "")


async def test_rejects_duplicate_client_order_id_and_keeps_the_original() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    again = await venue.place_order(market("entry", "buy", 0.02))
    assert again.status == "rejected"
    assert again.reject_reason == "duplicate client order id"
    original = await venue.fetch_order("BTC", "entry")
    assert original is not None
    assert original.status == "filled"
    assert original.quantity == 0.01
    assert (await venue.fetch_positions())[0].size == 0.01


async def test_rejects_flip() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    order = await venue.place_order(market("flip", "sell", 0.02))
    assert order.status == "rejected"
    assert order.reject_reason == "order would flip the position; close it first"
    assert (await venue.fetch_positions())[0].side == "long"


# ---- fills, fees, rounding, accounting ----------------------------------------------------------------


async def test_market_fill_pays_taker_fee_and_slippage() -> None:
    venue, _ = make_venue(BINANCE, leverage=10.0)
    venue.set_mark_price("BTC", 100_000.0)
    order = await venue.place_order(market("a", "buy", 0.01))
    assert order.avg_fill_price == pytest.approx(100_010.0)  # 1 bp worse for a buy
    fills = await venue.fetch_fills()
    assert fills[0].fee == pytest.approx(0.01 * 100_010.0 * 5 / 1e4)
    assert fills[0].liquidity == "taker"
    assert fills[0].reason == "entry"
    balance = await venue.fetch_balance()
    assert balance.fees_paid == pytest.approx(0.50005)
    assert balance.margin_used == pytest.approx(100.01)
    assert balance.wallet_balance == pytest.approx(10_000.0 - 0.50005)
    assert balance.unrealized_pnl == pytest.approx(-0.1)
    await venue.place_order(market("b", "sell", 0.01, reduce_only=True))
    close = (await venue.fetch_fills())[-1]
    assert close.price == pytest.approx(99_990.0)  # 1 bp worse for a sell
    assert close.realized_pnl == pytest.approx(-0.2)
    assert close.reason == "close"
    await assert_identity(venue)


async def test_rounds_quantity_down_and_trigger_to_tick() -> None:
    venue, _ = make_venue()
    await open_long(venue, qty=0.0129)
    assert (await venue.fetch_positions())[0].size == 0.012
    order = await venue.place_order(stop("s", "sell", 0.0129, 95_000.04))
    assert order.quantity == 0.012
    assert order.trigger_price == 95_000.0


async def test_reduce_only_market_is_clamped_to_position() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    order = await venue.place_order(market("x", "sell", 0.05, reduce_only=True))
    assert order.status == "filled"
    assert order.filled_quantity == 0.01
    assert await venue.fetch_positions() == []
    await assert_identity(venue)


async def test_increase_averages_entry_and_partial_close_releases_margin_pro_rata() -> None:
    venue, _ = make_venue(leverage=10.0)
    await open_long(venue, qty=0.01, price=100_000.0)
    venue.set_mark_price("BTC", 110_000.0)
    await venue.place_order(market("add", "buy", 0.01))
    [position] = await venue.fetch_positions()
    assert position.entry_price == pytest.approx(105_000.0)
    assert position.margin == pytest.approx(100.0 + 110.0)
    assert (await venue.fetch_fills())[-1].reason == "increase"
    venue.set_mark_price("BTC", 120_000.0)
    await venue.place_order(market("half", "sell", 0.01))  # not reduce-only, but smaller: a decrease
    [position] = await venue.fetch_positions()
    fill = (await venue.fetch_fills())[-1]
    assert fill.reason == "decrease"
    assert fill.realized_pnl == pytest.approx(150.0)
    assert position.size == 0.01
    assert position.margin == pytest.approx(105.0)
    assert position.realized_pnl == pytest.approx(150.0)
    await assert_identity(venue)


async def test_short_pnl_is_mirrored() -> None:
    venue, _ = make_venue()
    venue.set_mark_price("BTC", 100_000.0)
    await venue.place_order(market("s", "sell", 0.01))
    venue.set_mark_price("BTC", 90_000.0)
    [position] = await venue.fetch_positions()
    assert position.side == "short"
    assert position.unrealized_pnl == pytest.approx(100.0)
    await venue.place_order(market("c", "buy", 0.01, reduce_only=True))
    assert (await venue.fetch_balance()).realized_pnl == pytest.approx(100.0)
    await assert_identity(venue)


async def test_set_leverage_bounds_and_effect() -> None:
    venue, _ = make_venue(leverage=1.0)
    assert await venue.set_leverage("BTC", 20) == 20.0
    with pytest.raises(ExchangeError):
        await venue.set_leverage("BTC", 0.5)
    with pytest.raises(ExchangeError):
        await venue.set_leverage("BTC", 126)
    with pytest.raises(ExchangeError):
        await venue.set_leverage("DOGE", 2)
    await open_long(venue)
    [position] = await venue.fetch_positions()
    assert position.margin == pytest.approx(50.0)
    assert position.leverage == pytest.approx(20.0)


async def test_fee_profile_can_lower_max_leverage() -> None:
    venue, _ = make_venue(replace(NO_SLIP, max_leverage={"BTC": 40.0}))
    with pytest.raises(ExchangeError):
        await venue.set_leverage("BTC", 50)


# ---- triggers -----------------------------------------------------------------------------------------


async def test_take_profit_triggers_at_its_price() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    await venue.place_order(take_profit("tp", "sell", 0.01, 103_000.0))
    assert venue.on_candle("BTC", candle(100_000, 102_000, 99_500, 101_000)) == []
    [fill] = venue.on_candle("BTC", candle(101_000, 103_500, 100_500, 103_200))
    assert (fill.reason, fill.price) == ("take_profit", 103_000.0)
    assert fill.realized_pnl == pytest.approx(30.0)
    assert fill.fee == pytest.approx(0.01 * 103_000 * 5e-4)
    assert await venue.fetch_positions() == []
    await assert_identity(venue)


async def test_stop_triggers_with_slippage() -> None:
    venue, _ = make_venue(BINANCE)
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 98_000.0))
    [fill] = venue.on_candle("BTC", candle(100_000, 100_500, 97_500, 97_800))
    assert fill.reason == "stop_loss"
    assert fill.price == pytest.approx(98_000.0 * (1 - 1e-4))
    order = await venue.fetch_order("BTC", "sl")
    assert order is not None
    assert order.status == "filled"
    await assert_identity(venue)


async def test_stop_first_when_stop_and_take_profit_touched_in_one_candle() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 98_000.0))
    await venue.place_order(take_profit("tp", "sell", 0.01, 103_000.0))
    # Bullish: the path O-H-L-C reaches the target first, but the stop is assumed first.
    [fill] = venue.on_candle("BTC", candle(100_000, 103_500, 97_500, 103_200))
    assert (fill.reason, fill.price) == ("stop_loss", 98_000.0)
    tp = await venue.fetch_order("BTC", "tp")
    assert tp is not None
    assert tp.status == "canceled"


async def test_gap_fills_stop_at_the_open() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 98_000.0))
    [fill] = venue.on_candle("BTC", candle(97_000, 97_500, 96_000, 96_500))
    assert (fill.reason, fill.price) == ("stop_loss", 97_000.0)
    assert fill.realized_pnl == pytest.approx(-30.0)


async def test_gap_fills_take_profit_at_the_open() -> None:
    venue, _ = make_venue()
    venue.set_mark_price("BTC", 100_000.0)
    await venue.place_order(market("e", "sell", 0.01))
    await venue.place_order(take_profit("tp", "buy", 0.01, 97_000.0))
    await venue.place_order(stop("sl", "buy", 0.01, 102_000.0))
    [fill] = venue.on_candle("BTC", candle(96_000, 103_000, 95_000, 102_500))  # gaps through the target
    assert (fill.reason, fill.price) == ("take_profit", 96_000.0)
    assert fill.realized_pnl == pytest.approx(40.0)


async def test_partial_close_keeps_protective_orders_for_the_remainder() -> None:
    venue, _ = make_venue()
    await open_long(venue, qty=0.02)
    await venue.place_order(stop("sl", "sell", 0.02, 98_000.0))
    await venue.place_order(take_profit("tp", "sell", 0.02, 103_000.0))
    await venue.place_order(market("half", "sell", 0.01, reduce_only=True))
    open_ids = {o.client_order_id for o in await venue.fetch_open_orders("BTC")}
    assert open_ids == {"sl", "tp"}
    [fill] = venue.on_candle("BTC", candle(100_000, 100_100, 97_000, 97_500))
    assert fill.quantity == 0.01  # min(order quantity, position size)
    assert fill.reason == "stop_loss"
    assert await venue.fetch_positions() == []
    assert await venue.fetch_open_orders() == []
    await assert_identity(venue)


async def test_partial_take_profit_leaves_stop_on_the_rest() -> None:
    venue, _ = make_venue()
    await open_long(venue, qty=0.02)
    await venue.place_order(stop("sl", "sell", 0.02, 98_000.0))
    await venue.place_order(take_profit("tp1", "sell", 0.01, 103_000.0))
    [fill] = venue.on_candle("BTC", candle(100_000, 103_500, 99_000, 103_200))
    assert (fill.reason, fill.quantity) == ("take_profit", 0.01)
    [position] = await venue.fetch_positions()
    assert position.size == 0.01
    assert [o.client_order_id for o in await venue.fetch_open_orders()] == ["sl"]
    [fill] = venue.on_candle("BTC", candle(103_200, 103_300, 97_000, 97_100))
    assert (fill.reason, fill.quantity) == ("stop_loss", 0.01)
    await assert_identity(venue)


async def test_flat_position_cancels_reduce_only_orders() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 98_000.0))
    await venue.place_order(take_profit("tp", "sell", 0.01, 103_000.0))
    await venue.place_order(market("close", "sell", 0.01, reduce_only=True))
    assert await venue.fetch_open_orders() == []
    for cid in ("sl", "tp"):
        order = await venue.fetch_order("BTC", cid)
        assert order is not None
        assert order.status == "canceled"


async def test_set_mark_price_fires_triggers_like_a_gap() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 98_000.0))
    [fill] = venue.set_mark_price("BTC", 97_500.0)
    assert (fill.reason, fill.price) == ("stop_loss", 97_500.0)


async def test_market_data_for_unknown_symbol_raises() -> None:
    venue, _ = make_venue()
    with pytest.raises(UnknownSymbolError):
        venue.on_candle("DOGE", candle(1, 1, 1, 1))
    with pytest.raises(ValueError):
        venue.on_candle("BTC", candle(100, 99, 101, 100))  # high below low


# ---- liquidation --------------------------------------------------------------------------------------


def test_liquidation_price_known_answer() -> None:
    long_lp = pm.liquidation_price("long", 0.01, 100_000.0, 100.0, 0.004)
    assert long_lp == pytest.approx(90_361, abs=1)
    short_lp = pm.liquidation_price("short", 0.01, 100_000.0, 100.0, 0.004)
    assert short_lp == pytest.approx((0.01 * 100_000 + 100) / (0.01 * 1.004))
    assert short_lp == pytest.approx(109_562, abs=1)
    assert pm.liquidation_price("long", 0.01, 100_000.0, 1_000.0, 0.004) is None  # 1x long: never


async def test_venue_reports_liquidation_price() -> None:
    venue, _ = make_venue(leverage=10.0)
    await open_long(venue)
    [position] = await venue.fetch_positions()
    assert position.margin == pytest.approx(100.0)
    assert position.liquidation_price == pytest.approx(90_361, abs=1)


async def test_liquidation_closes_at_liquidation_price() -> None:
    venue, _ = make_venue(leverage=10.0)
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 85_000.0))  # below the liquidation price
    lp = (1_000.0 - 100.0) / (0.01 * 0.996)
    [fill] = venue.on_candle("BTC", candle(100_000, 100_100, 84_000, 89_500))
    assert fill.reason == "liquidation"
    assert fill.price == pytest.approx(lp)
    assert fill.realized_pnl == pytest.approx((lp - 100_000.0) * 0.01)
    assert fill.fee == pytest.approx(0.01 * lp * 5e-4)
    assert fill.client_order_id.startswith("paper-liquidation-")
    assert await venue.fetch_positions() == []
    stop_order = await venue.fetch_order("BTC", "sl")
    assert stop_order is not None
    assert stop_order.status == "canceled"
    balance = await venue.fetch_balance()
    assert 10_000.0 - balance.wallet_balance < 100.0 + 0.5 + 0.5  # at most margin + fees
    await assert_identity(venue)


async def test_short_liquidation_by_formula() -> None:
    venue, _ = make_venue(leverage=10.0)
    venue.set_mark_price("BTC", 100_000.0)
    await venue.place_order(market("e", "sell", 0.01))
    lp = (0.01 * 100_000.0 + 100.0) / (0.01 * 1.004)
    [fill] = venue.on_candle("BTC", candle(100_000, 111_000, 99_900, 110_000))
    assert (fill.reason, fill.price) == ("liquidation", pytest.approx(lp))
    assert fill.realized_pnl == pytest.approx((100_000.0 - lp) * 0.01)
    await assert_identity(venue)


async def test_stop_above_liquidation_price_is_reached_first() -> None:
    venue, _ = make_venue(leverage=10.0)
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 95_000.0))
    [fill] = venue.on_candle("BTC", candle(100_000, 100_100, 84_000, 89_500))
    assert (fill.reason, fill.price) == ("stop_loss", 95_000.0)


async def test_gap_through_liquidation_caps_the_loss_at_the_margin() -> None:
    venue, _ = make_venue(leverage=20.0)
    await open_long(venue)  # margin 50, liquidation price ~95,382
    await venue.place_order(stop("sl", "sell", 0.01, 96_000.0))
    [fill] = venue.on_candle("BTC", candle(90_000, 90_500, 89_000, 89_500))
    assert (fill.reason, fill.price) == ("liquidation", 90_000.0)
    assert fill.realized_pnl == pytest.approx(-50.0)  # not -100
    assert fill.fee == pytest.approx(0.0)  # nothing left of the margin to pay it
    balance = await venue.fetch_balance()
    assert balance.wallet_balance == pytest.approx(10_000.0 - 50.0 - 0.5)
    await assert_identity(venue)


# ---- orders, fills, restart ---------------------------------------------------------------------------


async def test_cancel_order() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    await venue.place_order(stop("sl", "sell", 0.01, 98_000.0))
    canceled = await venue.cancel_order("BTC", "sl")
    assert canceled.status == "canceled"
    with pytest.raises(ExchangeError):
        await venue.cancel_order("BTC", "sl")  # no longer open
    with pytest.raises(ExchangeError):
        await venue.cancel_order("BTC", "nope")
    with pytest.raises(ExchangeError):
        await venue.cancel_order("BTC", "entry")  # filled
    assert await venue.fetch_order("BTC", "nope") is None
    assert venue.on_candle("BTC", candle(100_000, 100_100, 97_000, 97_500)) == []


async def test_fetch_open_orders_filters_by_symbol() -> None:
    venue, _ = make_venue()
    await open_long(venue)
    venue.set_mark_price("ETH", 3_000.0)
    await venue.place_order(market("eth", "buy", 1.0, symbol="ETH"))
    await venue.place_order(stop("sl-btc", "sell", 0.01, 98_000.0))
    await venue.place_order(stop("sl-eth", "sell", 1.0, 2_900.0, symbol="ETH"))
    assert [o.client_order_id for o in await venue.fetch_open_orders("ETH")] == ["sl-eth"]
    assert len(await venue.fetch_open_orders()) == 2
    balance = await venue.fetch_balance()
    assert balance.margin_used == pytest.approx(100.0 + 300.0)


async def test_fills_have_sequential_ids_timestamps_and_since_filter() -> None:
    venue, clock = make_venue()
    await open_long(venue)
    clock.advance(timedelta(minutes=5))
    await venue.place_order(market("more", "buy", 0.01))
    clock.advance(timedelta(minutes=5))
    await venue.place_order(market("close", "sell", 0.02, reduce_only=True))
    fills = await venue.fetch_fills()
    assert [f.fill_id for f in fills] == ["1-1", "2-1", "3-1"]
    assert [f.timestamp for f in fills] == [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)]
    since = await venue.fetch_fills(since=T0 + timedelta(minutes=5))
    assert [f.client_order_id for f in since] == ["more", "close"]


async def test_snapshot_and_restore_continue_the_account() -> None:
    venue, clock = make_venue(BINANCE)
    await open_long(venue, qty=0.02)
    await venue.place_order(stop("sl", "sell", 0.02, 98_000.0))
    await venue.place_order(market("part", "sell", 0.01, reduce_only=True))
    venue.on_candle("BTC", candle(100_000, 100_500, 99_000, 99_500))
    before = await venue.fetch_balance()
    snapshot = venue.snapshot()

    restored = PaperVenue(initial_balance=0.0, rules=RULES, fees=BINANCE, clock=clock)
    restored.restore(**snapshot)
    after = await restored.fetch_balance()
    assert after == before
    assert [o.client_order_id for o in await restored.fetch_open_orders()] == ["sl"]
    await assert_identity(restored)
    [fill] = restored.on_candle("BTC", candle(99_500, 99_600, 97_000, 97_500))
    assert fill.reason == "stop_loss"
    assert fill.quantity == 0.01
    assert fill.fill_id == "2-1"  # the stop keeps its venue order id
    new = await restored.place_order(market("next", "buy", 0.01))
    assert int(new.venue_order_id) >= snapshot["next_order_seq"]
    await assert_identity(restored)


async def test_restore_rejects_inconsistent_wallet() -> None:
    venue, _ = make_venue()
    with pytest.raises(ValueError):
        venue.restore(
            wallet_balance=9_000.0,
            realized_pnl=0.0,
            fees_paid=0.0,
            positions=[],
            open_orders=[],
            initial_balance=10_000.0,
        )


# ---- revision -----------------------------------------------------------------------------------------


async def test_the_revision_changes_with_orders_fills_and_funding_but_not_with_the_mark() -> None:
    venue, clock = make_venue()
    seen = [venue.revision]

    def changed() -> bool:
        now = venue.revision
        moved = now != seen[-1]
        seen.append(now)
        return moved

    venue.set_mark_price("BTC", 100_000.0)
    assert not changed()  # a mark with nothing to fire
    await venue.place_order(market("entry", "buy", 0.01))
    assert changed()  # an order and its fill
    await venue.place_order(stop("sl", "sell", 0.01, 95_000.0))
    assert changed()  # a resting order
    venue.set_mark_price("BTC", 99_000.0)
    assert not changed()  # the mark moved, the stop did not fire: nothing the reconciler mirrors changed
    venue.apply_funding("BTC", 0.0001, clock.now())
    assert changed()  # a funding payment
    await venue.cancel_order("BTC", "sl")
    assert changed()
    venue.set_mark_price("BTC", 97_000.0)
    assert not changed()  # no stop left: the long just loses
    await venue.place_order(market("exit", "sell", 0.01, reduce_only=True))
    assert changed()
    rejected = await venue.place_order(market("too-big", "buy", 1_000.0))
    assert rejected.status == "rejected"
    assert changed()  # a rejected order is still an order the venue knows
