"""`trading-agent llm set-key / clear-key`: rotate the OpenRouter key from the command line (checked with the fake
OpenRouter's GET /key, stored encrypted, never echoed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.fernet import Fernet
from typer.testing import CliRunner

from app.cli import app
from app.core.security import SecretBox
from app.db.session import create_engine, create_session_factory
from app.services.llm.llm_settings import LLMSettingsStore, key_fingerprint
from tests.fakes.openrouter_server import FakeOpenRouter, key_info

runner = CliRunner()
NEW_KEY = "sk-or-v1-from-the-cli-0123456789abcdef"
SECRET = Fernet.generate_key().decode()


def _env(tmp_path: Path, fake: FakeOpenRouter) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "SECRET_KEY": SECRET,
        "OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_API_KEY": "",
        "LLM_BASE_URL": "",
        "LOG_LEVEL": "WARNING",
    }


async def _stored(tmp_path: Path) -> str | None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}")
    try:
        stored = await LLMSettingsStore(create_session_factory(engine), SecretBox(SECRET.encode())).openrouter_key()
        return stored.key if stored else None
    finally:
        await engine.dispose()


def test_set_key_checks_stores_encrypted_and_clear_key_removes_it(tmp_path: Path) -> None:
    with FakeOpenRouter() as fake:
        fake.known_keys = {NEW_KEY: key_info()}
        env = _env(tmp_path, fake)

        refused = runner.invoke(app, ["llm", "set-key", "--stdin"], input="sk-or-v1-not-a-known-key-000000\n", env=env)
        assert refused.exit_code == 1 and "does not accept this key" in refused.output

        done = runner.invoke(app, ["llm", "set-key", "--stdin"], input=NEW_KEY + "\n", env=env)
        assert done.exit_code == 0, done.output
        assert key_fingerprint(NEW_KEY) in done.output and NEW_KEY not in done.output
        assert fake.key_requests[-1].headers["authorization"] == f"Bearer {NEW_KEY}"

    assert asyncio.run(_stored(tmp_path)) == NEW_KEY
    assert NEW_KEY.encode() not in (tmp_path / "agent.db").read_bytes()

    with FakeOpenRouter() as fake:
        cleared = runner.invoke(app, ["llm", "clear-key"], env=_env(tmp_path, fake))
        assert cleared.exit_code == 0 and "no key is left" in cleared.output
        again = runner.invoke(app, ["llm", "clear-key"], env=_env(tmp_path, fake))
        assert again.exit_code == 1
    assert asyncio.run(_stored(tmp_path)) is None
