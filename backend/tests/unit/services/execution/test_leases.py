"""Per-account locks across processes (`AccountLocks` with a database): two instances on one database stand for two
processes (each its own holder name and its own in-process locks), on SQLite and PostgreSQL, with a manual wall clock
for the leases' ends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import ManualClock
from app.services.execution.leases import AccountBusyError, AccountLocks
from tests.conftest import START

pytestmark = pytest.mark.db


def _process(
    sessions: async_sessionmaker[AsyncSession], wall: ManualClock, name: str, taken: list[str], **kwargs: float
) -> AccountLocks:
    return AccountLocks(
        sessions=sessions, wall_clock=wall, holder=name, on_take=lambda a: taken.append(f"{name}:{a}"), **kwargs
    )


async def test_one_process_at_a_time_holds_an_account_and_drops_its_cache_only_after_another_held_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wall, taken, order = ManualClock(START), [], []
    first, second = _process(sessions, wall, "p1", taken), _process(sessions, wall, "p2", taken)
    inside = asyncio.Event()

    async def hold(locks: AccountLocks, name: str) -> None:
        async with locks.decide(7):
            order.append(f"{name} in")
            inside.set()
            await asyncio.sleep(0.2)
            order.append(f"{name} out")

    held = asyncio.create_task(hold(first, "p1"))
    await inside.wait()
    await hold(second, "p2")  # waits for p1's lease
    await held
    assert order == ["p1 in", "p1 out", "p2 in", "p2 out"]
    async with first.execute(7):  # p2 held it between: p1's cache of the account is dropped
        pass
    # nobody held it between: p1 keeps what it cached; nested in this process, the same lease
    async with first.decide(7), first.execute(7):
        pass
    assert taken == ["p1:7", "p2:7", "p1:7"]
    async with second.decide(8):  # another account: a lease of its own
        pass
    assert taken[-1] == "p2:8"


async def test_a_killed_holders_lease_ends_at_its_time_and_a_waiter_gives_up_with_the_holders_name(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wall, taken = ManualClock(START), []
    killed = _process(sessions, wall, "killed", taken, lease_s=30)
    assert await killed._take(3)  # taken, never given back: the process died holding it
    impatient = _process(sessions, wall, "impatient", taken, wait_s=0.3)
    with pytest.raises(AccountBusyError, match="another process \\(killed\\) has held it"):
        async with impatient.decide(3):
            pass
    waiting = _process(sessions, wall, "next", taken, lease_s=30)
    entered = asyncio.Event()

    async def take() -> None:
        async with waiting.decide(3):
            entered.set()

    task = asyncio.create_task(take())
    await asyncio.sleep(0.3)
    assert not entered.is_set(), "the lease has 30 s of wall clock left"
    wall.advance(timedelta(seconds=29))
    await asyncio.sleep(0.3)
    assert not entered.is_set()
    wall.advance(timedelta(seconds=2))
    await asyncio.wait_for(task, 10)
    assert entered.is_set() and taken == ["next:3"]


async def test_the_one_process_of_a_database_frees_at_start_what_its_killed_predecessor_held(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wall, taken = ManualClock(START), []
    killed = _process(sessions, wall, "killed", taken, lease_s=30)
    assert await killed._take(4)
    restarted = _process(sessions, wall, "restarted", taken, wait_s=0.3)
    with pytest.raises(AccountBusyError):
        async with restarted.decide(4):
            pass
    await restarted.release_all()  # `run` starting: it is the only process on the database
    async with restarted.decide(4):
        pass
    assert taken == ["restarted:4"]
