"""The alert center on a real database and a real webhook receiver (apprise `json://` to 127.0.0.1): an alert is
stored and sent once; a repeat within the quiet period is counted on its row and not sent; after the quiet period
(wall clock) it is sent again; the memory is the database (a new center, a restart, keeps the quiet period); a
delivery that fails is recorded with its reason, without the URL's secrets, and never raises into the caller."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import ManualClock
from app.db.repositories.alerts import AlertRepository
from app.services.alerts.center import AlertCenter
from app.services.alerts.events import AlertEvent, AlertKind
from tests.conftest import START
from tests.fakes.webhook_receiver import WebhookReceiver, receiver_fixture  # noqa: F401 (fixture)
from tests.integration.alerts_support import stored_alerts

pytestmark = pytest.mark.db

SECRET = "Sup3rSecretPassw0rd"
HALT = AlertEvent(AlertKind.ACCOUNT_HALTED, "account 1", "Account 1 halted", "halted by the test", "critical", None)


async def test_once_then_repeats_counted_then_again_after_the_quiet_period(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    wall = ManualClock(START)
    center = AlertCenter(sessions, wall, urls=[receiver.url()], quiet_s=3600)
    assert center.configured
    center.emit(HALT)
    await center.flush()
    [row] = await stored_alerts(sessions)
    assert (row.kind, row.subject, row.repeats, row.delivery) == ("account_halted", "account 1", 0, "delivered")
    assert row.first_at == START and row.delivered_at == START
    [sent] = receiver.received
    assert sent.body["title"] == "[CRITICAL] Account 1 halted" and "halted by the test" in sent.body["message"]
    assert sent.body["type"] == "failure"

    for minutes in (10, 59):  # within the hour: counted, not sent
        wall.set(START + timedelta(minutes=minutes))
        center.emit(HALT)
    await center.flush()
    [row] = await stored_alerts(sessions)
    assert row.repeats == 2 and row.last_at == START + timedelta(minutes=59) and row.first_at == START
    assert len(receiver.received) == 1

    other = AlertEvent(AlertKind.ACCOUNT_HALTED, "account 2", "Account 2 halted", "another account", "critical", 2)
    center.emit(other)  # another subject: its own alert
    wall.set(START + timedelta(minutes=61))  # the quiet period of the first one is over
    center.emit(HALT)
    await center.flush()
    rows = await stored_alerts(sessions)
    assert [(r.subject, r.repeats, r.delivery) for r in rows] == [
        ("account 1", 2, "delivered"),
        ("account 2", 0, "delivered"),
        ("account 1", 0, "delivered"),
    ]
    assert len(receiver.received) == 3
    await center.close()


async def test_the_quiet_period_survives_a_restart(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    wall = ManualClock(START)
    first = AlertCenter(sessions, wall, urls=[receiver.url()])
    first.emit(HALT)
    await first.close()
    wall.advance(timedelta(minutes=5))
    second = AlertCenter(sessions, wall, urls=[receiver.url()])  # a new process on the same database
    second.emit(HALT)
    await second.close()
    [row] = await stored_alerts(sessions)
    assert row.repeats == 1 and len(receiver.received) == 1


async def test_a_failed_delivery_is_recorded_without_secrets_and_never_raises(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    wall = ManualClock(START)
    failing = receiver.url("fail", user="alerts", password=SECRET)
    center = AlertCenter(sessions, wall, urls=[failing], secrets=[SECRET])
    center.emit(HALT)  # returns at once: nothing has been stored nor sent yet
    assert await stored_alerts(sessions) == []
    await center.flush()
    [row] = await stored_alerts(sessions)
    assert row.delivery.startswith("failed: JSON json://***:****@127.0.0.1:") and "error=500" in row.delivery
    assert SECRET not in row.delivery and row.delivered_at is None
    assert receiver.received[0].headers["Authorization"].startswith("Basic ")  # the password did go to the receiver

    # a receiver that is down: the connection is refused
    down = AlertCenter(sessions, wall, urls=["json://127.0.0.1:9/hook"])
    down.emit(AlertEvent(AlertKind.LOOP_BEHIND, "loop", "Loop behind", "late", "warning"))
    await down.flush()
    last = (await stored_alerts(sessions))[-1]
    assert last.kind == "loop_behind" and last.delivery.startswith("failed: ") and "onnection" in last.delivery
    await center.close()
    await down.close()


async def test_without_urls_alerts_are_stored_as_not_configured(sessions: async_sessionmaker[AsyncSession]) -> None:
    center = AlertCenter(sessions, ManualClock(START))
    assert not center.configured
    assert center.describe().startswith("not configured")
    center.emit(HALT)
    await center.close()
    [row] = await stored_alerts(sessions)
    assert row.delivery == "not configured"


async def test_secrets_in_a_message_are_not_stored_nor_sent(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    center = AlertCenter(sessions, ManualClock(START), urls=[receiver.url()], secrets=[SECRET])
    leaky = AlertEvent(
        AlertKind.ORDER_REJECTED,
        "account 1 BTC",
        "Order rejected",
        f"venue said: bad signature for key {SECRET}; api_key=abcdef123456 ta_admin_{'x' * 30}",
        account_id=None,
    )
    center.emit(leaky)
    await center.close()
    [row] = await stored_alerts(sessions)
    for text in (row.message, receiver.received[0].raw):
        assert SECRET not in text and "abcdef123456" not in text and "x" * 30 not in text
        assert "bad signature" in text


async def test_a_slow_receiver_holds_up_neither_emit_nor_the_storing_of_other_alerts(
    sessions: async_sessionmaker[AsyncSession], receiver: WebhookReceiver
) -> None:
    receiver.hold()
    center = AlertCenter(sessions, ManualClock(START), urls=[receiver.url()])
    center.emit(HALT)
    await asyncio.wait_for(receiver.arrived.wait(), 30)  # the first delivery is at the receiver, unanswered
    center.emit(AlertEvent(AlertKind.LOOP_BEHIND, "loop", "Loop behind", "late"))
    for _ in range(3000):  # stored while the first delivery still waits
        if len(await stored_alerts(sessions)) == 2:
            break
        await asyncio.sleep(0.01)
    rows = await stored_alerts(sessions)
    assert [r.delivery for r in rows] == ["pending", "pending"]
    receiver.release()
    await center.flush()
    assert [r.delivery for r in await stored_alerts(sessions)] == ["delivered", "delivered"]


async def test_recent_newest_first_and_counts(sessions: async_sessionmaker[AsyncSession]) -> None:
    wall = ManualClock(START)
    center = AlertCenter(sessions, wall)
    for event in (
        AlertEvent(AlertKind.MARKET_STALE, "market sim", "t", "m"),
        AlertEvent(AlertKind.LOOP_BEHIND, "loop", "t", "m"),
    ):
        wall.advance(timedelta(seconds=1))
        center.emit(event)
    await center.close()
    async with sessions() as session:
        repo = AlertRepository(session)
        assert [a.kind for a in await repo.recent()] == ["loop_behind", "market_data_stale"]
        assert [a.kind for a in await repo.recent(limit=1)] == ["loop_behind"]
        assert await repo.count_since(START + timedelta(seconds=2)) == 1
        latest = await repo.latest_for("loop_behind", "loop")
        assert latest is not None and latest.repeats == 0


def test_emit_outside_an_event_loop_neither_raises_nor_stores() -> None:
    center = AlertCenter(async_sessionmaker(), ManualClock(START))
    center.emit(HALT)  # dropped with a log line: there is no loop to store it on
    assert center.dropped == 0
