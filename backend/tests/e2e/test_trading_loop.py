"""End to end: many decision cycles on the simulator through the real loop, database and paper venue.

Checks what a user stakes money on: every decision is stored with its provenance, the orders and fills are
exactly those of the accepted decisions, every open position has its stop, and the account's money adds up
to the cent: equity = initial balance + realized PnL + unrealized PnL - fees.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.services.market_data.simulator import MarketSimulator
from tests.fakes.scripted_model import ScriptedModel

pytestmark = pytest.mark.db
CYCLES = 50


async def _check_invariants(agent: Agent, account_id: int) -> None:
    venue = await agent.venues.exchange_for(account_id)
    balance = await venue.fetch_balance()
    async with agent.sessions() as session:
        account = await session.get(models.Account, account_id)
        assert account is not None
        realized, fees = (
            await session.execute(
                select(
                    func.coalesce(func.sum(models.Fill.realized_pnl), 0.0),
                    func.coalesce(func.sum(models.Fill.fee), 0.0),
                ).where(models.Fill.account_id == account_id)
            )
        ).one()
        snapshot = await session.scalar(
            select(models.EquitySnapshot)
            .where(models.EquitySnapshot.account_id == account_id)
            .order_by(models.EquitySnapshot.id.desc())
            .limit(1)
        )
        open_rows = (
            await session.scalars(
                select(models.Position).where(
                    models.Position.account_id == account_id, models.Position.status == "open"
                )
            )
        ).all()
        funding_net = await session.scalar(
            select(func.coalesce(func.sum(models.FundingPayment.amount), 0.0)).where(
                models.FundingPayment.account_id == account_id
            )
        )
    positions = await venue.fetch_positions()
    unrealized = sum(p.unrealized_pnl for p in positions)
    funding_net = float(funding_net or 0.0)
    # The ledger in the database explains the venue's money to the cent:
    # equity = initial + realized + unrealized - fees - funding paid + funding received.
    assert round(balance.equity, 2) == round(account.initial_balance + realized + unrealized - fees + funding_net, 2)
    assert round(balance.funding_received - balance.funding_paid, 6) == round(funding_net, 6)
    assert snapshot is not None and round(snapshot.equity, 2) == round(balance.equity, 2)
    # The database mirrors the venue's positions.
    assert sorted((r.symbol, r.side) for r in open_rows) == sorted((p.symbol, p.side) for p in positions)
    # Every open position is protected by a stop covering its size.
    for position in positions:
        stops = [o for o in await venue.fetch_open_orders(position.symbol) if o.reason == "stop_loss"]
        assert stops, f"{position.symbol} has no protective stop"
        assert sum(o.quantity for o in stops) >= position.size - 1e-9


async def _check_decisions(agent: Agent, account_id: int, expected: int) -> dict[str, int]:
    async with agent.sessions() as session:
        decisions = (
            await session.scalars(
                select(models.Decision).where(models.Decision.account_id == account_id).order_by(models.Decision.id)
            )
        ).all()
        orders = (await session.scalars(select(models.Order).where(models.Order.account_id == account_id))).all()
        fills = (await session.scalars(select(models.Fill).where(models.Fill.account_id == account_id))).all()
        provenance = {p.decision_id: p for p in (await session.scalars(select(models.DecisionProvenance))).all()}
    assert len(decisions) == expected
    by_decision: dict[int, list[models.Order]] = {}
    for order in orders:
        if order.decision_id is not None:
            by_decision.setdefault(order.decision_id, []).append(order)
    counts = {"entries": 0, "rejected_verdicts": 0, "fallback": 0}
    for d in decisions:
        # Provenance: context, prompt, model, raw answer, parsed decision, validation and the final decision.
        assert d.status not in ("pending", "error"), d.error
        made_from = provenance[d.id]
        assert made_from.context_snapshot and made_from.context_snapshot["symbols"] == d.symbols
        assert made_from.prompt and "[system]" in made_from.prompt and "[user]" in made_from.prompt
        assert d.model_requested and d.model_served and d.raw_response
        assert d.parsed_decision is not None and d.validation_result is not None and d.final_decision is not None
        assert d.latency_ms is not None
        verdicts = {v["asset"]: v for v in d.validation_result["verdicts"]}
        assert set(verdicts) == set(d.symbols)
        own = by_decision.get(d.id, [])
        for asset, verdict in verdicts.items():
            asset_orders = [o for o in own if o.symbol == asset]
            action = verdict["final"]["action"]
            if verdict["status"] == "rejected":
                counts["rejected_verdicts"] += 1
                assert verdict["is_fallback"] and action == "hold"
            if action == "hold" or verdict["status"] == "rejected":
                assert not asset_orders, f"decision {d.id} {asset}: orders for a hold/rejection"
            if action in ("buy", "sell"):
                entries = [o for o in asset_orders if o.kind == "entry"]
                assert len(entries) == 1 and entries[0].side == action
                if entries[0].status == "filled":
                    counts["entries"] += 1
                    assert any(o.kind == "stop_loss" for o in asset_orders), "entry without a stop"
        counts["fallback"] += int(d.is_fallback)
    # Fills belong to orders and add up to what the orders say was filled.
    filled: dict[int, float] = {}
    for fill in fills:
        assert fill.order_id is not None
        filled[fill.order_id] = filled.get(fill.order_id, 0.0) + fill.quantity
    for order in orders:
        assert abs(filled.get(order.id, 0.0) - order.filled_quantity) < 1e-9, order.client_order_id
    return counts


async def _run_cycles(agent: Agent, clock: ManualClock, cycles: int) -> None:
    for _ in range(cycles):
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == 1
        await _check_invariants(agent, 1)


async def test_fifty_cycles_with_the_baseline_model(agent: Agent, clock: ManualClock) -> None:
    await _run_cycles(agent, clock, CYCLES)
    await _check_decisions(agent, 1, CYCLES)
    assert agent.loop.heartbeat.failures == 0


async def test_fifty_cycles_with_a_model_that_trades_hard_and_errs(settings: Settings, clock: ManualClock) -> None:
    model = ScriptedModel(seed=3)
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=model)
    try:
        await _run_cycles(agent, clock, CYCLES)
        counts = await _check_decisions(agent, 1, CYCLES)
        async with agent.sessions() as session:
            closed = await session.scalar(
                select(func.count()).select_from(models.Position).where(models.Position.status == "closed")
            )
            funding = await session.scalar(select(func.count()).select_from(models.FundingPayment))
    finally:
        await agent.close()
    assert model.calls == CYCLES
    assert counts["entries"] >= 5, counts  # the run really traded
    assert counts["rejected_verdicts"] >= 5, counts  # and the validator really refused things
    assert (closed or 0) >= 3
    assert (funding or 0) >= 1, "a position was open over the 16:00 UTC settlement: funding was settled"


async def test_a_restart_continues_from_the_stored_state(settings: Settings, clock: ManualClock) -> None:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    first = await build_agent(settings, clock=clock, market=market, provider=ScriptedModel(seed=5))
    try:
        await _run_cycles(first, clock, 15)
        before = await (await first.venues.exchange_for(1)).fetch_balance()
        positions_before = await (await first.venues.exchange_for(1)).fetch_positions()
        orders_before = await (await first.venues.exchange_for(1)).fetch_open_orders()
    finally:
        await first.close()
    second = await build_agent(settings, clock=clock, market=market, provider=ScriptedModel(seed=6))
    try:
        venue = await second.venues.exchange_for(1)
        after = await venue.fetch_balance()
        assert round(after.wallet_balance, 6) == round(before.wallet_balance, 6)
        assert [(p.symbol, p.side, p.size) for p in await venue.fetch_positions()] == [
            (p.symbol, p.side, p.size) for p in positions_before
        ]
        assert sorted(o.client_order_id for o in await venue.fetch_open_orders()) == sorted(
            o.client_order_id for o in orders_before
        )
        await _run_cycles(second, clock, 10)
        await _check_decisions(second, 1, 25)
    finally:
        await second.close()
