"""Accounts, their strategy assignments and their status history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Account, AccountStatusChange, Position, StrategyAssignment

ACTIVE_STATUSES = ("ACTIVE", "REDUCING")
_TRADABLE_IDS = select(Account.id).where(Account.status.in_(ACTIVE_STATUSES)).order_by(Account.id)


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def all(self) -> list[Account]:
        return list((await self.session.scalars(select(Account).order_by(Account.id))).all())

    async def tradable_ids(self) -> list[int]:
        """The accounts the loop runs a cycle for (ACTIVE, and REDUCING which may only reduce), by id: read every
        cycle, as ids only (the account objects were built and dropped)."""
        return list((await self.session.scalars(_TRADABLE_IDS)).all())

    async def checked_at_start_ids(self) -> list[int]:
        """The accounts a start-up check has something to do for: live ones (their venue is the truth, read before
        the first cycle) and those with open positions (their stops). A flat paper account has nothing to check."""
        open_position = select(Position.id).where(Position.account_id == Account.id, Position.status == "open")
        query = select(Account.id).where((Account.mode == "live") | open_position.exists()).order_by(Account.id)
        return list((await self.session.scalars(query)).all())

    async def guarded_ids(self) -> list[int]:
        """Accounts the loop does not decide for (paused, halted) that still hold open positions: their stops are
        checked every cycle all the same."""
        query = (
            select(Account.id)
            .where(Account.status.not_in(("ACTIVE", "REDUCING")))
            .where(select(Position.id).where(Position.account_id == Account.id, Position.status == "open").exists())
            .order_by(Account.id)
        )
        return list((await self.session.scalars(query)).all())

    async def add(self, account: Account, *, reason: str, now: datetime) -> Account:
        self.session.add(account)
        await self.session.flush()
        self.session.add(
            StrategyAssignment(account_id=account.id, strategy_id=account.strategy_id, reason=reason, assigned_at=now)
        )
        await self.session.flush()
        return account

    async def set_status(
        self,
        account: Account,
        status: str,
        *,
        reason: str | None,
        now: datetime,
        key_prefix: str | None = None,
        request_id: str | None = None,
    ) -> AccountStatusChange:
        """Change the account's status and record the change, with its reason, in the account's history (`now`
        is the wall clock's)."""
        change = AccountStatusChange(
            account_id=account.id,
            from_status=account.status,
            to_status=status,
            reason=reason,
            key_prefix=key_prefix,
            request_id=request_id,
            changed_at=now,
        )
        account.status = status
        account.updated_at = now
        self.session.add(change)
        await self.session.flush()
        return change

    async def status_history(
        self, account_id: int, *, limit: int = 100, before_id: int | None = None
    ) -> list[AccountStatusChange]:
        """The account's status changes, newest first."""
        query = (
            select(AccountStatusChange)
            .where(AccountStatusChange.account_id == account_id)
            .order_by(AccountStatusChange.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(AccountStatusChange.id < before_id)
        return list((await self.session.scalars(query)).all())
