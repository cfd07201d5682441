"""Per-account locks that hold across processes: who decides for an account, or sends its orders, right now.

In one process an `asyncio.Lock` per account is enough. When several processes share the database (workers and API
servers on PostgreSQL), the lock is also a lease row per account in `account_leases`: taken by one process until a
moment on the wall clock, renewed while it is held, and given back (ended, the row kept) when done. A process killed
while it holds one leaves it running; it ends at `until` and the next process takes it then. Nobody waits for a
lease forever: `wait_s` bounds the wait, then `AccountBusyError` says who holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock, WallClock
from app.core.errors import TemporaryError
from app.db.models import AccountLease
from app.db.upsert import insert_for

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting process asks again
PURPOSE_DECIDE, PURPOSE_EXECUTE = "decide", "execute"
LEASE = "account"  # the one lease row per account
# a lease given back ends at once for every process, whatever their clocks say (theirs may lag this one's a little)
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


def process_name() -> str:
    """This process, as leases and slots name their holder: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class AccountBusyError(TemporaryError):
    """Another process held the account's lease for longer than this one would wait."""


class AccountLocks:
    """Per-account locks for deciding (`decide`) and for sending orders (`execute`): one asyncio lock per purpose in
    this process, as before, and, when `sessions` is given (several processes share the database), one lease row per
    account held while any of them is. The lease is this process's: a decision's execution nested in the decision
    takes no second lease, and a halt from another process waits until the decision in flight there is done (its
    status is read again before any order is sent, so the decision sends none). `on_take(account_id)` runs each time
    the lease is taken after another process held it (or for the first time): what this process cached about the
    account may have been changed. Each take counts up the row's `version`, so a process that finds the version one
    past its own last take knows nobody held the account between, and keeps what it cached."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        wall_clock: Clock | None = None,
        holder: str | None = None,
        lease_s: float = 30.0,
        wait_s: float = 600.0,
        on_take: Callable[[int], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.wall_clock = wall_clock or WallClock()
        self.holder = holder or process_name()
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.on_take = on_take
        self._locks: defaultdict[tuple[str, int], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._guards: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)  # taking or giving back a lease
        self._holding: dict[int, tuple[int, asyncio.Task[None]]] = {}  # account -> (users in this process, renewal)
        self._versions: dict[int, int] = {}  # account -> the lease's version when this process last took it

    @property
    def shared(self) -> bool:
        return self.sessions is not None

    def decide(self, account_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self._hold(PURPOSE_DECIDE, account_id)

    def execute(self, account_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self._hold(PURPOSE_EXECUTE, account_id)

    @contextlib.asynccontextmanager
    async def _hold(self, purpose: str, account_id: int) -> AsyncIterator[None]:
        async with self._locks[(purpose, account_id)]:
            if self.sessions is None:
                yield
                return
            await self._enter(account_id)
            try:
                yield
            finally:
                await asyncio.shield(self._leave(account_id))

    async def _enter(self, account_id: int) -> None:
        async with self._guards[account_id]:
            held = self._holding.get(account_id)
            if held is not None:
                self._holding[account_id] = (held[0] + 1, held[1])
                return
            changed_hands = await self._take(account_id)
            self._holding[account_id] = (1, asyncio.create_task(self._renew(account_id)))
        if changed_hands and self.on_take is not None:
            self.on_take(account_id)

    async def _leave(self, account_id: int) -> None:
        async with self._guards[account_id]:
            users, renewal = self._holding[account_id]
            if users > 1:
                self._holding[account_id] = (users - 1, renewal)
                return
            del self._holding[account_id]
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            await self._give(account_id)

    async def _take(self, account_id: int) -> bool:
        """Take the lease (free, or its holder's time is up), asking again every POLL_S up to `wait_s`; True when
        another process held it since this one last did (or this one never did)."""
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while (version := await self._try_take(account_id)) is None:
            if asyncio.get_running_loop().time() >= deadline:
                raise AccountBusyError(
                    f"account {account_id} is busy: another process ({await self.holder_of(account_id)}) has held "
                    f"it for over {self.wait_s:g} s; try again later"
                )
            await asyncio.sleep(POLL_S)
        held_between = self._versions.get(account_id) != version - 1
        self._versions[account_id] = version
        return held_between

    async def _try_take(self, account_id: int) -> int | None:
        """The lease's new version when this process took it (it was free, or its holder's time was up), else None."""
        assert self.sessions is not None
        now = self.wall_clock.now()
        async with self.sessions.begin() as session:
            insert = insert_for(session)
            statement = (
                insert(AccountLease)
                .values(account_id=account_id, purpose=LEASE, holder=self.holder, until=self._until(now), version=1)
                .on_conflict_do_update(
                    index_elements=["account_id", "purpose"],
                    set_={"holder": self.holder, "until": self._until(now), "version": AccountLease.version + 1},
                    where=AccountLease.until < now,
                )
                .returning(AccountLease.holder, AccountLease.version)
            )
            row = (await session.execute(statement)).one_or_none()
        return row[1] if row is not None and row[0] == self.holder else None

    def _until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_s)

    async def _renew(self, account_id: int) -> None:
        """Push `until` on while the lease is held (a decision can outlast one lease: retries, slow models)."""
        assert self.sessions is not None
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                async with self.sessions.begin() as session:
                    row = await session.get(AccountLease, (account_id, LEASE), with_for_update=True)
                    if row is not None and row.holder == self.holder:
                        row.until = self._until(self.wall_clock.now())
            except Exception:  # the database hiccuped: the next renewal tries again before the lease ends
                log.warning("could not renew the lease of account %s", account_id, exc_info=True)

    async def _give(self, account_id: int) -> None:
        """End the lease now (the row stays, with its version: the next taker knows whether anyone held it between)."""
        assert self.sessions is not None
        try:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(AccountLease)
                    .where(
                        AccountLease.account_id == account_id,
                        AccountLease.purpose == LEASE,
                        AccountLease.holder == self.holder,
                    )
                    .values(until=RELEASED)
                )
        except Exception:  # the lease ends by itself at `until`
            log.warning("could not give back the lease of account %s", account_id, exc_info=True)

    async def release_all(self) -> None:
        """End every account's lease, whoever holds it: only for a process that is the one process on its database, at
        its start (what is held was left by its killed predecessor, which would otherwise hold it `lease_s` more)."""
        if self.sessions is None:
            return
        async with self.sessions.begin() as session:
            await session.execute(update(AccountLease).values(until=RELEASED))

    async def holder_of(self, account_id: int) -> str | None:
        if self.sessions is None:
            return None
        async with self.sessions() as session:
            holder: str | None = await session.scalar(
                select(AccountLease.holder).where(AccountLease.account_id == account_id, AccountLease.purpose == LEASE)
            )
            return holder
