"""Fixtures of the end-to-end tests that check a real process's database from the outside."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.session import create_engine


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database, for reading what an agent process wrote."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
