"""The outcome tracker on a database with nothing to measure yet (a fresh agent, every account paused): it writes
nothing and fails nothing (it raised on every cycle, and `/health` showed it)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.bootstrap import Agent
from app.core.clock import ManualClock

pytestmark = pytest.mark.db


async def test_the_tracker_runs_on_a_database_without_decisions(agent: Agent, clock: ManualClock) -> None:
    tracker = agent.loop.outcomes
    assert tracker is not None
    assert await tracker.update(clock.now() + timedelta(hours=3)) == 0
    clock.advance(timedelta(minutes=5))
    await agent.loop.run_cycle()
    assert agent.loop.heartbeat.last_error is None
