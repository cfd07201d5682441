"""Outcome figures from stored rows: decisions, their outcomes, model calls and trade outcomes written by hand
with known values, and every figure checked against numbers worked out by hand below.

The seed (`seed`), at START (the clock's now), outcomes on INTERVAL 5m at horizon 4 unless said; an asset's
outcome reads (direction, return, confidence, max adverse, max favourable, first hit):

| decision | account | cycle      | status    | model | strategy     | outcomes                                       |
|----------|---------|------------|-----------|-------|--------------|------------------------------------------------|
| D0       | 1       | START - 2d | executed  | m/a   | conservative | BTC (+1, -0.05, 40, 0.06, 0.01, stop)          |
| D1       | 1       | START - 3h | executed  | m/a   | conservative | BTC (+1, +0.02, 80, 0.005, 0.03, target)       |
|          |         |            |           |       |              | ETH (-1, -0.01, 88, 0.015, 0.002, stop)        |
| D2       | 1       | START - 2h | no_action | m/b   | conservative | BTC (0: flat, confidence 50)                   |
|          |         |            |           |       |              | SOL (+1, +0.03, 100, 0.001, 0.035, none)       |
| D3       | B (2)   | START - 1h | fallback  | m/a   | aggressive   | BTC (-1, +0.005, 30, 0.002, 0.006, none)       |
|          |         |            |           |       |              | ETH (+1, -0.02, no confidence, 0.025, 0, stop) |
| S1       | 1       | START - 3h | shadow    | m/c   | conservative | BTC (+1, +0.02, 70, 0.005, 0.03, target)       |

S1 is a shadow of D1 (`shadow_of`). At horizon 1, D1 BTC alone: (+1, +0.004, 80, 0.001, 0.005, none); at horizon
12 only an outcome on 1h candles (another INTERVAL, never counted). Model calls: D1 two (1000+200 and 1100+300
tokens, 0.01 and 0.02 USD; the first failed), D3 one (500+100, 0.005, failed), S1 one (800+150, 0.04), D2 none.
Closed positions: D1's BTC long (realized 12, fees 1.5, funding -0.5, net 10), D3's ETH long (realized -8, fees
1, funding 0.2, net -8.8). D1 and S1 each have one rejected asset in their validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from app.bootstrap import Agent
from app.db import models
from app.db.repositories.decisions import symbols_key
from app.db.repositories.outcome_figures import OutcomeFiguresRepository, OutcomeScope
from tests.conftest import START

pytestmark = pytest.mark.db

ACCOUNT_B = "outcomes-b"


@dataclass(frozen=True)
class Seeded:
    account_b: int
    d0: int
    d1: int
    d2: int
    d3: int
    s1: int


def _decision(
    account_id: int,
    cycle: datetime,
    status: str,
    model: str,
    strategy: str,
    assets: list[str],
    *,
    rejected: str | None = None,
    shadow_of: int | None = None,
) -> models.Decision:
    verdicts = [{"asset": a, "status": "rejected" if a == rejected else "accepted"} for a in assets]
    return models.Decision(
        account_id=account_id,
        cycle_time=cycle,
        trigger="loop",
        status=status,
        symbols=assets,
        symbols_key=symbols_key(assets),
        strategy_id=strategy,
        model_requested=model,
        model_served=model,
        validation_result={"verdicts": verdicts},
        is_fallback=status == "fallback",
        created_at=cycle,
        shadow_of=shadow_of,
    )


def _outcome(
    decision: models.Decision,
    asset: str,
    direction: int,
    direction_return: float,
    confidence: float | None,
    adverse: float | None,
    favourable: float | None,
    first_hit: str | None,
    *,
    horizon: int = 4,
    interval: str = "5m",
) -> models.DecisionOutcome:
    market_return = direction_return * direction if direction else 0.001
    return models.DecisionOutcome(
        decision_id=decision.id,
        account_id=decision.account_id,
        asset=asset,
        interval=interval,
        horizon=horizon,
        cycle_time=decision.cycle_time,
        model=decision.model_served,
        strategy_id=decision.strategy_id,
        is_shadow=decision.shadow_of is not None,
        action={1: "buy", -1: "sell", 0: "hold"}[direction],
        verdict="accepted",
        direction=direction,
        confidence=confidence,
        entry_price=100.0,
        exit_price=100.0 * (1 + market_return),
        market_return=market_return,
        direction_return=direction_return,
        max_adverse=adverse,
        max_favourable=favourable,
        first_hit=first_hit,
        hit=direction_return > 0 if direction else None,
        evaluated_at=START,
    )


def _call(decision: models.Decision, prompt: int, completion: int, cost: float, outcome: str = "ok") -> models.LLMCall:
    return models.LLMCall(
        account_id=decision.account_id,
        decision_id=decision.id,
        model_requested=decision.model_requested or "",
        model_served=decision.model_served,
        outcome=outcome,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost,
        latency_ms=100.0,
        created_at=decision.cycle_time,
    )


async def _trade(
    session: Any,
    decision: models.Decision,
    asset: str,
    realized: float,
    fees: float,
    funding: float,
) -> None:
    opened, closed = decision.cycle_time, decision.cycle_time + timedelta(minutes=30)
    position = models.Position(
        account_id=decision.account_id,
        decision_id=decision.id,
        symbol=asset,
        side="long",
        status="closed",
        size=1.0,
        entry_price=100.0,
        leverage=2.0,
        margin=50.0,
        realized_pnl=realized,
        fees=fees,
        opened_at=opened,
        closed_at=closed,
    )
    session.add(position)
    await session.flush()
    session.add(
        models.DecisionTradeOutcome(
            position_id=position.id,
            decision_id=decision.id,
            account_id=decision.account_id,
            asset=asset,
            side="long",
            model=decision.model_served,
            strategy_id=decision.strategy_id,
            realized_pnl=realized,
            fees=fees,
            funding=funding,
            net_pnl=realized - fees + funding,
            margin=50.0,
            exit_reason="take_profit",
            opened_at=opened,
            closed_at=closed,
            evaluated_at=START,
        )
    )


async def seed(agent: Agent) -> Seeded:
    """The rows of the table in the module's docstring (account 1 exists; account B is added here)."""
    async with agent.sessions.begin() as session:
        b = models.Account(
            name=ACCOUNT_B,
            mode="paper",
            venue="binanceusdm",
            status="ACTIVE",
            strategy_id="aggressive",
            initial_balance=10_000,
            max_position_size=1_000,
            max_leverage=5,
            maker_fee_bps=2,
            taker_fee_bps=5,
            created_at=START,
            updated_at=START,
        )
        session.add(b)
        await session.flush()
        hours = timedelta(hours=1)
        d0 = _decision(1, START - 48 * hours, "executed", "m/a", "conservative", ["BTC"])
        d1 = _decision(1, START - 3 * hours, "executed", "m/a", "conservative", ["BTC", "ETH"], rejected="ETH")
        d2 = _decision(1, START - 2 * hours, "no_action", "m/b", "conservative", ["BTC", "SOL"])
        d3 = _decision(b.id, START - 1 * hours, "fallback", "m/a", "aggressive", ["BTC", "ETH"])
        session.add_all([d0, d1, d2, d3])
        await session.flush()
        s1 = _decision(1, d1.cycle_time, "shadow", "m/c", "conservative", ["BTC"], rejected="BTC", shadow_of=d1.id)
        session.add(s1)
        await session.flush()
        session.add_all(
            [
                _outcome(d0, "BTC", 1, -0.05, 40, 0.06, 0.01, "stop"),
                _outcome(d1, "BTC", 1, 0.02, 80, 0.005, 0.03, "target"),
                _outcome(d1, "ETH", -1, -0.01, 88, 0.015, 0.002, "stop"),
                _outcome(d2, "BTC", 0, 0.0, 50, None, None, None),
                _outcome(d2, "SOL", 1, 0.03, 100, 0.001, 0.035, "none"),
                _outcome(d3, "BTC", -1, 0.005, 30, 0.002, 0.006, "none"),
                _outcome(d3, "ETH", 1, -0.02, None, 0.025, 0.0, "stop"),
                _outcome(s1, "BTC", 1, 0.02, 70, 0.005, 0.03, "target"),
                _outcome(d1, "BTC", 1, 0.004, 80, 0.001, 0.005, "none", horizon=1),
                # Another INTERVAL's outcome (12 candles of 1h): never mixed with this agent's 5m ones.
                _outcome(d1, "BTC", 1, 0.5, 99, 0.0, 0.5, "target", horizon=12, interval="1h"),
            ]
        )
        session.add_all(
            [
                _call(d1, 1000, 200, 0.01, outcome="schema"),
                _call(d1, 1100, 300, 0.02),
                _call(d3, 500, 100, 0.005, outcome="api_error"),
                _call(s1, 800, 150, 0.04),
            ]
        )
        await _trade(session, d1, "BTC", 12.0, 1.5, -0.5)
        await _trade(session, d3, "ETH", -8.0, 1.0, 0.2)
        return Seeded(b.id, d0.id, d1.id, d2.id, d3.id, s1.id)


def assert_figures(actual: Mapping[str, Any], expected: Mapping[str, Any], where: str = "") -> None:
    """Every expected figure (floats to 1e-9), nested ones included."""
    for name, want in expected.items():
        got = actual[name]
        label = f"{where}.{name}"
        if isinstance(want, Mapping):
            assert_figures(got, want, label)
        elif isinstance(want, list):
            assert len(got) == len(want), f"{label}: {got}"
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                assert_figures(g, w, f"{label}[{i}]")
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), f"{label}: {got} != {want}"
        else:
            assert got == want, f"{label}: {got!r} != {want!r}"


async def test_the_newest_rows_are_read_and_a_capped_selection_says_so(agent: Agent) -> None:
    """With room for three rows, the newest three are read (D3's two, D2's SOL or BTC), `capped` says the window
    held more, and the cost covers the decisions of the rows read only."""
    ids = await seed(agent)
    scope = OutcomeScope(since=START - timedelta(days=1), horizon=4, interval="5m")
    async with agent.sessions() as session:
        repo = OutcomeFiguresRepository(session)
        capped = await repo.select(scope, "account", limit=3)
        whole = await repo.select(scope, "account", limit=6)
    assert capped.capped and not whole.capped
    assert [r.decision_id for r in capped.rows] == [ids.d3, ids.d3, ids.d2]
    assert capped.oldest_cycle == START - timedelta(hours=2)
    assert capped.cost_of(capped.rows).decisions == 2
    assert capped.cost_of(capped.rows).llm_calls == 1  # D3's call; D2 has none, D1 was not read
    assert {r.decision_id for r in whole.rows} == {ids.d1, ids.d2, ids.d3}
    assert whole.oldest_cycle == START - timedelta(hours=3)
    # Trades are summed in the database, whatever the cap: by account.
    assert {k: (t.trades, t.net_pnl) for k, t in capped.trades.items()} == {1: (1, 10.0), ids.account_b: (1, -8.8)}


async def test_strategy_performance_counts_outcomes_at_a_horizon_and_leaves_shadows_out(agent: Agent) -> None:
    """`conservative` over 7 days: D0, D1 and D2 (the shadow S1 is in neither the counts nor the outcomes)."""
    await seed(agent)
    perf = await agent.strategies.get_strategy_performance("conservative", "7d")
    assert (perf.decisions, perf.fallback_decisions, perf.trades) == (3, 0, 1)
    outcomes = perf.outcomes.model_dump()
    assert (outcomes["horizon"], outcomes["include_shadow"], outcomes["capped"]) == (4, False, False)
    assert outcomes["oldest_cycle"] == START - timedelta(days=2)
    # D0 BTC -0.05, D1 BTC +0.02, D1 ETH -0.01, D2 BTC flat, D2 SOL +0.03.
    assert_figures(
        outcomes["overall"],
        {
            "decisions": 5,
            "directional": 4,
            "hits": 2,
            "hit_rate": 0.5,
            "mean_return": -0.01 / 4,
            "median_return": (-0.01 + 0.02) / 2,
            "mean_return_all": -0.01 / 5,
            "profit_factor": 0.05 / 0.06,
            # (0.4-0)^2 + (0.8-1)^2 + (0.88-0)^2 + (1-1)^2 = 0.16 + 0.04 + 0.7744 + 0
            "brier": 0.9744 / 4,
            # D0 at 40 missed; D1 BTC at 80 hit and D1 ETH at 88 missed; D2 SOL at 100 (the last bucket's) hit.
            "reliability": [
                {"low": 40.0, "high": 50.0, "decisions": 1, "mean_confidence": 40.0, "hit_rate": 0.0},
                {"low": 80.0, "high": 90.0, "decisions": 2, "mean_confidence": 84.0, "hit_rate": 0.5},
                {"low": 90.0, "high": 100.0, "decisions": 1, "mean_confidence": 100.0, "hit_rate": 1.0},
            ],
            "mean_adverse": (0.06 + 0.005 + 0.015 + 0.001) / 4,
            "mean_favourable": (0.01 + 0.03 + 0.002 + 0.035) / 4,
            "stop_first": 2,
            "target_first": 1,
            "trades": {"trades": 1, "realized_pnl": 12.0, "fees": 1.5, "funding": -0.5, "net_pnl": 10.0},
            "cost": {
                "decisions": 3,
                "llm_calls": 2,
                "tokens": 2600,
                "cost_usd": 0.03,
                "tokens_per_decision": 2600 / 3,
                "cost_usd_per_decision": 0.01,
            },
        },
    )
    one = (await agent.strategies.get_strategy_performance("conservative", "7d", horizon=1)).outcomes
    assert (one.horizon, one.overall.decisions, one.overall.mean_return) == (1, 1, pytest.approx(0.004))
    assert one.overall.cost.decisions == 1 and one.overall.cost.cost_usd == pytest.approx(0.03)
    none = (await agent.strategies.get_strategy_performance("conservative", "7d", horizon=12)).outcomes.overall
    assert (none.decisions, none.hit_rate, none.mean_return, none.brier) == (0, None, None, None)
    assert none.cost.decisions == 0 and none.cost.cost_usd_per_decision is None


async def test_strategy_performance_of_one_account(agent: Agent) -> None:
    ids = await seed(agent)
    mine = await agent.strategies.get_strategy_performance("aggressive", "24h", ids.account_b)
    assert (mine.decisions, mine.fallback_decisions) == (1, 1)
    assert (mine.outcomes.overall.decisions, mine.outcomes.overall.hits) == (2, 1)
    assert mine.outcomes.overall.trades.net_pnl == pytest.approx(-8.8)
    other = await agent.strategies.get_strategy_performance("aggressive", "24h", 1)
    assert (other.decisions, other.outcomes.overall.decisions, other.outcomes.overall.trades.trades) == (0, 0, 0)
