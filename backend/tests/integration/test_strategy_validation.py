"""Issue 13, point 9, at the strategy manager on both databases: a custom strategy with a number that is not
finite or out of bounds, text that cannot be stored, or a timeframe the agent cannot serve is refused with the
reason and nothing is stored; a bad row already in the database (written by an older version) never breaks a
listing, is never assigned, and an account already on it holds with the reason instead of failing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from app.bootstrap import Agent
from app.core.clock import ManualClock
from app.db import models
from app.schemas.trading_decision import StrategyRiskParameters, TradingStrategy
from app.services.llm.strategy_manager import (
    StrategyError,
    StrategyNotFoundError,
    StrategyUnavailableError,
)
from tests import factories as f

pytestmark = pytest.mark.db

VALID_RISK: dict[str, Any] = f.risk_parameters().model_dump()


def custom(strategy_id: str = "my-trend", *, risk: dict[str, Any] | None = None, **fields: Any) -> TradingStrategy:
    """A custom strategy with `fields` and risk parameters replaced without validation, as a caller inside the
    process could build it (the manager must check it again, not trust the object)."""
    strategy = f.strategy(max_positions=2).model_copy(update={"strategy_id": strategy_id, **fields})
    if risk is not None:
        params = StrategyRiskParameters.model_construct(**{**VALID_RISK, **risk})
        strategy = strategy.model_copy(update={"risk_parameters": params})
    return strategy


async def stored_ids(agent: Agent) -> list[str]:
    async with agent.sessions() as session:
        return sorted((await session.scalars(select(models.Strategy.strategy_id))).all())


async def count(agent: Agent, model: Any) -> int:
    async with agent.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        (custom(risk={"take_profit_ratio": float("inf")}), "take_profit_ratio: Input should be a finite number"),
        (custom(risk={"max_leverage": float("nan")}), "max_leverage: Input should be a finite number"),
        (custom(risk={"max_daily_loss": 1e400}), "max_daily_loss: Input should be a finite number"),
        (custom(risk={"take_profit_ratio": 1e6}), "take_profit_ratio: Input should be less than or equal to 100"),
        (custom(risk={"cooldown_period": 10**50}), "cooldown_period: Input should be less than or equal to 604800"),
        (custom(max_positions=10**50), "max_positions: Input should be less than or equal to 50"),
        (custom(risk={"max_leverage": True}), "max_leverage: Value error, a number is expected, not a boolean"),
        (
            custom(strategy_name="Trend \ud800"),
            "strategy_name: Input should be a valid string, unable to parse raw data as a unicode",
        ),
        (custom(strategy_name="Trend\x00"), "strategy_name: Value error, text contains the control character U+0000"),
        (custom(strategy_name="Two\nlines"), "strategy_name: Value error, text contains the control character U+000A"),
        (custom(strategy_name=""), "strategy_name: String should have at least 1 character"),
        (custom(prompt_template="Trade {{ max_positions }} \udfff"), "prompt_template: Input should be a valid string"),
        (custom(prompt_template="Trade\x00{{ max_positions }}"), "prompt_template: Value error, text contains the"),
        (custom(timeframe_preference=["7m", "4h"]), "timeframe '7m' cannot be served"),
        (custom(timeframe_preference=["5m", "90m"]), "timeframe '90m' cannot be served"),
        (custom(timeframe_preference=["1m", "4h"]), "timeframe '1m' cannot be served"),  # finer than INTERVAL (5m)
        (custom(timeframe_preference=["5m", "6h"]), "timeframe '6h' cannot be served"),  # not a Hyperliquid candle
        (custom(timeframe_preference=["5m", "1w"]), "timeframe '1w' cannot be served"),
        (custom(timeframe_preference=["4h", "1h"]), "the trend timeframe (1h) must be longer"),
        (custom(timeframe_preference=["5m", "5m"]), "the trend timeframe (5m) must be longer"),
        (custom(timeframe_preference=["4h"]), "with one timeframe the trend timeframe is LONG_INTERVAL (4h)"),
        (custom(prompt_template="{{ 'x' * 20000 }}"), "renders to more than 16000 characters"),
    ],
    ids=[
        "infinite-take-profit",
        "nan-leverage",
        "overflowing-float",
        "huge-take-profit",
        "50-digit-cooldown",
        "50-digit-max-positions",
        "boolean-leverage",
        "lone-surrogate-name",
        "nul-in-name",
        "line-break-in-name",
        "empty-name",
        "lone-surrogate-template",
        "nul-in-template",
        "7m",
        "90m",
        "finer-than-interval",
        "6h",
        "1w",
        "trend-shorter",
        "trend-equal",
        "one-timeframe-not-shorter-than-long-interval",
        "huge-rendering",
    ],
)
async def test_a_strategy_that_cannot_be_stored_or_served_is_refused_and_nothing_is_saved(
    agent: Agent, strategy: TradingStrategy, reason: str
) -> None:
    before = await stored_ids(agent)
    with pytest.raises(StrategyError, match="strategy refused") as refused:
        await agent.strategies.create_custom_strategy(strategy)
    assert reason in str(refused.value)
    assert await stored_ids(agent) == before
    # the listing still answers, without it
    assert strategy.strategy_id not in [s.strategy_id for s in await agent.strategies.get_available_strategies()]


async def test_servable_timeframes_are_accepted(agent: Agent) -> None:
    for strategy_id, timeframes in (("one-tf", ["1h"]), ("two-tf", ["15m", "1d"]), ("same-as-agent", ["5m", "4h"])):
        await agent.strategies.create_custom_strategy(custom(strategy_id, timeframe_preference=timeframes))
        assert (await agent.strategies.get_strategy(strategy_id)).timeframe_preference == timeframes


# ---- a bad row already in the database -------------------------------------------------------------------


async def plant_bad_row(agent: Agent, strategy_id: str, how: str) -> None:
    """A custom strategy row as an older version could have left it: `null` where a number should be (any
    database), `Infinity` in the JSON text (SQLite), or a timeframe that can never be served."""
    risk = dict(VALID_RISK)
    timeframes = ["5m", "4h"]
    if how == "null":
        risk["take_profit_ratio"] = None
    elif how == "7m":
        timeframes = ["7m", "4h"]
    async with agent.sessions.begin() as session:
        session.add(
            models.Strategy(
                strategy_id=strategy_id,
                strategy_name="Written by an older version",
                strategy_type="custom",
                prompt_template=f.STRATEGY_TEMPLATE,
                risk_parameters=risk,
                timeframe_preference=timeframes,
                max_positions=2,
                position_sizing="percentage",
                is_active=True,
                is_builtin=False,
                created_at=agent.clock.now(),
            )
        )
    if how == "infinity":
        raw = json.dumps({**VALID_RISK, "take_profit_ratio": float("inf")})  # the standard library writes Infinity
        async with agent.sessions.begin() as session:
            await session.execute(
                text("UPDATE strategies SET risk_parameters = :raw WHERE strategy_id = :id"),
                {"raw": raw, "id": strategy_id},
            )


def bad_row_kinds(agent: Agent) -> list[str]:
    kinds = ["null", "7m"]
    if agent.settings.database_url.startswith("sqlite"):  # PostgreSQL's JSON type refuses Infinity
        kinds.append("infinity")
    return kinds


async def test_a_bad_stored_row_never_breaks_the_listing_and_is_reported(agent: Agent) -> None:
    await agent.strategies.create_custom_strategy(custom("good-one"))
    kinds = bad_row_kinds(agent)
    for kind in kinds:
        await plant_bad_row(agent, f"bad-{kind}", kind)

    listed = [s.strategy_id for s in await agent.strategies.get_available_strategies()]
    assert "good-one" in listed and "conservative" in listed
    assert "bad-null" not in listed and "bad-infinity" not in listed
    assert "bad-7m" in listed  # valid, but every account on it holds (see below)

    statuses = {s.strategy_id: s for s in await agent.strategies.strategy_statuses()}
    assert statuses["good-one"].usable and statuses["good-one"].problem is None
    for kind in kinds:
        status = statuses[f"bad-{kind}"]
        assert not status.usable
        assert status.problem is not None
    assert "take_profit_ratio" in (statuses["bad-null"].problem or "")
    assert "'7m' is not a whole multiple of INTERVAL (5m)" in (statuses["bad-7m"].problem or "")
    if "infinity" in kinds:
        assert "take_profit_ratio: Input should be a finite number" in (statuses["bad-infinity"].problem or "")
        assert statuses["bad-infinity"].strategy is None

    with pytest.raises(StrategyUnavailableError, match="the stored definition is invalid"):
        await agent.strategies.get_strategy("bad-null")
    with pytest.raises(StrategyNotFoundError):
        await agent.strategies.get_strategy("never-stored")


async def test_an_account_is_never_switched_to_a_bad_or_unknown_strategy(agent: Agent) -> None:
    kinds = bad_row_kinds(agent)
    for kind in kinds:
        await plant_bad_row(agent, f"bad-{kind}", kind)
    assignments = await count(agent, models.StrategyAssignment)
    for strategy_id in [*(f"bad-{kind}" for kind in kinds), "never-stored"]:
        assert await agent.strategies.update_account_strategy(1, strategy_id, "try it") is False
        assert await agent.engine.switch_strategy(1, strategy_id, "try it") is False
        with pytest.raises(StrategyError):
            await agent.strategies.check_assignable(strategy_id)
    assert await count(agent, models.StrategyAssignment) == assignments
    assert (await agent.strategies.get_account_strategy(1)).strategy_id == "conservative"


async def test_an_account_on_a_bad_stored_strategy_holds_with_the_reason_and_recovers(
    agent: Agent, clock: ManualClock
) -> None:
    await plant_bad_row(agent, "bad-null", "null")
    await plant_bad_row(agent, "bad-7m", "7m")
    for strategy_id, reason in (
        ("bad-null", "the stored definition is invalid (risk_parameters.take_profit_ratio"),
        ("bad-7m", "its timeframe '7m' is not a whole multiple of INTERVAL"),
    ):
        async with agent.sessions.begin() as session:  # as an older version could have left the account
            await session.execute(update(models.Account).where(models.Account.id == 1).values(strategy_id=strategy_id))
        clock.advance(timedelta(minutes=5))
        assert await agent.loop.run_cycle() == 1, "the cycle ran: the account held, it did not crash"
        async with agent.sessions() as session:
            decision = await session.scalar(select(models.Decision).order_by(models.Decision.id.desc()).limit(1))
        assert decision is not None
        assert (decision.status, decision.strategy_id, decision.is_fallback) == ("error", strategy_id, True)
        assert decision.error is not None and reason in decision.error and "the account holds" in decision.error
        notice = await agent.strategies.strategy_notice(strategy_id)
        assert notice is not None and reason in notice

    # fixed in place by an admin: the account decides again on its next candle
    fixed = custom("bad-null")
    await agent.strategies.update_custom_strategy("bad-null", fixed)
    async with agent.sessions.begin() as session:
        await session.execute(update(models.Account).where(models.Account.id == 1).values(strategy_id="bad-null"))
    clock.advance(timedelta(minutes=5))
    assert await agent.loop.run_cycle() == 1
    async with agent.sessions() as session:
        decision = await session.scalar(select(models.Decision).order_by(models.Decision.id.desc()).limit(1))
    assert decision is not None and decision.status != "error" and decision.strategy_id == "bad-null"
    assert await agent.strategies.strategy_notice("bad-null") is None
