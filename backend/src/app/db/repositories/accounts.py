"""Accounts and their strategy assignments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Account, StrategyAssignment

ACTIVE_STATUSES = ("ACTIVE", "REDUCING")


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def all(self) -> list[Account]:
        return list((await self.session.scalars(select(Account).order_by(Account.id))).all())

    async def list_tradable(self) -> list[Account]:
        """Accounts the loop runs a cycle for (ACTIVE, and REDUCING which may only reduce)."""
        query = select(Account).where(Account.status.in_(ACTIVE_STATUSES)).order_by(Account.id)
        return list((await self.session.scalars(query)).all())

    async def add(self, account: Account, *, reason: str, now: datetime) -> Account:
        self.session.add(account)
        await self.session.flush()
        self.session.add(
            StrategyAssignment(account_id=account.id, strategy_id=account.strategy_id, reason=reason, assigned_at=now)
        )
        await self.session.flush()
        return account
