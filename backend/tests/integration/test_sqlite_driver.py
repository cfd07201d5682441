"""The SQLite driver that executes and fetches in one worker-thread hop: every way SQLAlchemy reads rows
(all at once, one by one, streamed in chunks) returns every row, a failed statement is reported and leaves the
connection usable, writers of one engine take turns at its gate, and a short read makes no hop at all (a long
or locked one goes back to the worker thread)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from app.db import session as session_module
from app.db import sqlite_driver
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


async def test_writers_take_turns_at_the_gate_and_every_way_out_lets_the_next_one_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One writing connection at a time: a second writer waits on the event loop (not in SQLite's busy handler)
    and is told the database is locked when the first holds on past the timeout. Commit, rollback, a failed
    statement and a connection handed back unfinished each let the next writer in; readers never wait."""
    monkeypatch.setattr(session_module, "SQLITE_BUSY_TIMEOUT_S", 0.3)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("INSERT INTO t (n) VALUES (1)"))  # a write transaction is open
            assert (await second.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0  # reading: no wait
            with pytest.raises(OperationalError, match="database is locked: another writer held it for more than"):
                await second.execute(text("INSERT INTO t (n) VALUES (2)"))
            await second.rollback()
            waiting = asyncio.create_task(second.execute(text("INSERT INTO t (n) VALUES (3)")))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # queued at the gate
            await first.commit()
            await waiting  # let in by the commit
            await second.commit()
            # a statement that fails before writing anything leaves the gate open
            with pytest.raises(OperationalError, match="no such table"):
                await first.execute(text("INSERT INTO missing (n) VALUES (1)"))
            await second.execute(text("INSERT INTO t (n) VALUES (4)"))
            await second.rollback()  # a rollback lets the next writer in too
            with pytest.raises(IntegrityError):  # a failed write inside a transaction: the rollback ends it
                await first.execute(text("INSERT INTO t (n) VALUES (1)"))
            await first.rollback()
            await second.execute(text("INSERT INTO t (n) VALUES (5)"))
        # `second` went back to the pool with its write open: the pool's reset rolled it back and let go
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (6)"))
            assert (await conn.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all() == [1, 3, 6]
    finally:
        await engine.dispose()


# A read that takes as many SQLite steps as asked (only a statement starting with SELECT is tried inline).
COUNT_TO = (
    "SELECT (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :top) SELECT count(*) FROM c)"
)


def _record_threads(monkeypatch: pytest.MonkeyPatch, fail_inline: BaseException | None = None) -> list[str]:
    """Where each statement of the driver ran ("loop" or "worker"); `fail_inline` is raised by the first one
    run on the event loop's thread, as SQLite would raise it."""
    where: list[str] = []
    loop_thread = threading.get_ident()
    real = sqlite_driver._execute_and_fetch

    def recording(cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any]:
        nonlocal fail_inline
        inline = threading.get_ident() == loop_thread
        where.append("loop" if inline else "worker")
        if inline and fail_inline is not None:
            error, fail_inline = fail_inline, None
            raise error
        return real(cursor, sql, parameters)

    monkeypatch.setattr(sqlite_driver, "_execute_and_fetch", recording)
    return where


async def test_a_short_read_runs_on_the_event_loop_thread_even_while_the_worker_thread_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
            await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), [{"n": n} for n in range(10)])
        where = _record_threads(monkeypatch)
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            release = threading.Event()
            blocked = asyncio.ensure_future(driver._execute(release.wait, 10))  # its worker thread is taken
            await asyncio.sleep(0)
            try:
                rows = await conn.execute(text("SELECT n FROM t WHERE n >= 5 ORDER BY n"))
                assert not blocked.done()  # answered while the worker thread still waited
                assert rows.scalars().all() == [5, 6, 7, 8, 9]
            finally:
                release.set()
                await blocked
            await conn.execute(text("INSERT INTO t (n) VALUES (10)"))  # a write takes the worker thread
            await conn.commit()
        assert where == ["loop", "worker"]
    finally:
        await engine.dispose()


async def test_a_read_past_its_budget_or_meeting_a_lock_is_answered_from_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's progress handler stops an inline read at its budget (here none at all); a read that meets a
    lock is not waited for on the event loop. Either one is run again on the worker thread and answered in
    full; the connection then reads inline as before."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # connected (and its PRAGMAs run) before recording
            monkeypatch.setattr(sqlite_driver, "INLINE_READ_BUDGET_S", 0.0)
            where = _record_threads(monkeypatch)
            assert (await conn.execute(text(COUNT_TO), {"top": 20_000})).scalar_one() == 20_000
            assert where == ["loop", "worker"]  # stopped on the loop, answered by the worker
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42  # too short to be stopped
            assert where == ["loop", "worker", "loop"]

            monkeypatch.undo()
            locked = sqlite3.OperationalError("database is locked")
            locked.sqlite_errorcode = 5  # type: ignore[attr-defined]  # SQLITE_BUSY, as sqlite3 sets it
            where = _record_threads(monkeypatch, fail_inline=locked)
            assert (await conn.execute(text(COUNT_TO), {"top": 10})).scalar_one() == 10
            assert where == ["loop", "worker"]
            raw = (await conn.get_raw_connection()).driver_connection._conn
            busy_ms = raw.execute("PRAGMA busy_timeout").fetchone()[0]
            assert busy_ms == round(session_module.SQLITE_BUSY_TIMEOUT_S * 1000)  # the worker thread's wait is back

            other = sqlite3.OperationalError("no such table: missing")  # any other error is the caller's
            other.sqlite_errorcode = 1  # type: ignore[attr-defined]
            where = _record_threads(monkeypatch, fail_inline=other)
            with pytest.raises(OperationalError, match="no such table"):
                await conn.execute(text("SELECT * FROM missing"))
            assert where == ["loop"]
    finally:
        await engine.dispose()
