"""The equity snapshots a decision reads, kept between decisions (`EquityTails`): after each new batch of snapshots
the kept tail is what a whole read gives, also when more were added than a tail holds, and an account's tail is
read whole again once the newest snapshot it knows is gone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete

from app.bootstrap import Agent
from app.core.clock import ManualClock
from app.db import models
from app.db.repositories import trading

pytestmark = pytest.mark.db


async def add_snapshots(agent: Agent, start: datetime, values: list[float]) -> None:
    async with agent.sessions.begin() as session:
        for i, equity in enumerate(values):
            session.add(
                models.EquitySnapshot(
                    account_id=1,
                    taken_at=start - timedelta(minutes=i % 3),  # not always in time order: the id order counts
                    wallet_balance=equity,
                    unrealized_pnl=0.0,
                    equity=equity,
                    margin_used=0.0,
                    realized_pnl=0.0,
                    fees_paid=0.0,
                    funding_net=0.0,
                )
            )


async def both_reads(agent: Agent, tails: trading.EquityTails, now: datetime) -> tuple[object, object]:
    async with agent.sessions() as session:
        repo = trading.TradingRepository(session)
        return await repo.account_history(1, now, tails), await repo.account_history(1, now)


async def test_a_kept_tail_is_what_a_whole_read_gives(
    agent: Agent, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trading, "EQUITY_HISTORY", 5)
    tails = trading.EquityTails()
    now = clock.now()
    kept, whole = await both_reads(agent, tails, now)
    assert kept == whole
    batches = [[10_000.0, 10_010.0], [10_020.0], [], [10_030.0, 10_040.0, 10_050.0], [float(v) for v in range(7)]]
    for step, batch in enumerate(batches, start=1):
        await add_snapshots(agent, now + timedelta(hours=step), batch)
        kept, whole = await both_reads(agent, tails, now + timedelta(hours=step))
        assert kept == whole
    assert [equity for _at, equity in kept.equity] == [2.0, 3.0, 4.0, 5.0, 6.0]  # type: ignore[attr-defined]
    async with agent.sessions.begin() as session:  # the newest snapshot the tail knows is gone: read whole again
        newest = max(r[0] for r in await trading._equity_rows(session, 1, 0, 1))
        await session.execute(delete(models.EquitySnapshot).where(models.EquitySnapshot.id == newest))
    kept, whole = await both_reads(agent, tails, now + timedelta(days=1))
    assert kept == whole
    assert [equity for _at, equity in kept.equity] == [1.0, 2.0, 3.0, 4.0, 5.0]  # type: ignore[attr-defined]
