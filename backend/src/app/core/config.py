"""Settings from the environment and `.env` (pydantic-settings). Frozen: read once, passed down."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url

from app.core.timeframes import timeframe_seconds

DEFAULT_DB_PATH = Path("data") / "trading.db"
MAINNET_CONFIRMATION = "real-money"  # LIVE_MAINNET_CONFIRM's one accepted value


def normalise_database_url(url: str) -> str:
    """Map plain driver URLs to the async drivers we ship (`sqlite` -> aiosqlite, `postgresql` -> asyncpg)."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


def split_urls(text: str) -> list[str]:
    """URLs separated by commas or white space (apprise URLs hold no unescaped comma or space)."""
    return [part for part in re.split(r"[\s,]+", text) if part]


def url_secret_parts(url: str) -> list[str]:
    """The parts of a notification URL that may be secret, to redact wherever the URL's words could show: the
    user and password, every query value, and every path or host word that looks like a token (no dot, at least 6
    characters with a digit, or 16 characters). Hosts and short path words stay readable."""
    rest = url.split("://", 1)[-1]
    rest, _, query = rest.partition("?")
    found: list[str] = []
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        found.extend(p for p in userinfo.split(":") if p)
    found.extend(v for pair in query.split("&") if (v := pair.partition("=")[2]))
    for word in re.split(r"[/:,;#]+", rest):
        if "." not in word and ((len(word) >= 6 and any(c.isdigit() for c in word)) or len(word) >= 16):
            found.append(word)
    return [part for part in dict.fromkeys(found) if len(part) >= 4]


class Settings(BaseSettings):
    """Everything the agent reads from its environment. Unknown keys in `.env` are ignored."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    assets: Annotated[list[str], NoDecode] = Field(
        default=["BTC", "ETH", "SOL"], description="Comma-separated assets to trade (ASSETS)."
    )
    interval: str = Field(default="5m", description="Decision timeframe: one cycle per closed candle.")
    long_interval: str = Field(default="4h", description="Higher timeframe for trend context.")
    database_url: str = Field(
        default=f"sqlite+aiosqlite:///./{DEFAULT_DB_PATH.as_posix()}",
        description="SQLAlchemy URL; SQLite file under ./data/ by default, PostgreSQL via DATABASE_URL.",
    )

    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    llm_base_url: str | None = Field(
        default=None, description="Any OpenAI-compatible endpoint (Ollama, vLLM, LM Studio); overrides OpenRouter."
    )
    llm_api_key: SecretStr | None = Field(default=None, description="Key for LLM_BASE_URL, when it needs one.")
    llm_model: str = "deepseek/deepseek-chat-v3.1"
    llm_fallback_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated models tried in order when LLM_MODEL is unavailable."
    )
    llm_timeout_s: float = Field(default=90.0, gt=0)
    llm_max_attempts: int = Field(default=3, ge=1, le=10)
    llm_max_tokens: int | None = Field(default=8000, ge=256)
    llm_temperature: float | None = Field(default=None, ge=0, le=2)
    llm_circuit_failure_threshold: int = Field(default=3, ge=1)
    llm_circuit_recovery_s: float = Field(default=120.0, gt=0)
    llm_requests_per_minute: float = Field(default=60.0, gt=0, description="Shared by every account.")
    llm_max_concurrency: int = Field(default=8, ge=1, description="Calls in flight at once, all accounts.")
    llm_daily_budget_usd: float | None = Field(
        default=5.0, ge=0, description="Per-account LLM spend per UTC day; once spent the account holds."
    )
    llm_app_url: str = "https://github.com/ai-trading-agent"
    llm_app_title: str = "AI Trading Agent"

    market_source: Literal["simulated", "binanceusdm", "hyperliquid", "replay"] = "simulated"
    replay_dir: str | None = Field(default=None, description="CSV folder for MARKET_SOURCE=replay")
    trading_mode: Literal["paper", "live"] = Field(
        default="paper",
        description="live: this process may trade the accounts whose mode is live (each on its own venue and network); "
        "paper: no live account is traded, whatever it says",
    )
    live_mainnet_confirm: str | None = Field(
        default=None,
        description=f"Set to {MAINNET_CONFIRMATION!r} to let live accounts on mainnet trade real money",
    )
    venue_api_url: str | None = Field(
        default=None,
        description="Send every venue request (market data and orders) to this base URL instead of the venue's own: a "
        "local fake venue (tests, the README's dry run) or a proxy",
    )
    venue: Literal["binanceusdm", "hyperliquid"] = "binanceusdm"

    # Simulation: the market simulator's clock runs `sim_speed` times faster than the wall clock, so a
    # 5m candle closes every 2 s at the default of 150.
    sim_speed: float = Field(default=150.0, gt=0)
    sim_seed: int = 7

    initial_balance: float = Field(default=10_000.0, gt=0, description="Default paper account balance (USD).")
    max_concurrent_accounts: int = Field(default=8, ge=1)
    shutdown_grace_s: float = Field(
        default=20.0,
        ge=0,
        le=600,
        description="On SIGTERM, how long the decision cycle in flight may take to finish before it is interrupted.",
    )
    # Several processes on one PostgreSQL (`trading-agent scheduler`, `worker`, `serve --workers`)
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Database connections per process on PostgreSQL (and as many overflow)."
    )
    worker_heartbeat_s: float = Field(default=5.0, gt=0, le=300, description="How often a worker says it is alive.")
    worker_stalled_s: float = Field(
        default=30.0, gt=0, le=3600, description="A worker silent this long is dead: its jobs are queued again."
    )
    account_lease_s: float = Field(
        default=30.0, gt=0, le=3600, description="An account held by a killed process is free again after this."
    )
    price_history_candles: int = Field(default=24, ge=1, le=500)
    indicator_series_length: int = Field(default=10, ge=1, le=200)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_api_key: SecretStr | None = Field(
        default=None, description="Admin API key; when unset one is generated at first start and printed once."
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting secrets at rest; default: data/secret.key (0600)."
    )
    secret_key_file: str = "data/secret.key"
    api_mutations_per_minute: int = Field(default=60, ge=1, description="Per API key, on mutating endpoints.")
    decision_refreshes_per_hour: int = Field(
        default=12,
        ge=0,
        description="Per account: forced decisions (force_refresh, each a model call) an hour: this many at once, then "
        "one every hour / this (0: none).",
    )
    api_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    log_level: str = "INFO"
    log_json: bool = False

    alert_urls: SecretStr | None = Field(
        default=None,
        description="Apprise URLs alerts are sent to (json://, tgram://, discord://, mailto://...), separated by "
        "commas or spaces. They hold tokens: a secret, never logged nor stored",
    )
    alert_quiet_s: float = Field(
        default=3600.0, ge=0, description="An alert repeated within this many seconds is counted, not sent again."
    )

    @field_validator("assets", mode="before")
    @classmethod
    def _split_assets(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, list):
            return [str(v).strip().upper() for v in value]
        return value

    @field_validator("llm_fallback_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @property
    def mainnet_confirmed(self) -> bool:
        """True when LIVE_MAINNET_CONFIRM says, word for word, that live mainnet accounts may trade real money."""
        return self.live_mainnet_confirm == MAINNET_CONFIRMATION

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.live_mainnet_confirm is not None and not self.mainnet_confirmed:
            raise ValueError(
                f"LIVE_MAINNET_CONFIRM must be exactly {MAINNET_CONFIRMATION!r} (or unset): "
                f"{self.live_mainnet_confirm!r} does not confirm real-money trading"
            )
        if self.market_source == "replay" and not self.replay_dir:
            raise ValueError("MARKET_SOURCE=replay needs REPLAY_DIR, a folder of CSV files")
        if not self.assets:
            raise ValueError("ASSETS must name at least one asset, e.g. ASSETS=BTC,ETH,SOL")
        if len(set(self.assets)) != len(self.assets):
            raise ValueError(f"ASSETS lists an asset twice: {','.join(self.assets)}")
        base, long_ = timeframe_seconds(self.interval), timeframe_seconds(self.long_interval)
        if long_ <= base or long_ % base:
            raise ValueError(
                f"LONG_INTERVAL ({self.long_interval}) must be a whole multiple of INTERVAL ({self.interval})"
            )
        return self

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def secret_values(self) -> list[str]:
        """Every secret in the configuration, for log redaction."""
        found = [self.openrouter_api_key, self.llm_api_key, self.admin_api_key, self.secret_key]
        values = [s.get_secret_value() for s in found if s is not None]
        password = make_url(self.database_url).password
        alert_parts = [part for url in self.alert_url_list for part in [url, *url_secret_parts(url)]]
        return [v for v in [*values, password, *alert_parts] if v]

    @property
    def alert_url_list(self) -> list[str]:
        """ALERT_URLS, one apprise URL per item."""
        return split_urls(self.alert_urls.get_secret_value()) if self.alert_urls is not None else []

    @property
    def uses_default_database(self) -> bool:
        return self.database_url == Settings.model_fields["database_url"].default

    @property
    def llm_configured(self) -> bool:
        """A real model is configured: an OpenRouter key, or an OpenAI-compatible LLM_BASE_URL."""
        return bool(self.llm_base_url) or (
            self.openrouter_api_key is not None and bool(self.openrouter_api_key.get_secret_value())
        )

    @property
    def llm_models(self) -> list[str]:
        """LLM_MODEL, then the fallbacks, without repeats."""
        return list(dict.fromkeys([self.llm_model, *self.llm_fallback_models]))


class ExplicitSettings(Settings):
    """Settings from constructor arguments only: no `.env`, no process environment (tests, benchmarks, and a
    program that embeds the agent with settings of its own)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
