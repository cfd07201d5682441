"""aiosqlite with one thread hop per statement instead of four.

aiosqlite runs every call on the connection's worker thread, and SQLAlchemy's adapter makes four calls per
SELECT (open a cursor, execute, fetch all, close): each is a round trip between the event loop and the
thread, and together they cost more than SQLite's own work. Here the statement and the fetch of its rows
run in one hop; opening and closing a cursor (plain object allocation in the sqlite3 module) happen on the
event loop's thread, which `check_same_thread=False` allows, and so does the commit or rollback of a
connection with no open transaction (nothing to do: no hop). SQLAlchemy still serializes the statements of
one connection, so the connection is never used by two threads at once.

A SELECT makes no hop at all when it is short: it runs on the event loop's thread first, with no busy wait
and a budget of `INLINE_READ_BUDGET_S`. Under load the hops were dearer than the reads: with 200 history
requests a second, each of three hops (API key, page, orders), the server spent 6.2-6.3 ms of CPU a request
and fell behind; with its reads inline, 3.4-3.6 ms (p99 7-10 ms; bench_api_history.py, back to back). A read
that passes its budget (SQLite's progress handler stops it) or meets a lock is run again on the worker thread,
as every statement was before, so a long report or a locked file does not hold the event loop. The budget is
checked between SQLite's operations, not within one: a single long operation (a bare count over millions of
rows: 20 ms for 3 million; a function over a 50 MB value; a read from a slow disk) holds the loop until it
ends. Writes always take the thread (and the gate), since interrupting one would roll its transaction back.

Writers of one engine take turns through a `WriteGate` held from a connection's first write to its commit or
rollback. SQLite admits one writer at a time; without the gate, a second writer waits inside SQLite's busy
handler, which sleeps up to 100 ms per try whatever happens meanwhile (with 200 accounts deciding at once this
was measured at 57 ms per equity snapshot insert on average, up to a second). A writer waiting at the gate is
woken on the event loop the moment the lock frees. Other processes on the same file still meet the busy
timeout, as before.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

# The statements that make sqlite3 open a transaction (or write outside one): they pass the gate first.
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
# The statements tried on the event loop's thread first: plain reads (a PRAGMA may write, a WITH may hold one).
_READ = re.compile(r"\s*SELECT\b", re.IGNORECASE)
INLINE_READ_BUDGET_S = 0.005
# SQLite calls the progress handler every this many virtual-machine steps (a 50-row history page is about 2,000).
_PROGRESS_STEPS = 1000
# What sends an inline read to the worker thread: stopped by the budget, or the file is locked (primary codes).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT = 5, 6, 9


class WriteGate:
    """One writing connection at a time among the connections of an engine (per event loop: an asyncio lock
    belongs to one loop; connections used from another loop fall back on SQLite's busy timeout)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


def _execute_and_fetch(cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any]:
    cursor.execute(sql, parameters)
    return cursor.fetchall() if cursor.description is not None else []


class _PrefetchCursor(aiosqlite.Cursor):
    """A cursor whose `execute` also fetches the rows (on the worker thread); the fetch calls then serve them."""

    def __init__(self, conn: aiosqlite.Connection, cursor: sqlite3.Cursor) -> None:
        super().__init__(conn, cursor)
        self._rows: list[Any] = []
        self._next = 0

    async def __aenter__(self) -> _PrefetchCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _PrefetchCursor:
        conn = self._conn
        assert isinstance(conn, _Connection)
        rows = conn.read_inline(self._cursor, sql, parameters or ()) if _READ.match(sql) else None
        if rows is None:
            rows = await self._gated(sql, _execute_and_fetch, self._cursor, sql, parameters or ())
        self._rows, self._next = rows, 0
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _PrefetchCursor:
        await self._gated(sql, self._cursor.executemany, sql, parameters)
        self._rows, self._next = [], 0
        return self

    async def _gated(self, sql: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the worker thread; a write passes the connection's gate first."""
        conn = self._conn
        assert isinstance(conn, _Connection)
        if _WRITE.match(sql):
            await conn.enter_write()
        try:
            return await conn._execute(fn, *args)
        finally:
            conn.leave_write_if_done()

    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows = self._rows[self._next : self._next + count]
        self._next += len(rows)
        return rows

    async def fetchall(self) -> list[Any]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    async def close(self) -> None:
        self._rows = []
        self._cursor.close()


class _Connection(aiosqlite.Connection):
    gate: WriteGate | None = None
    busy_timeout_ms: int = 0  # what the worker thread waits for a lock (the connection's `timeout`)
    _gate_lock: asyncio.Lock | None = None  # the gate's lock while this connection writes

    def read_inline(self, cursor: sqlite3.Cursor, sql: str, parameters: Any) -> list[Any] | None:
        """Run a read on the calling (event loop) thread, or None when it must go to the worker thread: it
        passed `INLINE_READ_BUDGET_S` or met a lock (no busy wait here). Nothing else runs on this connection
        meanwhile: SQLAlchemy awaits each of its statements, and its worker thread is idle between them."""
        raw = self._conn
        deadline = time.perf_counter() + INLINE_READ_BUDGET_S
        raw.set_progress_handler(lambda: time.perf_counter() > deadline, _PROGRESS_STEPS)
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            return _execute_and_fetch(cursor, sql, parameters)
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT):
                return None
            raise
        finally:
            raw.set_progress_handler(None, 0)
            raw.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")

    def cursor(self) -> _PrefetchCursor:  # type: ignore[override]
        return _PrefetchCursor(self, self._conn.cursor())

    async def enter_write(self) -> None:
        """Pass the gate before the first write of a transaction (a no-op while this connection holds it)."""
        if self.gate is None or self._gate_lock is not None:
            return
        lock = self.gate.lock()
        try:
            async with asyncio.timeout(self.gate.timeout):
                await lock.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError(
                f"database is locked: another writer held it for more than {self.gate.timeout:g} s"
            ) from None
        self._gate_lock = lock

    def leave_write_if_done(self) -> None:
        """Let the next writer in once this connection has no open transaction (committed, rolled back, or a
        statement that failed before it began one)."""
        if not self._conn.in_transaction:
            self._release_gate()

    def _release_gate(self) -> None:
        lock, self._gate_lock = self._gate_lock, None
        if lock is not None:
            lock.release()

    # A session that only read never opened a transaction (sqlite3 begins one before the first write): its
    # commit or rollback, including the pool's reset when the connection comes back, has nothing to do.
    async def commit(self) -> None:
        try:
            if self._conn.in_transaction:
                await super().commit()
        finally:
            self.leave_write_if_done()

    async def rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                await super().rollback()
        finally:
            self.leave_write_if_done()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._release_gate()


def connect(database: str | Path, *, timeout: float, gate: WriteGate | None = None) -> aiosqlite.Connection:
    """An aiosqlite connection (awaitable, as `aiosqlite.connect` returns) using the prefetching cursor; its
    writes pass `gate` when one is given."""
    path = str(database)

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=timeout, check_same_thread=False)

    connection = _Connection(connector, iter_chunk_size=64)
    connection.gate = gate
    connection.busy_timeout_ms = round(timeout * 1000)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: an undisposed engine never blocks exit
    return connection
