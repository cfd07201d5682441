"""Leaky buckets every process shares, in the `rate_buckets` table: per-key API changes, forced refreshes, model
requests. With one process an in-memory bucket would do; with several on one PostgreSQL (workers, API servers)
each would allow the whole limit, so the level lives in the database and every process counts in the same row.

One mechanism on both databases, in one transaction: `INSERT ... ON CONFLICT DO NOTHING` (the bucket's row exists
from then on), `SELECT ... FOR UPDATE` (the row is this transaction's until it ends), then the new level. On
PostgreSQL the row lock makes a second process wait for the first one's commit and read its level. On SQLite the
first statement is a write, so the transaction holds the database's single write lock (and, within a process, the
engine's write gate) from before the read to the commit: no other writer can read the old level in between.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import RateBucket
from app.db.upsert import insert_for

_SLACK = 1e-9  # a bucket drained to its last request's room, give or take a float's rounding, has room


class SharedBuckets:
    """`take(name, ...)`: count one request in the bucket `name`, or say how long until one would fit."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def take(self, name: str, *, capacity: float, per_second: float, now: datetime) -> float | None:
        """Count one request in the leaky bucket `name` (holds `capacity`, drains `per_second`) at `now` (wall clock,
        given by the caller): None when it fits (counted), else the seconds until one more would fit (nothing counted).

        The bucket drains from the later of its stored time and `now`: processes' clocks differ by a little, and a
        process a little behind must not move the bucket's time back (the time between would drain twice)."""
        if capacity < 1 or per_second <= 0:
            raise ValueError(f"a bucket must hold at least one request and drain: {capacity=}, {per_second=}")
        async with self.sessions.begin() as session:
            insert = insert_for(session)
            await session.execute(
                insert(RateBucket).values(name=name, level=0.0, at=now).on_conflict_do_nothing(index_elements=["name"])
            )
            locked = select(RateBucket.level, RateBucket.at).where(RateBucket.name == name).with_for_update()
            row = (await session.execute(locked)).one()
            elapsed = max(0.0, (now - row.at).total_seconds())
            level = max(0.0, row.level - elapsed * per_second)
            if level + 1 > capacity + _SLACK:
                return (level + 1 - capacity) / per_second  # nothing counted (the commit frees the row)
            await session.execute(
                update(RateBucket).where(RateBucket.name == name).values(level=level + 1, at=max(now, row.at))
            )
            return None
