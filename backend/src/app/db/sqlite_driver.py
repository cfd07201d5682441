"""aiosqlite with one thread hop per statement instead of four.

aiosqlite runs every call on the connection's worker thread, and SQLAlchemy's adapter makes four calls per
SELECT (open a cursor, execute, fetch all, close): each is a round trip between the event loop and the
thread, and together they cost more than SQLite's own work. Here the statement and the fetch of its rows
run in one hop; opening and closing a cursor (plain object allocation in the sqlite3 module) happen on the
event loop's thread, which `check_same_thread=False` allows, and so does the commit or rollback of a
connection with no open transaction (nothing to do: no hop). SQLAlchemy still serializes the statements of
one connection, so the connection is never used by two threads at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite


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
        self._rows = await self._conn._execute(_execute_and_fetch, self._cursor, sql, parameters or ())
        self._next = 0
        return self

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
    def cursor(self) -> _PrefetchCursor:  # type: ignore[override]
        return _PrefetchCursor(self, self._conn.cursor())

    # A session that only read never opened a transaction (sqlite3 begins one before the first write): its
    # commit or rollback, including the pool's reset when the connection comes back, has nothing to do.
    async def commit(self) -> None:
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await super().rollback()


def connect(database: str | Path, *, timeout: float) -> aiosqlite.Connection:
    """An aiosqlite connection (awaitable, as `aiosqlite.connect` returns) using the prefetching cursor."""
    path = str(database)

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=timeout, check_same_thread=False)

    connection = _Connection(connector, iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: an undisposed engine never blocks exit
    return connection
