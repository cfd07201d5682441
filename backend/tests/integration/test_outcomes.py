"""The outcome tracker on real databases: hand-computed outcomes of real candles through the store (needs the
shared data); on the seeded simulator's candles, whatever the checkout: a horizon never measured before its last
candle has closed (nor from a candle after it), held back by a missing candle, written for all of a decision's
assets at once, caught up after a restart and written once by concurrent runs; and a real agent trading on the
simulator whose every decision gets its outcomes exactly when due, and every closed position its PnL with the
fees and funding the positions and funding tables hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select, update

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.metrics import AgentMetrics
from app.db import models
from app.schemas.trading_decision import AssetDecision
from app.schemas.validation import AssetVerdict, ValidationResult
from app.services.evaluation.outcomes import asset_state_of_snapshot
from app.services.evaluation.tracker import OutcomeTracker
from app.services.market_data.base import CandleSeries
from app.services.market_data.candle_store import CandleStore
from app.services.market_data.replay import read_candles
from app.services.market_data.simulator import MarketSimulator
from tests import factories
from tests.fakes.scripted_model import ScriptedModel

pytestmark = pytest.mark.db

BTC_5M = "market/binance_usdm_typhonun_mit/BTC_USDT-5m.csv"
DAY = datetime(2025, 3, 6, tzinfo=UTC)
FIVE = timedelta(minutes=5)
EVALUATED = datetime(2026, 1, 1, tzinfo=UTC)  # the wall clock's time of measuring
STORED = datetime(2030, 1, 1, tzinfo=UTC)  # when the candles were stored: after every one of them closed
# the candles the project generates itself: the tests that must run on every checkout use these
GENERATED = MarketSimulator(["BTC", "ETH"], base_timeframe="5m", seed=7)


def at(hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return DAY.replace(hour=int(hours), minute=int(minutes))


@pytest.fixture
async def agent(settings: Settings, clock: ManualClock) -> AsyncIterator[Agent]:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    built = await build_agent(settings, clock=clock, market=market)
    try:
        yield built
    finally:
        await built.close()


def _between(series: CandleSeries, first: datetime, last: datetime) -> CandleSeries:
    ms = series.open_time_ms
    keep = (ms >= int(first.timestamp() * 1000)) & (ms <= int(last.timestamp() * 1000))
    return CandleSeries(
        series.symbol,
        series.timeframe,
        ms[keep],
        *(np.ascontiguousarray(getattr(series, n)[keep]) for n in ("open", "high", "low", "close", "volume")),
    )


async def _store_real(store: CandleStore, shared_data: Path, first: str, last: str) -> CandleSeries:
    """The real BTC 5m candles opening from `first` to `last` on 2025-03-06, stored as a replay database holds
    them: all at once, later ones included."""
    series = _between(read_candles(shared_data / BTC_5M, "BTC", "5m"), at(first), at(last))
    await store.upsert_candles("replay", "BTC", "5m", series, now=STORED)
    return series


async def _store_generated(store: CandleStore, first: str, last: str, asset: str = "BTC") -> CandleSeries:
    """The seeded simulator's 5m candles of `asset` opening from `first` to `last` on 2025-03-06, stored the same
    way; the expected outcomes are read from the returned series."""
    series = GENERATED.candles_between(asset, "5m", at(first), at(last) + FIVE)
    await store.upsert_candles("replay", asset, "5m", series, now=STORED)
    return series


def _index(series: CandleSeries, open_time: datetime) -> int:
    return int(np.flatnonzero(series.open_time_ms == int(open_time.timestamp() * 1000))[0])


def _seen(series: CandleSeries, cycle: datetime) -> dict[str, Any]:
    """An asset without a position as a decision at `cycle` saw it: its price is the close of the candle before
    the cycle (the newest closed when the decision was made)."""
    price = float(series.close[_index(series, cycle - FIVE)])
    return {"price": price, "position": None, "stop": None, "target": None}


def _buy(state: dict[str, Any]) -> AssetDecision:
    """A long on BTC at the price the decision saw, its stop 2% below and its target 4% above."""
    return factories.buy("BTC", allocation_usd=500.0, price=state["price"])


def _exit(series: CandleSeries, cycle: datetime, horizon: int) -> float:
    """The close of the horizon's last candle."""
    return float(series.close[_index(series, cycle + (horizon - 1) * FIVE)])


async def _decide(
    agent: Agent,
    cycle: datetime,
    proposed: AssetDecision | None,
    state: dict[str, Any],
    *,
    status: str = "executed",
    holding: dict[str, dict[str, Any]] | None = None,
    trigger: str = "loop",
) -> int:
    """A stored decision on BTC (and the assets of `holding`, which the model left out: fallback holds) as the
    engine stores one: validated, with what it saw."""
    seen = {"BTC": state, **(holding or {})}
    verdicts = [
        AssetVerdict(
            asset=asset,
            status="accepted" if proposed and asset == "BTC" else "rejected",
            original=proposed if asset == "BTC" else None,
            final=proposed if proposed and asset == "BTC" else factories.decision(asset, "hold"),
            is_fallback=not proposed or asset != "BTC",
        )
        for asset in seen
    ]
    validation = ValidationResult(
        is_valid=True, verdicts=verdicts, final_decision=factories.trading_decision([v.final for v in verdicts])
    ).model_dump(mode="json")
    row = models.Decision(
        account_id=1,
        cycle_time=cycle,
        trigger=trigger,
        status=status,
        symbols=list(seen),
        symbols_key="," + ",".join(seen) + ",",
        strategy_id="conservative",
        model_requested="test/requested",
        model_served="test/served",
        validation_result=validation if status != "pending" else None,
        final_decision=validation["final_decision"],
        is_fallback=not proposed,
        created_at=cycle,
        asset_state=seen,
    )
    async with agent.sessions.begin() as session:
        session.add(row)
    return row.id


async def _outcomes(agent: Agent) -> dict[tuple[int, str, int], models.DecisionOutcome]:
    async with agent.sessions() as session:
        rows = (await session.scalars(select(models.DecisionOutcome))).all()
    return {(r.decision_id, r.asset, r.horizon): r for r in rows}


def _tracker(agent: Agent, store: CandleStore, source: str = "replay", **kwargs: Any) -> OutcomeTracker:
    return OutcomeTracker(agent.sessions, store, source, "5m", wall_clock=ManualClock(EVALUATED), **kwargs)


@pytest.mark.shared_data
async def test_hand_computed_outcomes_of_real_candles(agent: Agent, shared_data: Path) -> None:
    """The rows of tests/unit/services/evaluation/test_outcome_path.py, measured by the tracker from the store."""
    store = CandleStore(agent.sessions)
    await _store_real(store, shared_data, "19:00", "21:00")
    buy = factories.decision("BTC", "buy", allocation_usd=500.0, sl_price=87900.0, tp_price=88600.0)
    long_stop = await _decide(
        agent, at("19:25"), buy, {"price": 88270.6, "position": None, "stop": None, "target": None}
    )
    sell = factories.decision("BTC", "sell", allocation_usd=500.0, sl_price=89400.0, tp_price=88500.0)
    short_target = await _decide(
        agent, at("19:55"), sell, {"price": 89049.6, "position": None, "stop": None, "target": None}
    )
    hold = await _decide(
        agent, at("20:15"), None, {"price": 89162.0, "position": "long", "stop": 88500.0, "target": 89500.0}
    )
    metrics = AgentMetrics()
    tracker = _tracker(agent, store, horizons=(1, 4), metrics=metrics)

    assert await tracker.update(at("21:00")) == 6
    rows = await _outcomes(agent)
    assert set(rows) == {(d, "BTC", h) for d in (long_stop, short_target, hold) for h in (1, 4)}

    long4 = rows[(long_stop, "BTC", 4)]
    assert (long4.direction, long4.verdict, long4.action, long4.confidence) == (1, "accepted", "buy", 60.0)
    assert (long4.entry_price, long4.exit_price, long4.stop_price, long4.target_price) == (
        88270.6,
        88440.0,
        87900.0,
        88600.0,
    )
    assert long4.direction_return == pytest.approx(169.4 / 88270.6) and long4.hit is True
    assert long4.max_adverse == pytest.approx(480.1 / 88270.6)
    assert long4.max_favourable == pytest.approx(357.5 / 88270.6)
    assert (long4.first_hit, long4.first_hit_at) == ("stop", at("19:30"))
    assert (long4.model, long4.strategy_id, long4.interval, long4.cycle_time) == (
        "test/served",
        "conservative",
        "5m",
        at("19:25"),
    )
    assert long4.evaluated_at == EVALUATED and long4.is_shadow is False

    short1, short4 = rows[(short_target, "BTC", 1)], rows[(short_target, "BTC", 4)]
    assert short1.direction_return == pytest.approx(561.1 / 89049.6) and short1.hit is True
    assert short4.direction_return == pytest.approx(-112.4 / 89049.6) and short4.hit is False
    assert (short4.first_hit, short4.first_hit_at) == ("target", at("19:55"))
    assert short4.max_adverse == pytest.approx(137.7 / 89049.6)

    held = rows[(hold, "BTC", 4)]
    assert (held.action, held.verdict, held.direction, held.confidence) == ("hold", "fallback", 1, None)
    assert held.direction_return == pytest.approx(-119.4 / 89162.0) and held.hit is False
    assert (held.first_hit, held.max_adverse) == ("none", pytest.approx(392.0 / 89162.0))

    assert await tracker.update(at("21:00")) == 0  # measured once
    assert await _tracker(agent, store, horizons=(1, 4)).update(at("21:00")) == 0  # by another process too
    # h=1: the long closed 19:25 at 88063.3 (miss), the short 19:55 at 88488.5 (hit), the hold 20:15 at 89189.6 (hit)
    assert _samples(metrics, "decision_outcomes") == {
        ("test/served", "1", "false", "hit"): 2.0,
        ("test/served", "1", "false", "miss"): 1.0,
        ("test/served", "4", "false", "hit"): 1.0,
        ("test/served", "4", "false", "miss"): 2.0,
    }
    # Brier of the two model calls (confidence 60): 0.36 for each miss, 0.16 for each hit; the fallback has none
    labels = {"model": "test/served", "horizon": "1", "shadow": "false"}
    assert metrics.registry.get_sample_value("decision_outcome_brier_count", labels) == 2
    assert metrics.registry.get_sample_value("decision_outcome_brier_sum", labels) == pytest.approx(0.36 + 0.16)
    returns = metrics.registry.get_sample_value("decision_outcome_return_sum", labels)
    assert returns == pytest.approx((88063.3 / 88270.6 - 1) - (88488.5 / 89049.6 - 1) + (89189.6 / 89162.0 - 1))


def _samples(metrics: AgentMetrics, family_name: str) -> dict[tuple[str, ...], float]:
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    family = next(f for f in families if f.name == family_name)
    return {
        tuple(s.labels[k] for k in ("model", "horizon", "shadow", "result")): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }


class SpyStore(CandleStore):
    """The candle store, noting up to when every read asked for closed candles."""

    reads: list[datetime]

    async def load_candles(
        self, source: str, symbol: str, timeframe: str, *, limit: int, until: datetime
    ) -> CandleSeries:
        self.reads.append(until)
        return await super().load_candles(source, symbol, timeframe, limit=limit, until=until)


async def test_a_horizon_is_never_measured_before_its_last_candle_has_closed(agent: Agent) -> None:
    """The store holds every candle of the evening (a replay database does), but at 19:45 - 1 us the horizon of 4
    candles of a 19:25 decision is not over: its last candle (19:40) is still open, so nothing of it is read or
    written. At 19:45 it is measured from the 19:25 to 19:40 candles only: the 19:45 candle, which has just
    opened, is rewritten to an absurd range first and must change nothing."""
    store = SpyStore(agent.sessions)
    store.reads = []
    series = await _store_generated(store, "19:00", "21:00")
    state = _seen(series, at("19:25"))
    decision = await _decide(agent, at("19:25"), _buy(state), state)
    tracker = _tracker(agent, store, horizons=(1, 4))

    just_before = at("19:45") - timedelta(microseconds=1)
    assert await tracker.update(just_before) == 1
    assert set(await _outcomes(agent)) == {(decision, "BTC", 1)}
    assert store.reads and max(store.reads) <= just_before

    index = _index(series, at("19:45"))
    wild = _between(series, at("19:45"), at("19:45"))
    wild = CandleSeries(
        "BTC", "5m", wild.open_time_ms, wild.open, np.array([1e6]), np.array([1.0]), wild.close, wild.volume
    )
    assert await store.upsert_candles("replay", "BTC", "5m", wild, now=STORED) == 0
    assert 1.0 < series.low[index] <= series.high[index] < 1e6  # it was a sensible candle before

    store.reads.clear()
    assert await tracker.update(at("19:45")) == 1
    assert max(store.reads) <= at("19:45")
    four = (await _outcomes(agent))[(decision, "BTC", 4)]
    entry, horizon = state["price"], slice(index - 4, index)  # the candles of 19:25 to 19:40
    assert four.entry_price == entry
    assert four.exit_price == _exit(series, at("19:25"), 4) == float(series.close[index - 1])  # the close of 19:40
    # from the lows and highs of 19:25 to 19:40, not the 19:45 candle's 1.0 and 1e6
    assert four.max_adverse == pytest.approx(max(0.0, 1 - float(series.low[horizon].min()) / entry))
    assert four.max_favourable == pytest.approx(max(0.0, float(series.high[horizon].max()) / entry - 1))
    assert four.max_adverse > 0 and four.max_favourable > 0  # the generated price went both ways


async def test_a_missing_candle_holds_the_horizon_back_until_it_is_stored(agent: Agent) -> None:
    store = CandleStore(agent.sessions)
    series = await _store_generated(store, "19:00", "21:00")
    async with agent.sessions.begin() as session:
        await session.execute(delete(models.CandleRow).where(models.CandleRow.open_time == at("19:35")))
    state = _seen(series, at("19:25"))
    decision = await _decide(agent, at("19:25"), _buy(state), state)
    # a second decision of the candle (the loop decides it once: this one came through the API)
    pending = await _decide(agent, at("19:25"), _buy(state), {"price": state["price"]}, status="pending", trigger="api")
    tracker = _tracker(agent, store, horizons=(1, 4))

    assert await tracker.update(at("20:00")) == 1  # horizon 1 (19:25); horizon 4 needs 19:35
    assert set(await _outcomes(agent)) == {(decision, "BTC", 1)}
    await store.upsert_candles("replay", "BTC", "5m", series, now=STORED)
    async with agent.sessions.begin() as session:  # the pending decision finished meanwhile
        await session.execute(
            update(models.Decision)
            .where(models.Decision.id == pending)
            .values(status="executed", validation_result=await _validation_of(agent, decision))
        )
    assert await tracker.update(at("20:05")) == 3  # tried again: the long's horizon 4, the other decision's both
    rows = await _outcomes(agent)
    assert set(rows) == {(d, "BTC", h) for d in (decision, pending) for h in (1, 4)}
    assert {key: row.exit_price for key, row in rows.items()} == {
        (d, "BTC", h): _exit(series, at("19:25"), h) for d in (decision, pending) for h in (1, 4)
    }


async def test_the_assets_of_a_decision_are_measured_at_a_horizon_together(agent: Agent) -> None:
    """A candle of one asset missing holds back the whole decision's horizon (written together, so that the
    next runs, which read only decisions without rows at that horizon, find it again)."""
    store = CandleStore(agent.sessions)
    btc = await _store_generated(store, "19:00", "21:00")
    eth = await _store_generated(store, "19:00", "21:00", asset="ETH")
    async with agent.sessions.begin() as session:
        await session.execute(
            delete(models.CandleRow).where(models.CandleRow.symbol == "ETH", models.CandleRow.open_time == at("19:35"))
        )
    state = _seen(btc, at("19:25"))
    decision = await _decide(agent, at("19:25"), _buy(state), state, holding={"ETH": _seen(eth, at("19:25"))})
    tracker = _tracker(agent, store, horizons=(1, 4))
    assert await tracker.update(at("20:00")) == 2  # horizon 1 of both; horizon 4 of neither
    assert set(await _outcomes(agent)) == {(decision, "BTC", 1), (decision, "ETH", 1)}
    await store.upsert_candles("replay", "ETH", "5m", eth, now=STORED)
    assert await tracker.update(at("20:05")) == 2
    rows = await _outcomes(agent)
    assert set(rows) == {(decision, a, h) for a in ("BTC", "ETH") for h in (1, 4)}
    assert (rows[(decision, "ETH", 4)].verdict, rows[(decision, "ETH", 4)].direction) == ("fallback", 0)
    assert (rows[(decision, "BTC", 4)].exit_price, rows[(decision, "ETH", 4)].exit_price) == (
        _exit(btc, at("19:25"), 4),
        _exit(eth, at("19:25"), 4),
    )


async def _validation_of(agent: Agent, decision_id: int) -> Any:
    async with agent.sessions() as session:
        row = await session.get(models.Decision, decision_id)
        assert row is not None
        return row.validation_result


async def test_every_decision_of_a_trading_agent_gets_its_outcomes_when_due(
    settings: Settings, clock: ManualClock
) -> None:
    """50 cycles of a model that trades hard: after each, the outcome rows are exactly those due (decision, asset,
    horizon with cycle time + horizon x 5m <= now), measured from what the decision saw (its stored context) and
    the stored candles; every closed position a decision opened has its realized PnL, fees and funding."""
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=ScriptedModel(seed=3))
    agent.loop.outcomes = None  # this test's tracker is the only one
    try:
        store = CandleStore(agent.sessions)
        tracker = OutcomeTracker(
            agent.sessions,
            store,
            agent.market.name,
            settings.interval,
            horizons=(1, 4),
            wall_clock=ManualClock(EVALUATED),
            metrics=agent.metrics,
        )
        written = 0
        for _ in range(50):
            clock.advance(FIVE)
            await agent.loop.run_cycle()
            now = clock.now()
            written += await tracker.update(now)
            expected = await _due(agent, now, (1, 4))
            assert set(await _outcomes(agent)) == expected
        assert await tracker.update(clock.now()) == 0
        await _check_values(agent, store)
        trades = await _check_trades(agent)
        assert written == len(expected) + trades  # outcome rows and trade outcomes, each written once
        metrics = _samples(agent.metrics, "decision_outcomes")
        assert sum(metrics.values()) == len(expected)  # each row counted once
    finally:
        await agent.close()


async def _due(agent: Agent, now: datetime, horizons: tuple[int, ...]) -> set[tuple[int, str, int]]:
    async with agent.sessions() as session:
        decisions = (await session.scalars(select(models.Decision))).all()
    due: set[tuple[int, str, int]] = set()
    for d in decisions:
        if d.validation_result is None or d.status in ("pending", "error", "interrupted"):
            continue
        for verdict in d.validation_result["verdicts"]:
            due.update((d.id, verdict["asset"], h) for h in horizons if d.cycle_time + h * FIVE <= now)
    return due


async def _check_values(agent: Agent, store: CandleStore) -> None:
    """Each row against the stored context of its decision and the stored candle that closed its horizon."""
    async with agent.sessions() as session:
        rows = (await session.scalars(select(models.DecisionOutcome))).all()
        snapshots = {
            p.decision_id: p.context_snapshot for p in (await session.scalars(select(models.DecisionProvenance))).all()
        }
        decisions = {d.id: d for d in (await session.scalars(select(models.Decision))).all()}
    directions = {"buy": 1, "sell": -1, "close_position": 0}
    seen_actions: set[str] = set()
    for row in rows:
        decision = decisions[row.decision_id]
        snapshot = snapshots[row.decision_id]
        assert snapshot is not None
        seen = (decision.asset_state or asset_state_of_snapshot(snapshot))[row.asset]
        assert row.entry_price == seen["price"]
        last_open = row.cycle_time + (row.horizon - 1) * FIVE
        candle = await store.load_candles(agent.market.name, row.asset, "5m", limit=1, until=last_open + FIVE)
        assert int(candle.open_time_ms[0]) == int(last_open.timestamp() * 1000)
        assert row.exit_price == float(candle.close[0])
        assert row.market_return == pytest.approx(row.exit_price / row.entry_price - 1)
        held = {"long": 1, "short": -1}.get(seen["position"] or "", 0)
        assert row.direction == directions.get(row.action, held)
        assert row.direction_return == pytest.approx(row.direction * row.market_return)
        assert row.hit == (None if row.direction == 0 else row.direction_return > 0)
        assert row.model == "test/scripted-random" and row.evaluated_at == EVALUATED
        seen_actions.add(row.action)
    assert {"buy", "sell", "hold"} <= seen_actions


async def _check_trades(agent: Agent) -> int:
    async with agent.sessions() as session:
        positions = (
            await session.scalars(
                select(models.Position).where(
                    models.Position.status == "closed", models.Position.decision_id.is_not(None)
                )
            )
        ).all()
        funding = (await session.scalars(select(models.FundingPayment))).all()
        trades = {t.position_id: t for t in (await session.scalars(select(models.DecisionTradeOutcome))).all()}
    assert positions, "the run closed positions"
    assert set(trades) == {p.id for p in positions}
    with_funding = 0
    for p in positions:
        trade = trades[p.id]
        assert p.closed_at is not None
        paid = sum(
            f.amount
            for f in funding
            if f.account_id == p.account_id
            and f.symbol == p.symbol
            and f.position_side == p.side
            and p.opened_at <= f.funding_time <= p.closed_at
        )
        assert (trade.decision_id, trade.asset, trade.side) == (p.decision_id, p.symbol, p.side)
        assert (trade.realized_pnl, trade.fees, trade.margin) == (p.realized_pnl, p.fees, p.margin)
        assert trade.funding == pytest.approx(paid, abs=1e-9)
        assert trade.net_pnl == pytest.approx(p.realized_pnl - p.fees + paid, abs=1e-9)
        assert (trade.opened_at, trade.closed_at, trade.exit_reason) == (p.opened_at, p.closed_at, p.exit_reason)
        assert trade.model == "test/scripted-random" and trade.evaluated_at == EVALUATED
        with_funding += paid != 0
    assert with_funding >= 1, "a closed position paid or received funding"
    return len(trades)


async def test_a_trade_outcome_takes_the_funding_of_its_own_span(agent: Agent) -> None:
    """Positions and settlements as the reconciler stores them: each closed position a decision opened gets the
    funding settled on its account, asset and side from its opening to its closing, no other; an open one is
    measured once it closes, one no decision opened never."""
    day = datetime(2026, 3, 2, tzinfo=UTC)
    hold = factories.decision("BTC", "hold")
    decision = await _decide(agent, day, hold, {"price": 100.0, "position": None, "stop": None, "target": None})

    def position(symbol: str, side: str, opened: int, closed: int | None, pnl: float, fees: float) -> models.Position:
        return models.Position(
            account_id=1,
            decision_id=decision if symbol != "XRP" else None,
            symbol=symbol,
            side=side,
            status="open" if closed is None else "closed",
            size=1.0,
            entry_price=100.0,
            leverage=2.0,
            margin=50.0,
            realized_pnl=pnl,
            fees=fees,
            exit_reason=None if closed is None else "take_profit",
            opened_at=day + timedelta(hours=opened),
            closed_at=None if closed is None else day + timedelta(hours=closed),
        )

    def paid(symbol: str, side: str, hour: int, amount: float) -> models.FundingPayment:
        return models.FundingPayment(
            account_id=1,
            symbol=symbol,
            funding_time=day + timedelta(hours=hour),
            rate=0.0001,
            position_side=side,
            position_size=1.0,
            mark_price=100.0,
            amount=amount,
        )

    first = position("BTC", "long", 10, 17, pnl=12.0, fees=0.5)  # settled at 16:00 only
    second = position("BTC", "long", 17, 25, pnl=-4.0, fees=0.25)  # at 24:00 only
    short = position("ETH", "short", 7, 16, pnl=3.0, fees=0.1)  # at 8:00 and 16:00 (its closing moment)
    still_open = position("SOL", "long", 9, None, pnl=0.0, fees=0.2)
    unattributed = position("XRP", "long", 9, 12, pnl=1.0, fees=0.1)
    async with agent.sessions.begin() as session:
        session.add_all([first, second, short, still_open, unattributed])
        session.add_all(
            [
                paid("BTC", "long", 8, -9.0),  # before the first opened (an earlier position's)
                paid("BTC", "long", 16, -1.5),
                paid("BTC", "long", 24, -2.0),
                paid("ETH", "short", 8, 0.3),
                paid("ETH", "short", 16, 0.7),
                paid("ETH", "long", 24, -5.0),  # after the short closed
                paid("SOL", "long", 16, -0.4),
            ]
        )
    tracker = _tracker(agent, CandleStore(agent.sessions), horizons=(1,))
    assert await tracker.update(day) == 3  # no outcome is due at the decision's own cycle time: trades only

    async with agent.sessions() as session:
        trades = {
            t.asset + str(t.realized_pnl): t for t in (await session.scalars(select(models.DecisionTradeOutcome)))
        }
    assert {k: (t.funding, t.net_pnl) for k, t in trades.items()} == {
        "BTC12.0": (-1.5, pytest.approx(12.0 - 0.5 - 1.5)),
        "BTC-4.0": (-2.0, pytest.approx(-4.0 - 0.25 - 2.0)),
        "ETH3.0": (pytest.approx(1.0), pytest.approx(3.0 - 0.1 + 1.0)),
    }
    assert all(t.decision_id == decision and t.model == "test/served" for t in trades.values())

    async with agent.sessions.begin() as session:  # the open one closes
        await session.execute(
            update(models.Position)
            .where(models.Position.id == still_open.id)
            .values(status="closed", closed_at=day + timedelta(hours=20), realized_pnl=2.0)
        )
    assert await tracker.update(day) == 1
    assert await tracker.update(day) == 0
    async with agent.sessions() as session:
        sol = await session.scalar(
            select(models.DecisionTradeOutcome).where(models.DecisionTradeOutcome.asset == "SOL")
        )
    assert sol is not None and (sol.funding, sol.net_pnl) == (-0.4, pytest.approx(2.0 - 0.2 - 0.4))


async def test_a_restarted_tracker_goes_on_from_the_last_measured_decision(agent: Agent) -> None:
    """An agent down for longer than the retry window: its next process measures what was made after the last
    decision measured. On a database without outcomes, decisions older than the window are the back-fill's."""
    store = CandleStore(agent.sessions)
    series = await _store_generated(store, "19:00", "21:00")
    early_seen, late_seen = _seen(series, at("19:05")), _seen(series, at("19:25"))
    early = await _decide(agent, at("19:05"), _buy(early_seen), early_seen)
    late = await _decide(agent, at("19:25"), _buy(late_seen), late_seen)

    fresh = _tracker(agent, store, horizons=(1,), retry_candles=2)
    assert await fresh.update(at("21:00")) == 0  # both older than 20:45 (21:00 - 1 - 2 candles): left
    report = await _tracker(agent, store, horizons=(1,)).backfill(at("19:10"))
    assert report.written == 1 and set(await _outcomes(agent)) == {(early, "BTC", 1)}

    restarted = _tracker(agent, store, horizons=(1,), retry_candles=2)
    assert await restarted.update(at("21:00")) == 1
    rows = await _outcomes(agent)
    assert set(rows) == {(early, "BTC", 1), (late, "BTC", 1)}
    assert rows[(late, "BTC", 1)].exit_price == _exit(series, at("19:25"), 1)


async def test_concurrent_runs_write_each_row_once(agent: Agent) -> None:
    """Two processes' trackers (the loop and a back-fill) at once: every row is written by one of them."""
    store = CandleStore(agent.sessions)
    series = await _store_generated(store, "19:00", "21:00")
    cycles = [at("19:25") + i * FIVE for i in range(12)]
    decisions = []
    for cycle in cycles:
        state = _seen(series, cycle)
        decisions.append(await _decide(agent, cycle, _buy(state), state))
    loop, other = _tracker(agent, store, batch_size=5), _tracker(agent, store, batch_size=3)
    written, report = await asyncio.gather(loop.update(at("21:00")), other.backfill(at("21:00")))
    rows = await _outcomes(agent)
    # decision i, made at 19:25 + 5i minutes, is due at horizon h by 21:00 when 5i + 5h <= 95
    assert set(rows) == {(d, "BTC", h) for i, d in enumerate(decisions) for h in (1, 4, 12, 24) if 5 * (i + h) <= 95}
    assert written + report.written == len(rows) == 12 + 12 + 8
    assert all(row.exit_price == _exit(series, row.cycle_time, row.horizon) for row in rows.values())
