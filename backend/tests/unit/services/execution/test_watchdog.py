"""The stop watchdog, the kill switch's orders and the executor's bounded stop retries, on the real paper venue
(with a wrapper that refuses, or leaves unknown, the orders a test picks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from app.core.clock import ManualClock
from app.schemas.validation import AssetVerdict
from app.services.exchange.base import FEE_PROFILES, ExchangeError, ExchangeUnavailableError, Order, OrderRequest
from app.services.exchange.paper import PaperVenue
from app.services.execution.executor import STOP_ATTEMPTS, ExecutionReport, Executor, OrderRun
from app.services.execution.kill_switch import flatten
from app.services.execution.watchdog import StopWatchdog, WatchdogReport
from app.services.market_data.base import MarketRules
from tests import factories as f

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PRICE = 100_000.0
RULES = {
    "BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=100.0, max_leverage=125)
}


class FaultyVenue(PaperVenue):
    """The paper venue; `refuse(request)` True: the order is rejected; `lose(request)` True: the venue's answer
    never comes (the order is not placed) and the outcome is unknown."""

    refuse: Callable[[OrderRequest], bool] = staticmethod(lambda r: False)
    lose: Callable[[OrderRequest], bool] = staticmethod(lambda r: False)
    sent: list[str]

    async def place_order(self, request: OrderRequest) -> Order:
        self.sent.append(request.client_order_id)
        if self.lose(request):
            raise ExchangeUnavailableError(f"outcome unknown for {request.client_order_id}")
        if self.refuse(request):
            now = T0
            return Order(
                request.client_order_id,
                "",
                request.symbol,
                request.side,
                request.type,
                request.quantity,
                "rejected",
                now,
                now,
                trigger_price=request.trigger_price,
                reduce_only=request.reduce_only,
                reason=request.reason,
                reject_reason="refused by the test",
            )
        return await super().place_order(request)

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
        self.sent.append(f"cancel {client_order_id}")
        return await super().cancel_order(symbol, client_order_id)


@pytest.fixture
def venue() -> FaultyVenue:
    v = FaultyVenue(initial_balance=10_000.0, rules=RULES, fees=FEE_PROFILES["binanceusdm"], clock=ManualClock(T0))
    v.sent = []
    v.set_mark_price("BTC", PRICE)
    return v


async def bare_long(venue: PaperVenue, size: float = 0.01) -> None:
    """A long position with no stop, as if opened by hand."""
    await venue.set_leverage("BTC", 5)
    order = await venue.place_order(OrderRequest("hand-1", "BTC", "buy", "market", size))
    assert order.status == "filled"


async def check(venue: PaperVenue, levels: dict[str, float] | None = None, pct: float = 2.0) -> WatchdogReport:
    run = OrderRun(venue, 7, "w1000", ExecutionReport())
    return await StopWatchdog().check(venue, run, levels=levels or {}, stop_loss_percentage=pct)


def stops(orders: list[Order]) -> list[Order]:
    return [o for o in orders if o.type == "stop_market"]


async def test_a_covered_position_is_left_alone(venue: FaultyVenue) -> None:
    await bare_long(venue)
    await venue.place_order(OrderRequest("own-sl", "BTC", "sell", "stop_market", 0.01, 95_000.0, reduce_only=True))
    guard = await check(venue)
    assert guard.checked == 1 and guard.placed == guard.closed == guard.problems == []
    assert venue.sent == ["hand-1", "own-sl"]


async def test_a_bare_position_gets_a_stop_at_its_known_level(venue: FaultyVenue) -> None:
    await bare_long(venue)
    guard = await check(venue, levels={"BTC": 97_000.0})
    [stop] = stops(await venue.fetch_open_orders("BTC"))
    assert (stop.client_order_id, stop.trigger_price, stop.quantity, stop.reduce_only) == (
        "a7-w1000-BTC-sl",
        97_000.0,
        0.01,
        True,
    )
    assert guard.placed == ["BTC"] and "had no stop" in guard.problems[0]


async def test_without_a_known_level_the_strategy_distance_is_used(venue: FaultyVenue) -> None:
    await bare_long(venue)
    await check(venue, pct=3.0)
    [stop] = stops(await venue.fetch_open_orders("BTC"))
    entry = (await venue.fetch_positions())[0].entry_price
    assert stop.trigger_price == pytest.approx(entry * 0.97, abs=0.1)


async def test_a_crossed_level_closes_the_position(venue: FaultyVenue) -> None:
    await bare_long(venue)
    await check(venue, levels={"BTC": PRICE * 1.01})  # above the market: a sell stop would fire at once
    assert await venue.fetch_positions() == []
    assert stops(await venue.fetch_open_orders()) == []


async def test_a_refused_stop_closes_the_position(venue: FaultyVenue) -> None:
    await bare_long(venue)
    venue.refuse = lambda r: r.type == "stop_market"
    guard = await check(venue, levels={"BTC": 97_000.0})
    assert await venue.fetch_positions() == []
    assert guard.closed == ["BTC"]
    assert "closed at market" in guard.problems[-1] and "refused by the test" in guard.problems[-1]


async def test_a_stop_smaller_than_the_position_is_replaced_new_before_old(venue: FaultyVenue) -> None:
    await bare_long(venue, 0.02)
    await venue.place_order(OrderRequest("half-sl", "BTC", "sell", "stop_market", 0.01, 96_000.0, reduce_only=True))
    await check(venue, levels={"BTC": 96_000.0})
    [stop] = stops(await venue.fetch_open_orders("BTC"))
    assert (stop.client_order_id, stop.quantity) == ("a7-w1000-BTC-sl", 0.02)
    assert venue.sent.index("a7-w1000-BTC-sl") < venue.sent.index("cancel half-sl"), "new stop before the old goes"
    assert (await venue.fetch_order("BTC", "half-sl")).status == "canceled"


async def test_a_stop_whose_outcome_stays_unknown_is_tried_a_bounded_number_of_times_then_closed(
    venue: FaultyVenue,
) -> None:
    await bare_long(venue)
    venue.lose = lambda r: r.type == "stop_market"
    guard = await check(venue, levels={"BTC": 97_000.0})
    tried = [c for c in venue.sent if "-sl" in c]
    assert tried == ["a7-w1000-BTC-sl", "a7-w1000-BTC-sl2", "a7-w1000-BTC-sl3"][:STOP_ATTEMPTS]
    assert len(set(tried)) == len(tried), "each try has its own id: a lost answer is never sent again"
    assert await venue.fetch_positions() == []
    assert guard.closed == ["BTC"] and "the venue did not answer" in guard.problems[-1]


async def test_the_entry_stop_is_tried_again_under_new_ids_while_unknown(venue: FaultyVenue) -> None:
    lost = iter([True, False])
    venue.lose = lambda r: r.type == "stop_market" and next(lost)
    item = f.decision("BTC", "buy", allocation_usd=500.0, sl_price=95_000.0, tp_price=110_000.0)
    report = await Executor(RULES).execute(
        venue,
        [AssetVerdict(asset="BTC", status="accepted", original=item, final=item)],
        account_id=3,
        decision_id=12,
        strategy=f.strategy(max_leverage=3.0),
        account_max_leverage=5.0,
        prices={"BTC": PRICE},
    )
    assert venue.sent == ["a3-d12-BTC-en", "a3-d12-BTC-sl", "a3-d12-BTC-sl2", "a3-d12-BTC-tp"]
    [stop] = stops(await venue.fetch_open_orders("BTC"))
    assert stop.client_order_id == "a3-d12-BTC-sl2" and report.intents.keys() == {"BTC"}


async def test_flatten_cancels_entries_closes_positions_and_their_stops(venue: FaultyVenue) -> None:
    await bare_long(venue)
    await venue.place_order(OrderRequest("own-sl", "BTC", "sell", "stop_market", 0.01, 95_000.0, reduce_only=True))
    await venue.place_order(OrderRequest("bid", "BTC", "buy", "limit", 0.01, price=90_000.0))
    report = await flatten(venue, 7, "h5")
    assert await venue.fetch_positions() == [] and await venue.fetch_open_orders() == []
    assert report.orders[0].client_order_id == "bid" and report.orders[0].status == "canceled"  # entries first
    assert (await venue.fetch_order("BTC", "own-sl")).status == "canceled"  # no stop left dangling
    assert venue.sent[-1] == "a7-h5-BTC-cl"


async def test_a_refused_close_keeps_its_stop(venue: FaultyVenue) -> None:
    await bare_long(venue)
    await venue.place_order(OrderRequest("own-sl", "BTC", "sell", "stop_market", 0.01, 95_000.0, reduce_only=True))
    venue.refuse = lambda r: r.type == "market"
    await flatten(venue, 7, "h5")
    assert len(await venue.fetch_positions()) == 1
    assert [o.client_order_id for o in await venue.fetch_open_orders()] == ["own-sl"]


async def test_a_partly_filled_entry_gets_its_stop(venue: FaultyVenue) -> None:
    """An entry that filled in part and expired (status canceled, some quantity filled) is protected at once."""

    class PartialVenue(FaultyVenue):
        async def place_order(self, request: OrderRequest) -> Order:
            order = await super().place_order(request)
            if request.reason == "entry":
                order.status = "canceled"  # what the venue says of an IOC entry filled in part
            return order

    partial = PartialVenue(
        initial_balance=10_000.0, rules=RULES, fees=FEE_PROFILES["binanceusdm"], clock=ManualClock(T0)
    )
    partial.sent = []
    partial.set_mark_price("BTC", PRICE)
    item = f.decision("BTC", "buy", allocation_usd=500.0, sl_price=95_000.0)
    report = await Executor(RULES).execute(
        partial,
        [AssetVerdict(asset="BTC", status="accepted", original=item, final=item)],
        account_id=3,
        decision_id=13,
        strategy=f.strategy(max_leverage=3.0),
        account_max_leverage=5.0,
        prices={"BTC": PRICE},
    )
    [position] = await partial.fetch_positions()
    [stop] = stops(await partial.fetch_open_orders("BTC"))
    assert stop.quantity == position.size and stop.trigger_price == 95_000.0
    assert report.intents.keys() == {"BTC"}


class RateLimited(ExchangeUnavailableError):
    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limited: retry after {wait} s")
        self.retry_after_s = wait


async def test_a_rate_limited_stop_waits_the_limit_out_instead_of_using_up_its_tries(venue: FaultyVenue) -> None:
    await bare_long(venue)
    limited = iter([True, True, False])

    class Limited(FaultyVenue):
        async def place_order(self, request: OrderRequest) -> Order:
            if request.type == "stop_market" and next(limited):
                self.sent.append(request.client_order_id)
                raise RateLimited(0.01)
            return await super().place_order(request)

    venue.__class__ = Limited
    guard = await check(venue, levels={"BTC": 97_000.0})
    assert guard.placed == ["BTC"] and guard.closed == []
    [stop] = stops(await venue.fetch_open_orders("BTC"))
    assert stop.client_order_id == "a7-w1000-BTC-sl3", "each try has its own id, none was counted as failed"


async def test_flatten_goes_on_when_one_order_fails_and_names_what_is_left(venue: FaultyVenue) -> None:
    await bare_long(venue)
    await venue.place_order(OrderRequest("bid", "BTC", "buy", "limit", 0.01, price=90_000.0))

    class Stubborn(FaultyVenue):
        async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
            if client_order_id == "bid":
                raise ExchangeError("order bid is filled, not open")
            return await super().cancel_order(symbol, client_order_id)

    venue.__class__ = Stubborn
    report = await flatten(venue, 7, "h5")
    assert await venue.fetch_positions() == [] and report.remaining == []
    assert any("cancel bid failed" in e for e in report.errors)


async def test_flatten_names_a_position_whose_close_is_refused(venue: FaultyVenue) -> None:
    await bare_long(venue)
    venue.refuse = lambda r: r.type == "market"
    report = await flatten(venue, 7, "h5")
    assert report.remaining == ["BTC"] and any("the close was refused" in e for e in report.errors)
