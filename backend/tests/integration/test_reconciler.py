"""The reconciler reads nothing when the venue has not changed since its last committed mirror, and reads
everything again after a change or after a mirror that was rolled back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from app.bootstrap import Agent
from app.db import models
from app.services.exchange.base import OrderRequest, Position

pytestmark = pytest.mark.db


@contextmanager
def counting(agent: Agent) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = agent.sessions.kw["bind"].sync_engine

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_an_unchanged_venue_is_not_read_again(agent: Agent) -> None:
    exchange = await agent.venues.exchange_for(1)
    reconciler = agent.engine.reconciler
    async with agent.sessions.begin() as session:
        await reconciler.sync(session, 1, exchange)
    assert reconciler.is_current(1, exchange)

    with counting(agent) as statements:
        async with agent.sessions.begin() as session:
            report = await reconciler.sync(session, 1, exchange)
    assert report.new_fills == 0 and statements == []

    # the venue changes: a position opens; the next sync mirrors it
    await agent.venues.advance(1, agent.clock.now())
    order = await exchange.place_order(OrderRequest("test-entry", "BTC", "buy", "market", 0.01))
    assert order.status == "filled", order.reject_reason
    assert not reconciler.is_current(1, exchange)
    with counting(agent) as statements:
        async with agent.sessions.begin() as session:
            report = await reconciler.sync(session, 1, exchange)
    assert report.new_fills == 1 and report.opened == ["BTC"] and statements
    async with agent.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(models.Position)) == 1


async def test_a_rolled_back_mirror_is_done_again(agent: Agent) -> None:
    exchange = await agent.venues.exchange_for(1)
    await agent.venues.advance(1, agent.clock.now())
    await exchange.place_order(OrderRequest("test-entry", "BTC", "buy", "market", 0.01))
    reconciler = agent.engine.reconciler
    session = agent.sessions()
    try:
        await reconciler.sync(session, 1, exchange)
        await session.rollback()  # the transaction holding the mirror fails
    finally:
        await session.close()
    assert not reconciler.is_current(1, exchange)

    async with agent.sessions.begin() as session:
        report = await reconciler.sync(session, 1, exchange)
    assert report.opened == ["BTC"] and report.new_fills == 1
    assert reconciler.is_current(1, exchange)


async def test_orders_the_database_never_recorded_are_taken_from_the_venue(agent: Agent) -> None:
    """A process killed after the venue took its orders, before it stored them: the next sync records the filled
    entry (read by its client id, with its decision) and the open stop, so the database equals the venue."""
    decided = await agent.engine.make_trading_decision(None, 1, trigger="test")  # the baseline holds: no order
    d = decided.id
    exchange = await agent.venues.exchange_for(1)
    await exchange.set_leverage("BTC", 2)
    entry = await exchange.place_order(OrderRequest(f"a1-d{d}-BTC-en", "BTC", "buy", "market", 0.01))
    assert entry.avg_fill_price is not None
    stop = await exchange.place_order(
        OrderRequest(
            f"a1-d{d}-BTC-sl", "BTC", "sell", "stop_market", 0.01, entry.avg_fill_price * 0.9, True, "stop_loss"
        )
    )
    hand = await exchange.place_order(
        OrderRequest("a1-d999-BTC-tp", "BTC", "sell", "take_profit_market", 0.01, 1e7, True)
    )
    async with agent.sessions.begin() as session:
        await agent.engine.reconciler.sync(session, 1, exchange)  # nothing `placed`: it learns them from the venue
    async with agent.sessions() as session:
        rows = {o.client_order_id: o for o in (await session.scalars(select(models.Order))).all()}
        [fill] = (
            await session.scalars(select(models.Fill).where(models.Fill.client_order_id == entry.client_order_id))
        ).all()
    assert {f"a1-d{d}-BTC-en", f"a1-d{d}-BTC-sl", hand.client_order_id} <= set(rows)
    assert (rows[f"a1-d{d}-BTC-en"].status, rows[f"a1-d{d}-BTC-en"].decision_id) == ("filled", d)
    assert (rows[f"a1-d{d}-BTC-sl"].status, rows[f"a1-d{d}-BTC-sl"].trigger_price) == ("open", stop.trigger_price)
    assert rows[hand.client_order_id].decision_id is None, "no such decision: the order is kept without one"
    assert fill.order_id == rows[f"a1-d{d}-BTC-en"].id


async def test_a_position_opened_and_closed_between_two_syncs_is_a_closed_position(agent: Agent) -> None:
    """An entry closed at once (its stop refused) never shows as open at the venue: it is recorded from its fills."""
    decided = await agent.engine.make_trading_decision(None, 1, trigger="test")
    d = decided.id
    exchange = await agent.venues.exchange_for(1)
    await exchange.set_leverage("BTC", 2)
    entry = await exchange.place_order(OrderRequest(f"a1-d{d}-BTC-en", "BTC", "buy", "market", 0.01))
    close = await exchange.place_order(
        OrderRequest(f"a1-d{d}-BTC-cl", "BTC", "sell", "market", 0.01, None, True, "close")
    )
    assert entry.status == close.status == "filled"
    async with agent.sessions.begin() as session:
        report = await agent.engine.reconciler.sync(session, 1, exchange, placed=[entry, close], decision_id=d)
    assert report.closed == ["BTC"]
    async with agent.sessions() as session:
        query = select(models.Position).where(models.Position.decision_id == d, models.Position.symbol == "BTC")
        [row] = (await session.scalars(query)).all()
        fees = await session.scalar(
            select(func.sum(models.Fill.fee)).where(models.Fill.client_order_id.like(f"a1-d{d}-BTC-%"))
        )
    assert (row.status, row.side, row.size, row.exit_reason) == ("closed", "long", 0.01, "close")
    assert row.entry_price == entry.avg_fill_price and row.exit_price == close.avg_fill_price
    assert row.realized_pnl == pytest.approx((close.avg_fill_price - entry.avg_fill_price) * 0.01)
    assert row.fees == pytest.approx(fees) and row.fees > 0


async def test_a_position_closed_and_opened_again_on_the_same_side_between_two_syncs_is_two_positions(
    agent: Agent,
) -> None:
    """The venue's long was closed (a stop fired, or by hand) and a new long opened before the next sync: the old
    row is closed with its own fills and PnL (so the model hears of the loss), and the new long gets its own row.
    Both used to be merged into the old row, and the closed trade was lost."""
    decided = await agent.engine.make_trading_decision(None, 1, trigger="test")
    d = decided.id
    exchange = await agent.venues.exchange_for(1)
    await exchange.set_leverage("BTC", 2)
    await agent.venues.advance(1, agent.clock.now())
    entry = await exchange.place_order(OrderRequest(f"a1-d{d}-BTC-en", "BTC", "buy", "market", 0.01))
    async with agent.sessions.begin() as session:
        first = await agent.engine.reconciler.sync(session, 1, exchange, placed=[entry], decision_id=d)
    assert first.opened == ["BTC"]

    agent.clock.advance(timedelta(minutes=5))
    await agent.venues.advance(1, agent.clock.now())
    closing = await exchange.place_order(OrderRequest("by-hand-close", "BTC", "sell", "market", 0.01, None, True))
    closed_at = agent.clock.now()
    agent.clock.advance(timedelta(minutes=5))
    await agent.venues.advance(1, agent.clock.now())
    again = await exchange.place_order(OrderRequest("by-hand-open", "BTC", "buy", "market", 0.02))
    assert entry.status == closing.status == again.status == "filled"

    async with agent.sessions.begin() as session:
        report = await agent.engine.reconciler.sync(session, 1, exchange)
    assert report.closed == ["BTC"] and report.opened == ["BTC"]
    async with agent.sessions() as session:
        query = select(models.Position).where(models.Position.symbol == "BTC").order_by(models.Position.id)
        old, new = (await session.scalars(query)).all()
    assert (old.status, old.size, old.exit_reason) == ("closed", 0.01, "close")
    assert old.closed_at == closed_at and old.exit_price == closing.avg_fill_price
    assert old.realized_pnl == pytest.approx(closing_pnl := (closing.avg_fill_price - entry.avg_fill_price) * 0.01)
    assert closing_pnl != 0
    assert (new.status, new.size, new.opened_at) == ("open", 0.02, agent.clock.now())
    assert new.realized_pnl == 0 and new.entry_price == again.avg_fill_price
    assert new.entry_rationale is not None and new.entry_rationale.startswith("adopted")

    # and the next sync, with nothing new, keeps them as they are
    async with agent.sessions.begin() as session:
        report = await agent.engine.reconciler.sync(session, 1, exchange)
    assert report.closed == [] and report.opened == []


async def test_a_venue_that_dates_a_position_from_its_latest_increase_does_not_split_it(agent: Agent) -> None:
    """A live venue whose fill history no longer holds a position's entry dates the position from the first fill it
    still has (here an increase): with no exit between, it is the same position, and its row stays open."""
    exchange = await agent.venues.exchange_for(1)
    await exchange.set_leverage("BTC", 2)
    await agent.venues.advance(1, agent.clock.now())
    await exchange.place_order(OrderRequest("by-hand-open", "BTC", "buy", "market", 0.01))
    async with agent.sessions.begin() as session:
        assert (await agent.engine.reconciler.sync(session, 1, exchange)).opened == ["BTC"]
    agent.clock.advance(timedelta(minutes=5))
    await agent.venues.advance(1, agent.clock.now())
    await exchange.place_order(OrderRequest("by-hand-more", "BTC", "buy", "market", 0.01, reason="increase"))
    increased_at = agent.clock.now()
    read = exchange.fetch_positions

    async def dated_from_the_increase() -> list[Position]:
        return [dataclasses.replace(p, opened_at=increased_at) for p in await read()]

    exchange.fetch_positions = dated_from_the_increase  # type: ignore[method-assign]
    try:
        async with agent.sessions.begin() as session:
            report = await agent.engine.reconciler.sync(session, 1, exchange)
    finally:
        del exchange.fetch_positions
    assert report.closed == [] and report.opened == []
    async with agent.sessions() as session:
        [row] = (await session.scalars(select(models.Position).where(models.Position.symbol == "BTC"))).all()
    assert (row.status, row.size) == ("open", pytest.approx(0.02))
