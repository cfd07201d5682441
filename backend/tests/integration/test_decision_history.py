"""The decision history list passes the stored decision JSON on without validating it again: what it returns must
be exactly what `to_result` makes of each stored decision and its orders, for every filter and page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.db.migrate import downgrade, upgrade
from app.services.llm.decision_engine import to_result
from app.services.llm.llm_exceptions import AccountNotFoundError
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, IsolatedSettings
from tests.fakes.scripted_model import ScriptedModel

pytestmark = pytest.mark.db


@pytest.fixture
async def traded(settings: Settings, clock: ManualClock) -> AsyncIterator[Agent]:
    """An agent after a dozen cycles of a model that buys, sells, adjusts and errs (so orders and rejections)."""
    async for agent in _traded(settings, clock):
        yield agent


@pytest.fixture
async def traded_sqlite(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Agent]:
    """The same on SQLite only (for what only SQLite lets one store)."""
    settings = IsolatedSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'only.db'}",
        admin_api_key=ADMIN_KEY,
        secret_key_file=str(tmp_path / "secret.key"),
    )
    async for agent in _traded(settings, clock):
        yield agent


async def _traded(settings: Settings, clock: ManualClock) -> AsyncIterator[Agent]:
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=clock, market=market, provider=ScriptedModel(seed=5))
    try:
        for cycle in range(12):
            clock.advance(timedelta(minutes=5))
            await agent.engine.make_trading_decision(None if cycle % 3 else ["ETH"], 1, trigger="loop")
        yield agent
    finally:
        await agent.close()


async def expected(agent: Agent) -> list[dict[str, Any]]:
    """Every decision of account 1 as `to_result` shows it, newest first."""
    async with agent.sessions() as session:
        rows = (
            await session.scalars(
                select(models.Decision).where(models.Decision.account_id == 1).order_by(models.Decision.id.desc())
            )
        ).all()
        orders = (await session.scalars(select(models.Order).order_by(models.Order.id))).all()
    return [orjson.loads(to_result(r, [o for o in orders if o.decision_id == r.id]).model_dump_json()) for r in rows]


def as_sent(items: list[dict[str, object]]) -> list[dict[str, Any]]:
    """The history as the API writes it and a client reads it."""
    loaded: list[dict[str, Any]] = orjson.loads(orjson.dumps(items))
    return loaded


async def test_history_is_what_to_result_makes_of_every_decision(traded: Agent) -> None:
    want = await expected(traded)
    assert len(want) == 12
    assert any(d["orders"] for d in want), "the scripted model should have traded"
    assert any(v["status"] != "accepted" for d in want for v in (d["validation"] or {}).get("verdicts", []))
    engine = traded.engine

    assert as_sent(await engine.get_decision_history(1, limit=500)) == want
    assert as_sent(await engine.get_decision_history(1, limit=5)) == want[:5]
    assert as_sent(await engine.get_decision_history(1, limit=4, before_id=want[3]["id"])) == want[4:8]
    with_btc = [d for d in want if "BTC" in d["symbols"]]
    assert 0 < len(with_btc) < len(want)
    assert as_sent(await engine.get_decision_history(1, limit=500, symbol="BTCUSDT")) == with_btc
    now = traded.clock.now()
    since, until = now - timedelta(minutes=25), now - timedelta(minutes=10)
    between = [d for d in want if since <= datetime.fromisoformat(d["cycle_time"]) <= until]
    assert len(between) == 4
    assert as_sent(await engine.get_decision_history(1, limit=500, since=since, until=until)) == between


async def test_an_empty_page_and_an_unknown_account(traded: Agent) -> None:
    assert await traded.engine.get_decision_history(1, before_id=1) == []
    with pytest.raises(AccountNotFoundError):
        await traded.engine.get_decision_history(99)


async def test_json_the_standard_library_wrote_is_made_strict_by_migration_0003(traded_sqlite: Agent) -> None:
    """The standard library wrote an infinite or NaN float as `Infinity` or `NaN` (not JSON; SQLite stores it,
    PostgreSQL refuses it), and rows written before orjson may hold one. History writes the stored JSON out
    unparsed, so migration 0003 rewrites those rows once: the values become null, as orjson writes them, and
    "NaN" inside a text is left alone. (A decision can no longer hold one: its numbers must be finite.)"""
    traded = traded_sqlite
    newest, second = (await expected(traded))[:2]
    async with traded.sessions.begin() as session:

        async def stored(column: str, decision_id: int) -> str:
            query = text(f"SELECT {column} FROM decisions WHERE id = :id").bindparams(id=decision_id)
            value = await session.scalar(query)
            assert isinstance(value, str)
            return value

        async def store(column: str, decision_id: int, value: str) -> None:
            query = text(f"UPDATE decisions SET {column} = :v WHERE id = :id")
            await session.execute(query.bindparams(v=value, id=decision_id))

        final = await stored("final_decision", newest["id"])
        assert '"tp_price":' in final
        infinite = re.sub(r'"tp_price":[^,}]*', '"tp_price": Infinity', final, count=1)
        await store("final_decision", newest["id"], infinite)
        parsed = await stored("parsed_decision", second["id"])
        assert '"rationale":"' in parsed
        await store(
            "parsed_decision", second["id"], parsed.replace('"rationale":"', '"rationale":"NaN or Infinity? ', 1)
        )
        validation = await stored("validation_result", second["id"])
        await store("validation_result", second["id"], re.sub(r'"sl_price":[^,}]*', '"sl_price":NaN', validation))

    await downgrade(traded.db, "0002")
    await upgrade(traded.db)

    want = await expected(traded)
    assert want[0]["decision"]["decisions"][0]["tp_price"] is None
    assert want[1]["model_decision"]["decisions"][0]["rationale"].startswith("NaN or Infinity? ")
    async with traded.sessions() as session:
        strict = await stored("validation_result", second["id"])
    assert '"sl_price":NaN' not in strict and '"sl_price":null' in strict
    assert as_sent(await traded.engine.get_decision_history(1, limit=500)) == want
