"""What the alert center's tests share: the stored alerts, in order."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import models


async def stored_alerts(sessions: async_sessionmaker[AsyncSession]) -> list[models.Alert]:
    async with sessions() as session:
        return list((await session.scalars(select(models.Alert).order_by(models.Alert.id))).all())
