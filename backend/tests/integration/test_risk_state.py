"""The risk state the decision engine builds from the database (the day's start equity, the last entries, the
leverage caps, the venue's maintenance margin rates), and the rules it feeds acting on a real run: an entry in
an asset still in its cooldown is refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.db.repositories import trading
from app.schemas.trading_decision import AssetDecision, TradingDecision
from app.services.exchange.base import FEE_PROFILES
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.llm.risk_rules import exposure_block
from app.services.market_data.simulator import MarketSimulator
from tests import factories as f
from tests.conftest import IsolatedSettings
from tests.fakes.scripted_model import ScriptedModel, answer

pytestmark = pytest.mark.db

Script = Callable[[ModelRequest], list[AssetDecision]]


class PlannedModel:
    """Answers each cycle with the decisions its plan gives for that request (one plan per call, in turn)."""

    name = "test/planned"
    is_simulated = True

    def __init__(self, plans: list[Script]) -> None:
        self.plans = plans
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        plan = self.plans[min(self.calls, len(self.plans) - 1)]
        self.calls += 1
        decisions = plan(request)
        decision = TradingDecision(
            decisions=decisions,
            portfolio_rationale="planned",
            total_allocation_usd=sum(d.allocation_usd for d in decisions if d.action in ("buy", "sell")),
            portfolio_risk_level="medium",
        )
        return answer(request, decision, served_by=self.name)


def buy_btc(request: ModelRequest) -> list[AssetDecision]:
    """A long BTC entry with a 1% stop and a 3R target, hold elsewhere."""
    price = request.context.market_data.assets["BTC"].current_price
    entry = f.decision("BTC", "buy", allocation_usd=200.0, sl_price=price * 0.99, tp_price=price * 1.03)
    return [entry if s == "BTC" else f.decision(s) for s in request.symbols]


def close_btc(request: ModelRequest) -> list[AssetDecision]:
    return [f.decision(s, "close_position" if s == "BTC" else "hold") for s in request.symbols]


async def build(settings: Settings, clock: ManualClock, provider: object) -> Agent:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    return await build_agent(settings, clock=clock, market=market, provider=provider)  # type: ignore[arg-type]


async def cycle(agent: Agent, clock: ManualClock) -> None:
    clock.advance(timedelta(minutes=5))
    assert await agent.loop.run_cycle() == 1


async def latest_verdicts(agent: Agent) -> dict[str, dict[str, object]]:
    async with agent.sessions() as session:
        row = await session.scalar(select(models.Decision).order_by(models.Decision.id.desc()).limit(1))
    assert row is not None and row.validation_result is not None
    return {v["asset"]: v for v in row.validation_result["verdicts"]}


async def test_the_risk_state_mirrors_the_database(settings: Settings, clock: ManualClock) -> None:
    agent = await build(settings, clock, ScriptedModel(seed=3))
    try:
        for _ in range(12):
            await cycle(agent, clock)
        now = clock.now()
        strategy = await agent.strategies.get_account_strategy(1)
        context = await agent.engine.context_builder.build_trading_context(agent.settings.assets, 1, strategy)
        state = await agent.engine.risk_state(1, "ACTIVE", 5.0, context, now)

        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        async with agent.sessions() as session:
            yesterday = await session.scalar(
                select(models.EquitySnapshot.equity)
                .where(models.EquitySnapshot.account_id == 1, models.EquitySnapshot.taken_at <= day_start)
                .order_by(models.EquitySnapshot.taken_at.desc(), models.EquitySnapshot.id.desc())
                .limit(1)
            )
            first = yesterday or await session.scalar(
                select(models.EquitySnapshot.equity)
                .where(models.EquitySnapshot.account_id == 1, models.EquitySnapshot.taken_at >= day_start)
                .order_by(models.EquitySnapshot.taken_at, models.EquitySnapshot.id)
                .limit(1)
            )
            entries = dict(
                (
                    await session.execute(
                        select(models.Order.symbol, func.max(models.Order.updated_at))
                        .where(models.Order.kind.in_(("entry", "increase")), models.Order.status == "filled")
                        .group_by(models.Order.symbol)
                    )
                ).all()
            )
        rules = await agent.venues.rules()
    finally:
        await agent.close()

    assert entries, "the run must have entered positions"
    assert state.now == now
    assert state.reduce_only_reason is None
    assert state.day_start_equity == pytest.approx(first)
    assert state.day_pnl_usd == pytest.approx(context.account_state.balance_usd - first)
    assert state.last_trade_at == entries
    assert all(at.tzinfo is not None and at <= now for at in state.last_trade_at.values())
    assert state.account_max_leverage == 5.0
    profile = FEE_PROFILES["binanceusdm"]
    assert state.venue_max_leverage == {
        s: min(r.max_leverage, profile.max_leverage.get(s, float("inf"))) for s, r in rules.items()
    }
    assert state.maintenance_margin_rate == profile.maintenance_margin_rate
    assert state.maintenance_margin_rates == {s: profile.maintenance_margin_rate for s in rules}


async def test_a_reducing_account_gets_a_reduce_only_state(agent: Agent, clock: ManualClock) -> None:
    # no cycle has run: the state comes from an empty book (the context only lends the equity)
    state = await agent.engine.risk_state(1, "REDUCING", 3.0, f.trading_context(), clock.now())
    assert state.reduce_only_reason == "the account is REDUCING"
    assert state.day_start_equity == 10_000.0  # nothing recorded yet: the day starts from the initial balance
    assert state.last_trade_at == {}


async def test_on_hyperliquid_each_asset_has_its_own_maintenance_margin_rate(
    database_url: str, clock: ManualClock
) -> None:
    settings = IsolatedSettings(database_url=database_url, venue="hyperliquid")
    agent = await build(settings, clock, None)
    try:
        state = await agent.engine.risk_state(1, "ACTIVE", 5.0, f.trading_context(), clock.now())
        rules = await agent.venues.rules()
    finally:
        await agent.close()
    profile = FEE_PROFILES["hyperliquid"]
    # the paper venue liquidates at l = 1 / (2 x the asset's max leverage), its own or the market's if lower
    for symbol, r in rules.items():
        allowed = min(r.max_leverage, profile.max_leverage.get(symbol, float("inf")))
        assert state.maintenance_margin_rates[symbol] == pytest.approx(1 / (2 * allowed))


async def test_an_entry_during_the_cooldown_is_refused_in_a_real_run(settings: Settings, clock: ManualClock) -> None:
    # a custom strategy waiting 30 minutes between entries in an asset; buy, close, then buy again 10 minutes
    # after the first entry (refused), and again after the cooldown (accepted)
    model = PlannedModel([buy_btc, close_btc, buy_btc])  # then buy_btc every cycle
    agent = await build(settings, clock, model)
    try:
        patient = f.strategy(strategy_id="patient", cooldown_period=1_800, take_profit_ratio=3.0)
        await agent.strategies.create_custom_strategy(patient)
        assert await agent.strategies.update_account_strategy(1, "patient", "test the cooldown")

        await cycle(agent, clock)  # t+5: buy
        assert (await latest_verdicts(agent))["BTC"]["status"] == "accepted"
        await cycle(agent, clock)  # t+10: close
        assert (await latest_verdicts(agent))["BTC"]["final"]["action"] == "close_position"
        await cycle(agent, clock)  # t+15: buy 10 minutes after the entry
        refused = (await latest_verdicts(agent))["BTC"]
        assert refused["status"] == "rejected"
        assert "cooldown: the last BTC trade was 600 s ago and the strategy waits 1800 s" in refused["reasons"][0]
        for _ in range(3):  # t+20 .. t+30: still cooling down
            await cycle(agent, clock)
            assert "cooldown" in (await latest_verdicts(agent))["BTC"]["reasons"][0]
        await cycle(agent, clock)  # t+35: 30 minutes after the entry
        assert (await latest_verdicts(agent))["BTC"]["status"] == "accepted"
    finally:
        await agent.close()


async def test_the_first_cycle_of_a_day_measures_the_loss_from_the_previous_close(
    agent: Agent, clock: ManualClock
) -> None:
    """At 00:05 UTC nothing was recorded today yet: the day's loss counts from the last snapshot before
    midnight, so a loss made overnight stops new entries on the first cycle of the day."""
    midnight = (clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    await snapshots(agent, [(midnight - timedelta(hours=3), 10_400.0), (midnight - timedelta(minutes=5), 10_000.0)])
    now = midnight + timedelta(minutes=5)
    context = f.trading_context(account=f.account_context(balance=9_700.0))
    state = await agent.engine.risk_state(1, "ACTIVE", 3.0, context, now)

    assert state.day_start_equity == 10_000.0
    assert state.day_pnl_usd == pytest.approx(-300.0)
    conservative = await agent.strategies.get_strategy("conservative")  # 2% daily loss
    block = exposure_block("BTC", conservative, state)
    assert block is not None and "daily loss limit" in block


async def snapshots(agent: Agent, points: list[tuple[datetime, float]]) -> None:
    async with agent.sessions.begin() as session:
        for at, equity in points:
            session.add(
                models.EquitySnapshot(
                    account_id=1,
                    taken_at=at,
                    wallet_balance=equity,
                    unrealized_pnl=0.0,
                    equity=equity,
                    margin_used=0.0,
                    realized_pnl=0.0,
                    fees_paid=0.0,
                    funding_net=0.0,
                )
            )


@pytest.mark.parametrize("overnight", [True, False], ids=["previous-close", "first-of-the-day"])
async def test_the_day_start_older_than_the_equity_read_for_the_context_is_read_from_the_database(
    agent: Agent, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, overnight: bool
) -> None:
    """The decision reads the most recent snapshots once (for the curve) and finds the day's start among them;
    when more snapshots were taken today than it reads, the start lies before them and comes from the database:
    the previous day's close, or, with none, the day's first snapshot."""
    monkeypatch.setattr(trading, "EQUITY_HISTORY", 5)
    midnight = (clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    today = [(midnight + timedelta(minutes=5 * i), 10_000.0 + i) for i in range(1, 9)]
    before = [(midnight - timedelta(minutes=5), 9_000.0)] if overnight else []
    await snapshots(agent, before + today)
    now = midnight + timedelta(hours=1)
    async with agent.sessions() as session:
        history = await trading.TradingRepository(session).account_history(1, midnight)
    assert [equity for _at, equity in history.equity] == [10_004.0, 10_005.0, 10_006.0, 10_007.0, 10_008.0]
    assert history.day_start_equity == (9_000.0 if overnight else 10_001.0)
    state = await agent.engine.risk_state(1, "ACTIVE", 3.0, f.trading_context(), now)
    assert state.day_start_equity == history.day_start_equity


async def test_the_day_start_found_among_the_snapshots_read_matches_the_database(
    agent: Agent, clock: ManualClock
) -> None:
    """With every snapshot read, the previous close (the last one at or before midnight, the later of two at the
    same time) and, on a first day, the day's first snapshot come from the rows read, as the database gives them."""
    midnight = (clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    await snapshots(agent, [(midnight + timedelta(minutes=5), 10_050.0), (midnight + timedelta(minutes=10), 10_060.0)])
    async with agent.sessions() as session:
        repo = trading.TradingRepository(session)
        first_day = await repo.account_history(1, midnight)
        assert first_day.day_start_equity == 10_050.0 == await repo.day_start_equity(1, midnight)
    await snapshots(agent, [(midnight - timedelta(hours=1), 9_900.0), (midnight, 9_950.0), (midnight, 9_960.0)])
    async with agent.sessions() as session:
        repo = trading.TradingRepository(session)
        history = await repo.account_history(1, midnight)
        assert history.day_start_equity == 9_960.0 == await repo.day_start_equity(1, midnight)
