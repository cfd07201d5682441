"""`trading-agent admin new-key` and `trading-agent llm usage` through Typer's test runner, on a SQLite file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app
from app.core.security import hash_api_key
from app.db.migrate import ensure_migrated
from app.db.models import ApiKey, LLMCall
from app.db.repositories.api_keys import ApiKeyRepository
from app.db.session import create_engine, create_session_factory

runner = CliRunner()
OLD_ADMIN = "ta_admin_old-lost-key-0123456789abcdefghij"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "ADMIN_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


async def _seed(url: str, *, admin_key: str | None = None, calls: list[LLMCall] | None = None) -> None:
    engine = create_engine(url)
    try:
        await ensure_migrated(engine)
        async with create_session_factory(engine).begin() as session:
            if admin_key:
                await ApiKeyRepository(session).ensure(admin_key, role="admin", name="old", now=datetime.now(UTC))
            session.add_all(calls or [])
    finally:
        await engine.dispose()


async def _keys(url: str) -> dict[str, ApiKey]:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            return {row.key_hash: row for row in (await session.scalars(select(ApiKey))).all()}
    finally:
        await engine.dispose()


def test_admin_new_key_prints_a_working_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    asyncio.run(_seed(url, admin_key=OLD_ADMIN))

    done = runner.invoke(app, ["admin", "new-key", "--name", "after a lost key"], env=_env(tmp_path))
    assert done.exit_code == 0, done.output
    printed = [line for line in done.output.splitlines() if line.startswith("ta_admin_")]
    assert len(printed) == 1
    key = printed[0]
    keys = asyncio.run(_keys(url))
    row = keys[hash_api_key(key)]
    assert (row.role, row.account_id, row.name, row.revoked_at) == ("admin", None, "after a lost key", None)
    assert (tmp_path / "agent.db").read_bytes().find(key.encode()) == -1  # never stored in clear
    assert keys[hash_api_key(OLD_ADMIN)].revoked_at is None  # the others are kept unless asked

    again = runner.invoke(app, ["admin", "new-key", "--revoke-others"], env=_env(tmp_path))
    assert again.exit_code == 0, again.output
    newest = next(line for line in again.output.splitlines() if line.startswith("ta_admin_"))
    assert "2 other admin key(s) revoked" in again.output
    keys = asyncio.run(_keys(url))
    assert keys[hash_api_key(newest)].revoked_at is None
    assert keys[hash_api_key(OLD_ADMIN)].revoked_at is not None
    assert keys[hash_api_key(key)].revoked_at is not None


def test_llm_usage_shows_model_names_whole_on_a_narrow_terminal(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    now = datetime.now(UTC)
    names = ["baseline/trend-following-v1", "qwen/qwen3-235b-a22b-2507:nitro"]
    calls = [
        LLMCall(
            model_requested=name,
            model_served=name,
            outcome="ok",
            prompt_tokens=1_234_567,
            cost_usd=0.5,
            completion_tokens=765_432,
            created_at=now,
        )
        for name in names
    ]
    asyncio.run(_seed(url, calls=calls))

    done = runner.invoke(app, ["llm", "usage", "--by", "model"], env=_env(tmp_path, COLUMNS="60"))
    assert done.exit_code == 0, done.output
    for name in names:
        assert name in done.output, done.output
    assert "…" not in done.output
    assert "1234567" in done.output and "765432" in done.output
