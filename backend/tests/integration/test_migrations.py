"""The same Alembic migrations build the schema on SQLite and PostgreSQL, and come back down cleanly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select

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
