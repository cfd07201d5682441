"""Stored alerts: the newest per dedup key (kind, subject) and the lock on that key across processes, the claims of
the processes sending pending alerts, the dashboard's recent list, and counts."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Alert

PENDING = "pending"


def key_lock_id(kind: str, subject: str) -> int:
    """The PostgreSQL advisory lock of a dedup key: 64 bits of a hash of it (stable across processes and versions,
    unlike `hash()`), prefixed so that it is not another lock's number by design (by chance, one in 2^64: two
    unrelated holders would only wait for each other)."""
    digest = hashlib.blake2b(f"alerts\0{kind}\0{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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

    async def lock_key(self, kind: str, subject: str) -> None:
        """Hold the dedup key until this transaction ends, against every process on the database: the newest row
        read next is still the newest when the transaction inserts or counts a repeat. PostgreSQL: the key's
        advisory lock (other keys go on). SQLite: the database's write lock, taken now by a write that changes
        nothing (a plain read would not begin the transaction: another process could insert between the read
        and the write); SQLite has one writer at a time anyway, and an alert's transaction is short."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(select(func.pg_advisory_xact_lock(key_lock_id(kind, subject))))
        else:
            await self.session.execute(
                update(Alert).where(Alert.id == -1).values(repeats=Alert.repeats),
                execution_options={"synchronize_session": False},
            )

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
        """Oldest first: the alerts whose delivery is in that state (`pending`: being sent, or left by a process
        that stopped)."""
        query = select(Alert).where(Alert.delivery == delivery).order_by(Alert.id)
        return list((await self.session.scalars(query)).all())

    # ------------------------------------------------------------------------------- senders' claims
    async def claim_unsent(self, holder: str, now: datetime, until: datetime) -> list[Alert]:
        """Claim for `holder`, until `until`, every pending alert nobody is sending (no claim, or one that ended
        at or before `now`: its sender was killed, or stopped midway), and return them oldest first. One statement:
        two processes claiming at once get disjoint rows (PostgreSQL re-checks a row another claimer has just
        updated, and skips it; SQLite runs one write at a time)."""
        claim = (
            update(Alert)
            .where(Alert.delivery == PENDING, or_(Alert.sending_until.is_(None), Alert.sending_until <= now))
            .values(sending_by=holder, sending_until=until)
            .returning(Alert)
        )
        rows = await self.session.scalars(claim, execution_options={"synchronize_session": False})
        return sorted(rows, key=lambda row: row.id)

    async def renew_claim(self, alert_id: int, holder: str, until: datetime) -> bool:
        """Extend `holder`'s claim on a pending alert; False when it is no longer theirs (it ended and another
        process took it over) or the alert is no longer pending."""
        renew = (
            update(Alert)
            .where(Alert.id == alert_id, Alert.sending_by == holder, Alert.delivery == PENDING)
            .values(sending_until=until)
        )
        result = await self.session.execute(renew, execution_options={"synchronize_session": False})
        return bool(getattr(result, "rowcount", 0))

    async def release_claims(self, holder: str) -> int:
        """End `holder`'s claims on the alerts still pending (sends it gave up when stopping): the next resender
        takes them at once instead of waiting for the claims to run out."""
        release = (
            update(Alert)
            .where(Alert.sending_by == holder, Alert.delivery == PENDING)
            .values(sending_by=None, sending_until=None)
        )
        result = await self.session.execute(release, execution_options={"synchronize_session": False})
        return int(getattr(result, "rowcount", 0))

    async def record_delivery(self, alert_id: int, outcome: str, delivered_at: datetime | None) -> None:
        """What became of a send; the claim ends with it."""
        done = (
            update(Alert)
            .where(Alert.id == alert_id)
            .values(delivery=outcome, delivered_at=delivered_at, sending_by=None, sending_until=None)
        )
        await self.session.execute(done, execution_options={"synchronize_session": False})

    async def next_claim_end(self, holder: str) -> datetime | None:
        """When the first claim of another process on a pending alert ends (the moment to look again), or None."""
        query = select(func.min(Alert.sending_until)).where(
            Alert.delivery == PENDING, Alert.sending_until.is_not(None), Alert.sending_by != holder
        )
        return await self.session.scalar(query)
