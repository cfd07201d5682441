"""The alert center: every alert stored once per quiet period, and sent, without ever holding up the caller.

`emit` only queues the event (stamped with the wall clock's time). A background task on the running event loop
stores it and starts its delivery: a trading decision never waits for the database or a webhook, and a failing one
never raises into the code that raised the alert.

Dedup: the key is (kind, subject). When the newest stored alert with that key began less than `quiet_s` ago on the
wall clock, the event is a repeat: counted on that row (`repeats`, `last_at`), not stored again and not sent. The
rows are the memory, so the quiet period holds across restarts and across processes sharing the database. Several
processes raising the same alert at the same instant (four workers seeing one stale asset) store and send it once:
the transaction that reads the newest row and then inserts or counts holds the key's lock (`AlertRepository.lock_key`:
an advisory lock on PostgreSQL, the write lock on SQLite), and only the process that inserted a row sends it.

Sending: a pending row is claimed by the center sending it (`sending_by`, `sending_until` = wall clock + `claim_s`),
renewed every third of `claim_s` while the send runs, ended when its outcome is recorded, and given up by `close`
for the sends it cancels. `resend_unsent` (where a loop starts) sends again what nobody is sending: the pending rows
whose claim has ended, claimed in one statement (two resenders never take the same row), so an alert another live
process is sending now is not sent twice. A sender killed mid-send leaves its claim to run out: the center that
called `resend_unsent` keeps looking, and sends the row once the claim has ended (at most `claim_s` after the kill).
A sender whose event loop stalls for longer than `claim_s` may see its alert sent a second time: an alert twice is
better than a halt nobody hears of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast

from prometheus_client import Counter
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.metrics import AgentMetrics
from app.core.security import redact
from app.db.models import Alert
from app.db.repositories.alerts import PENDING, AlertRepository
from app.services.alerts.delivery import DELIVERED, NOT_CONFIGURED, AppriseDelivery, Delivery
from app.services.alerts.events import AlertEvent, AlertKind, Severity

log = logging.getLogger(__name__)

MAX_QUEUED = 1000  # events waiting to be stored; beyond, new ones are dropped (and counted), the caller never waits
CLOSE_WAIT_S = 10.0
# How long a sender's claim on a pending alert lasts unless renewed (every third of it while the send runs): what a
# killed sender's alert waits before another process sends it again. Longer than an event loop ever stalls.
CLAIM_S = 30.0
_MIN_LOOK_S = 0.1  # the resender's shortest wait between two looks (a claim that just ended is taken at the next)
_SUBJECT_MAX, _TITLE_MAX = 200, 300


class AlertCenter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        wall_clock: Clock,
        *,
        urls: Sequence[str] = (),
        quiet_s: float = 3600,
        metrics: AgentMetrics | None = None,
        delivery: Delivery | None = None,
        secrets: Sequence[str] = (),
        claim_s: float = CLAIM_S,
    ) -> None:
        """`delivery`: where alerts go (default: apprise to `urls`; none when there are no URLs). `secrets`: words
        never to store or send (the configuration's secrets), on top of anything that looks like a key.
        `claim_s`: how long this center's claim on an alert it sends lasts unless renewed."""
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.quiet_s = quiet_s
        self.claim_s = claim_s
        # who sends: unique per center (a process may hold two, a test does), readable in the row
        self.holder = f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._apprise = AppriseDelivery(urls) if urls and delivery is None else None
        if delivery is None and self._apprise is not None and self._apprise.configured:
            delivery = self._apprise
        self._delivery = delivery
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._queue: asyncio.Queue[tuple[AlertEvent, datetime]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._resender: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0
        self._counter = (
            Counter(
                "agent_alerts_total",
                "Alerts raised, by kind and what became of them (stored, repeat, delivered, failed, dropped)",
                ["kind", "outcome"],
                registry=metrics.registry,
            )
            if metrics is not None
            else None
        )

    @property
    def configured(self) -> bool:
        """Alerts are sent somewhere (not only stored)."""
        return self._delivery is not None

    def describe(self) -> str:
        """The start-up line: where alerts go, never a URL."""
        if self._apprise is not None:
            return self._apprise.describe()
        if self._delivery is not None:
            return type(self._delivery).__name__
        return "not configured (stored and shown on the dashboard only)"

    # ------------------------------------------------------------------------------------------ emit
    def emit(self, event: AlertEvent) -> None:
        """Never raises, never blocks: queued; stored and delivered by a background task (started lazily on
        the running loop). Safe to call from any async code path of the agent."""
        try:
            self._enqueue(event)
        except Exception:  # an alert must never break what raised it
            log.exception("alert %s about %s could not be queued", event.kind, event.subject)

    def _enqueue(self, event: AlertEvent) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.warning("alert %s about %s raised outside the event loop: dropped", event.kind, event.subject)
            self._count(event, "dropped")
            return
        if self._closed:
            log.warning("alert %s about %s raised after the alert center closed: dropped", event.kind, event.subject)
            self._count(event, "dropped")
            return
        if self._queue is None:
            self._queue = asyncio.Queue(MAX_QUEUED)
        try:
            self._queue.put_nowait((event, self.wall_clock.now()))
        except asyncio.QueueFull:
            self.dropped += 1
            self._count(event, "dropped")
            log.warning("alert queue full: %s about %s dropped", event.kind, event.subject)
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(self._queue), name="alert-center")

    # ------------------------------------------------------------------------------------- lifecycle
    async def flush(self) -> None:
        """Wait until everything emitted so far is stored and its delivery ended."""
        if self._queue is not None:
            await self._queue.join()
        while self._sending:
            await asyncio.wait(set(self._sending))

    async def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Flush (for at most `wait_s`), then stop; deliveries still running are cancelled (their rows say
        `pending`, their claims given up: the next `resend_unsent`, here or in another process, sends them)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self.flush()
        self._closed = True
        cut_short = any(not t.done() for t in self._sending)
        tasks = [t for t in [self._worker, self._resender, *self._sending] if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._queue is not None and not self._queue.empty():
            log.warning("%d alert(s) not stored: the agent stopped first", self._queue.qsize())
        if cut_short:  # nobody sends them now: the next resender need not wait for the claims to run out
            try:
                async with asyncio.timeout(CLOSE_WAIT_S), self.sessions.begin() as session:
                    await AlertRepository(session).release_claims(self.holder)
            except Exception:
                log.exception("the claims on the alerts whose sends were cut short could not be given up")

    async def resend_unsent(self) -> int:
        """Send again the alerts a stopped or killed process left `pending` (its send may or may not have gone out:
        an alert twice is better than a halt nobody hears of), not the ones another live process is sending (their
        claims have not ended). Then keep looking, in the background until `close`, for the claims of killed
        senders that end later (a restart comes sooner than they do). Call it where a loop starts; several
        processes may: each row is claimed by one. Returns how many are sent again now."""
        if self._delivery is None or self._closed:
            return 0
        resent = await self._claim_and_resend()
        if self._resender is None or self._resender.done():
            self._resender = asyncio.create_task(self._look_for_unsent(), name="alert-resender")
        return resent

    async def _claim_and_resend(self) -> int:
        now = self.wall_clock.now()
        async with self.sessions.begin() as session:
            rows = await AlertRepository(session).claim_unsent(self.holder, now, self._claim_end(now))
        for row in rows:
            event = AlertEvent(
                AlertKind(row.kind),
                row.subject,
                row.title,
                row.message,
                cast(Severity, row.severity),  # stored from an AlertEvent's severity
                row.account_id,
            )
            self._start_send(row.id, event, row.title, row.message, row.first_at)
        return len(rows)

    async def _look_for_unsent(self) -> None:
        """Until cancelled: wait for the first claim of another process to end (at most `claim_s`: a claim taken
        meanwhile ends later than that), then send what nobody sends any more."""
        while True:
            try:
                async with self.sessions() as session:
                    ends = await AlertRepository(session).next_claim_end(self.holder)
                wait_s = self.claim_s
                if ends is not None:
                    wait_s = min(max((ends - self.wall_clock.now()).total_seconds(), _MIN_LOOK_S), self.claim_s)
                await asyncio.sleep(wait_s)
                resent = await self._claim_and_resend()
                if resent:
                    log.warning("%d alert(s) whose sender stopped before it was done: sent again", resent)
            except Exception:  # the database failed: look again later
                log.exception("alerts left unsent by another process could not be looked for")
                await asyncio.sleep(self.claim_s)

    # ----------------------------------------------------------------------------------------- work
    async def _work(self, queue: asyncio.Queue[tuple[AlertEvent, datetime]]) -> None:
        while True:
            event, at = await queue.get()
            try:
                await self._store(event, at)
            except Exception:  # the database failed: the alert is lost, said in the log, the center goes on
                log.exception("alert %s about %s could not be stored", event.kind, event.subject)
            finally:
                queue.task_done()

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    async def _store(self, event: AlertEvent, at: datetime) -> None:
        title, message = self._clean(event.title)[:_TITLE_MAX], self._clean(event.message)
        subject = event.subject[:_SUBJECT_MAX]  # the columns' sizes (a model's name can be long)
        sending = self._delivery is not None
        async with self.sessions.begin() as session:
            repo = AlertRepository(session)
            await repo.lock_key(event.kind, subject)  # until commit: no other process reads or inserts this key
            latest = await repo.latest_for(event.kind, subject)
            if latest is not None and (at - latest.first_at).total_seconds() < self.quiet_s:
                await session.execute(
                    update(Alert)
                    .where(Alert.id == latest.id)
                    .values(repeats=Alert.repeats + 1, last_at=max(at, latest.last_at))
                )
                self._count(event, "repeat")
                return
            row = await repo.add(
                Alert(
                    kind=str(event.kind),
                    subject=subject,
                    severity=event.severity,
                    title=title,
                    message=message,
                    account_id=event.account_id,
                    first_at=at,
                    last_at=at,
                    repeats=0,
                    delivery=PENDING if sending else NOT_CONFIGURED,
                    # claimed by this center from the start: nobody else's resend takes it while it is sent
                    sending_by=self.holder if sending else None,
                    sending_until=self._claim_end(self.wall_clock.now()) if sending else None,
                )
            )
            alert_id = row.id
        self._count(event, "stored")
        if sending:
            self._start_send(alert_id, event, title, message, at)

    def _claim_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.claim_s)

    def _start_send(self, alert_id: int, event: AlertEvent, title: str, message: str, at: datetime) -> None:
        task = asyncio.create_task(self._send(alert_id, event, title, message, at), name=f"alert-{alert_id}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, alert_id: int, event: AlertEvent, title: str, message: str, at: datetime) -> None:
        assert self._delivery is not None
        body = f"{message}\n\n{event.subject} - {at:%Y-%m-%d %H:%M:%S} UTC"
        sent = asyncio.ensure_future(self._delivery.send(f"[{event.severity.upper()}] {title}", body, event.severity))
        try:
            # the claim is renewed while the send runs (a slow webhook is not a killed sender)
            while not sent.done():
                await asyncio.wait({sent}, timeout=self.claim_s / 3)
                if not sent.done():
                    await self._renew_claim(alert_id)
            outcome = sent.result()
        except Exception as exc:  # a Delivery that breaks its promise not to raise
            outcome = f"failed: {type(exc).__name__}: {self._clean(str(exc))}"
        finally:
            sent.cancel()  # cancelled here (the center closes): the send goes with it
        if outcome != DELIVERED:
            log.warning("alert %s (%s about %s) not delivered: %s", alert_id, event.kind, event.subject, outcome)
        self._count(event, "delivered" if outcome == DELIVERED else "failed")
        try:
            async with self.sessions.begin() as session:
                await AlertRepository(session).record_delivery(
                    alert_id, outcome, self.wall_clock.now() if outcome == DELIVERED else None
                )
        except Exception:
            log.exception("the delivery of alert %s could not be recorded", alert_id)

    async def _renew_claim(self, alert_id: int) -> None:
        try:
            async with self.sessions.begin() as session:
                mine = await AlertRepository(session).renew_claim(
                    alert_id, self.holder, self._claim_end(self.wall_clock.now())
                )
            if not mine:
                log.warning("alert %s: another process took over its send (this one was late to renew)", alert_id)
        except Exception:  # the send goes on; the claim may run out, and the alert be sent twice
            log.exception("the claim on alert %s could not be renewed", alert_id)

    def _count(self, event: AlertEvent, outcome: str) -> None:
        if self._counter is not None:
            self._counter.labels(str(event.kind), outcome).inc()
