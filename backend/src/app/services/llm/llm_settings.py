"""LLM settings changed at run time, kept in the database (`llm_settings`) so that a restart keeps them.

* `default_model`: the model asked first, switched through `POST /api/v1/decisions/models/switch`. It is stored
  with what it was chosen against (the configured `LLM_MODEL` and the endpoint): when either has changed at the
  next start, the operator's new configuration wins and the old switch is dropped (and logged).
* `openrouter_api_key`: a rotated OpenRouter key, set through the API or `trading-agent llm set-key`, stored
  encrypted with the agent's `SecretBox` (the value is a Fernet token; the key never reaches the database, a log
  or an answer in clear). A stored key wins over `OPENROUTER_API_KEY`; removing it goes back to the environment.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import ConfigurationError
from app.core.security import SecretBox
from app.db.models import LLMSetting
from app.db.upsert import insert_for

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default_model"
OPENROUTER_KEY = "openrouter_api_key"
MIN_KEY_CHARS = 20
MAX_KEY_CHARS = 300

KeySource = Literal["stored", "environment", "none"]


def key_fingerprint(key: str) -> str:
    """A short, one-way name for a key, to tell keys apart without showing them (`sha256:1a2b3c4d5e6f`)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def check_key_text(key: str) -> str:
    """The key without surrounding blanks; ValueError (never naming the key) when it cannot be a key."""
    key = key.strip()
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"an API key has {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ValueError("an API key is printable ASCII without spaces")
    return key


@dataclass(frozen=True)
class StoredModel:
    model: str
    configured_model: str | None  # LLM_MODEL when it was switched
    endpoint: str | None  # the endpoint's base URL when it was switched
    updated_at: datetime
    updated_by: str | None


@dataclass(frozen=True)
class StoredKey:
    key: str
    fingerprint: str
    updated_at: datetime
    updated_by: str | None


@dataclass(frozen=True)
class KeyChoice:
    """The OpenRouter key in use and where it comes from (the key itself is never shown: `fingerprint`)."""

    key: str | None
    source: KeySource
    fingerprint: str | None
    updated_at: datetime | None = None
    updated_by: str | None = None


class LLMSettingsStore:
    """Reads and writes the `llm_settings` rows. Times are wall-clock (operational records)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secrets: SecretBox,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.secrets = secrets
        self._now = now
        self._decrypted: tuple[str, str] | None = None  # (token, key): Fernet only when the token changes
        self._undecryptable: str | None = None  # a token already reported as undecryptable

    # ------------------------------------------------------------------------------------------ default model

    async def default_model(self) -> StoredModel | None:
        async with self.sessions() as session:
            row = await session.get(LLMSetting, DEFAULT_MODEL)
        if row is None:
            return None
        detail = row.detail or {}
        return StoredModel(
            model=row.value,
            configured_model=_text(detail.get("configured_model")),
            endpoint=_text(detail.get("endpoint")),
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )

    async def save_default_model(
        self, model: str, *, configured_model: str | None, endpoint: str | None, by: str | None
    ) -> None:
        detail = {"configured_model": configured_model, "endpoint": endpoint}
        await self._put(DEFAULT_MODEL, model, detail, by)

    async def clear_default_model(self) -> bool:
        return await self._delete(DEFAULT_MODEL)

    # ------------------------------------------------------------------------------------------ OpenRouter key

    async def openrouter_key(self) -> StoredKey | None:
        """The stored key, decrypted; None when there is none or it cannot be decrypted with this SECRET_KEY
        (said once in the log: the environment's key is used instead)."""
        async with self.sessions() as session:
            row = await session.get(LLMSetting, OPENROUTER_KEY)
        if row is None:
            return None
        token = row.value
        if self._decrypted is not None and self._decrypted[0] == token:
            key = self._decrypted[1]
        else:
            try:
                key = self.secrets.decrypt(token)
            except ConfigurationError:
                if self._undecryptable != token:
                    self._undecryptable = token
                    log.warning(
                        "the stored OpenRouter key cannot be decrypted with this SECRET_KEY: it is ignored "
                        "(OPENROUTER_API_KEY is used if set); set the key again to replace it"
                    )
                return None
            self._decrypted = (token, key)
        return StoredKey(key, key_fingerprint(key), row.updated_at, row.updated_by)

    async def save_openrouter_key(self, key: str, *, by: str | None) -> StoredKey:
        key = check_key_text(key)
        fingerprint = key_fingerprint(key)
        now = await self._put(OPENROUTER_KEY, self.secrets.encrypt(key), {"fingerprint": fingerprint}, by)
        log.info("OpenRouter key %s stored (by %s)", fingerprint, by or "unknown")
        return StoredKey(key, fingerprint, now, by)

    async def clear_openrouter_key(self) -> bool:
        removed = await self._delete(OPENROUTER_KEY)
        if removed:
            log.info("stored OpenRouter key removed")
        return removed

    # ------------------------------------------------------------------------------------------ rows

    async def _put(self, name: str, value: str, detail: dict[str, str | None], by: str | None) -> datetime:
        """Insert or replace the setting in one statement: two first writes at once both succeed (the last one
        wins), where a read then an insert failed the second on the primary key."""
        now = self._now()
        async with self.sessions.begin() as session:
            insert = insert_for(session)(LLMSetting).values(
                name=name, value=value, detail=detail, updated_at=now, updated_by=by
            )
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=[LLMSetting.name],
                    set_={c: insert.excluded[c] for c in ("value", "detail", "updated_at", "updated_by")},
                )
            )
        return now

    async def _delete(self, name: str) -> bool:
        async with self.sessions.begin() as session:
            row = await session.get(LLMSetting, name)
            if row is None:
                return False
            await session.delete(row)
        return True


class OpenRouterKeys:
    """Which OpenRouter key the agent uses, asked before every call: a key stored through the API or the CLI wins
    over `OPENROUTER_API_KEY` (rotating means replacing the key the agent was started with); without a stored key,
    the environment's is used."""

    def __init__(self, store: LLMSettingsStore, env_key: str | None) -> None:
        self.store = store
        self.env_key = env_key or None

    async def choice(self) -> KeyChoice:
        stored = await self.store.openrouter_key()
        if stored is not None:
            return KeyChoice(stored.key, "stored", stored.fingerprint, stored.updated_at, stored.updated_by)
        if self.env_key:
            return KeyChoice(self.env_key, "environment", key_fingerprint(self.env_key))
        return KeyChoice(None, "none", None)


async def restore_default_model(
    store: LLMSettingsStore, configured: list[str], endpoint: str | None
) -> list[str] | None:
    """At start-up: the chain with the default model switched before the restart first, unless LLM_MODEL or the
    endpoint has changed since (the new configuration wins and the old switch is forgotten); None: nothing to
    restore."""
    stored = await store.default_model()
    if stored is None:
        return None
    if stored.configured_model != configured[0] or stored.endpoint != endpoint:
        log.warning(
            "the default model switched to %s on %s is not restored: LLM_MODEL or the endpoint changed since "
            "(then %s at %s, now %s at %s)",
            stored.model,
            stored.updated_at.isoformat(),
            stored.configured_model,
            stored.endpoint,
            configured[0],
            endpoint,
        )
        await store.clear_default_model()
        return None
    log.info("default model %s restored (switched on %s)", stored.model, stored.updated_at.isoformat())
    return [stored.model, *(m for m in configured if m != stored.model)]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
