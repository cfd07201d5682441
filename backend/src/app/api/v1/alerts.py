"""Alerts, newest first, as the dashboard shows them.

An admin key sees every alert (or one account's, with `account_id`). An account key sees its own account's alerts
and the agent-wide ones (the loop behind, the market data stale, a model's circuit): those have no account because
they affect every account, so every key sees them. Another account's id answers 404, as everywhere in the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.auth import CurrentPrincipal, ensure_scope
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.bootstrap import Agent
from app.db.repositories.alerts import AlertRepository
from app.schemas.alerts import AlertView
from app.schemas.api import MAX_DB_ID

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]


@router.get("", response_model=list[AlertView], responses=error_responses(404, 422))
async def alerts(
    agent: AgentDep,
    principal: CurrentPrincipal,
    account_id: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="This account's alerts and the agent-wide ones")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[AlertView]:
    """Stored alerts, newest first: what happened, how often it repeated, and whether it was delivered."""
    if account_id is not None:
        ensure_scope(principal, account_id)
    elif not principal.is_admin:
        account_id = principal.account_id
    async with agent.sessions() as session:
        rows = await AlertRepository(session).recent(limit=limit, account_id=account_id)
    return [AlertView.model_validate(row) for row in rows]
