"""The dialect's INSERT, which has ON CONFLICT (an upsert in one statement: no read-then-insert race)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession) -> Any:
    """`sqlite.insert` or `postgresql.insert`, per the session's database (both have `on_conflict_do_update`)."""
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert
    if name == "postgresql":
        return postgresql.insert
    raise NotImplementedError(f"upserts are written for SQLite and PostgreSQL, not {name}")
