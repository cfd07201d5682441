"""New rows stored with one Core INSERT each, outside the session's unit of work.

Every decision writes its row, its model calls and an equity snapshot. Through the unit of work (add, then
flush) each costs about 0.14 ms more than the plain statement (0.57 against 0.43 ms with its commit, measured
on SQLite); none of them is changed again through the session, so they are written as plain statements and
the objects stay as records of what was stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Base

_STATEMENTS: dict[tuple[Table, bool], Insert] = {}  # one statement per table: its compiled form is cached


def _statement(table: Table, returning_id: bool) -> Insert:
    key = (table, returning_id)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = insert(table).returning(table.c.id) if returning_id else insert(table)
        _STATEMENTS[key] = statement
    return statement


def _values(row: Base) -> dict[str, Any]:
    """The columns set on a new object (unset ones get their column defaults, as a flush would give them)."""
    table: Table = row.__table__  # type: ignore[assignment]
    state = row.__dict__
    return {column.key: state[column.key] for column in table.columns if column.key in state}


async def insert_row(session: AsyncSession, row: Base) -> int:
    """Store `row` and set and return its new id."""
    table: Table = row.__table__  # type: ignore[assignment]
    new_id = int((await session.execute(_statement(table, True), _values(row))).scalar_one())
    row.id = new_id  # type: ignore[attr-defined]
    return new_id


async def insert_rows(session: AsyncSession, rows: Sequence[Base]) -> None:
    """Store new rows of one table, one statement for all that set the same columns (ids are not read back)."""
    if not rows:
        return
    table: Table = rows[0].__table__  # type: ignore[assignment]
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        values = _values(row)
        groups.setdefault(frozenset(values), []).append(values)
    for batch in groups.values():
        await session.execute(_statement(table, False), batch)
