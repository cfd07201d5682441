"""The executor on the real paper venue: entries with their protection, the protective-stop guarantee,
closes, stop moves that never leave a position bare, resizes, and what must not trade."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import pytest

from app.core.clock import ManualClock
from app.schemas.trading_decision import AssetDecision, OrderAdjustment, PositionAdjustment
from app.schemas.validation import AssetVerdict, VerdictStatus
from app.services.alerts.events import AlertKind
from app.services.exchange.base import FEE_PROFILES, Order, OrderRequest, Position
from app.services.exchange.paper import PaperVenue
from app.services.execution.executor import ExecutionReport, Executor, entry_leverage
from app.services.market_data.base import MarketRules
from tests import factories as f

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PRICE = 100_000.0
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=100.0, max_leverage=125),
    "ETH": MarketRules("ETH", "ETH/USDT:USDT", tick_size=0.01, lot_size=0.001, min_notional=20.0, max_leverage=2),
}
STRATEGY = f.strategy(max_leverage=3.0)


class GuardedVenue(PaperVenue):
    """The paper venue, refusing to let a cancel take an open position's last resting stop; with `refuse_stops`
    set it refuses every stop order, as a venue may for its own reasons."""

    refuse_stops = False

    async def place_order(self, request: OrderRequest) -> Order:
        if self.refuse_stops and request.type == "stop_market":
            return self._new_order(request, request.quantity, "stop orders are suspended")
        return await super().place_order(request)

    async def _stops(self, symbol: str) -> int:
        return sum(o.type == "stop_market" for o in await self.fetch_open_orders(symbol))

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
        before = await self._stops(symbol)
        order = await super().cancel_order(symbol, client_order_id)
        if before and any(p.symbol == symbol for p in await self.fetch_positions()):
            assert await self._stops(symbol), f"cancelling {client_order_id} left the {symbol} position without a stop"
        return order


@pytest.fixture
def venue() -> GuardedVenue:
    v = GuardedVenue(initial_balance=10_000.0, rules=RULES, fees=FEE_PROFILES["binanceusdm"], clock=ManualClock(T0))
    v.set_mark_price("BTC", PRICE)
    v.set_mark_price("ETH", 3_000.0)
    return v


def verdict(item: AssetDecision, status: VerdictStatus = "accepted") -> AssetVerdict:
    return AssetVerdict(asset=item.asset, status=status, original=item, final=item)


async def run(
    venue: PaperVenue,
    *items: AssetDecision | AssetVerdict,
    decision_id: int = 1,
    account_max_leverage: float = 5.0,
    allow_new_exposure: bool = True,
    prices: dict[str, float] | None = None,
    strategy_leverage: float = 3.0,
) -> ExecutionReport:
    verdicts = [i if isinstance(i, AssetVerdict) else verdict(i) for i in items]
    return await Executor(RULES).execute(
        venue,
        verdicts,
        account_id=1,
        decision_id=decision_id,
        strategy=f.strategy(max_leverage=strategy_leverage),
        account_max_leverage=account_max_leverage,
        prices=prices or {"BTC": PRICE, "ETH": 3_000.0},
        allow_new_exposure=allow_new_exposure,
    )


async def position_of(venue: PaperVenue, symbol: str = "BTC") -> Position | None:
    return next((p for p in await venue.fetch_positions() if p.symbol == symbol), None)


async def resting(venue: PaperVenue, symbol: str = "BTC") -> dict[str, list[Order]]:
    orders = await venue.fetch_open_orders(symbol)
    return {kind: [o for o in orders if o.reason == kind] for kind in ("stop_loss", "take_profit")}


def buy(allocation: float = 1_000.0, sl: float = 98_000.0, tp: float | None = 104_000.0) -> AssetDecision:
    return f.decision("BTC", "buy", allocation_usd=allocation, sl_price=sl, tp_price=tp, rationale="trend up")


def sell(allocation: float = 1_000.0, sl: float = 102_000.0, tp: float | None = 96_000.0) -> AssetDecision:
    return f.decision("BTC", "sell", allocation_usd=allocation, sl_price=sl, tp_price=tp)


async def open_long(venue: PaperVenue, allocation: float = 1_000.0) -> Position:
    report = await run(venue, buy(allocation), decision_id=100)
    assert report.errors == []
    position = await position_of(venue)
    assert position is not None
    return position


# ---- entries -------------------------------------------------------------------------------------------


async def test_a_buy_places_entry_then_stop_then_take_profit(venue: PaperVenue) -> None:
    report = await run(venue, buy(1_000.0, sl=98_000.0, tp=104_000.0), decision_id=7)

    assert report.errors == []
    assert report.executed_assets == ["BTC"]
    entry, stop, target = report.orders
    assert (entry.type, entry.side, entry.status, entry.reason) == ("market", "buy", "filled", "entry")
    assert entry.quantity == pytest.approx(1_000.0 * 3 / PRICE)  # margin x leverage / price
    assert (stop.type, stop.side, stop.status, stop.trigger_price) == ("stop_market", "sell", "open", 98_000.0)
    assert (target.type, target.side, target.status) == ("take_profit_market", "sell", "open")
    assert target.trigger_price == 104_000.0
    assert stop.reduce_only and target.reduce_only
    position = await position_of(venue)
    assert position is not None and position.side == "long"
    assert stop.quantity == target.quantity == position.size
    assert all(o.client_order_id.startswith("a1-d7-BTC-") for o in report.orders)
    assert report.intents["BTC"].decision_id == 7
    assert report.intents["BTC"].rationale == "trend up"


async def test_a_sell_opens_a_short_with_a_buy_stop_above(venue: PaperVenue) -> None:
    report = await run(venue, sell())

    assert report.errors == []
    position = await position_of(venue)
    assert position is not None and position.side == "short"
    orders = await resting(venue)
    [stop] = orders["stop_loss"]
    assert (stop.side, stop.trigger_price, stop.quantity) == ("buy", 102_000.0, position.size)


async def test_an_entry_without_a_target_gets_only_the_stop(venue: PaperVenue) -> None:
    report = await run(venue, buy(tp=None))
    assert [o.reason for o in report.orders] == ["entry", "stop_loss"]
    assert report.errors == []


# ---- the protective-stop guarantee ---------------------------------------------------------------------


async def test_when_the_venue_refuses_the_stop_the_position_is_closed_at_once(venue: GuardedVenue) -> None:
    venue.refuse_stops = True
    report = await run(venue, buy(sl=98_000.0))

    entry, stop, close = report.orders
    assert entry.status == "filled"
    assert stop.status == "rejected" and stop.reason == "stop_loss"
    assert (close.type, close.side, close.status, close.reason, close.reduce_only) == (
        "market",
        "sell",
        "filled",
        "close",
        True,
    )
    assert close.filled_quantity == entry.filled_quantity
    assert await position_of(venue) is None
    assert await venue.fetch_open_orders() == []  # no take-profit left behind either
    assert any("stop_loss order rejected" in e and "suspended" in e for e in report.errors)
    assert any("stop could not be placed (stop orders are suspended)" in e for e in report.errors)
    assert [a.kind for a in report.alerts] == [AlertKind.ORDER_REJECTED, AlertKind.STOP_FAILED]
    assert report.executed_assets == []
    assert "BTC" not in report.intents


@pytest.mark.parametrize(("side", "mark", "close_side"), [("buy", 97_000.0, "sell"), ("sell", 103_000.0, "buy")])
async def test_an_entry_filled_past_its_stop_is_closed_at_once_without_sending_the_stop(
    venue: PaperVenue, side: Literal["buy", "sell"], mark: float, close_side: str
) -> None:
    # the model decided at 100k with its stop 2k away, but the market moved past the stop by the time the entry
    # filled: a stop there would fire at once (a venue refuses it), so the position is closed as the stop would
    venue.set_mark_price("BTC", mark)
    report = await run(venue, buy(sl=98_000.0) if side == "buy" else sell(sl=102_000.0))

    entry, close = report.orders
    assert (entry.status, entry.reason) == ("filled", "entry")
    assert (close.side, close.status, close.reason, close.reduce_only) == (close_side, "filled", "close", True)
    assert close.filled_quantity == entry.filled_quantity
    assert await position_of(venue) is None
    assert await venue.fetch_open_orders() == []
    [error] = report.errors
    assert f"the market ({mark:g}) is already past the stop" in error and "position was closed" in error
    assert [a.kind for a in report.alerts] == [AlertKind.STOP_FAILED]  # no order was refused: nothing was sent
    assert report.executed_assets == []


async def test_an_entry_larger_than_the_balance_is_trimmed_to_what_fits(venue: PaperVenue) -> None:
    report = await run(venue, buy(allocation=50_000.0))  # far more margin than the 10k account holds

    entry = report.orders[0]
    assert entry.status == "filled"
    balance = await venue.fetch_balance()
    assert 0 <= balance.available < 0.01 * balance.wallet_balance  # nearly all of it, never more
    assert any(o.reason == "stop_loss" and o.status == "open" for o in report.orders)


async def test_a_refused_entry_places_no_protective_orders(venue: PaperVenue) -> None:
    report = await run(venue, buy(allocation=1.0))  # below one lot: the venue refuses it

    [entry] = report.orders
    assert entry.status == "rejected"
    assert "zero after rounding" in (entry.reject_reason or "")
    assert await position_of(venue) is None
    assert report.executed_assets == []


# ---- closing -------------------------------------------------------------------------------------------


async def test_close_position_closes_it_and_leaves_no_resting_orders(venue: PaperVenue) -> None:
    position = await open_long(venue)
    report = await run(venue, f.decision("BTC", "close_position"), decision_id=2)

    [close] = report.orders
    assert (close.side, close.reduce_only, close.status, close.filled_quantity) == (
        "sell",
        True,
        "filled",
        position.size,
    )
    assert await position_of(venue) is None
    assert await venue.fetch_open_orders() == []
    assert report.executed_assets == ["BTC"]


async def test_close_position_without_a_position_on_the_venue_is_reported(venue: PaperVenue) -> None:
    report = await run(venue, f.decision("BTC", "close_position"))
    assert report.orders == []
    assert report.errors and "no open position" in report.errors[0]


# ---- moving the stop -----------------------------------------------------------------------------------


async def test_adjust_orders_places_the_new_stop_before_cancelling_the_old(venue: PaperVenue) -> None:
    await open_long(venue)
    [old_stop] = (await resting(venue))["stop_loss"]
    adj = OrderAdjustment(adjust_sl=True, new_sl_price=99_000.0)
    report = await run(venue, f.decision("BTC", "adjust_orders", order_adjustment=adj), decision_id=2)

    new_stop, cancelled = report.orders
    assert (new_stop.type, new_stop.status, new_stop.trigger_price) == ("stop_market", "open", 99_000.0)
    assert (cancelled.client_order_id, cancelled.status) == (old_stop.client_order_id, "canceled")
    orders = await resting(venue)
    assert [o.trigger_price for o in orders["stop_loss"]] == [99_000.0]
    assert [o.trigger_price for o in orders["take_profit"]] == [104_000.0]  # untouched
    assert report.errors == []


async def test_a_refused_new_stop_keeps_the_old_one(venue: PaperVenue) -> None:
    await open_long(venue)
    adj = OrderAdjustment(adjust_sl=True, new_sl_price=100_500.0)  # above the mark: the venue refuses
    report = await run(venue, f.decision("BTC", "adjust_orders", order_adjustment=adj), decision_id=2)

    assert [o.status for o in report.orders] == ["rejected"]
    assert [o.trigger_price for o in (await resting(venue))["stop_loss"]] == [98_000.0]
    assert report.errors


async def test_adjust_orders_moves_the_target_and_can_cancel_it(venue: PaperVenue) -> None:
    await open_long(venue)
    adj = OrderAdjustment(adjust_tp=True, new_tp_price=106_000.0)
    await run(venue, f.decision("BTC", "adjust_orders", order_adjustment=adj), decision_id=2)
    assert [o.trigger_price for o in (await resting(venue))["take_profit"]] == [106_000.0]

    adj = OrderAdjustment(cancel_tp=True)
    await run(venue, f.decision("BTC", "adjust_orders", order_adjustment=adj), decision_id=3)
    orders = await resting(venue)
    assert orders["take_profit"] == []
    assert [o.trigger_price for o in orders["stop_loss"]] == [98_000.0]


# ---- resizing ------------------------------------------------------------------------------------------


async def test_an_increase_resizes_the_stop_and_target_to_the_new_size(venue: PaperVenue) -> None:
    before = await open_long(venue, allocation=1_000.0)
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=500.0)
    report = await run(venue, f.decision("BTC", "adjust_position", position_adjustment=adj), decision_id=2)

    assert report.errors == []
    after = await position_of(venue)
    assert after is not None
    assert after.size == pytest.approx(before.size + 500.0 * 3 / PRICE)
    orders = await resting(venue)
    [stop], [target] = orders["stop_loss"], orders["take_profit"]
    assert stop.quantity == target.quantity == after.size
    assert (stop.trigger_price, target.trigger_price) == (98_000.0, 104_000.0)
    kinds = [(o.reason, o.status) for o in report.orders]
    assert kinds.index(("stop_loss", "open")) < kinds.index(("stop_loss", "canceled"))


async def test_an_increase_with_a_new_stop_uses_it(venue: PaperVenue) -> None:
    await open_long(venue)
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=500.0, new_sl_price=99_000.0)
    await run(venue, f.decision("BTC", "adjust_position", position_adjustment=adj), decision_id=2)

    after = await position_of(venue)
    [stop] = (await resting(venue))["stop_loss"]
    assert after is not None and (stop.trigger_price, stop.quantity) == (99_000.0, after.size)


async def test_an_increase_whose_new_stop_is_refused_keeps_the_whole_position_covered(venue: PaperVenue) -> None:
    await open_long(venue)
    # validated at 100k, but the mark is at 98.9k when it executes: a sell stop at 99k is refused
    venue.set_mark_price("BTC", 98_900.0)
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=500.0, new_sl_price=99_000.0)
    report = await run(venue, f.decision("BTC", "adjust_position", position_adjustment=adj), decision_id=2)

    after = await position_of(venue)
    assert after is not None and after.size == pytest.approx(0.045)
    [stop] = (await resting(venue))["stop_loss"]
    assert (stop.trigger_price, stop.quantity) == (98_000.0, after.size)  # the old level, the new size
    assert any("refused" in e for e in report.errors)


async def test_an_increase_that_no_stop_can_cover_is_undone(venue: PaperVenue) -> None:
    before = await open_long(venue)
    [old_stop] = (await resting(venue))["stop_loss"]
    await PaperVenue.cancel_order(venue, "BTC", old_stop.client_order_id)  # a position that lost its stop
    venue.set_mark_price("BTC", 98_900.0)
    adj = PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=500.0, new_sl_price=99_000.0)
    report = await run(venue, f.decision("BTC", "adjust_position", position_adjustment=adj), decision_id=2)

    after = await position_of(venue)
    assert after is not None and after.size == pytest.approx(before.size)
    assert [(o.reason, o.status) for o in report.orders][-1] == ("decrease", "filled")
    assert any("undone" in e for e in report.errors)


@pytest.mark.parametrize(("percentage", "left"), [(50.0, 0.015), (100.0, 0.0)])
async def test_a_decrease_by_percentage(venue: PaperVenue, percentage: float, left: float) -> None:
    before = await open_long(venue)  # 0.03 BTC
    adj = PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=1.0, adjustment_percentage=percentage)
    report = await run(venue, f.decision("BTC", "adjust_position", position_adjustment=adj), decision_id=2)

    [order] = report.orders
    assert (order.side, order.reduce_only, order.status) == ("sell", True, "filled")
    assert order.filled_quantity == pytest.approx(before.size * percentage / 100)
    after = await position_of(venue)
    if left:
        assert after is not None and after.size == pytest.approx(left)
        assert len((await resting(venue))["stop_loss"]) == 1  # still protected
    else:
        assert after is None
        assert await venue.fetch_open_orders() == []


async def test_a_decrease_by_amount_reduces_by_that_much_margin(venue: PaperVenue) -> None:
    before = await open_long(venue)
    adj = PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=500.0)
    await run(venue, f.decision("BTC", "adjust_position", position_adjustment=adj), decision_id=2)

    after = await position_of(venue)
    assert after is not None
    assert before.size - after.size == pytest.approx(500.0 * before.leverage / PRICE, abs=0.001)


# ---- what must not trade -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        verdict(buy(), status="rejected"),
        verdict(f.decision("BTC", "hold")),
        verdict(f.decision("BTC", "hold"), status="adjusted"),
    ],
    ids=["rejected", "hold", "adjusted-hold"],
)
async def test_a_rejected_verdict_or_a_hold_places_nothing(venue: PaperVenue, item: AssetVerdict) -> None:
    report = await run(venue, item)

    assert report.orders == []
    assert report.errors == []
    assert report.executed_assets == []
    assert await venue.fetch_positions() == []


async def test_a_rejected_close_leaves_the_position_and_its_protection(venue: PaperVenue) -> None:
    await open_long(venue)
    report = await run(venue, verdict(f.decision("BTC", "close_position"), status="rejected"), decision_id=2)

    assert report.orders == []
    assert await position_of(venue) is not None
    assert len((await resting(venue))["stop_loss"]) == 1


async def test_without_new_exposure_buys_and_increases_are_skipped_but_closes_go_through(venue: PaperVenue) -> None:
    await open_long(venue)
    increase = f.decision(
        "BTC",
        "adjust_position",
        position_adjustment=PositionAdjustment(adjustment_type="increase", adjustment_amount_usd=100.0),
    )
    eth_buy = f.decision("ETH", "buy", allocation_usd=200.0, sl_price=2_900.0)
    report = await run(venue, eth_buy, increase, allow_new_exposure=False, decision_id=2)
    assert report.orders == []
    assert len(report.errors) == 2 and all("only reduce exposure" in e for e in report.errors)
    assert await position_of(venue, "ETH") is None

    report = await run(venue, f.decision("BTC", "close_position"), allow_new_exposure=False, decision_id=3)
    assert report.executed_assets == ["BTC"]
    assert await position_of(venue) is None


async def test_no_price_no_trade(venue: PaperVenue) -> None:
    report = await run(venue, buy(), prices={"ETH": 3_000.0})
    assert report.orders == []
    assert "no price" in report.errors[0]


# ---- leverage ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "strategy_leverage", "account_leverage", "expected"),
    [
        ("BTC", 3.0, 5.0, 3.0),  # the strategy is the lowest
        ("BTC", 10.0, 2.0, 2.0),  # the account is the lowest
        ("ETH", 5.0, 5.0, 2.0),  # the venue allows only 2x on ETH
        ("BTC", 0.5, 5.0, 1.0),  # never below 1x
    ],
)
async def test_leverage_is_the_lowest_of_strategy_account_and_venue(
    venue: PaperVenue, symbol: Literal["BTC", "ETH"], strategy_leverage: float, account_leverage: float, expected: float
) -> None:
    strategy = STRATEGY.model_copy(
        update={"risk_parameters": STRATEGY.risk_parameters.model_copy(update={"max_leverage": strategy_leverage})}
    )
    assert entry_leverage(strategy, account_leverage, RULES[symbol]) == expected
    if strategy_leverage < 1:
        return
    price = PRICE if symbol == "BTC" else 3_000.0
    item = f.decision(symbol, "buy", allocation_usd=1_000.0, sl_price=price * 0.98)
    report = await run(venue, item, account_max_leverage=account_leverage, strategy_leverage=strategy_leverage)

    assert report.errors == []
    position = await position_of(venue, symbol)
    assert position is not None
    assert position.leverage == pytest.approx(expected)
    assert position.size == pytest.approx(1_000.0 * expected / price, abs=0.001)
    assert position.margin == pytest.approx(1_000.0, rel=0.01)  # the allocation is the margin, at any leverage


async def test_a_close_needs_no_price_from_the_context(venue: PaperVenue) -> None:
    """Stale market data must never stop us from reducing risk: the venue closes at its own mark."""
    await open_long(venue)
    report = await run(venue, f.decision("BTC", "close_position"), decision_id=2, prices={})
    assert [o.status for o in report.orders] == ["filled"]
    assert await position_of(venue) is None


async def test_one_asset_refused_by_the_venue_does_not_stop_the_others(venue: PaperVenue) -> None:
    unknown = f.decision("DOGE", "buy", allocation_usd=100.0, sl_price=0.1, tp_price=0.2)
    report = await run(venue, unknown, buy(), prices={"DOGE": 0.15, "BTC": 100_000.0})
    assert any(e.startswith("DOGE:") for e in report.errors)
    assert report.executed_assets == ["BTC"]
    assert await position_of(venue) is not None
