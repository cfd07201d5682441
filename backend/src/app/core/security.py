"""Secrets: API keys (random, stored as SHA-256), encryption at rest (Fernet), and redaction for logs."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from app.core.errors import ConfigurationError

KEY_BYTES = 32
_SECRET_PATTERNS = [
    re.compile(r"(ta_(?:admin|acct)_[A-Za-z0-9_-]{20,})"),  # our API keys
    re.compile(r"(sk-(?:or-)?(?:v1-)?[A-Za-z0-9_-]{16,})"),  # OpenRouter / OpenAI style keys
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]{16,})"),
    re.compile(r"(?i)((?:api[_-]?key|secret|password|token)[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]{6,})"),
]


def new_api_key(role: str) -> str:
    """A fresh key: `ta_admin_...` or `ta_acct_...` with 256 random bits."""
    tag = "admin" if role == "admin" else "acct"
    return f"ta_{tag}_{secrets.token_urlsafe(KEY_BYTES)}"


def hash_api_key(key: str) -> str:
    """Keys are high-entropy random strings, so a plain SHA-256 is a safe one-way digest."""
    return hashlib.sha256(key.encode()).hexdigest()


def keys_match(key: str, digest: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), digest)


def key_prefix(key: str) -> str:
    return key[:12]


def redact(text: str) -> str:
    """Replace anything that looks like a secret with `***`."""
    out = text
    for pattern in _SECRET_PATTERNS:
        replacement = (lambda m: m.group(1) + "***") if pattern.groups == 2 else (lambda _m: "***")
        out = pattern.sub(replacement, out)
    return out


def _usable(secrets: list[str] | None) -> list[str]:
    # Longest first, so a secret that contains another is replaced whole.
    return sorted({s for s in (secrets or []) if s and len(s) >= 6}, key=len, reverse=True)


def _redact_with(text: str, extra: list[str]) -> str:
    clean = redact(text)
    for secret in extra:
        clean = clean.replace(secret, "***")
    return clean


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from every record's message and arguments.

    It sees the message only: tracebacks are rendered later, by the formatter, so a handler that must never
    print a secret also uses `RedactingFormatter` (as `configure_logging` does)."""

    def __init__(self, extra_secrets: list[str] | None = None) -> None:
        super().__init__()
        self.extra = _usable(extra_secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # a structlog event: the formatter renders it from the dict
            record.msg = {k: _redact_with(v, self.extra) if isinstance(v, str) else v for k, v in record.msg.items()}
            return True
        message = record.getMessage()
        clean = _redact_with(message, self.extra)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and redacts its final text: message, arguments, exception tracebacks and structlog
    event fields alike."""

    def __init__(self, inner: logging.Formatter, extra_secrets: list[str] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.extra = _usable(extra_secrets)

    def format(self, record: logging.LogRecord) -> str:
        return _redact_with(self.inner.format(record), self.extra)


class SecretBox:
    """Encrypt and decrypt secrets at rest (exchange credentials) with a Fernet key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    @classmethod
    def from_settings(cls, secret_key: str | None, key_file: Path) -> SecretBox:
        """SECRET_KEY when set; otherwise a key file created once with mode 0600 beside the database."""
        if secret_key:
            try:
                return cls(secret_key.encode())
            except ValueError as exc:
                raise ConfigurationError("SECRET_KEY must be a Fernet key (32 url-safe base64 bytes)") from exc
        if key_file.exists():
            return cls(key_file.read_bytes().strip())
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return cls(key)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def sign(self, purpose: str, message: str) -> str:
        """An HMAC-SHA256 of `message` under a key derived from this box's key for `purpose` (the dashboard's
        sessions): it proves the agent issued the message, and changes with SECRET_KEY."""
        derived = hmac.new(self._key, f"sign:{purpose}".encode(), hashlib.sha256).digest()
        return hmac.new(derived, message.encode(), hashlib.sha256).hexdigest()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ConfigurationError("stored secret cannot be decrypted with this SECRET_KEY") from exc
