"""Model calls: what each one cost, and the totals per model, account and day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.inserts import insert_rows
from app.db.models import Decision, LLMCall


@dataclass(frozen=True)
class UsageTotal:
    key: str
    calls: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    total_latency_ms: float = 0.0


class LLMCallRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_all(self, calls: list[LLMCall]) -> None:
        """Store new model calls (one statement); the objects stay outside the session."""
        await insert_rows(self.session, calls)

    async def spent_since(self, account_id: int, since: datetime) -> float:
        """USD spent on model calls by `account_id`'s own decisions from `since` on: an experiment's shadow decisions
        spend their variant's budget, never the account's (they must not make its real decisions hold)."""
        query = (
            select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0))
            .outerjoin(Decision, Decision.id == LLMCall.decision_id)
            .where(LLMCall.account_id == account_id, LLMCall.created_at >= since, Decision.shadow_of.is_(None))
        )
        return float((await self.session.scalar(query)) or 0.0)

    async def for_decision(self, decision_id: int) -> list[LLMCall]:
        query = select(LLMCall).where(LLMCall.decision_id == decision_id).order_by(LLMCall.id)
        return list((await self.session.scalars(query)).all())

    async def totals(
        self,
        by: Literal["model", "account", "day"],
        *,
        account_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageTotal]:
        """Calls, failures (any outcome but ok), tokens, cost and summed latency grouped by served model (else
        requested), account or UTC day; of one account or all, created in [since, until)."""
        key: ColumnElement[Any]
        if by == "model":
            key = func.coalesce(LLMCall.model_served, LLMCall.model_requested)
        elif by == "account":
            key = func.coalesce(cast(LLMCall.account_id, String), "-")
        else:
            key = func.substr(cast(LLMCall.created_at, String), 1, 10)
        query = select(
            key.label("key"),
            func.count(),
            func.sum(case((LLMCall.outcome == "ok", 0), else_=1)),
            func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
            func.coalesce(func.sum(LLMCall.completion_tokens), 0),
            func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
            func.coalesce(func.sum(LLMCall.latency_ms), 0.0),
        )
        if account_id is not None:
            query = query.where(LLMCall.account_id == account_id)
        if since is not None:
            query = query.where(LLMCall.created_at >= since)
        if until is not None:
            query = query.where(LLMCall.created_at < until)
        rows = (await self.session.execute(query.group_by(key).order_by(key))).all()
        return [
            UsageTotal(str(k), int(n), int(f or 0), int(p or 0), int(c or 0), float(cost or 0.0), float(ms or 0.0))
            for k, n, f, p, c, cost, ms in rows
        ]
