"""Live trading end to end: the real engine (context, model, validation, executor, stop watchdog, reconciler) in
process, a live account on a fake Binance USD-M or Hyperliquid venue reached through ccxt over a real socket, and
faults injected at the fake. Everything is counted at the venue: the orders its book holds, the requests it got.

The model (`FlatThenHold`) opens a long with a stop 1% below and a take-profit 3.5% above the context's price where
the account is flat, and holds otherwise. The venue's price is pinned at the simulator's (the agent's market data),
so entries fill at a known price and nothing fires unless a test moves the price.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.exchange.registry import LiveAccountRefusedError
from app.services.execution.reconciler import ADOPTED
from tests.conftest import ADMIN_KEY
from tests.e2e.live_support import (
    VENUES,
    FlatThenHold,
    LiveRig,
    add_live_account,
    assert_db_matches_venue,
    before_request,
    credentials_of,
    cycle,
    db_orders,
    db_positions,
    entries_at,
    fake_venue,
    fast_live_requests,
    halt,
    is_entry_create,
    is_stop_create,
    live_agent,
    live_settings,
    no_position_left_unprotected,
    order_creates,
    private_requests,
    secrets_of,
    served,
    stops_at,
)
from tests.e2e.server import serve

pytestmark = pytest.mark.db

ADMIN = {"X-API-Key": ADMIN_KEY}
FEE_ROUNDING = 1e-5  # the venues write fees and PnL with 6 (Hyperliquid) or 8 (Binance) decimals


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def rig(venue: str, tmp_path: Path) -> AsyncIterator[LiveRig]:
    async with live_agent(venue, tmp_path) as built:  # type: ignore[arg-type]
        yield built


def our_id(rig: LiveRig, decision_id: int | None, leg: str, asset: str = "BTC") -> str:
    return f"a{rig.account_id}-d{decision_id}-{asset}-{leg}"


def the_entry(rig: LiveRig, decision_id: int | None) -> Any:
    order = rig.book_order(our_id(rig, decision_id, "en"))
    assert order is not None, "the entry is not at the venue"
    return order


def assert_protected(rig: LiveRig, size: float, level: float | None = None) -> Any:
    """One open stop covers the whole position (at `level` when given, to the venue's precision)."""
    stops = stops_at(rig.fake)
    assert len(stops) == 1, stops
    stop = stops[0]
    assert stop.side == "sell" and stop.reduce_only
    assert stop.close_position or stop.quantity == pytest.approx(size, rel=1e-9)
    if level is not None:
        assert stop.trigger == pytest.approx(level, rel=2e-4)
    return stop


def no_duplicates(rig: LiveRig) -> None:
    ids = [o.client_id for o in rig.fake.book.orders() if o.client_id is not None and o.parent_id is None]
    assert len(ids) == len(set(ids)), f"an order was sent twice: {ids}"


# ------------------------------------------------------------------------------------------------ 1. happy path


async def test_an_entry_gets_its_stop_and_target_at_the_venue_and_the_database_mirrors_it(
    venue: str, database_url: str, tmp_path: Path
) -> None:
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        result = await rig.cycle()

        assert result.status == "executed", (result.execution_errors, result.validation)
        decided = result.decision.decisions[0] if result.decision else None
        assert decided is not None and decided.action == "buy" and decided.sl_price and decided.tp_price
        entry = the_entry(rig, result.id)
        assert entry.type == "market" and entry.side == "buy" and entry.status == "filled" and not entry.reduce_only
        assert entries_at(rig.fake) == [entry]
        stop = rig.book_order(our_id(rig, result.id, "sl"))
        target = rig.book_order(our_id(rig, result.id, "tp"))
        assert stop is not None and target is not None
        assert assert_protected(rig, entry.filled, decided.sl_price) == stop
        assert target.type == "take_profit_market" and target.reduce_only and target.status == "open"
        assert target.trigger == pytest.approx(decided.tp_price, rel=2e-4)
        assert target.quantity == pytest.approx(entry.filled)
        assert len(order_creates(rig.fake)) == 3  # each order sent once
        [position] = rig.fake.book.positions()
        assert position.size == pytest.approx(entry.filled)

        # the decision's orders are the venue's, and the database mirrors the venue
        assert {o.client_order_id: o.status for o in result.orders} == {
            our_id(rig, result.id, "en"): "filled",
            our_id(rig, result.id, "sl"): "open",
            our_id(rig, result.id, "tp"): "open",
        }
        await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)
        [row] = await db_positions(rig.agent, rig.account_id, "open")
        assert row.stop_loss == pytest.approx(stop.trigger) and row.take_profit == pytest.approx(target.trigger)
        assert row.decision_id == result.id and row.entry_rationale == "e2e"

        # the next cycle holds: nothing more is sent
        again = await rig.cycle()
        assert again.orders == [] and again.execution_errors == []
        assert len(order_creates(rig.fake)) == 3
        await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)
        no_position_left_unprotected(rig.fake)


# ------------------------------------------------------------------------------------- 2-3. unknown outcomes


async def test_a_lost_entry_answer_is_found_by_client_id_and_protected_in_the_same_cycle(rig: LiveRig) -> None:
    rig.fake.lose_answer("order" if rig.venue == "hyperliquid" else "POST /fapi/v1/order")

    result = await rig.cycle()

    entry = the_entry(rig, result.id)
    assert entries_at(rig.fake) == [entry], "the entry was sent again"
    entry_row = next(o for o in result.orders if o.kind == "entry")
    assert entry_row.status == "filled" and entry_row.filled_quantity == pytest.approx(entry.filled)
    assert_protected(rig, entry.filled)
    assert rig.book_order(our_id(rig, result.id, "sl")) is not None
    assert len(order_creates(rig.fake)) == 3, "an order was sent again"
    no_duplicates(rig)
    no_position_left_unprotected(rig.fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)


@pytest.mark.parametrize("leg", ["entry", "stop"])
async def test_a_5xx_after_processing_leaves_no_duplicate_and_the_stop_in_place(rig: LiveRig, leg: str) -> None:
    fake = rig.fake
    if leg == "entry":
        fake.fail_after("order" if rig.venue == "hyperliquid" else "POST /fapi/v1/order")
    else:
        match = "order" if rig.venue == "hyperliquid" else "POST /fapi/v1/algoOrder"
        before_request(fake, lambda *request: is_stop_create(fake, *request), lambda: fake.fail_after(match))

    result = await rig.cycle()

    entry = the_entry(rig, result.id)
    assert entries_at(fake) == [entry]
    stop = assert_protected(rig, entry.filled)
    assert stop.client_id == rig.venue_id(our_id(rig, result.id, "sl")), "the stop was placed under another id"
    assert len(order_creates(fake)) == 3, "an order was sent again"
    no_duplicates(rig)
    no_position_left_unprotected(fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, fake)


async def test_an_entry_the_venue_never_got_is_not_sent_again(rig: LiveRig) -> None:
    if rig.venue == "hyperliquid":
        rig.fake.fail(500, b"", match="order")  # refused before processing: nothing is created
    else:
        rig.fake.fail(503, match="POST /fapi/v1/order")

    result = await rig.cycle()

    assert len(order_creates(rig.fake)) == 1, "the entry was sent again"
    assert rig.fake.book.orders() == [] and rig.fake.book.positions() == []
    errors = " | ".join(result.execution_errors)
    assert f"outcome unknown for {our_id(rig, result.id, 'en')}" in errors and "never sent again" in errors
    await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)


# ------------------------------------------------------------------------------------------- 4. stop refused


async def test_a_refused_stop_closes_the_position_at_market_in_the_same_cycle(rig: LiveRig) -> None:
    rig.fake.book.reject_next(
        lambda o: o.type == "stop_market", "would_trigger_immediately", "Order would immediately trigger."
    )

    result = await rig.cycle()

    assert rig.fake.book.positions() == []
    closes = [o for o in rig.fake.book.orders() if o.type == "market" and o.reduce_only]
    assert len(closes) == 1 and closes[0].status == "filled"
    assert closes[0].client_id == rig.venue_id(our_id(rig, result.id, "cl"))
    assert rig.book_order(our_id(rig, result.id, "tp")) is None, "a target was placed for a closed position"
    errors = " | ".join(result.execution_errors)
    assert "stop_loss order rejected by the venue: would trigger immediately" in errors
    assert re.search(
        r"the stop could not be placed \(would trigger immediately.*\), so the position was closed", errors
    )
    assert rig.fake.book.open_orders() == []
    no_position_left_unprotected(rig.fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)


async def test_a_stop_the_venue_never_answers_is_tried_three_times_then_the_position_is_closed(rig: LiveRig) -> None:
    fake = rig.fake
    if rig.venue == "hyperliquid":  # the three `order` actions after the entry's are refused unprocessed
        arm = lambda: fake.fail(500, b"", match="order", times=3)  # noqa: E731
        before_request(fake, lambda *request: is_entry_create(fake, *request), arm)
    else:
        fake.fail(503, match="POST /fapi/v1/algoOrder", times=3)

    result = await rig.cycle()

    stop_ids = [our_id(rig, result.id, leg) for leg in ("sl", "sl2", "sl3")]
    assert [rig.book_order(cid) for cid in stop_ids] == [None, None, None]  # none reached the book
    creates = order_creates(fake)
    assert len(creates) == 5, "entry, three stop tries, the close"  # each stop try sent once, under its own id
    assert fake.book.positions() == [] and fake.book.open_orders() == []
    close = rig.book_order(our_id(rig, result.id, "cl"))
    assert close is not None and close.reduce_only and close.status == "filled"
    errors = " | ".join(result.execution_errors)
    for attempt in (1, 2, 3):
        assert f"stop_loss order try {attempt} failed" in errors
    assert "the stop could not be placed (the venue did not answer), so the position was closed" in errors
    no_position_left_unprotected(fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, fake)


async def test_a_position_closed_for_want_of_a_stop_is_a_closed_trade_the_model_is_told_of(rig: LiveRig) -> None:
    rig.fake.book.reject_next(
        lambda o: o.type == "stop_market", "would_trigger_immediately", "Order would immediately trigger."
    )
    await rig.cycle()

    [row] = await db_positions(rig.agent, rig.account_id)
    fills = rig.fake.book.fills()
    assert row.status == "closed" and row.exit_reason == "close"
    assert row.size == pytest.approx(fills[0].quantity) and row.entry_price == pytest.approx(fills[0].price)
    assert row.fees == pytest.approx(sum(f.fee for f in fills), abs=FEE_ROUNDING) and row.fees > 0
    assert row.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills), abs=FEE_ROUNDING)
    rig.model.opening = False
    await rig.cycle()
    [trade] = rig.model.requests[-1].context.recent_trades["BTC"]  # the model is told of the round trip
    assert trade.exit_reason == "close" and trade.fees == pytest.approx(row.fees)


# ------------------------------------------------------------------------------------------- 5. partial fill


async def test_a_partly_filled_entry_gets_a_stop_for_the_filled_size(rig: LiveRig) -> None:
    rig.fake.book.partial_next(0.4)

    result = await rig.cycle()

    entry = the_entry(rig, result.id)
    assert 0 < entry.filled < entry.quantity
    [position] = rig.fake.book.positions()
    assert position.size == pytest.approx(entry.filled)
    decided = result.decision.decisions[0] if result.decision else None
    assert decided is not None
    assert_protected(rig, entry.filled, decided.sl_price)
    target = rig.book_order(our_id(rig, result.id, "tp"))
    assert target is not None and target.quantity == pytest.approx(entry.filled)
    assert result.execution_errors == []
    no_position_left_unprotected(rig.fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)


# ---------------------------------------------------------------------------- 6. a stop fired at the venue


async def test_a_stop_fired_at_the_venue_closes_the_position_in_the_database_and_the_model_is_told(
    venue: str, database_url: str, tmp_path: Path
) -> None:
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        opened = await rig.cycle()
        stop = rig.book_order(our_id(rig, opened.id, "sl"))
        assert stop is not None and stop.trigger is not None
        rig.model.opening = False

        rig.fake.book.set_price("BTC", stop.trigger * 0.995)  # between cycles: the venue fires the stop
        assert rig.fake.book.positions() == []
        exit_fills = [f for f in rig.fake.book.fills() if f.side == "sell"]
        assert len(exit_fills) == 1 and exit_fills[0].realized_pnl < 0

        seen = len(rig.model.requests)
        await rig.cycle()

        [row] = await db_positions(rig.agent, rig.account_id)
        assert row.status == "closed" and row.exit_reason == "stop_loss"
        assert row.realized_pnl == pytest.approx(sum(f.realized_pnl for f in rig.fake.book.fills()), abs=FEE_ROUNDING)
        assert row.fees == pytest.approx(sum(f.fee for f in rig.fake.book.fills()), abs=FEE_ROUNDING)
        assert row.exit_price == pytest.approx(exit_fills[0].price)
        context = rig.model.requests[seen].context
        assert context.account_state.open_positions == []
        rows = {o.client_order_id: o.status for o in await db_orders(rig.agent, rig.account_id)}
        assert rows[our_id(rig, opened.id, "tp")] == "canceled"  # the venue dropped the target with the position
        await assert_db_matches_venue(rig.agent, rig.account_id, rig.fake)
        no_position_left_unprotected(rig.fake)


async def test_the_ledger_holds_every_fill_of_the_venue_with_its_reason(rig: LiveRig) -> None:
    opened = await rig.cycle()
    stop = rig.book_order(our_id(rig, opened.id, "sl"))
    assert stop is not None and stop.trigger is not None
    rig.model.opening = False
    rig.fake.book.set_price("BTC", stop.trigger * 0.995)
    await rig.cycle()

    async with rig.agent.sessions() as session:
        rows = list(await session.scalars(select(models.Fill).where(models.Fill.account_id == rig.account_id)))
    venue_fills = rig.fake.book.fills()
    assert [(f.reason, f.side) for f in sorted(rows, key=lambda f: f.filled_at)] == [
        ("entry", "buy"),
        ("stop_loss", "sell"),
    ]
    assert sorted(f.quantity for f in rows) == pytest.approx(sorted(f.quantity for f in venue_fills))
    venue_pnl = sum(f.realized_pnl for f in venue_fills)
    assert sum(f.realized_pnl for f in rows) == pytest.approx(venue_pnl, abs=FEE_ROUNDING)
    assert sum(f.fee for f in rows) == pytest.approx(sum(f.fee for f in venue_fills), abs=FEE_ROUNDING)


# ------------------------------------------------------------------------------------------- 7. rate limits


RATE_LIMITS = [("binanceusdm", 429), ("binanceusdm", 418), ("hyperliquid", 429)]


@pytest.mark.parametrize(("venue", "status"), RATE_LIMITS, ids=[f"{v}-{s}" for v, s in RATE_LIMITS])
async def test_a_rate_limit_refuses_the_cycle_and_silences_the_venue_until_its_wait_has_passed(
    venue: str, status: int, tmp_path: Path
) -> None:
    wait_s = 2
    async with live_agent(venue, tmp_path) as rig:  # type: ignore[arg-type]
        fake = rig.fake
        rig.model.opening = False
        await rig.cycle()  # the adapter is up
        rig.model.opening = True
        if venue == "hyperliquid":
            fake.rate_limit("clearinghouseState", retry_after_s=wait_s)
        else:
            fake.fail(status, match="/fapi/v3/positionRisk", headers={"Retry-After": str(wait_s)})
        calls = len(rig.model.requests)

        with pytest.raises(LiveAccountRefusedError, match=rf"rate limited.*retry after {wait_s} s"):
            await rig.cycle()
        limited = next(r for r in private_requests(fake) if r.status == status)
        assert "rate limited" in (rig.agent.venues.refusals.get(rig.account_id) or "")
        with pytest.raises(LiveAccountRefusedError, match="rate limited"):
            await rig.cycle()  # still waiting: refused without asking the venue
        assert len(rig.model.requests) == calls, "the model was asked in a refused cycle"
        assert entries_at(fake) == []

        deadline = time.monotonic() + 10
        while True:
            try:
                result = await rig.cycle()
                break
            except LiveAccountRefusedError as exc:
                assert "rate limited" in str(exc) and time.monotonic() < deadline
                await asyncio.sleep(0.2)
        after = [r for r in list(fake.requests) if r.received_at > limited.received_at]
        assert after and after[0].received_at >= limited.received_at + wait_s, "the venue was asked during the wait"
        assert result.status == "executed" and len(entries_at(fake)) == 1
        assert_protected(rig, entries_at(fake)[0].filled)
        assert rig.account_id not in rig.agent.venues.refusals


# ----------------------------------------------------------------------------- 8-9. the stop watchdog


async def test_a_position_opened_by_hand_is_adopted_and_given_a_stop_at_start_up(rig: LiveRig) -> None:
    fake = rig.fake
    fake.book.place("BTC", "buy", "market", 0.01)
    assert stops_at(fake) == []

    await rig.agent.loop._check_accounts()

    [row] = await db_positions(rig.agent, rig.account_id, "open")
    assert row.entry_rationale == ADOPTED
    stop = assert_protected(rig, 0.01)
    stop_row = next(o for o in await db_orders(rig.agent, rig.account_id) if o.kind == "stop_loss")
    assert re.fullmatch(rf"a{rig.account_id}-w\d+-BTC-sl", stop_row.client_order_id)
    assert stop.client_id == rig.venue_id(stop_row.client_order_id)
    assert stop.trigger is not None and stop.trigger < row.entry_price
    no_position_left_unprotected(fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, fake)

    result = await rig.cycle()  # the model holds: the stop is enough
    assert result.orders == [] and len(stops_at(fake)) == 1


async def test_a_stop_cancelled_by_hand_is_placed_again_by_the_next_cycle(rig: LiveRig) -> None:
    fake = rig.fake
    opened = await rig.cycle()
    stop = rig.book_order(our_id(rig, opened.id, "sl"))
    assert stop is not None
    fake.book.cancel(order_id=stop.id)
    assert stops_at(fake) == []

    result = await rig.cycle()

    again = rig.book_order(our_id(rig, result.id, "sl"))
    assert again is not None and again.status == "open"
    assert_protected(rig, the_entry(rig, opened.id).filled)
    assert any("had no stop" in e for e in result.execution_errors), result.execution_errors
    no_duplicates(rig)
    no_position_left_unprotected(fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, fake)


async def test_a_stop_cancelled_by_hand_is_placed_again_at_its_level(rig: LiveRig) -> None:
    opened = await rig.cycle()
    stop = rig.book_order(our_id(rig, opened.id, "sl"))
    assert stop is not None
    rig.fake.book.cancel(order_id=stop.id)

    result = await rig.cycle()

    again = rig.book_order(our_id(rig, result.id, "sl"))
    assert again is not None and again.trigger == pytest.approx(stop.trigger)


# ------------------------------------------------------------------------- the model moves its stop, closes


async def test_a_stop_moved_by_the_model_is_placed_before_the_old_one_is_cancelled(rig: LiveRig) -> None:
    fake = rig.fake
    opened = await rig.cycle()
    old = rig.book_order(our_id(rig, opened.id, "sl"))
    assert old is not None and old.trigger is not None
    rig.model.when_held = "move_stop"

    moved = await rig.cycle()

    new = rig.book_order(our_id(rig, moved.id, "sl"))
    assert new is not None and new.status == "open" and new.trigger is not None and new.trigger > old.trigger
    old = rig.book_order(our_id(rig, opened.id, "sl"))
    assert old is not None and old.status == "canceled"
    assert new.created_ms <= old.updated_ms, "the old stop was cancelled before the new one was placed"
    assert len(fake.book.unprotected_spans()) == 1, "the position was without a stop while its stop moved"
    assert_protected(rig, the_entry(rig, opened.id).filled, new.trigger)
    target = rig.book_order(our_id(rig, opened.id, "tp"))
    assert target is not None and target.status == "open"  # the take-profit stays
    [row] = await db_positions(rig.agent, rig.account_id, "open")
    assert row.stop_loss == pytest.approx(new.trigger)
    await assert_db_matches_venue(rig.agent, rig.account_id, fake)


async def test_a_position_the_model_closes_is_closed_at_the_venue_and_in_the_database(rig: LiveRig) -> None:
    fake = rig.fake
    opened = await rig.cycle()
    rig.model.opening, rig.model.when_held = False, "close_position"

    closed = await rig.cycle()

    close = rig.book_order(our_id(rig, closed.id, "cl"))
    assert close is not None and close.type == "market" and close.reduce_only and close.status == "filled"
    assert fake.book.positions() == [] and fake.book.open_orders() == [], "a stop or target was left at the venue"
    assert len(order_creates(fake)) == 4
    [row] = await db_positions(rig.agent, rig.account_id)
    assert row.status == "closed" and row.exit_reason == "close" and row.decision_id == opened.id
    assert row.fees == pytest.approx(sum(f.fee for f in fake.book.fills()), abs=FEE_ROUNDING)
    no_position_left_unprotected(fake)
    await assert_db_matches_venue(rig.agent, rig.account_id, fake)


# ------------------------------------------------------------------------------------------------- 10. halt


async def test_halting_a_live_account_through_the_api_flattens_it(rig: LiveRig) -> None:
    fake = rig.fake
    opened = await rig.cycle()
    assert len(stops_at(fake)) == 1

    async with served(rig.settings, rig.agent) as client:
        answer = await halt(client, rig)
        orders, positions = await db_orders(rig.agent, rig.account_id), await db_positions(rig.agent, rig.account_id)
        await assert_db_matches_venue(rig.agent, rig.account_id, fake)
        sent = len(order_creates(fake))
        skipped = await rig.cycle()  # a halted account sends nothing

    assert skipped.status == "skipped", skipped.error
    assert skipped.orders == [] and len(order_creates(fake)) == sent
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "HALTED"
    assert fake.book.positions() == []
    assert fake.book.open_orders() == [], "an order was left at the venue"
    [close] = [o for o in fake.book.orders() if o.type == "market" and o.reduce_only]
    assert close.status == "filled" and close.side == "sell"
    close_row = next(o for o in orders if o.kind == "close")
    assert re.fullmatch(rf"a{rig.account_id}-h\d+-BTC-cl", close_row.client_order_id)
    assert close.client_id == rig.venue_id(close_row.client_order_id)
    for leg in ("sl", "tp"):
        leftover = rig.book_order(our_id(rig, opened.id, leg))
        assert leftover is not None and leftover.status == "canceled"
    [row] = positions
    assert row.status == "closed"
    no_position_left_unprotected(fake)


async def test_halting_cancels_an_entry_order_placed_by_hand(rig: LiveRig) -> None:
    fake = rig.fake
    await rig.cycle()
    resting = fake.book.place("BTC", "buy", "limit", 0.01, price=round(fake.book.mark("BTC") * 0.9))
    assert resting.status == "open"

    async with served(rig.settings, rig.agent) as client:
        answer = await halt(client, rig)

    assert answer.status_code == 200, answer.text
    assert fake.book.order(order_id=resting.id).status == "canceled"
    assert fake.book.positions() == [] and fake.book.open_orders() == []


# ------------------------------------------------------------------------------------------------ 11. opt-ins


REFUSALS = {
    "paper_mode": "TRADING_MODE is paper",
    "no_credentials": "no exchange credentials stored",
    "simulated_market": "needs that venue's market data",
    "other_venue_market": "needs that venue's market data",
    "mainnet_unconfirmed": "set LIVE_MAINNET_CONFIRM=real-money",
}
OTHER_VENUE = {"binanceusdm": "hyperliquid", "hyperliquid": "binanceusdm"}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_live_account_without_every_opt_in_is_refused_and_the_venue_never_asked(
    venue: str, case: str, tmp_path: Path
) -> None:
    with fast_live_requests(), fake_venue(venue) as fake:  # type: ignore[arg-type]
        settings = live_settings(
            fake,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
            tmp_path=tmp_path,
            trading_mode="paper" if case == "paper_mode" else "live",
            market_source={"simulated_market": "simulated", "other_venue_market": OTHER_VENUE[venue]}.get(case),
        )
        model = FlatThenHold()
        agent = await build_agent(settings, provider=model)
        try:
            account_id = await add_live_account(
                agent,
                fake,
                credentials=None if case == "no_credentials" else "fake",
                network="mainnet" if case == "mainnet_unconfirmed" else "testnet",
            )
            with pytest.raises(LiveAccountRefusedError, match=re.escape(REFUSALS[case])):
                await cycle(agent, account_id)
            await agent.loop._check_accounts()
            await agent.loop.run_cycle()

            async def prebuilt(_s: Settings) -> Agent:
                return agent

            async with (
                serve(create_app(settings, agent_factory=prebuilt)) as base_url,
                httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN) as client,
            ):
                health = (await client.get("/health")).json()
                view = (await client.get(f"/api/v1/accounts/{account_id}")).json()
        finally:
            await agent.close()
        assert private_requests(fake) == [], "the venue was asked on behalf of a refused account"
        assert [r for r in model.requests if r.context.account_id == account_id] == []
        [live] = health["live_accounts"]
        assert live["id"] == account_id and REFUSALS[case] in live["refused"]
        assert any(REFUSALS[case] in reason for reason in health["reasons"])
        assert REFUSALS[case] in view["live_refusal"]


async def test_a_mainnet_account_is_refused_at_creation_without_the_confirmation(venue: str, tmp_path: Path) -> None:
    with fake_venue(venue) as fake:  # type: ignore[arg-type]
        for confirm in (None, "real-money"):
            settings = live_settings(
                fake,
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
                tmp_path=tmp_path,
                live_mainnet_confirm=confirm,
            )
            agent = await build_agent(settings, provider=FlatThenHold())

            async def prebuilt(_s: Settings, agent: Agent = agent) -> Agent:
                return agent

            async with (
                serve(create_app(settings, agent_factory=prebuilt)) as base_url,
                httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN) as client,
            ):
                body = {"name": f"main-{confirm}", "mode": "live", "venue": venue, "network": "mainnet"}
                created = await client.post("/api/v1/accounts", json=body)
                listed = (await client.get("/api/v1/accounts")).json()
            await agent.close()
            if confirm is None:
                assert created.status_code == 409, created.text
                assert "LIVE_MAINNET_CONFIRM=real-money" in created.json()["detail"]
                assert not [a for a in listed if a["name"] == body["name"]]
            else:
                assert created.status_code == 201, created.text
                assert created.json()["network"] == "mainnet"
        assert private_requests(fake) == []


# ------------------------------------------------------------------------------------------------ 12. secrets


async def test_the_venue_secret_never_leaves_the_agent(
    venue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "0x" + "ab" * 32 if venue == "hyperliquid" else "wrongSecretNeverToBeShown0123456789"
    answers: list[str] = []
    with fast_live_requests(), fake_venue(venue) as fake:  # type: ignore[arg-type]
        secrets = [*secrets_of(fake), wrong, wrong.removeprefix("0x")]
        settings = live_settings(fake, database_url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}", tmp_path=tmp_path)
        agent = await build_agent(settings, provider=FlatThenHold(at_price=fake.book.set_price))

        async def prebuilt(_s: Settings) -> Agent:
            return agent

        try:
            async with (
                serve(create_app(settings, agent_factory=prebuilt)) as base_url,
                httpx.AsyncClient(base_url=base_url, timeout=30, headers=ADMIN) as client,
            ):

                async def call(method: str, url: str, **kw: Any) -> httpx.Response:
                    response = await client.request(method, url, **kw)
                    answers.append(f"{method} {url} {response.status_code} {response.text}")
                    return response

                key, secret = credentials_of(fake)
                ids = []
                for name, pair in (("good", (key, secret)), ("bad", (key, wrong))):
                    body = {"name": name, "mode": "live", "venue": venue, "network": "testnet"}
                    created = await call("POST", "/api/v1/accounts", json=body)
                    assert created.status_code == 201, created.text
                    ids.append(created.json()["id"])
                    stored = await call(
                        "PUT",
                        f"/api/v1/accounts/{ids[-1]}/credentials",
                        json={"api_key": pair[0], "api_secret": pair[1]},
                    )
                    assert stored.status_code == 204, stored.text
                good, bad = ids
                fake.book.reject_next(lambda o: o.type == "take_profit_market", "reduce_only", "ReduceOnly rejected.")
                await call("POST", "/api/v1/decisions/generate", json={"account_id": good, "force_refresh": True})
                failed = await call(
                    "POST", "/api/v1/decisions/generate", json={"account_id": bad, "force_refresh": True}
                )
                # refused credentials are not an outage: 409 (they must change), not 503 (try again later)
                assert failed.status_code == 409 and "refused the credentials" in failed.text, failed.text
                assert stops_at(fake), "the good account did not trade"
                await agent.loop.run_cycle()
                for account_id in ids:
                    for path in ("", "/positions", "/orders", "/fills", "/history"):
                        await call("GET", f"/api/v1/accounts/{account_id}{path}")
                    await call("GET", f"/api/v1/decisions/history?account_id={account_id}")
                await call("GET", "/api/v1/accounts")
                health = await call("GET", "/health")
                refused = {a["id"]: a["refused"] for a in health.json()["live_accounts"]}
                assert refused[good] is None and "refused the credentials" in refused[bad], refused
                await call("POST", f"/api/v1/accounts/{good}/halt", json={"reason": "e2e"})
                await call("GET", "/metrics")
                rows = await _every_value(agent)
        finally:
            await agent.close()
    out, err = capfd.readouterr()
    assert "trades on" in caplog.text and rows and answers  # the places searched are not empty
    for secret in secrets:
        assert secret not in caplog.text, "a secret is in the log"
        assert secret not in out + err, "a secret was printed"
        assert not [a for a in answers if secret in a], "a secret is in an API answer"
        assert not [r for r in rows if secret in r], "a secret is in the database"


async def _every_value(agent: Agent) -> list[str]:
    """Every value of every column of every table, as text."""
    values: list[str] = []
    async with agent.sessions() as session:
        for table in models.Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                values.extend(str(v) for v in row if v is not None)
    return values
