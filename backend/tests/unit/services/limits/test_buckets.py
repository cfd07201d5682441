"""Shared leaky buckets (`rate_buckets`) on SQLite and PostgreSQL: what fits, what is refused and for how long, on an
injected wall clock. Across real processes: tests/integration/test_shared_limits.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import RateBucket
from app.services.limits import SharedBuckets

pytestmark = pytest.mark.db

T0 = datetime(2031, 7, 14, 6, 0, tzinfo=UTC)
PER_MINUTE_3 = {"capacity": 3.0, "per_second": 3 / 60}  # 3 a minute: one drains every 20 s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def level_of(sessions: async_sessionmaker[AsyncSession], name: str) -> tuple[float, datetime]:
    async with sessions() as session:
        row = (await session.execute(select(RateBucket.level, RateBucket.at).where(RateBucket.name == name))).one()
    return row.level, row.at


async def test_the_capacity_fits_then_the_wait_until_one_more_fits(sessions: async_sessionmaker[AsyncSession]) -> None:
    buckets = SharedBuckets(sessions)
    taken = [await buckets.take("b", **PER_MINUTE_3, now=at(0)) for _ in range(3)]
    assert taken == [None, None, None]
    assert await buckets.take("b", **PER_MINUTE_3, now=at(0)) == pytest.approx(20.0), "one drains in 20 s"
    assert await buckets.take("b", **PER_MINUTE_3, now=at(5)) == pytest.approx(15.0)
    assert await level_of(sessions, "b") == (pytest.approx(3.0), at(0)), "a refusal counts nothing"


async def test_refusals_count_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    buckets = SharedBuckets(sessions)
    for _ in range(3):
        assert await buckets.take("b", **PER_MINUTE_3, now=at(0)) is None
    for _ in range(10):
        assert await buckets.take("b", **PER_MINUTE_3, now=at(1)) is not None
    assert await buckets.take("b", **PER_MINUTE_3, now=at(20)) is None, "the refused ten were not counted"
    assert await buckets.take("b", **PER_MINUTE_3, now=at(20)) == pytest.approx(20.0)


async def test_it_drains_over_wall_time(sessions: async_sessionmaker[AsyncSession]) -> None:
    buckets = SharedBuckets(sessions)
    for _ in range(3):
        assert await buckets.take("b", **PER_MINUTE_3, now=at(0)) is None
    assert await buckets.take("b", **PER_MINUTE_3, now=at(19.5)) == pytest.approx(0.5)
    assert [await buckets.take("b", **PER_MINUTE_3, now=at(40)) for _ in range(3)] == [None, None, 20.0]
    assert await level_of(sessions, "b") == (pytest.approx(3.0), at(40))
    assert [await buckets.take("b", **PER_MINUTE_3, now=at(3600)) for _ in range(4)] == [None, None, None, 20.0], (
        "empty after a long pause, never below empty"
    )


async def test_buckets_are_independent(sessions: async_sessionmaker[AsyncSession]) -> None:
    buckets = SharedBuckets(sessions)
    one = {"capacity": 1.0, "per_second": 1 / 60}
    assert await buckets.take("key:1", **one, now=at(0)) is None
    assert await buckets.take("key:1", **one, now=at(0)) == pytest.approx(60.0)
    assert await buckets.take("key:2", **one, now=at(0)) is None


async def test_a_clock_a_little_behind_leaves_the_bucket_time(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Processes' clocks differ a little: an earlier `now` drains nothing and leaves the bucket's time alone (else
    the seconds between would drain twice)."""
    buckets = SharedBuckets(sessions)
    assert await buckets.take("b", **PER_MINUTE_3, now=at(10)) is None
    assert await buckets.take("b", **PER_MINUTE_3, now=at(9)) is None
    assert await level_of(sessions, "b") == (pytest.approx(2.0), at(10))
    assert await buckets.take("b", **PER_MINUTE_3, now=at(10)) is None
    assert await buckets.take("b", **PER_MINUTE_3, now=at(10)) == pytest.approx(20.0)


async def test_concurrent_takes_count_exactly_the_capacity(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Many at once in one process (each its own transaction and connection): no update is lost."""
    buckets = SharedBuckets(sessions)
    answers = await asyncio.gather(*(buckets.take("b", capacity=5, per_second=1e-6, now=at(0)) for _ in range(30)))
    assert sum(a is None for a in answers) == 5
    assert await level_of(sessions, "b") == (pytest.approx(5.0), at(0))


async def test_a_bucket_must_hold_one_and_drain(sessions: async_sessionmaker[AsyncSession]) -> None:
    buckets = SharedBuckets(sessions)
    with pytest.raises(ValueError):
        await buckets.take("b", capacity=0.5, per_second=1.0, now=at(0))
    with pytest.raises(ValueError):
        await buckets.take("b", capacity=2, per_second=0.0, now=at(0))
