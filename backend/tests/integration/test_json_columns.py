"""JSON columns are written by orjson and read back as written, on SQLite and PostgreSQL: numpy numbers as
numbers, NaN and infinities as null (valid JSON), non-string keys as strings; rows the standard library wrote
with `NaN` in them still read."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import text

from app.bootstrap import Agent
from app.db import models
from app.db.repositories.decisions import DecisionRepository

pytestmark = pytest.mark.db


async def test_json_columns_round_trip(agent: Agent) -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    row = models.Decision(
        account_id=1,
        cycle_time=now,
        trigger="api",
        status="no_action",
        symbols=["BTC"],
        symbols_key=",BTC,",
        is_fallback=False,
        created_at=now,
        validation_result={"price": np.float64(97_000.5), "count": np.int64(3), "nan": math.nan, 7: "seven"},
        execution_errors=[],
    )
    async with agent.sessions.begin() as session:
        await DecisionRepository(session).add(row)
    async with agent.sessions() as session:
        stored = await session.get(models.Decision, row.id)
        assert stored is not None
        assert stored.validation_result == {"price": 97_000.5, "count": 3, "nan": None, "7": "seven"}
        assert stored.execution_errors == []
        if agent.db.dialect.name == "sqlite":  # a row the standard library wrote (PostgreSQL never took NaN)
            await session.execute(
                text("UPDATE decisions SET validation_result = :v WHERE id = :id"),
                {"v": '{"edge": NaN}', "id": row.id},
            )
            await session.commit()
            session.expunge_all()
            old = await session.get(models.Decision, row.id)
            assert old is not None and old.validation_result is not None
            assert math.isnan(old.validation_result["edge"])
