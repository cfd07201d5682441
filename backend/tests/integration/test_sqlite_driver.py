"""The SQLite driver that executes and fetches in one worker-thread hop: every way SQLAlchemy reads rows
(all at once, one by one, streamed in chunks) returns every row, and a failed statement is reported and
leaves the connection usable."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.db.session import create_engine


async def test_rows_come_back_whichever_way_they_are_read(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
            await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), [{"n": n} for n in range(1_000)])
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1_000
            all_rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).all()
            assert [r[0] for r in all_rows] == list(range(1_000))
            result = await conn.execute(text("SELECT n FROM t ORDER BY n"))
            assert result.fetchone() == (0,)
            assert [r[0] for r in result.fetchmany(3)] == [1, 2, 3]
            assert len(result.fetchall()) == 996
            streamed = await conn.stream(text("SELECT n FROM t ORDER BY n"))
            seen = [row[0] async for row in streamed]
            assert seen == list(range(1_000))
            with pytest.raises(OperationalError, match="no such table"):
                await conn.execute(text("SELECT * FROM missing"))
        async with engine.connect() as conn:  # the pool hands out a working connection after the error
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_commit_and_rollback_still_do_their_work_when_a_transaction_is_open(tmp_path: Path) -> None:
    """Commit and rollback skip the worker thread only when there is nothing to end: writes are kept or
    undone as asked, and a session that only read leaves no transaction open behind it."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
            await conn.rollback()
            await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
            await conn.commit()
            assert (await conn.execute(text("SELECT n FROM t"))).scalars().all() == [2]
            await conn.commit()  # only read since the last commit: nothing to do
            raw = await conn.get_raw_connection()
            assert not raw.driver_connection._conn.in_transaction  # type: ignore[union-attr]
        async with engine.connect() as other:  # another connection sees exactly the committed row
            assert (await other.execute(text("SELECT n FROM t"))).scalars().all() == [2]
    finally:
        await engine.dispose()
