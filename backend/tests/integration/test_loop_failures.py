"""A cycle that fails because the venue or the network is out is an outage, not a bug: the loop logs its reason
without a traceback and counts it; any other failure keeps its traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app.bootstrap import Agent
from app.core.errors import TemporaryError
from app.schemas.decision_result import DecisionResult

pytestmark = pytest.mark.db


@pytest.mark.parametrize(("error", "traceback"), [(TemporaryError("venue unreachable"), False), (KeyError("x"), True)])
async def test_a_failed_cycle_is_logged_by_kind(
    agent: Agent, caplog: pytest.LogCaptureFixture, error: Exception, traceback: bool
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> DecisionResult:
        raise error

    agent.engine.make_trading_decision = failing  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="app.trading.loop")
    assert await agent.loop.run_cycle() == 0
    [record] = [r for r in caplog.records if "decision cycle failed for account 1" in r.getMessage()]
    assert (record.exc_info is not None) is traceback
    assert traceback or "venue unreachable" in record.getMessage()
    assert agent.loop.heartbeat.failures == 1 and 1 in agent.loop.heartbeat.per_account_errors
