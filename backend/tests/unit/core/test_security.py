"""Secrets: API keys and their hashes, redaction of anything secret-looking in logs, encryption at rest."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography.fernet import Fernet

from app.core.errors import ConfigurationError
from app.core.logging import configure_logging
from app.core.security import (
    RedactingFilter,
    RedactingFormatter,
    SecretBox,
    hash_api_key,
    key_prefix,
    keys_match,
    new_api_key,
    redact,
)

ADMIN = "ta_admin_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0-_x"
ACCOUNT = "ta_acct_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp_-oNnMmLlK"
OPENROUTER = "sk-or-v1-" + "0123456789abcdef" * 4
OPENAI = "sk-" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdEFGH"


# ------------------------------------------------------------------------------------------------ redact


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (ADMIN, ADMIN, ""),
        (f"key={ADMIN} rejected", ADMIN, "rejected"),
        (f"using {ACCOUNT}", ACCOUNT, "using"),
        (f"OPENROUTER_API_KEY {OPENROUTER}", OPENROUTER, "OPENROUTER_API_KEY"),
        (f"openai {OPENAI}", OPENAI, "openai"),
        ("sk-proj-Abc123Def456Ghi789Jkl012", "Abc123Def456Ghi789Jkl012", ""),
        ("Authorization: Bearer abc.DEF-ghi_jkl~mno+pqr/stu=", "abc.DEF-ghi_jkl~mno+pqr/stu=", "Authorization: Bearer"),
        ("authorization: bearer 0123456789abcdefXYZ", "0123456789abcdefXYZ", "authorization: bearer"),
        ("api_key=abcdef123456", "abcdef123456", "api_key="),
        ("API-KEY: Zq8Wm3Kp0Lr7", "Zq8Wm3Kp0Lr7", "API-KEY:"),
        ("apikey = 'quoted-value-42'", "quoted-value-42", "apikey"),
        ('{"api_key": "json-key-123456", "venue": "binanceusdm"}', "json-key-123456", '"venue": "binanceusdm"'),
        ("{'api_secret': 'py-dict-secret-99'}", "py-dict-secret-99", "api_secret"),
        ("password=hunter2hunter2", "hunter2hunter2", "password="),
        ("PASSWORD: Tr0ub4dor&3", "Tr0ub4dor&3", "PASSWORD:"),
        ("client_secret=s3cr3t-value", "s3cr3t-value", "client_secret="),
        ("token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9", "token="),
        ("GET /x?access_token=abcdef123456 200", "abcdef123456", "GET /x?access_token="),
        ("two: api_key=first-secret-1 and secret=second-secret-2", "second-secret-2", "two:"),
    ],
)
def test_redact_hides_every_secret_shape(text: str, secret: str, kept: str) -> None:
    clean = redact(text)
    assert secret not in clean
    assert "***" in clean
    assert kept in clean, "the text around the secret stays readable"


def test_redact_hides_both_secrets_of_a_line() -> None:
    clean = redact(f"admin {ADMIN} and model {OPENROUTER}")
    assert clean == "admin *** and model ***"


@pytest.mark.parametrize(
    "text",
    [
        "account 12 paused by ta_admin_sho",  # a key prefix (12 characters) as shown in lists is not a key
        "decision 42 executed at 2026-03-02T12:00:00+00:00",
        "prompt_tokens=1200 completion_tokens=350 cost_usd=0.004",
        "BTC/USDT:USDT buy 0.01 @ 100000.0",
        "token: 1234",  # too short to be a secret
        "sk-short",
        "Bearer short",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


# --------------------------------------------------------------------------------------- logging filters


def _record(msg: object, *args: object) -> logging.LogRecord:
    return logging.LogRecord("app.test", logging.INFO, __file__, 1, msg, args or None, None)


def test_filter_redacts_message_and_arguments_and_configured_secrets() -> None:
    flt = RedactingFilter(extra_secrets=["plain-db-password", "", "short"])
    record = _record("connecting with %s, key %s, count %d", "plain-db-password", ADMIN, 3)
    assert flt.filter(record) is True
    assert record.getMessage() == "connecting with ***, key ***, count 3"
    ordinary = _record("nothing secret here: %s", "short")
    flt.filter(ordinary)
    assert ordinary.getMessage() == "nothing secret here: short", "secrets under 6 characters are not redacted"
    assert ordinary.args == ("short",), "a clean record is left untouched"


def test_filter_redacts_structlog_event_dicts_without_breaking_them() -> None:
    record = _record({"event": "calling", "api_key": OPENROUTER, "attempt": 2})
    RedactingFilter().filter(record)
    assert record.msg == {"event": "calling", "api_key": "***", "attempt": 2}


def test_formatter_redacts_tracebacks() -> None:
    formatter = RedactingFormatter(logging.Formatter("%(message)s"), extra_secrets=["configured-secret-1"])
    try:
        raise RuntimeError(f"upstream refused {OPENROUTER} for configured-secret-1")
    except RuntimeError:
        record = logging.LogRecord("app.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = formatter.format(record)
    assert "Traceback" in text and "RuntimeError: upstream refused *** for ***" in text
    assert OPENROUTER not in text and "configured-secret-1" not in text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("uvicorn.access", "aiosqlite", "alembic")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("json_lines", [False, True])
def test_configured_logging_never_prints_a_secret(capsys: pytest.CaptureFixture[str], json_lines: bool) -> None:
    configure_logging("DEBUG", json_lines=json_lines, secrets=["my-db-password-1", OPENROUTER])
    log = logging.getLogger("app.test.security")

    def call_model(key: str) -> None:  # `key` is a local variable of the failing frame
        raise ConnectionError(f"401 from upstream for key {key} (db my-db-password-1)")

    log.info("admin key %s, account key %s", ADMIN, ACCOUNT)
    log.debug("config: %r", {"api_key": "ccxt-key-123456", "api_secret": "ccxt-secret-123456"})
    try:
        call_model(OPENROUTER)
    except ConnectionError:
        log.exception("model call failed with Bearer %s", OPENROUTER)
    structlog.get_logger("app.test.structlog").warning("event", token="tok-abcdef-123456", key=ACCOUNT)
    err = capsys.readouterr().err
    for secret in (ADMIN, ACCOUNT, OPENROUTER, "my-db-password-1", "ccxt-key-123456", "ccxt-secret-123456"):
        assert secret not in err
    assert "tok-abcdef-123456" not in err
    assert "Traceback" in err and "ConnectionError" in err, "the traceback is kept, only redacted"
    assert "Logging error" not in err


# ------------------------------------------------------------------------------------------------- keys


def test_new_keys_are_tagged_random_and_long() -> None:
    admin, account = new_api_key("admin"), new_api_key("account")
    assert re.fullmatch(r"ta_admin_[A-Za-z0-9_-]{43}", admin)
    assert re.fullmatch(r"ta_acct_[A-Za-z0-9_-]{43}", account)
    assert len({new_api_key("account") for _ in range(200)}) == 200
    assert redact(admin) == "***" and redact(account) == "***", "every generated key is caught by redact()"
    assert key_prefix(admin) == admin[:12] and len(key_prefix(admin)) == 12


def test_hash_is_a_sha256_digest_and_matching_is_exact() -> None:
    key = new_api_key("admin")
    digest = hash_api_key(key)
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and key not in digest
    assert hash_api_key(key) == digest, "deterministic: a presented key can be looked up by its hash"
    assert hash_api_key(new_api_key("admin")) != digest
    assert keys_match(key, digest)
    assert not keys_match(key + "x", digest)
    assert not keys_match(key[:-1], digest)
    assert not keys_match(key.upper(), digest)
    assert not keys_match("", digest)
    assert not keys_match(key, digest.upper()), "the stored digest is lower-case hex"


# ------------------------------------------------------------------------------------------- SecretBox


def test_secret_box_round_trip_and_fresh_ciphertext() -> None:
    box = SecretBox(Fernet.generate_key())
    plaintext = '{"api_key": "binance-key", "api_secret": "binance-secret ünïcode"}'
    first, second = box.encrypt(plaintext), box.encrypt(plaintext)
    assert first != second, "a random IV per encryption"
    assert "binance" not in first
    assert box.decrypt(first) == plaintext == box.decrypt(second)


def test_secret_box_refuses_a_wrong_key_or_a_tampered_token() -> None:
    token = SecretBox(Fernet.generate_key()).encrypt("credentials")
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        SecretBox(Fernet.generate_key()).decrypt(token)
    box = SecretBox(Fernet.generate_key())
    good = box.encrypt("credentials")
    tampered = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        box.decrypt(tampered)
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        box.decrypt("not a token")


def test_secret_key_setting_is_used_and_validated(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    token = SecretBox(key.encode()).encrypt("x")
    box = SecretBox.from_settings(key, tmp_path / "unused.key")
    assert box.decrypt(token) == "x"
    assert not (tmp_path / "unused.key").exists(), "with SECRET_KEY no key file is written"
    with pytest.raises(ConfigurationError, match="SECRET_KEY must be a Fernet key"):
        SecretBox.from_settings("not-a-fernet-key", tmp_path / "unused.key")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_key_file_is_created_once_with_mode_0600(tmp_path: Path, umask: int) -> None:
    key_file = tmp_path / "nested" / "dir" / "secret.key"
    previous = os.umask(umask)
    try:
        box = SecretBox.from_settings(None, key_file)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, "readable by the owner only, whatever the umask"
    content = key_file.read_bytes()
    Fernet(content)  # a valid Fernet key
    token = box.encrypt("stored before a restart")
    again = SecretBox.from_settings(None, key_file)
    assert key_file.read_bytes() == content, "an existing key file is reused, never replaced"
    assert again.decrypt(token) == "stored before a restart"
