"""The per-key limit on mutating requests counts in the database: two API processes on one database (two limiters
on the same sessions) share each key's limit, and the 429 says the whole wall seconds until one more fits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import HTTPException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.auth import MutationLimiter, Principal

pytestmark = pytest.mark.db

T0 = datetime(2031, 7, 14, 6, 0, tzinfo=UTC)
KEY_1 = Principal(role="admin", account_id=None, key_prefix="ta_admin", key_id=1)
KEY_2 = Principal(role="account", account_id=2, key_prefix="ta_acct", key_id=2)


async def test_two_processes_share_a_keys_limit(sessions: async_sessionmaker[AsyncSession]) -> None:
    one, two = MutationLimiter(4, sessions=lambda: sessions), MutationLimiter(4, sessions=lambda: sessions)
    for limiter in (one, two, one, two):
        assert await limiter.take(KEY_1, T0) is KEY_1
    with pytest.raises(HTTPException) as refused:
        await two.take(KEY_1, T0 + timedelta(seconds=1))
    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": "14"}, "one drains every 15 s; 1 s has passed"
    assert "at most 4 mutating requests per minute per key" in str(refused.value.detail)
    assert await one.take(KEY_2, T0) is KEY_2, "per key"
    assert await one.take(KEY_1, T0 + timedelta(seconds=15)) is KEY_1
    with pytest.raises(HTTPException):
        await one.take(KEY_1, T0 + timedelta(seconds=15))
