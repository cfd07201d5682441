"""Alerts with several processes on one database (issue 18: workers on one PostgreSQL; SQLite too): real OS
processes (spawned, each with its own engine and AlertCenter) and a real webhook receiver (apprise `json://` to
127.0.0.1).

- Processes raising the same alert at the same instant, many times over: each alert is stored once (the others'
  raises counted as its repeats) and reaches the receiver once.
- A pending alert another live process is sending now is not sent again by `resend_unsent`; the claim is renewed
  while a slow send runs; one whose sender was killed (SIGKILL) is sent again once its claim has run out, by one
  of two resenders; one whose send a stopping center cut short is sent again at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import ManualClock, WallClock
from app.db.session import create_engine, create_session_factory
from app.services.alerts.center import AlertCenter
from app.services.alerts.events import AlertEvent, AlertKind
from tests.conftest import START
from tests.fakes.webhook_receiver import WebhookReceiver, receiver_fixture  # noqa: F401 (fixture)
from tests.integration.alerts_support import stored_alerts

pytestmark = pytest.mark.db

PROCESSES = 4  # issue 18's example: four workers seeing the same stale asset
ROUNDS = 15
HANG_GUARD_S = 120  # a process that does not finish within this is a failure, not a slow machine
LONG_CLAIM_S = 600  # no claim runs out by itself during a test: only a clock moved by the test ends one
HALT = AlertEvent(AlertKind.ACCOUNT_HALTED, "account 1", "Account 1 halted", "halted by the test", "critical", 1)


def _stale(round_: int) -> AlertEvent:
    return AlertEvent(AlertKind.MARKET_STALE, f"market sim ASSET{round_}", "Stale data", "no candle for 30 minutes")


# ------------------------------------------------------------------------------ the child processes
def _raise_each_round(database_url: str, hook: str, barrier: Barrier, rounds: int) -> None:
    """A process of its own: every round, once all processes are at the barrier, raise that round's alert."""

    async def main() -> None:
        engine = create_engine(database_url)
        center = AlertCenter(create_session_factory(engine), WallClock(), urls=[hook])
        try:
            for round_ in range(rounds):
                barrier.wait()  # blocking on purpose: nothing else of this process runs meanwhile
                center.emit(_stale(round_))
                await center.flush()
        finally:
            await center.close()
            await engine.dispose()

    asyncio.run(main())


def _send_halt(database_url: str, hook: str) -> None:
    """A process of its own that raises a halt and waits until its send is answered."""

    async def main() -> None:
        engine = create_engine(database_url)
        center = AlertCenter(create_session_factory(engine), WallClock(), urls=[hook], claim_s=LONG_CLAIM_S)
        try:
            center.emit(HALT)
            await center.flush()
        finally:
            await center.close()
            await engine.dispose()

    asyncio.run(main())


_SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this one's loop or engine


async def _join(process: multiprocessing.process.BaseProcess) -> int | None:
    await asyncio.to_thread(process.join, HANG_GUARD_S)
    if process.is_alive():
        process.kill()
        await asyncio.to_thread(process.join)
        raise AssertionError(f"process {process.pid} did not finish within {HANG_GUARD_S} s")
    return process.exitcode


# ------------------------------------------------------------------------------------ helpers


async def _sender_at_the_receiver(receiver: WebhookReceiver, database_url: str) -> multiprocessing.Process:
    """A process sending a halt, its request at the (held) receiver, unanswered."""
    receiver.hold()
    sender = _SPAWN.Process(target=_send_halt, args=(database_url, receiver.url("a")), daemon=True)
    sender.start()
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            await receiver.arrived.wait()
    except TimeoutError:
        sender.kill()
        raise AssertionError("the sender's request never reached the receiver") from None
    return sender


def _resends(receiver: WebhookReceiver) -> list[str]:
    return [r.path for r in receiver.received if r.path != "/a"]


# -------------------------------------------------------------------------------------- tests
async def test_processes_raising_one_alert_at_once_store_and_send_it_once(
    sessions: async_sessionmaker[AsyncSession], database_url: str, receiver: WebhookReceiver
) -> None:
    barrier = _SPAWN.Barrier(PROCESSES, timeout=HANG_GUARD_S)
    processes = [
        _SPAWN.Process(target=_raise_each_round, args=(database_url, receiver.url(), barrier, ROUNDS), daemon=True)
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    codes = [await _join(process) for process in processes]
    assert codes == [0] * PROCESSES

    rows = await stored_alerts(sessions)
    subjects = [r.subject for r in rows]
    assert sorted(subjects) == sorted(_stale(n).subject for n in range(ROUNDS)), subjects  # one row each
    assert all(r.repeats == PROCESSES - 1 for r in rows), [(r.subject, r.repeats) for r in rows]
    assert all(r.delivery == "delivered" and r.sending_by is None for r in rows), [r.delivery for r in rows]
    sent = sorted(r.body["message"].split("\n")[-1].split(" - ")[0] for r in receiver.received)
    assert sent == sorted(subjects)  # one delivery each


async def test_an_alert_a_live_process_is_sending_is_not_sent_again_by_another(
    sessions: async_sessionmaker[AsyncSession], database_url: str, receiver: WebhookReceiver
) -> None:
    sender = await _sender_at_the_receiver(receiver, database_url)
    try:
        other = AlertCenter(sessions, WallClock(), urls=[receiver.url("b")], claim_s=LONG_CLAIM_S)
        assert await other.resend_unsent() == 0  # it is being sent: its sender's claim has not ended
        [row] = await stored_alerts(sessions)
        assert row.delivery == "pending" and row.sending_by is not None
        assert row.sending_by.split(":")[1] == str(sender.pid)  # host:pid:id
        receiver.release()
        assert await _join(sender) == 0
        await other.close()
    finally:
        if sender.is_alive():
            sender.kill()
    [row] = await stored_alerts(sessions)
    assert row.delivery == "delivered" and row.sending_by is None and row.sending_until is None
    assert [r.path for r in receiver.received] == ["/a"] and _resends(receiver) == []


async def test_an_alert_whose_sender_was_killed_is_sent_again_once_its_claim_has_run_out(
    sessions: async_sessionmaker[AsyncSession], database_url: str, receiver: WebhookReceiver
) -> None:
    sender = await _sender_at_the_receiver(receiver, database_url)
    sender.kill()  # SIGKILL while its send waits for an answer: no chance to record anything
    assert await _join(sender) == -signal.SIGKILL
    receiver.release()
    [row] = await stored_alerts(sessions)
    assert row.delivery == "pending"

    # Two other processes' resenders (an engine each), on clocks of their own
    engines = [create_engine(database_url) for _ in range(2)]
    now = datetime.now(UTC)  # after the sender's claim began
    clocks = [ManualClock(now) for _ in engines]
    resenders = [
        AlertCenter(create_session_factory(engine), clock, urls=[receiver.url(f"b{n}")], claim_s=LONG_CLAIM_S)
        for n, (engine, clock) in enumerate(zip(engines, clocks, strict=True))
    ]
    try:
        # before the claim runs out nobody can tell a killed sender from a slow one
        assert [await r.resend_unsent() for r in resenders] == [0, 0]
        for clock in clocks:
            clock.set(now + timedelta(seconds=LONG_CLAIM_S + 1))  # the claim has run out
        resent = await asyncio.gather(*(r.resend_unsent() for r in resenders))
        assert sorted(resent) == [0, 1]  # claimed by one of them
        for resender in resenders:
            await resender.flush()
    finally:
        for resender in resenders:
            await resender.close()
        for engine in engines:
            await engine.dispose()
    [row] = await stored_alerts(sessions)
    assert row.delivery == "delivered" and row.sending_by is None
    assert len(_resends(receiver)) == 1, _resends(receiver)


async def test_a_slow_send_keeps_its_claim_renewed(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    """The claim is renewed while the send runs (every third of `claim_s`, real time): a webhook slower than the
    claim does not make its alert look abandoned to another process."""
    receiver.hold()
    wall = ManualClock(START)
    sender = AlertCenter(sessions, wall, urls=[receiver.url("a")], claim_s=0.3)
    sender.emit(HALT)
    await asyncio.wait_for(receiver.arrived.wait(), HANG_GUARD_S)
    [row] = await stored_alerts(sessions)
    first_end = row.sending_until
    wall.advance(timedelta(minutes=10))  # far past the first claim's end
    async with asyncio.timeout(HANG_GUARD_S):  # until the sender renews its claim (its next renewal)
        while first_end is not None and row.sending_until == first_end:
            await asyncio.sleep(0.05)
            [row] = await stored_alerts(sessions)
    other = AlertCenter(sessions, ManualClock(wall.now()), urls=[receiver.url("b")], claim_s=LONG_CLAIM_S)
    assert await other.resend_unsent() == 0
    assert first_end == START + timedelta(seconds=0.3)
    assert row.sending_until == wall.now() + timedelta(seconds=0.3) and row.sending_by == sender.holder
    receiver.release()
    await sender.flush()
    await other.close()
    await sender.close()
    [row] = await stored_alerts(sessions)
    assert row.delivery == "delivered" and _resends(receiver) == []


async def test_a_send_cut_short_by_close_is_sent_again_at_once(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    """A center that stops (SIGTERM) while a send waits gives its claim up: the next `run` need not wait for it."""
    receiver.hold()
    wall = ManualClock(START)
    stopping = AlertCenter(sessions, wall, urls=[receiver.url("a")], claim_s=LONG_CLAIM_S)
    stopping.emit(HALT)
    await asyncio.wait_for(receiver.arrived.wait(), HANG_GUARD_S)
    await stopping.close(wait_s=0)
    [row] = await stored_alerts(sessions)
    assert row.delivery == "pending" and row.sending_by is None and row.sending_until is None
    receiver.release()
    restarted = AlertCenter(sessions, wall, urls=[receiver.url("b")], claim_s=LONG_CLAIM_S)
    assert await restarted.resend_unsent() == 1
    await restarted.flush()
    await restarted.close()
    [row] = await stored_alerts(sessions)
    assert row.delivery == "delivered" and _resends(receiver) == ["/b"]
