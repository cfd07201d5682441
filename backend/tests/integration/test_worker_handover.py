"""One worker trades an account; another takes it over from the database alone. Two agents, each with its own engine,
pool and caches (as two worker processes have), on one PostgreSQL database, deciding at each job's candle (JobClock).

- The paper venue the second one restores from the database equals, field by field, the one the first one built by
  trading: money, positions, resting orders, leverage, funding, the order counter, marks and volumes.
- The second one trades on from there (its orders are numbered after the first one's), and the first one, taking the
  account back, restores it again instead of trading on its stale copy.
- A decision the first one left pending (its process killed mid-cycle) is marked interrupted by whichever process next
  holds the account, and that candle is decided again; a candle already decided is never decided a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.config import ExplicitSettings
from app.core.timeframes import floor_time
from app.db import models
from app.jobs.clock import JobClock
from app.services.exchange.paper import PaperVenue
from tests.conftest import ADMIN_KEY, START
from tests.fakes.scripted_model import ScriptedModel

pytestmark = [pytest.mark.db, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

CANDLES = [floor_time(START, "5m") + timedelta(minutes=5 * i) for i in range(12)]


class Worker:
    def __init__(self, agent: Agent, clock: JobClock) -> None:
        self.agent, self.clock = agent, clock

    async def decide(self, candle: Any, account_id: int = 1) -> models.Decision:
        with self.clock.at(candle):
            result = await self.agent.engine.make_trading_decision(None, account_id, trigger="loop")
        async with self.agent.sessions() as session:
            row = await session.get(models.Decision, result.id)
        assert row is not None
        return row

    async def venue(self, account_id: int = 1) -> PaperVenue:
        venue = await self.agent.venues.exchange_for(account_id)
        assert isinstance(venue, PaperVenue)
        return venue


@pytest.fixture
async def workers(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Worker, Worker]]:
    settings = ExplicitSettings(
        database_url=database_url, admin_api_key=ADMIN_KEY, secret_key_file=str(tmp_path / "secret.key")
    )
    built = []
    for seed in (11, 12):
        clock = JobClock()
        agent = await build_agent(settings, clock=clock, provider=ScriptedModel(seed=seed, invalid_rate=0.0))
        built.append(Worker(agent, clock))
    try:
        yield built[0], built[1]
    finally:
        for worker in built:
            await worker.agent.close()


def _state(venue: PaperVenue) -> dict[str, Any]:
    snapshot = dict(venue.snapshot())
    snapshot["positions"] = sorted((asdict(p) for p in snapshot["positions"]), key=lambda p: p["symbol"])
    snapshot["open_orders"] = sorted((asdict(o) for o in snapshot["open_orders"]), key=lambda o: o["client_order_id"])
    return snapshot


async def test_the_venue_another_worker_restores_equals_the_one_that_traded(workers: tuple[Worker, Worker]) -> None:
    first, second = workers
    for candle in CANDLES[:6]:
        await first.decide(candle)
    traded = _state(await first.venue())
    assert traded["positions"] and traded["open_orders"], "the scripted model opened positions with their stops"
    assert traded["realized_pnl"] or traded["fees_paid"], "money moved"

    async with second.agent.engine.locks.decide(1):  # as a job does: taking the account restores it
        with second.clock.at(CANDLES[5]):
            await second.agent.venues.advance(1, CANDLES[5])
        restored = _state(await second.venue())
    assert restored == traded


async def test_workers_trade_one_account_in_turn_each_from_the_database(workers: tuple[Worker, Worker]) -> None:
    first, second = workers
    for candle in CANDLES[:4]:
        await first.decide(candle)
    for candle in CANDLES[4:8]:
        await second.decide(candle)
    handed = _state(await second.venue())
    await first.decide(CANDLES[8])  # the first one's copy is four candles old: it restores before deciding
    async with first.agent.sessions() as session:
        numbers = (await session.scalars(select(models.Order.client_order_id).order_by(models.Order.id))).all()
        venue_ids = (await session.scalars(select(models.Order.venue_order_id).order_by(models.Order.id))).all()
        decided = (
            await session.execute(
                select(models.Decision.cycle_time, func.count())
                .group_by(models.Decision.cycle_time)
                .order_by(models.Decision.cycle_time)
            )
        ).all()
    assert len(numbers) == len(set(numbers)) and len(venue_ids) == len(set(venue_ids)), "no order id used twice"
    assert [(t, n) for t, n in decided] == [(t, 1) for t in CANDLES[:9]]
    # the first worker traded on from where the second left the account, not from its own old copy: its money is the
    # ledger's, every fill of both workers included
    resumed = _state(await first.venue())
    assert resumed["next_order_seq"] >= handed["next_order_seq"]
    async with first.agent.sessions() as session:
        realized, fees = (
            await session.execute(
                select(
                    func.coalesce(func.sum(models.Fill.realized_pnl), 0.0),
                    func.coalesce(func.sum(models.Fill.fee), 0.0),
                )
            )
        ).one()
    assert (resumed["realized_pnl"], resumed["fees_paid"]) == (pytest.approx(realized), pytest.approx(fees))
    assert fees > 0


async def test_a_decision_left_pending_is_interrupted_by_the_next_holder_and_a_decided_candle_stays_decided(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    decided = await first.decide(CANDLES[0])
    # a process killed while its decision of CANDLES[1] waited for the model left this row behind
    async with first.agent.sessions.begin() as session:
        orphan = models.Decision(
            account_id=1,
            cycle_time=CANDLES[1],
            trigger="loop",
            status="pending",
            symbols=["BTC", "ETH", "SOL"],
            symbols_key=",BTC,ETH,SOL,",
            strategy_id=decided.strategy_id,
            created_at=CANDLES[1],
        )
        session.add(orphan)
    again = await second.decide(CANDLES[1])
    async with second.agent.sessions() as session:
        left = await session.get(models.Decision, orphan.id)
    assert left is not None and left.status == "interrupted"
    assert again.id != orphan.id and again.status not in ("pending", "interrupted")
    # the candle of the first decision, asked again through the other worker (a retried job): the stored decision
    repeat = await second.decide(CANDLES[0])
    assert repeat.id == decided.id
