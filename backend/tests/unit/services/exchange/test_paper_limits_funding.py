"""Unit tests of the paper venue's limit orders, funding settlement, volume-dependent slippage and per-venue
liquidation (the table-driven rows are in test_paper_scenarios.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.core.clock import ManualClock
from app.services.exchange import paper_math as pm
from app.services.exchange.base import FEE_PROFILES, ExchangeError, FeeProfile, OrderRequest, OrderSide
from app.services.exchange.paper import PaperVenue
from app.services.market_data.base import Candle, MarketRules

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=100.0, max_leverage=125),
    "ETH": MarketRules("ETH", "ETH/USDT:USDT", tick_size=0.01, lot_size=0.001, min_notional=20.0, max_leverage=100),
}
BINANCE = FEE_PROFILES["binanceusdm"]
HYPERLIQUID = FEE_PROFILES["hyperliquid"]
QUIET = replace(BINANCE, slippage_bps=0.0, impact_bps_per_pct_volume=0.0)
MAKER = 2e-4


def make_venue(
    fees: FeeProfile = QUIET, balance: float = 10_000.0, leverage: float = 10.0
) -> tuple[PaperVenue, ManualClock]:
    clock = ManualClock(T0)
    venue = PaperVenue(initial_balance=balance, rules=RULES, fees=fees, clock=clock, default_leverage=leverage)
    venue.set_mark_price("BTC", 100_000.0)
    return venue, clock


def limit(cid: str, side: OrderSide, qty: float, price: float | None, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(cid, "BTC", side, "limit", qty, reduce_only=reduce_only, price=price)


def market(cid: str, side: OrderSide, qty: float, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(cid, "BTC", side, "market", qty, reduce_only=reduce_only)


def candle(o: float, h: float, low: float, c: float, volume: float = 1.0) -> Candle:
    return Candle(0, o, h, low, c, volume)


# ---- limit orders -------------------------------------------------------------------------------------


@pytest.mark.parametrize("price", [None, 0.0, -5.0, 0.01])  # 0.01 rounds to 0 on a 0.1 tick
async def test_limit_needs_a_positive_price(price: float | None) -> None:
    venue, _ = make_venue()
    order = await venue.place_order(limit("a", "buy", 0.01, price))
    assert order.status == "rejected"
    assert order.reject_reason == "limit orders need a positive price"


async def test_resting_limit_rounds_to_tick_and_values_min_notional_at_its_price() -> None:
    venue, _ = make_venue()
    rounded = await venue.place_order(limit("a", "buy", 0.01, 95_000.04))
    assert (rounded.status, rounded.price) == ("open", 95_000.0)
    small = await venue.place_order(limit("b", "buy", 0.001, 95_000.0))  # 95 < 100 at its price
    assert small.status == "rejected"
    assert "below the minimum 100" in (small.reject_reason or "")


async def test_resting_limit_reserves_margin_and_maker_fee_until_cancel() -> None:
    venue, _ = make_venue(balance=1_000.0)
    order = await venue.place_order(limit("a", "buy", 0.06, 99_000.0))
    reserve = 0.06 * 99_000 * (1 / 10 + MAKER)
    balance = await venue.fetch_balance()
    assert (balance.margin_used, venue.order_margin()) == (pytest.approx(reserve), pytest.approx(reserve))
    assert balance.available == pytest.approx(1_000.0 - reserve)
    assert balance.wallet_balance == 1_000.0
    assert order.status == "open"
    too_much = await venue.place_order(limit("b", "buy", 0.06, 99_000.0))  # 2 x 595.19 > 1,000
    assert too_much.status == "rejected"
    assert "insufficient available balance" in (too_much.reject_reason or "")
    await venue.cancel_order("BTC", "a")
    assert (await venue.fetch_balance()).margin_used == 0.0


async def test_limit_fill_turns_the_reservation_into_position_margin() -> None:
    venue, _ = make_venue()
    await venue.place_order(limit("a", "buy", 0.01, 99_000.0))
    [fill] = venue.on_candle("BTC", candle(100_000, 100_100, 98_800, 99_200))
    assert (fill.price, fill.liquidity, fill.reason) == (99_000.0, "maker", "entry")
    assert fill.fee == pytest.approx(0.01 * 99_000 * MAKER)
    [position] = await venue.fetch_positions()
    balance = await venue.fetch_balance()
    assert position.margin == pytest.approx(99.0)
    assert balance.margin_used == pytest.approx(99.0)
    assert venue.order_margin() == 0.0
    assert balance.wallet_balance == pytest.approx(10_000.0 - fill.fee)


async def test_leverage_of_a_resting_limit_is_the_one_at_placement() -> None:
    venue, _ = make_venue(leverage=10.0)
    await venue.place_order(limit("a", "buy", 0.01, 99_000.0))
    await venue.set_leverage("BTC", 20.0)
    venue.on_candle("BTC", candle(100_000, 100_100, 98_800, 99_200))
    [position] = await venue.fetch_positions()
    assert (position.leverage, position.margin) == (pytest.approx(10.0), pytest.approx(99.0))


async def test_marketable_limit_is_a_taker_fill_at_the_mark_capped_at_its_price() -> None:
    venue, _ = make_venue(replace(QUIET, slippage_bps=5.0))
    order = await venue.place_order(limit("a", "buy", 0.01, 100_020.0))  # mark + 5 bps = 100,050 > 100,020
    assert (order.status, order.avg_fill_price) == ("filled", 100_020.0)
    [fill] = await venue.fetch_fills()
    assert fill.liquidity == "taker"
    assert fill.fee == pytest.approx(0.01 * 100_020 * 5e-4)
    sell = await venue.place_order(limit("b", "sell", 0.01, 90_000.0, reduce_only=True))
    assert (sell.status, sell.avg_fill_price) == ("filled", pytest.approx(100_000 * (1 - 5e-4)))


async def test_reduce_only_limit_fills_at_most_the_position_and_dies_with_it() -> None:
    venue, _ = make_venue()
    await venue.place_order(market("e", "buy", 0.02))
    await venue.place_order(limit("tp", "sell", 0.05, 103_000.0, reduce_only=True))
    assert venue.order_margin() == 0.0  # reduce-only: nothing reserved
    await venue.place_order(market("half", "sell", 0.01, reduce_only=True))
    [fill] = venue.on_candle("BTC", candle(100_000, 103_500, 99_900, 103_100))
    assert (fill.quantity, fill.reason, fill.liquidity) == (0.01, "close", "maker")
    assert fill.realized_pnl == pytest.approx(30.0)
    await venue.place_order(market("again", "buy", 0.01))
    await venue.place_order(limit("tp2", "sell", 0.01, 110_000.0, reduce_only=True))
    await venue.place_order(market("out", "sell", 0.01, reduce_only=True))
    tp2 = await venue.fetch_order("BTC", "tp2")
    assert tp2 is not None
    assert tp2.status == "canceled"


async def test_reduce_only_limit_placed_as_take_profit_keeps_that_reason() -> None:
    venue, _ = make_venue()
    await venue.place_order(market("e", "buy", 0.01))
    request = replace(limit("tp", "sell", 0.01, 103_000.0, reduce_only=True), reason="take_profit")
    await venue.place_order(request)
    [fill] = venue.on_candle("BTC", candle(100_000, 103_500, 99_900, 103_100))
    assert (fill.reason, fill.liquidity) == ("take_profit", "maker")


async def test_limit_that_would_flip_at_fill_is_canceled() -> None:
    venue, _ = make_venue()
    await venue.place_order(market("e", "buy", 0.01))
    assert (await venue.place_order(limit("l", "sell", 0.01, 101_000.0))).status == "open"  # a decrease today
    await venue.place_order(market("part", "sell", 0.005, reduce_only=True))
    assert venue.on_candle("BTC", candle(100_000, 101_500, 99_900, 101_200)) == []
    order = await venue.fetch_order("BTC", "l")
    assert order is not None
    assert order.status == "canceled"
    assert "flip" in (order.reject_reason or "")
    assert venue.order_margin() == 0.0
    assert (await venue.fetch_positions())[0].size == 0.005


async def test_limit_growing_a_position_mid_candle_is_liquidated_on_the_rest_of_the_path() -> None:
    venue, _ = make_venue(leverage=20.0)
    await venue.place_order(limit("l", "buy", 0.01, 99_000.0))  # liquidation near 99,000 * (1 - 1/20) / 0.996
    lp = (0.01 * 99_000 - 0.01 * 99_000 / 20) / (0.01 * 0.996)
    fills = venue.on_candle("BTC", candle(100_000, 100_100, 90_000, 90_500))  # bearish: O-H-L-C
    assert [(f.reason, f.price) for f in fills] == [("entry", 99_000.0), ("liquidation", pytest.approx(lp))]
    assert await venue.fetch_positions() == []


async def test_restart_keeps_resting_limits_and_their_reservation() -> None:
    venue, clock = make_venue()
    await venue.place_order(limit("l", "buy", 0.01, 99_000.0))
    await venue.set_leverage("BTC", 5.0)  # the resting limit keeps its 10x
    restored = PaperVenue(initial_balance=0.0, rules=RULES, fees=QUIET, clock=clock)
    restored.restore(**venue.snapshot())
    assert await restored.fetch_balance() == await venue.fetch_balance()
    assert restored.snapshot() == venue.snapshot()
    bar = candle(100_000, 100_100, 98_800, 99_200)
    assert restored.on_candle("BTC", bar) == venue.on_candle("BTC", bar)
    [position] = await restored.fetch_positions()
    assert position.leverage == pytest.approx(10.0)


async def test_restore_of_an_order_list_from_elsewhere_reserves_at_the_symbol_leverage() -> None:
    venue, clock = make_venue(leverage=4.0)
    await venue.place_order(limit("l", "buy", 0.01, 99_000.0))
    snapshot = venue.snapshot()
    restored = PaperVenue(initial_balance=0.0, rules=RULES, fees=QUIET, clock=clock, default_leverage=4.0)
    restored.restore(
        initial_balance=snapshot["initial_balance"],
        wallet_balance=snapshot["wallet_balance"],
        realized_pnl=snapshot["realized_pnl"],
        fees_paid=snapshot["fees_paid"],
        positions=snapshot["positions"],
        open_orders=snapshot["open_orders"],
    )  # the registry's call: no order leverage, marks or funding
    assert restored.order_margin() == pytest.approx(0.01 * 99_000 * (1 / 4 + MAKER))
    with pytest.raises(ValueError):
        restored.restore(
            initial_balance=10_000.0,
            wallet_balance=10_000.0,
            realized_pnl=0.0,
            fees_paid=0.0,
            positions=[],
            open_orders=[replace(snapshot["open_orders"][0], price=None)],
        )


# ---- funding ------------------------------------------------------------------------------------------


async def test_funding_is_idempotent_per_settlement_and_in_time_order() -> None:
    venue, _ = make_venue()
    t8 = T0 + timedelta(hours=8)
    assert venue.apply_funding("BTC", 0.0001, T0) is None  # no position: nothing, but settled
    await venue.place_order(market("e", "buy", 0.01))
    assert venue.apply_funding("BTC", 0.0001, T0) is None  # already settled
    first = venue.apply_funding("BTC", 0.0001, t8)
    assert first is not None
    assert first.amount == pytest.approx(-0.1)
    assert venue.apply_funding("BTC", 0.0001, t8) is None
    assert venue.apply_funding("BTC", 0.0001, t8 - timedelta(hours=1)) is None  # older than the last one
    assert venue.apply_funding("ETH", 0.0001, t8) is None  # per symbol: ETH has no position
    second = venue.apply_funding("BTC", -0.0003, t8 + timedelta(hours=8), mark_price=110_000.0)
    assert second is not None
    assert second.amount == pytest.approx(0.33)
    assert await venue.fetch_funding_payments() == [first, second]
    assert await venue.fetch_funding_payments(since=t8 + timedelta(hours=1)) == [second]
    balance = await venue.fetch_balance()
    assert (balance.funding_paid, balance.funding_received) == (pytest.approx(0.1), pytest.approx(0.33))
    assert balance.wallet_balance == pytest.approx(10_000.0 - 0.5 - 0.1 + 0.33)
    assert balance.equity == pytest.approx(
        10_000.0 + balance.realized_pnl + balance.unrealized_pnl - balance.fees_paid - 0.1 + 0.33
    )


async def test_funding_survives_a_restart_exactly() -> None:
    venue, clock = make_venue()
    await venue.place_order(market("e", "sell", 0.01))
    venue.apply_funding("BTC", 0.0005, T0)
    venue.apply_funding("BTC", -0.0002, T0 + timedelta(hours=8))
    restored = PaperVenue(initial_balance=0.0, rules=RULES, fees=QUIET, clock=clock)
    restored.restore(**venue.snapshot())
    assert await restored.fetch_balance() == await venue.fetch_balance()
    assert restored.apply_funding("BTC", 0.0001, T0 + timedelta(hours=8)) is None  # already settled before
    broken = venue.snapshot()
    broken["funding_received"] = 0.0  # the wallet no longer adds up
    with pytest.raises(ValueError):
        restored.restore(**broken)


async def test_funding_paid_can_overdraw_available_and_then_blocks_new_orders() -> None:
    venue, _ = make_venue(balance=101.0, leverage=10.0)
    await venue.place_order(market("e", "buy", 0.01))  # margin 100, fee 0.5: 0.5 left
    venue.apply_funding("BTC", 0.001, T0)  # pays 1.0 from the wallet; the isolated margin stays 100
    balance = await venue.fetch_balance()
    assert balance.available == pytest.approx(-0.5)
    assert (await venue.fetch_positions())[0].margin == pytest.approx(100.0)
    order = await venue.place_order(market("more", "buy", 0.001))
    assert order.status == "rejected"


# ---- slippage -----------------------------------------------------------------------------------------


def test_taker_slippage_grows_with_the_share_of_volume_and_is_capped() -> None:
    fees = replace(BINANCE, slippage_bps=1.0, impact_bps_per_pct_volume=2.0, max_slippage_bps=100.0)
    assert pm.taker_slippage_bps(fees, 10_000.0, None) == 1.0  # no volume known
    assert pm.taker_slippage_bps(fees, 10_000.0, 0.0) == 1.0
    assert pm.taker_slippage_bps(fees, 10_000.0, 1_000_000.0) == pytest.approx(3.0)  # 1% of the volume
    assert pm.taker_slippage_bps(fees, 100_000.0, 1_000_000.0) == pytest.approx(21.0)  # 10%
    assert pm.taker_slippage_bps(fees, 1_000_000.0, 1_000_000.0) == 100.0  # 100%: capped


async def test_market_slippage_uses_the_last_candle_quote_volume() -> None:
    venue, _ = make_venue(BINANCE)
    first = await venue.place_order(market("a", "buy", 0.1))  # no candle yet: 1 bp
    assert first.avg_fill_price == pytest.approx(100_010.0)
    venue.on_candle("BTC", candle(100_000, 100_100, 99_900, 100_000, volume=10.0))  # 1,000,000 USD
    second = await venue.place_order(market("b", "buy", 0.1))  # 10,000 USD: 1% -> 1 + 2 bps
    assert second.avg_fill_price == pytest.approx(100_030.0)
    venue.set_mark_price("BTC", 100_000.0)  # a mark alone keeps the last volume
    third = await venue.place_order(market("c", "sell", 0.2, reduce_only=True))  # 2% -> 1 + 4 bps
    assert third.avg_fill_price == pytest.approx(99_950.0)


async def test_closing_fill_is_never_worse_than_the_liquidation_price() -> None:
    fees = replace(BINANCE, slippage_bps=80.0, max_slippage_bps=100.0)
    venue, _ = make_venue(fees, leverage=20.0)
    await venue.place_order(market("e", "buy", 0.01))
    [position] = await venue.fetch_positions()
    assert position.liquidation_price is not None
    stop = position.liquidation_price * 1.002  # 0.8% slippage would take the fill below the liquidation price
    await venue.place_order(OrderRequest("sl", "BTC", "sell", "stop_market", 0.01, stop, reduce_only=True))
    [fill] = venue.on_candle("BTC", candle(100_000, 100_100, 90_000, 90_500))
    assert fill.reason == "stop_loss"
    assert fill.price == pytest.approx(position.liquidation_price)
    assert -fill.realized_pnl + fill.fee <= position.margin
    assert (await venue.fetch_balance()).available >= 0


# ---- per-venue liquidation ----------------------------------------------------------------------------


async def test_hyperliquid_venue_reports_its_liquidation_price_and_max_leverage() -> None:
    venue, _ = make_venue(replace(HYPERLIQUID, slippage_bps=0.0), leverage=10.0)
    await venue.place_order(market("e", "buy", 0.01))
    [position] = await venue.fetch_positions()
    assert position.margin == pytest.approx(100.0)
    assert position.liquidation_price == pytest.approx(91_139, abs=1)
    assert HYPERLIQUID.maintenance_rate(40.0) == pytest.approx(0.0125)
    assert BINANCE.maintenance_rate(40.0) == 0.004
    assert await venue.set_leverage("BTC", 40) == 40.0
    with pytest.raises(ExchangeError, match=r"outside 1\.\.40 "):
        await venue.set_leverage("BTC", 41)
    with pytest.raises(ExchangeError, match=r"outside 1\.\.25 "):
        await venue.set_leverage("ETH", 26)
