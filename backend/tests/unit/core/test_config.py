"""Settings: how the environment is read, and which settings are refused before the agent starts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.core.config import ExplicitSettings, Settings, normalise_database_url


def settings(**values: Any) -> Settings:
    return ExplicitSettings(**values)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A process environment without any of the agent's variables (and no `.env`, see `from_env`)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def from_env() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


# ---- assets --------------------------------------------------------------------------------------------


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = from_env()
    assert s.assets == ["BTC", "ETH", "SOL"]
    assert (s.interval, s.long_interval) == ("5m", "4h")
    assert s.database_url.startswith("sqlite+aiosqlite://")
    assert s.is_sqlite
    assert not s.llm_configured


@pytest.mark.parametrize(
    ("raw", "assets"),
    [("btc, eth", ["BTC", "ETH"]), ("BTC,ETH,SOL", ["BTC", "ETH", "SOL"]), (" sol ,", ["SOL"]), ("doge", ["DOGE"])],
)
def test_assets_from_the_environment(env: pytest.MonkeyPatch, raw: str, assets: list[str]) -> None:
    env.setenv("ASSETS", raw)
    assert from_env().assets == assets


def test_assets_as_a_list() -> None:
    assert settings(assets=["btc", " eth "]).assets == ["BTC", "ETH"]


@pytest.mark.parametrize("raw", ["BTC,ETH,btc", "eth, ETH"])
def test_an_asset_listed_twice_is_refused(env: pytest.MonkeyPatch, raw: str) -> None:
    env.setenv("ASSETS", raw)
    with pytest.raises(ValidationError, match="lists an asset twice"):
        from_env()


@pytest.mark.parametrize("raw", ["", " , ", ","])
def test_no_assets_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError, match="at least one asset"):
        settings(assets=raw)


# ---- timeframes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "long_interval"), [("5m", "4h"), ("1m", "5m"), ("15m", "1h"), ("1h", "1d")])
def test_long_interval_a_whole_multiple_of_interval_is_accepted(interval: str, long_interval: str) -> None:
    s = settings(interval=interval, long_interval=long_interval)
    assert (s.interval, s.long_interval) == (interval, long_interval)


@pytest.mark.parametrize(
    ("interval", "long_interval"),
    [("7m", "1h"), ("5m", "5m"), ("4h", "1h"), ("3h", "4h")],
    ids=["not-a-multiple", "equal", "shorter", "3h-4h"],
)
def test_long_interval_not_a_whole_multiple_is_refused(interval: str, long_interval: str) -> None:
    with pytest.raises(ValidationError, match="whole multiple of INTERVAL"):
        settings(interval=interval, long_interval=long_interval)


def test_long_interval_from_the_environment_is_checked(env: pytest.MonkeyPatch) -> None:
    env.setenv("INTERVAL", "7m")
    env.setenv("LONG_INTERVAL", "1h")
    with pytest.raises(ValidationError, match="LONG_INTERVAL"):
        from_env()


def test_a_malformed_timeframe_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a timeframe"):
        settings(interval="5x")


# ---- database URL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./data/trading.db", "sqlite+aiosqlite:///./data/trading.db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/trading", "postgresql+asyncpg://u:p@db:5432/trading"),
        ("postgres://u:p@db/trading", "postgresql+asyncpg://u:p@db/trading"),
        ("postgresql+psycopg2://u@db/trading", "postgresql+asyncpg://u@db/trading"),
        ("postgresql+psycopg://u@db/trading", "postgresql+asyncpg://u@db/trading"),
        ("postgresql+asyncpg://u@db/trading", "postgresql+asyncpg://u@db/trading"),
    ],
)
def test_database_urls_are_mapped_to_the_async_drivers(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected
    assert settings(database_url=url).database_url == expected


def test_database_url_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_URL", "postgresql://trader@localhost/agent")
    s = from_env()
    assert s.database_url == "postgresql+asyncpg://trader@localhost/agent"
    assert not s.is_sqlite


# ---- the rest ------------------------------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    s = settings()
    with pytest.raises(ValidationError):
        s.assets = ["DOGE"]  # type: ignore[misc]


@pytest.mark.parametrize(("key", "configured"), [(None, False), ("", False), ("sk-or-123", True)])
def test_llm_configured_needs_a_non_empty_key(key: str | None, configured: bool) -> None:
    assert settings(openrouter_api_key=key).llm_configured is configured


@pytest.mark.parametrize(("field", "value"), [("sim_speed", 0), ("initial_balance", -1), ("trading_mode", "yolo")])
def test_out_of_range_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        settings(**{field: value})
