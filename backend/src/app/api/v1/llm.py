"""The model provider: usage of the model calls, the provider's health, and the OpenRouter key's rotation.

* `GET /api/v1/llm/usage`: calls, failures, tokens, cost and latency per model, from the stored calls (an admin
  key: every account, or one; an account key: its own account only).
* `GET /api/v1/llm/health`: the model circuits and the provider's word on the key (validity, credit left).
* `GET|PUT|DELETE /api/v1/llm/openrouter-key` (admin key): which key is in use (never the key: a fingerprint),
  set a new one (checked with the provider first, stored encrypted, used from the next call without a restart),
  or remove the stored one (back to `OPENROUTER_API_KEY`). A stored key wins over `OPENROUTER_API_KEY`. An
  agent started without any key runs the rule-based baseline: a key set then is used from the next start (the
  model deciding for real money-like positions does not change under a running loop without a restart).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import AdminPrincipal, CurrentPrincipal, MutatingAdmin, ensure_scope
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.bootstrap import Agent
from app.schemas.api import MAX_DB_ID, UTCDateTime
from app.services.llm.llm_metrics import HealthStatus, UsageMetrics
from app.services.llm.llm_settings import MAX_KEY_CHARS, MIN_KEY_CHARS, LLMSettingsStore, OpenRouterKeys, check_key_text
from app.services.llm.providers.key_check import KeyChecker

router = APIRouter(prefix="/api/v1/llm", tags=["llm"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]


class UsageReport(UsageMetrics):
    account_id: int | None = Field(..., description="The account counted; null: every account")
    since: datetime | None = Field(None, description="Calls from this time on (as stored with each call)")
    until: datetime | None = Field(None, description="Calls before this time")


class OpenRouterKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(
        ...,
        min_length=MIN_KEY_CHARS,
        max_length=MAX_KEY_CHARS,
        pattern=r"^[!-~]+$",
        description="The new OpenRouter key: printable ASCII without spaces (write-only: never shown again, stored "
        "encrypted)",
    )
    verify: bool = Field(True, description="Ask OpenRouter about the key first and refuse one it does not accept")


class OpenRouterKeyView(BaseModel):
    source: Literal["stored", "environment", "none"] = Field(
        ...,
        description="The key used from the next call: stored (set through the API or the CLI; wins over the "
        "environment), environment (OPENROUTER_API_KEY) or none",
    )
    fingerprint: str | None = Field(None, description="A one-way name of that key (never the key)")
    updated_at: datetime | None = Field(None, description="When the stored key was set (wall clock)")
    updated_by: str | None = Field(None, description="Who set it: an API key's prefix, or `cli`")
    environment_key: bool = Field(..., description="OPENROUTER_API_KEY is set (used when no key is stored)")
    in_use: bool = Field(..., description="The agent talks to OpenRouter (false: LLM_BASE_URL or the baseline)")
    detail: str | None = None


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _store(agent: Agent) -> LLMSettingsStore:
    if agent.llm.store is None:  # only an agent wired without a database store (never `build_agent`'s)
        raise HTTPException(status_code=409, detail="this agent keeps no LLM settings")
    return agent.llm.store


def _refuse_other_endpoint(agent: Agent) -> None:
    if agent.settings.llm_base_url:
        raise HTTPException(
            status_code=409,
            detail=f"LLM_BASE_URL is set: the agent talks to {agent.settings.llm_base_url} with LLM_API_KEY, and an "
            "OpenRouter key would not be used",
        )


async def _view(agent: Agent, detail: str | None = None) -> OpenRouterKeyView:
    env_key = agent.settings.openrouter_api_key
    env = env_key.get_secret_value() if env_key is not None else None
    choice = await OpenRouterKeys(_store(agent), env).choice()
    return OpenRouterKeyView(
        source=choice.source,
        fingerprint=choice.fingerprint,
        updated_at=choice.updated_at,
        updated_by=choice.updated_by,
        environment_key=bool(env),
        in_use=not agent.llm.is_simulated and not agent.settings.llm_base_url,
        detail=detail,
    )


@router.get("/usage", response_model=UsageReport, responses=error_responses(404, 422))
async def llm_usage(
    agent: AgentDep,
    principal: CurrentPrincipal,
    account_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_DB_ID, description="One account (an account key: its own, the default); admin: all"),
    ] = None,
    since: Annotated[UTCDateTime | None, Query(description="From this time (ISO 8601; without a zone: UTC)")] = None,
    until: Annotated[UTCDateTime | None, Query(description="Before this time (ISO 8601; without a zone: UTC)")] = None,
) -> UsageReport:
    """Model calls per model: calls, failures, tokens, cost and latency (`get_usage_metrics`), from every stored
    call, so a restart loses nothing."""
    if account_id is None and not principal.is_admin:
        account_id = principal.account_id
    if account_id is not None:
        ensure_scope(principal, account_id)
    start, end = _as_utc(since), _as_utc(until)
    metrics = await agent.llm.get_usage_metrics(account_id=account_id, since=start, until=end)
    return UsageReport(**metrics.model_dump(), account_id=account_id, since=start, until=end)


@router.get("/health", response_model=HealthStatus)
async def llm_health(agent: AgentDep, _: CurrentPrincipal) -> HealthStatus:
    """The model circuits and, for a real provider, its word on the API key: valid, and the credit left
    (asked at most once a minute)."""
    return await agent.llm.validate_api_health()


@router.get("/openrouter-key", response_model=OpenRouterKeyView, responses=error_responses(403, 409))
async def openrouter_key(agent: AgentDep, _: AdminPrincipal) -> OpenRouterKeyView:
    """Which OpenRouter key is used (its source and fingerprint; never the key)."""
    return await _view(agent)


@router.put(
    "/openrouter-key",
    response_model=OpenRouterKeyView,
    responses=error_responses(400, 403, 409, 413, 422, 429, 503),
)
async def set_openrouter_key(
    body: OpenRouterKeyRequest, agent: AgentDep, principal: MutatingAdmin
) -> OpenRouterKeyView:
    """Rotate the OpenRouter key: checked with OpenRouter (`GET /key`) unless `verify` is false, stored
    encrypted, and used from the next model call on, without a restart. It wins over OPENROUTER_API_KEY."""
    _refuse_other_endpoint(agent)
    store = _store(agent)
    try:
        key = check_key_text(body.api_key)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"api_key: {exc}") from None
    if body.verify:
        checker = KeyChecker(agent.settings.openrouter_base_url)
        health = await checker.ask(key, source="stored", fingerprint=None)
        if health.status == "invalid":
            raise HTTPException(status_code=400, detail=f"OpenRouter does not accept this key: {health.detail}")
        if health.status not in ("ok", "no_credit"):
            raise HTTPException(
                status_code=503,
                detail=f"the key cannot be checked now ({health.detail}); nothing was changed. Try again, or send "
                '"verify": false to store it unchecked',
            )
        spent = health.detail if health.status == "no_credit" else None
    else:
        spent = None
    await store.save_openrouter_key(key, by=principal.key_prefix)
    notes = [f"stored, but {spent}: calls fail until credit is added"] if spent else []
    if agent.llm.is_simulated:
        notes.append(
            "the agent started without a model key and runs the rule-based baseline: OpenRouter is used from the "
            "next start"
        )
    return await _view(agent, "; ".join(notes) or None)


@router.delete("/openrouter-key", response_model=OpenRouterKeyView, responses=error_responses(403, 404, 409, 429))
async def delete_openrouter_key(agent: AgentDep, _: MutatingAdmin) -> OpenRouterKeyView:
    """Remove the stored key: OPENROUTER_API_KEY is used from the next call on (without it, model calls fail
    with a clear error and decisions hold until a key is set)."""
    _refuse_other_endpoint(agent)
    if not await _store(agent).clear_openrouter_key():
        raise HTTPException(status_code=404, detail="no OpenRouter key is stored (OPENROUTER_API_KEY is used if set)")
    view = await _view(agent)
    if view.source == "none" and view.in_use:
        return view.model_copy(
            update={"detail": "no key left: model calls fail until a key is set (decisions hold meanwhile)"}
        )
    return view
