"""The dashboard's login: an API key typed once, then a signed cookie that names the key, never holds it.

The cookie is `<key id>.<issued, unix seconds>.<signature>`, signed with a key derived from the agent's SECRET_KEY
over the id, the time and the stored key's hash. Every request looks the key up again, so a revoked key ends its
sessions at once, and a database leak (hashes) is not enough to forge one. Sessions last `SESSION_HOURS` on the
wall clock. Forms carry a CSRF token derived from the cookie; the cookie is HttpOnly and SameSite=Strict."""

from __future__ import annotations

import hmac

from fastapi import Request
from sqlalchemy import select

from app.api.auth import Principal
from app.bootstrap import Agent
from app.core.security import hash_api_key
from app.db import models
from app.db.repositories.api_keys import ApiKeyRepository

COOKIE = "ta_session"
SESSION_HOURS = 12
_SESSION = "dashboard-session"
_CSRF = "dashboard-csrf"


def _principal(row: models.ApiKey) -> Principal:
    return Principal(role=row.role, account_id=row.account_id, key_prefix=row.prefix, key_id=row.id)


async def log_in(agent: Agent, key: str) -> tuple[Principal, str] | None:
    """The key's principal and a new session cookie's value; None for an unknown or revoked key."""
    async with agent.sessions() as session:
        row = await ApiKeyRepository(session).find(hash_api_key(key.strip()))
    if row is None:
        return None
    issued = int(agent.wall_clock.now().timestamp())
    message = f"{row.id}.{issued}"
    return _principal(row), f"{message}.{agent.secrets.sign(_SESSION, f'{message}.{row.key_hash}')}"


async def session_principal(request: Request) -> Principal | None:
    """The logged-in key, or None (no cookie, a forged or expired one, or a key revoked since)."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    key_id, issued = int(parts[0]), int(parts[1])
    agent: Agent = request.app.state.agent
    age_s = agent.wall_clock.now().timestamp() - issued
    if age_s < -60 or age_s > SESSION_HOURS * 3600:
        return None
    async with agent.sessions() as session:
        row = await session.scalar(
            select(models.ApiKey).where(models.ApiKey.id == key_id, models.ApiKey.revoked_at.is_(None))
        )
    if row is None:
        return None
    expected = agent.secrets.sign(_SESSION, f"{key_id}.{issued}.{row.key_hash}")
    if not hmac.compare_digest(expected, parts[2]):
        return None
    principal = _principal(row)
    request.state.principal = principal  # the audit entry of a form's POST names the key, as the API's do
    return principal


def csrf_token(request: Request) -> str:
    """The token a form of this session must send back (a page of another site cannot read it)."""
    agent: Agent = request.app.state.agent
    return agent.secrets.sign(_CSRF, request.cookies.get(COOKIE, ""))


def csrf_ok(request: Request, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(request), token or "")
