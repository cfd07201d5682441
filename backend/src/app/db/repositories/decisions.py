"""Stored decisions (one per account and cycle) with their provenance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from app.db.models import Decision


def symbols_key(symbols: list[str]) -> str:
    """The searchable form of a decision's assets: `,BTC,ETH,` (a LIKE on `,BTC,` finds BTC only)."""
    return "," + ",".join(symbols) + ","


class DecisionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, decision: Decision) -> Decision:
        self.session.add(decision)
        await self.session.flush()
        return decision

    async def get(self, decision_id: int) -> Decision | None:
        return await self.session.get(Decision, decision_id)

    async def history(
        self,
        account_id: int,
        *,
        limit: int = 100,
        symbol: str | None = None,
        before_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Decision]:
        """Newest first. `symbol` keeps decisions whose cycle covered that asset."""
        # The context snapshot and the prompt are the bulk of a row: not loaded for lists.
        query = (
            select(Decision)
            .options(defer(Decision.context_snapshot), defer(Decision.prompt))
            .where(Decision.account_id == account_id)
        )
        if before_id is not None:
            query = query.where(Decision.id < before_id)
        if since is not None:
            query = query.where(Decision.cycle_time >= since)
        if until is not None:
            query = query.where(Decision.cycle_time <= until)
        if symbol is not None:
            query = query.where(Decision.symbols_key.contains(symbols_key([symbol])))
        query = query.order_by(Decision.id.desc()).limit(limit)
        return list((await self.session.scalars(query)).all())

    async def last_cycle_time(self) -> datetime | None:
        return await self.session.scalar(select(func.max(Decision.cycle_time)))
