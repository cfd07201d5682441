"""The same Alembic migrations build the schema on SQLite and PostgreSQL, and come back down cleanly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text

from app.db.migrate import current_revision, downgrade, ensure_migrated, head_revision, upgrade
from app.db.models import Base, CandleRow
from app.db.session import create_engine, create_session_factory

pytestmark = pytest.mark.db


async def test_upgrade_creates_every_table_and_downgrade_removes_them(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await ensure_migrated(engine) is True
        assert await current_revision(engine) == head_revision()
        assert await ensure_migrated(engine) is False  # idempotent

        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert set(Base.metadata.tables) <= tables

        await downgrade(engine, "base")
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert not (set(Base.metadata.tables) & tables)
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_datetimes_come_back_aware_utc_and_candle_key_is_unique(database_url: str) -> None:
    engine = create_engine(database_url)
    await ensure_migrated(engine)
    sessions = create_session_factory(engine)
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 1, 1, 13, 0, tzinfo=paris)
    try:
        async with sessions.begin() as session:
            session.add(
                CandleRow(
                    source="sim",
                    symbol="BTC",
                    timeframe="5m",
                    open_time=moment,
                    open=1,
                    high=2,
                    low=0.5,
                    close=1.5,
                    volume=10,
                )
            )
        async with sessions() as session:
            row = await session.scalar(select(CandleRow))
            assert row is not None
            assert row.open_time == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
            assert row.open_time.utcoffset() == timedelta(0)
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            async with sessions.begin() as session:
                session.add(
                    CandleRow(
                        source="sim",
                        symbol="BTC",
                        timeframe="5m",
                        open_time=moment,
                        open=1,
                        high=2,
                        low=0.5,
                        close=1.5,
                        volume=10,
                    )
                )
    finally:
        await engine.dispose()


async def test_0002_moves_each_decisions_context_and_prompt_to_its_own_table_and_back(database_url: str) -> None:
    """A database made before 0002 keeps every decision's context snapshot and prompt: upgraded, they are in
    `decision_provenance` and no longer in the decision rows; downgraded, they are back where they were."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0001")
        now = datetime(2026, 3, 2, 12, tzinfo=UTC)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO strategies (strategy_id, strategy_name, strategy_type, prompt_template, "
                    "risk_parameters, timeframe_preference, max_positions, position_sizing, is_active, is_builtin, "
                    "created_at) VALUES ('s', 's', 'custom', 't', '{}', '[]', 1, 'fixed', true, false, :now)"
                ),
                {"now": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO accounts (name, mode, venue, status, strategy_id, initial_balance, max_position_size, "
                    "max_leverage, maker_fee_bps, taker_fee_bps, created_at, updated_at) VALUES "
                    "('a', 'paper', 'binanceusdm', 'ACTIVE', 's', 1, 1, 1, 1, 1, :now, :now)"
                ),
                {"now": now},
            )
            for prompt, context in (("[system] one", '{"symbols": ["BTC"]}'), (None, None)):
                await conn.execute(
                    text(
                        "INSERT INTO decisions (account_id, cycle_time, trigger, status, symbols, symbols_key, "
                        "context_snapshot, prompt, is_fallback, created_at) VALUES "
                        "(1, :now, 'loop', 'no_action', :symbols, ',BTC,', :context, :prompt, false, :now)"
                    ),
                    {"now": now, "context": context, "prompt": prompt, "symbols": '["BTC"]'},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            columns = {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("decisions"))}
            moved = (await conn.execute(text("SELECT decision_id, prompt FROM decision_provenance"))).all()
            snapshot = await conn.scalar(text("SELECT context_snapshot FROM decision_provenance"))
        assert not {"context_snapshot", "prompt"} & columns
        assert [tuple(r) for r in moved] == [(1, "[system] one")]  # the decision without provenance has no row
        assert (json.loads(snapshot) if isinstance(snapshot, str) else snapshot) == {"symbols": ["BTC"]}

        await downgrade(engine, "0001")
        async with engine.connect() as conn:
            back = (await conn.execute(text("SELECT id, prompt FROM decisions ORDER BY id"))).all()
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert [tuple(r) for r in back] == [(1, "[system] one"), (2, None)]
        assert "decision_provenance" not in tables
    finally:
        await engine.dispose()
