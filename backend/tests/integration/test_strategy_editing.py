"""Issue 13, point 14 (part), at the strategy manager on both databases: a custom strategy is edited (whole or in
part, checked like a new one, nothing changed when refused; built-in ones refused) and deactivated (not offered,
not assignable, the accounts on it hold with the reason) and activated again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.bootstrap import Agent
from app.core.clock import ManualClock
from app.db import models
from app.services.llm.strategy_manager import (
    BuiltinStrategyError,
    StrategyError,
    StrategyNotFoundError,
    StrategyUnavailableError,
)
from tests.integration.test_strategy_validation import custom

pytestmark = pytest.mark.db


async def test_a_custom_strategy_is_edited_whole_or_in_part_and_checked(agent: Agent) -> None:
    await agent.strategies.create_custom_strategy(custom("edit-me"))

    replaced, summary = await agent.strategies.update_custom_strategy(
        "edit-me", custom("edit-me", strategy_name="Renamed", timeframe_preference=["15m", "1d"])
    )
    assert (await agent.strategies.get_strategy("edit-me")) == replaced
    assert "strategy_name: 'Test strategy' -> 'Renamed'" in summary

    patched, summary = await agent.strategies.patch_custom_strategy(
        "edit-me", {"risk_parameters": {"max_leverage": 5.0}, "max_positions": 4}
    )
    assert patched.risk_parameters.max_leverage == 5.0 and patched.max_positions == 4
    assert patched.risk_parameters.take_profit_ratio == replaced.risk_parameters.take_profit_ratio
    assert patched.strategy_name == "Renamed"
    assert "risk_parameters.max_leverage: 3.0 -> 5.0" in summary and "max_positions: 2 -> 4" in summary

    before = await agent.strategies.get_strategy("edit-me")
    for changes, reason in (
        ({"risk_parameters": {"take_profit_ratio": float("inf")}}, "take_profit_ratio: Input should be a finite"),
        ({"risk_parameters": {"take_profit_ratio": None}}, "take_profit_ratio: Input should be a valid number"),
        ({"max_positions": 10**50}, "max_positions: Input should be less than or equal to 50"),
        ({"timeframe_preference": ["7m", "4h"]}, "timeframe '7m' cannot be served"),
        ({"prompt_template": "{{ nope }}"}, "'nope' is undefined"),
        ({"strategy_name": "bad\x00"}, "control character U+0000"),
        ({"strategy_id": "other"}, "strategy_id cannot be edited"),
        ({"is_active": False}, "is_active cannot be edited"),
    ):
        with pytest.raises(StrategyError, match="strategy refused") as refused:
            await agent.strategies.patch_custom_strategy("edit-me", changes)
        assert reason in str(refused.value)
    with pytest.raises(StrategyError, match="the body names 'other'"):
        await agent.strategies.update_custom_strategy("edit-me", custom("other"))
    assert await agent.strategies.get_strategy("edit-me") == before, "refused edits change nothing"

    with pytest.raises(BuiltinStrategyError, match="built in"):
        await agent.strategies.patch_custom_strategy("conservative", {"strategy_name": "Mine"})
    with pytest.raises(BuiltinStrategyError):
        await agent.strategies.set_strategy_active("conservative", False)
    with pytest.raises(StrategyNotFoundError):
        await agent.strategies.patch_custom_strategy("no-such-one", {"strategy_name": "x"})


async def test_a_deactivated_strategy_is_not_offered_nor_assigned_and_its_account_holds(
    agent: Agent, clock: ManualClock
) -> None:
    await agent.strategies.create_custom_strategy(custom("retire-me"))
    assert await agent.strategies.update_account_strategy(1, "retire-me", "try it")

    status = await agent.strategies.set_strategy_active("retire-me", False)
    assert (status.is_active, status.usable, status.accounts) == (False, False, [1])
    assert status.problem == "strategy 'retire-me' is deactivated"
    assert "retire-me" not in [s.strategy_id for s in await agent.strategies.get_available_strategies()]
    offered = await agent.strategies.get_available_strategies(include_inactive=True)
    assert [s.is_active for s in offered if s.strategy_id == "retire-me"] == [False]
    with pytest.raises(StrategyUnavailableError, match="is deactivated"):
        await agent.strategies.check_assignable("retire-me")
    assert (await agent.strategies.get_account_strategy(1)).is_active is False  # the view says so

    clock.advance(timedelta(minutes=5))
    assert await agent.loop.run_cycle() == 1
    async with agent.sessions() as session:
        held = await session.scalar(select(models.Decision).order_by(models.Decision.id.desc()).limit(1))
    assert held is not None and held.status == "error" and held.error is not None
    assert "strategy 'retire-me' is deactivated" in held.error and "the account holds" in held.error

    assert await agent.strategies.update_account_strategy(1, "conservative", "back")
    assert await agent.strategies.update_account_strategy(1, "retire-me", "again") is False  # nothing saved
    assert (await agent.strategies.get_account_strategy(1)).strategy_id == "conservative"

    status = await agent.strategies.set_strategy_active("retire-me", True)
    assert status.usable and status.problem is None and status.accounts == []
    assert await agent.strategies.update_account_strategy(1, "retire-me", "active again")
