"""Shared fixtures: real databases (SQLite always; PostgreSQL when TEST_POSTGRES_URL is set), a manual
clock, and a fully wired agent on the market simulator."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings, Settings, normalise_database_url
from app.db.migrate import ensure_migrated
from app.db.session import create_engine, create_session_factory
from app.services.market_data.simulator import MarketSimulator

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
POSTGRES_ENV = "TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "REQUIRE_POSTGRES"
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` beside the checkout; tests that need it skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs {SHARED_DATA} (absent on a fresh clone)")
    return SHARED_DATA


def _postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url and os.environ.get(REQUIRE_POSTGRES_ENV):
        pytest.fail(f"{REQUIRE_POSTGRES_ENV} is set but {POSTGRES_ENV} is not: the PostgreSQL run cannot skip")
    return url


async def _create_pg_database(admin_url: str) -> str:
    import asyncpg

    url = make_url(normalise_database_url(admin_url))
    name = f"ta_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(
        user=url.username, password=url.password, host=url.host, port=url.port, database=url.database
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(admin_url: str, test_url: str) -> None:
    import asyncpg

    admin = make_url(normalise_database_url(admin_url))
    name = make_url(test_url).database
    conn = await asyncpg.connect(
        user=admin.username, password=admin.password, host=admin.host, port=admin.port, database=admin.database
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database (skipped without a URL)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    admin_url = _postgres_admin_url()
    if not admin_url:
        pytest.skip(f"PostgreSQL run: set {POSTGRES_ENV}=postgresql://postgres@127.0.0.1:5432/postgres")
    url = await _create_pg_database(admin_url)
    try:
        yield url
    finally:
        await _drop_pg_database(admin_url, url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


IsolatedSettings = ExplicitSettings  # settings from constructor arguments only


ADMIN_KEY = "ta_admin_test-key-0123456789abcdefghijklmnop"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return IsolatedSettings(
        database_url=database_url, admin_api_key=ADMIN_KEY, secret_key_file=str(tmp_path / "secret.key")
    )


@pytest.fixture
async def agent(settings: Settings, clock: ManualClock) -> AsyncIterator[Agent]:
    """The whole agent on the simulator, a manual clock and the baseline model."""
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    built = await build_agent(settings, clock=clock, market=market)
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh, migrated database (for tests of one part, without the whole agent)."""
    engine = create_engine(database_url)
    await ensure_migrated(engine)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()
