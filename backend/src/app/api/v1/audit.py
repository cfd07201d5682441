"""The audit log: every mutating request (refused ones too), newest first, for operators (admin key only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.auth import AdminPrincipal
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.bootstrap import Agent
from app.db.repositories.api_keys import ApiKeyRepository
from app.schemas.api import MAX_DB_ID, AuditEntryView

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=error_responses(401, 403))
AgentDep = Annotated[Agent, Depends(get_agent)]


@router.get("", response_model=list[AuditEntryView], responses=error_responses(422))
async def audit_log(
    agent: AgentDep,
    _: AdminPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    account_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID, description="Only this account's entries")] = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID, description="Page: entries older than this id")] = None,
) -> list[AuditEntryView]:
    """Mutating requests, newest first: who, what, when and the status they got. Admin only: an account key
    answers 403."""
    async with agent.sessions() as session:
        rows = await ApiKeyRepository(session).audit_log(limit=limit, account_id=account_id, before_id=before_id)
    return [AuditEntryView.model_validate(row) for row in rows]
