"""The strategy manager on a migrated database: the built-in strategies, custom strategies and their refusals,
assignments with their reasons, and per-strategy performance over a window checked against the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.schemas.trading_decision import TradingStrategy
from app.services.llm.llm_exceptions import AccountNotFoundError
from app.services.llm.strategy_manager import StrategyError, builtin_strategies
from app.services.market_data.simulator import MarketSimulator
from tests import factories as f
from tests.fakes.scripted_model import ScriptedModel

pytestmark = pytest.mark.db

# The table in `builtin_strategies`' docstring (and the strategy docs), restated:
# risk/trade %, daily loss %, stop %, R:R, leverage, cooldown s, positions, sizing, timeframes
DOCUMENTED: dict[str, tuple[Any, ...]] = {
    "conservative": (0.5, 2.0, 1.5, 3.0, 3.0, 600, 3, "percentage", ["5m", "4h"]),
    "aggressive": (1.5, 6.0, 2.5, 2.0, 8.0, 120, 5, "percentage", ["5m", "1h"]),
    "scalping": (0.3, 3.0, 0.5, 1.5, 10.0, 60, 3, "fixed", ["5m", "1h"]),
    "swing": (1.0, 4.0, 4.0, 2.5, 3.0, 14_400, 4, "volatility_adjusted", ["1h", "1d"]),
    "dca": (0.5, 3.0, 8.0, 1.5, 2.0, 3_600, 3, "fixed", ["1h", "4h"]),
}


def custom(strategy_id: str = "my-trend", **overrides: Any) -> TradingStrategy:
    """A custom strategy, valid but for `overrides` and the id (replaced without validation, as a caller in
    the process could: the manager checks every field again)."""
    return f.strategy(max_positions=2).model_copy(update={"strategy_id": strategy_id, **overrides})


async def strategy_ids(agent: Agent) -> list[str]:
    async with agent.sessions() as session:
        return list((await session.scalars(select(models.Strategy.strategy_id))).all())


async def assignments(agent: Agent) -> int:
    async with agent.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(models.StrategyAssignment)) or 0)


# ---- the built-in strategies ---------------------------------------------------------------------------


async def test_the_five_builtins_exist_with_the_documented_parameters(agent: Agent) -> None:
    available = {s.strategy_id: s for s in await agent.strategies.get_available_strategies()}
    assert set(DOCUMENTED) <= set(available)
    for strategy_id, expected in DOCUMENTED.items():
        stored = await agent.strategies.get_strategy(strategy_id)
        r = stored.risk_parameters
        actual = (
            r.max_risk_per_trade,
            r.max_daily_loss,
            r.stop_loss_percentage,
            r.take_profit_ratio,
            r.max_leverage,
            r.cooldown_period,
            stored.max_positions,
            stored.position_sizing,
            stored.timeframe_preference,
        )
        assert actual == expected, strategy_id
        assert stored.strategy_type == strategy_id
        assert stored.is_active
        assert stored == available[strategy_id]
    assert {s.strategy_id: s for s in builtin_strategies()} == {k: available[k] for k in DOCUMENTED}
    async with agent.sessions() as session:
        rows = (await session.scalars(select(models.Strategy).where(models.Strategy.is_builtin))).all()
    assert sorted(r.strategy_id for r in rows) == sorted(DOCUMENTED)


async def test_every_builtin_template_renders_its_own_parameters(agent: Agent) -> None:
    prompts = agent.llm.prompts
    for strategy in await agent.strategies.get_available_strategies():
        text = prompts.render_strategy(strategy)
        r = strategy.risk_parameters
        for value in (r.max_risk_per_trade, r.max_daily_loss, r.stop_loss_percentage, r.max_leverage):
            assert str(value) in text, (strategy.strategy_id, value)
        assert f"{r.cooldown_period} s" in text


async def test_ensure_builtins_is_idempotent(agent: Agent) -> None:
    before = sorted(await strategy_ids(agent))
    await agent.strategies.ensure_builtins()
    await agent.strategies.ensure_builtins()
    assert sorted(await strategy_ids(agent)) == before


async def test_the_default_account_runs_the_conservative_strategy(agent: Agent) -> None:
    strategy = await agent.strategies.get_account_strategy(1)
    assert strategy.strategy_id == "conservative"
    with pytest.raises(AccountNotFoundError):
        await agent.strategies.get_account_strategy(999)
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        await agent.strategies.get_strategy("nope")


# ---- custom strategies ---------------------------------------------------------------------------------


async def test_a_valid_custom_strategy_is_stored_and_offered(agent: Agent) -> None:
    strategy = custom("my-trend_2")
    assert await agent.strategies.create_custom_strategy(strategy) == "my-trend_2"

    assert await agent.strategies.get_strategy("my-trend_2") == strategy
    assert "my-trend_2" in [s.strategy_id for s in await agent.strategies.get_available_strategies()]
    async with agent.sessions() as session:
        row = await session.get(models.Strategy, "my-trend_2")
    assert row is not None and not row.is_builtin
    # an account can run it
    assert await agent.strategies.update_account_strategy(1, "my-trend_2", "try the custom one")
    assert (await agent.strategies.get_account_strategy(1)).strategy_id == "my-trend_2"


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        (custom("conservative"), "the id 'conservative' is taken"),
        (custom("ab"), "strategy_id must be 3-64 characters"),
        (custom("My Trend"), "strategy_id must be 3-64 characters"),
        (custom("-leading-dash"), "strategy_id must be 3-64 characters"),
        (custom("x" * 65), "strategy_id must be 3-64 characters"),
        (custom(strategy_type="swing"), "a custom strategy has strategy_type 'custom'"),
        (custom(prompt_template="Risk {{ risk.max_risk_per_trade "), "prompt template error"),
        (custom(prompt_template="{% if %}x{% endif %}"), "prompt template error"),
        (custom(prompt_template="Trade {{ no_such_variable }} carefully."), "'no_such_variable' is undefined"),
        (custom(prompt_template="{{ risk.no_such_field }}"), "prompt template error"),
        (
            custom(prompt_template="{{ ''.__class__.__mro__[1].__subclasses__() }}"),
            "prompt template error",
        ),
        (custom(prompt_template="{{ risk.__class__.__init__.__globals__ }}"), "prompt template error"),
        (custom(prompt_template="{{ 1 / 0 }}"), "ZeroDivisionError"),
        (custom(prompt_template="{% for i in range(10**9) %}{% endfor %}"), "prompt template error"),
        (custom(prompt_template="   "), "renders to nothing"),
        (custom(prompt_template="x" * 8_001), "longer than 8000 characters"),
        (custom(timeframe_preference=["7x"]), "not a timeframe: '7x'"),
        (custom(timeframe_preference=["5m", "0h"]), "not a timeframe: '0h'"),
        (custom(timeframe_preference=[]), "one or two timeframes"),
        (custom(timeframe_preference=["5m", "1h", "4h"]), "one or two timeframes"),
    ],
    ids=[
        "taken-id",
        "id-too-short",
        "id-with-space-and-capitals",
        "id-leading-dash",
        "id-too-long",
        "not-custom",
        "syntax-error",
        "syntax-error-block",
        "unknown-variable",
        "unknown-attribute",
        "unsafe-subclasses",
        "unsafe-globals",
        "division-by-zero",
        "huge-range",
        "blank",
        "too-long",
        "bad-timeframe",
        "zero-timeframe",
        "no-timeframe",
        "three-timeframes",
    ],
)
async def test_an_invalid_custom_strategy_is_refused_with_the_reason(
    agent: Agent, strategy: TradingStrategy, reason: str
) -> None:
    before = sorted(await strategy_ids(agent))
    with pytest.raises(StrategyError, match="strategy refused") as refused:
        await agent.strategies.create_custom_strategy(strategy)
    assert reason in str(refused.value)
    assert sorted(await strategy_ids(agent)) == before  # nothing stored
    if strategy.strategy_id == "conservative":  # the built-in is untouched
        assert await agent.strategies.get_strategy("conservative") == builtin_strategies()[0]


async def test_a_custom_id_can_be_used_once(agent: Agent) -> None:
    await agent.strategies.create_custom_strategy(custom("once"))
    with pytest.raises(StrategyError, match="the id 'once' is taken"):
        await agent.strategies.create_custom_strategy(custom("once", strategy_name="Again"))
    assert (await agent.strategies.get_strategy("once")).strategy_name == "Test strategy"


async def test_several_problems_are_reported_together(agent: Agent) -> None:
    bad = custom("X", strategy_type="dca", timeframe_preference=["7x"])
    with pytest.raises(StrategyError) as refused:
        await agent.strategies.create_custom_strategy(bad)
    message = str(refused.value)
    assert "strategy_id must be" in message and "strategy_type 'custom'" in message and "'7x'" in message


# ---- assignments ---------------------------------------------------------------------------------------


async def test_switching_records_the_assignment_with_its_reason_newest_first(agent: Agent, clock: ManualClock) -> None:
    start = clock.now()
    clock.advance(timedelta(minutes=1))
    assert await agent.strategies.update_account_strategy(1, "aggressive", "the trend is strong")
    clock.advance(timedelta(minutes=1))
    assert await agent.engine.switch_strategy(1, "swing", "moving to a higher timeframe")

    history = await agent.strategies.assignment_history(1)
    assert [(h.strategy_id, h.reason) for h in history] == [
        ("swing", "moving to a higher timeframe"),
        ("aggressive", "the trend is strong"),
        ("conservative", "default paper account created at first start"),
    ]
    assert [h.assigned_at for h in history] == [
        start + timedelta(minutes=2),
        start + timedelta(minutes=1),
        start,
    ]
    assert all(h.account_id == 1 for h in history)
    assert (await agent.strategies.get_account_strategy(1)).strategy_id == "swing"


async def test_an_unknown_or_inactive_strategy_is_not_assigned(agent: Agent) -> None:
    await agent.strategies.create_custom_strategy(custom("retired", is_active=False))
    before = await assignments(agent)

    assert await agent.strategies.update_account_strategy(1, "no-such-strategy", "typo") is False
    assert await agent.strategies.update_account_strategy(1, "retired", "inactive") is False

    assert await assignments(agent) == before
    assert (await agent.strategies.get_account_strategy(1)).strategy_id == "conservative"
    assert "retired" not in [s.strategy_id for s in await agent.strategies.get_available_strategies()]
    with pytest.raises(AccountNotFoundError):
        await agent.strategies.update_account_strategy(999, "aggressive", "no such account")


async def test_the_history_of_an_account_without_switches_is_its_creation(agent: Agent) -> None:
    [only] = await agent.strategies.assignment_history(1)
    assert (only.strategy_id, only.reason) == ("conservative", "default paper account created at first start")
    assert await agent.strategies.assignment_history(999) == []


# ---- performance ---------------------------------------------------------------------------------------

CYCLES_EACH = 15  # five-minute cycles under each of two strategies


@pytest.fixture
async def traded(settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[Agent, list[tuple[datetime, str]]]]:
    """An agent driven by a model that trades hard: CYCLES_EACH cycles under conservative, then as many under
    aggressive; yields it with the (cycle time, strategy) of every cycle it ran."""
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=ScriptedModel(seed=3, invalid_rate=0.1))
    cycles: list[tuple[datetime, str]] = []
    try:
        for strategy_id in ("conservative", "aggressive"):
            if strategy_id != "conservative":
                assert await agent.engine.switch_strategy(1, strategy_id, "performance test")
            for _ in range(CYCLES_EACH):
                clock.advance(timedelta(minutes=5))
                assert await agent.loop.run_cycle() == 1
                cycles.append((clock.now(), strategy_id))
        yield agent, cycles
    finally:
        await agent.close()


async def closed_trades(agent: Agent) -> list[tuple[str | None, datetime, float]]:
    """(strategy of the opening decision, closed at, PnL net of fees) of every closed position."""
    async with agent.sessions() as session:
        positions = (await session.scalars(select(models.Position).where(models.Position.status == "closed"))).all()
        decisions = {d.id: d.strategy_id for d in (await session.scalars(select(models.Decision))).all()}
    out = []
    for p in positions:
        assert p.closed_at is not None and p.decision_id is not None
        out.append((decisions[p.decision_id], p.closed_at, p.realized_pnl - p.fees))
    return out


async def test_performance_counts_decisions_and_closed_trades_per_strategy(
    traded: tuple[Agent, list[tuple[datetime, str]]],
) -> None:
    agent, _ = traded
    trades = await closed_trades(agent)
    assert len(trades) >= 3, "the run must close trades for the figures to mean anything"
    async with agent.sessions() as session:
        fallbacks = dict(
            (
                await session.execute(
                    select(models.Decision.strategy_id, func.count())
                    .where(models.Decision.is_fallback)
                    .group_by(models.Decision.strategy_id)
                )
            ).all()
        )

    for strategy_id in ("conservative", "aggressive"):
        perf = await agent.strategies.get_strategy_performance(strategy_id, "7d")
        pnls = [pnl for sid, _, pnl in trades if sid == strategy_id]
        wins, losses = [p for p in pnls if p > 0], [p for p in pnls if p <= 0]
        assert perf.strategy_id == strategy_id and perf.timeframe == "7d"
        assert perf.since == agent.clock.now() - timedelta(days=7)
        assert perf.decisions == CYCLES_EACH
        assert perf.fallback_decisions == fallbacks.get(strategy_id, 0)
        assert perf.trades == len(pnls)
        assert perf.total_pnl == pytest.approx(sum(pnls), abs=1e-9)
        assert perf.win_rate == pytest.approx(len(wins) / len(pnls) if pnls else 0.0)
        assert perf.avg_win == pytest.approx(sum(wins) / len(wins) if wins else 0.0)
        assert perf.avg_loss == pytest.approx(sum(losses) / len(losses) if losses else 0.0)
    together = [await agent.strategies.get_strategy_performance(s, "7d") for s in ("conservative", "aggressive")]
    assert sum(p.trades for p in together) == len(trades)

    unused = await agent.strategies.get_strategy_performance("swing", "7d")
    assert (unused.decisions, unused.trades, unused.total_pnl, unused.win_rate) == (0, 0, 0.0, 0.0)


async def test_performance_counts_only_the_window(traded: tuple[Agent, list[tuple[datetime, str]]]) -> None:
    agent, cycles = traded
    trades = await closed_trades(agent)
    for window, length in (("1h", timedelta(hours=1)), ("2h", timedelta(hours=2)), ("1d", timedelta(days=1))):
        since = agent.clock.now() - length
        for strategy_id in ("conservative", "aggressive"):
            perf = await agent.strategies.get_strategy_performance(strategy_id, window)
            assert perf.since == since
            assert perf.decisions == sum(1 for at, s in cycles if s == strategy_id and at >= since), window
            assert perf.trades == sum(1 for s, closed, _ in trades if s == strategy_id and closed >= since), window
    # the first strategy ran from 150 to 75 minutes ago: none of its cycles in the last hour, 10 in the last two
    # (those 120 to 75 minutes ago), all of them in the last day
    assert [
        (await agent.strategies.get_strategy_performance("conservative", window)).decisions
        for window in ("1h", "2h", "1d")
    ] == [0, 10, CYCLES_EACH]


@pytest.mark.parametrize("window", ["7x", "0d", "", "d7", "-1d", "7", "1.5d", "1m"])
async def test_performance_refuses_a_bad_window(agent: Agent, window: str) -> None:
    with pytest.raises(StrategyError, match="not a window"):
        await agent.strategies.get_strategy_performance("conservative", window)


async def test_performance_of_an_unknown_strategy_is_refused(agent: Agent) -> None:
    with pytest.raises(StrategyError, match="unknown strategy"):
        await agent.strategies.get_strategy_performance("no-such-strategy", "7d")
