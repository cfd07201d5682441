"""The alert center: every alert stored once per quiet period, and sent, without ever holding up the caller.

`emit` only queues the event (stamped with the wall clock's time). A background task on the running event loop
stores it and starts its delivery: a trading decision never waits for the database or a webhook, and a failing one
never raises into the code that raised the alert.

Dedup: the key is (kind, subject). When the newest stored alert with that key began less than `quiet_s` ago on the
wall clock, the event is a repeat: counted on that row (`repeats`, `last_at`), not stored again and not sent. The
rows are the memory, so the quiet period holds across restarts and across processes sharing the database (two
processes raising the same alert in the same instant can both send it: no lock is taken for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from prometheus_client import Counter
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.metrics import AgentMetrics
from app.core.security import redact
from app.db.models import Alert
from app.db.repositories.alerts import AlertRepository
from app.services.alerts.delivery import DELIVERED, NOT_CONFIGURED, AppriseDelivery, Delivery
from app.services.alerts.events import AlertEvent, AlertKind, Severity

log = logging.getLogger(__name__)

PENDING = "pending"
MAX_QUEUED = 1000  # events waiting to be stored; beyond, new ones are dropped (and counted), the caller never waits
CLOSE_WAIT_S = 10.0
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
    ) -> None:
        """`delivery`: where alerts go (default: apprise to `urls`; none when there are no URLs). `secrets`: words
        never to store or send (the configuration's secrets), on top of anything that looks like a key."""
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.quiet_s = quiet_s
        self._apprise = AppriseDelivery(urls) if urls and delivery is None else None
        if delivery is None and self._apprise is not None and self._apprise.configured:
            delivery = self._apprise
        self._delivery = delivery
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._queue: asyncio.Queue[tuple[AlertEvent, datetime]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
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
        `pending`)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self.flush()
        self._closed = True
        tasks = [t for t in [self._worker, *self._sending] if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._queue is not None and not self._queue.empty():
            log.warning("%d alert(s) not stored: the agent stopped first", self._queue.qsize())

    async def resend_unsent(self) -> int:
        """Send again the alerts a stopped or killed process left `pending` (its send may or may not have gone out:
        an alert twice is better than a halt nobody hears of). Call it where the trading loop starts: one per
        database. Returns how many are sent again."""
        if self._delivery is None:
            return 0
        async with self.sessions() as session:
            rows = await AlertRepository(session).with_delivery(PENDING)
        for row in rows:
            event = AlertEvent(
                AlertKind(row.kind),
                row.subject,
                row.title,
                row.message,
                cast(Severity, row.severity),  # stored from an AlertEvent's severity
                row.account_id,
            )
            task = asyncio.create_task(self._send(row.id, event, row.title, row.message, row.first_at))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(rows)

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
        async with self.sessions.begin() as session:
            repo = AlertRepository(session)
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
                    delivery=PENDING if self._delivery is not None else NOT_CONFIGURED,
                )
            )
            alert_id = row.id
        self._count(event, "stored")
        if self._delivery is not None:
            task = asyncio.create_task(self._send(alert_id, event, title, message, at), name=f"alert-{alert_id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, alert_id: int, event: AlertEvent, title: str, message: str, at: datetime) -> None:
        assert self._delivery is not None
        body = f"{message}\n\n{event.subject} - {at:%Y-%m-%d %H:%M:%S} UTC"
        try:
            outcome = await self._delivery.send(f"[{event.severity.upper()}] {title}", body, event.severity)
        except Exception as exc:  # a Delivery that breaks its promise not to raise
            outcome = f"failed: {type(exc).__name__}: {self._clean(str(exc))}"
        if outcome != DELIVERED:
            log.warning("alert %s (%s about %s) not delivered: %s", alert_id, event.kind, event.subject, outcome)
        self._count(event, "delivered" if outcome == DELIVERED else "failed")
        try:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Alert)
                    .where(Alert.id == alert_id)
                    .values(delivery=outcome, delivered_at=self.wall_clock.now() if outcome == DELIVERED else None)
                )
        except Exception:
            log.exception("the delivery of alert %s could not be recorded", alert_id)

    def _count(self, event: AlertEvent, outcome: str) -> None:
        if self._counter is not None:
            self._counter.labels(str(event.kind), outcome).inc()
