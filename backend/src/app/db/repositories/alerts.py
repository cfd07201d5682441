"""Stored alerts: the newest per dedup key (kind, subject), the dashboard's recent list, and counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Alert


class AlertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def recent(self, limit: int = 50, account_id: int | None = None, include_global: bool = True) -> list[Alert]:
        """Newest first. With `account_id`: that account's alerts, plus the agent-wide ones (no account) when
        `include_global`; without: every alert."""
        query = select(Alert).order_by(Alert.first_at.desc(), Alert.id.desc()).limit(limit)
        if account_id is not None:
            mine = Alert.account_id == account_id
            query = query.where(or_(mine, Alert.account_id.is_(None)) if include_global else mine)
        return list(await self.session.scalars(query))

    async def latest_for(self, kind: str, subject: str) -> Alert | None:
        """The newest alert with this dedup key."""
        query = (
            select(Alert)
            .where(Alert.kind == kind, Alert.subject == subject)
            .order_by(Alert.first_at.desc(), Alert.id.desc())
            .limit(1)
        )
        return await self.session.scalar(query)

    async def add(self, alert: Alert) -> Alert:
        self.session.add(alert)
        await self.session.flush()
        return alert

    async def get(self, alert_id: int) -> Alert | None:
        return await self.session.get(Alert, alert_id)

    async def count_since(self, when: datetime) -> int:
        """Alerts that began at or after `when` (repeats not counted)."""
        query = select(func.count()).select_from(Alert).where(Alert.first_at >= when)
        return int(await self.session.scalar(query) or 0)

    async def with_delivery(self, delivery: str) -> list[Alert]:
        """Oldest first: the alerts whose delivery is in that state (`pending`: sent by a process that stopped)."""
        query = select(Alert).where(Alert.delivery == delivery).order_by(Alert.id)
        return list((await self.session.scalars(query)).all())
