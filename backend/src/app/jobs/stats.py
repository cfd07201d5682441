"""Lag and throughput of the job queue: each worker's counters (written by the worker) and the queue's depth and oldest
job (read from procrastinate's table), for `/metrics` and `/health` on any API server."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.db.models import WorkerStats
from app.db.upsert import insert_for

log = logging.getLogger(__name__)

ALIVE_HEARTBEATS = 3  # a worker silent for this many heartbeats is shown as gone


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class WorkerCounters:
    jobs: int = 0
    decisions: int = 0
    failures: int = 0


class WorkerStatsWriter:
    """Writes this worker's row of `worker_stats` every `every_s` (and once more when it stops)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        wall_clock: Clock,
        *,
        name: str,
        concurrency: int,
        every_s: float,
    ) -> None:
        self.sessions = sessions
        self.wall_clock = wall_clock
        self.name = name
        self.concurrency = concurrency
        self.every_s = every_s
        self.counters = WorkerCounters()
        self.started_at = wall_clock.now()
        self._last: tuple[datetime, int] = (self.started_at, 0)

    async def run(self) -> None:
        while True:
            try:
                await self.write()
            except Exception:  # the database hiccuped: the next beat tries again
                log.warning("could not write the worker's stats", exc_info=True)
            await asyncio.sleep(self.every_s)

    async def write(self, *, stopped: bool = False) -> None:
        now = self.wall_clock.now()
        at, decided = self._last
        elapsed = (now - at).total_seconds()
        rate = (self.counters.decisions - decided) / elapsed if elapsed > 0 else 0.0
        self._last = (now, self.counters.decisions)
        values = {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname()[:120],
            "concurrency": self.concurrency,
            "started_at": self.started_at,
            "last_seen": now,
            "stopped_at": now if stopped else None,
            "jobs": self.counters.jobs,
            "decisions": self.counters.decisions,
            "failures": self.counters.failures,
            "cpu_s": cpu_seconds(),
            "decisions_per_s": rate,
        }
        async with self.sessions.begin() as session:
            insert = insert_for(session)
            update = {k: v for k, v in values.items() if k != "name"}
            await session.execute(
                insert(WorkerStats).values(**values).on_conflict_do_update(index_elements=["name"], set_=update)
            )


@dataclass
class WorkerView:
    name: str
    pid: int
    host: str
    concurrency: int
    alive: bool
    last_seen: datetime
    jobs: int
    decisions: int
    failures: int
    cpu_s: float
    decisions_per_s: float


@dataclass
class QueueStatus:
    depth: int  # jobs waiting
    running: int
    failed: int  # jobs that ended in failure (kept by procrastinate)
    oldest_age_s: float  # how long the oldest waiting job has waited (wall clock), 0 when none waits
    workers: list[WorkerView] = field(default_factory=list)

    @property
    def decisions_per_s(self) -> float:
        return sum(w.decisions_per_s for w in self.workers if w.alive)


async def queue_status(
    sessions: async_sessionmaker[AsyncSession], now: datetime, *, heartbeat_s: float
) -> QueueStatus | None:
    """The queue as it is now, or None when this database has no job queue (SQLite, or no scheduler or worker ever
    ran on it)."""
    async with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            return None
        present = await session.scalar(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"))
        if not present:
            return None
        counts = (
            await session.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status = 'todo'), count(*) FILTER (WHERE status = 'doing'),"
                    " count(*) FILTER (WHERE status = 'failed'),"
                    " min((args->>'enqueued_at')::timestamptz) FILTER (WHERE status = 'todo')"
                    " FROM procrastinate_jobs"
                )
            )
        ).one()
        rows = (await session.scalars(select(WorkerStats).order_by(WorkerStats.name))).all()
    oldest = counts[3]
    alive_after = now - timedelta(seconds=heartbeat_s * ALIVE_HEARTBEATS)
    return QueueStatus(
        depth=int(counts[0]),
        running=int(counts[1]),
        failed=int(counts[2]),
        oldest_age_s=max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
        workers=[
            WorkerView(
                name=r.name,
                pid=r.pid,
                host=r.host,
                concurrency=r.concurrency,
                alive=r.stopped_at is None and r.last_seen >= alive_after,
                last_seen=r.last_seen,
                jobs=r.jobs,
                decisions=r.decisions,
                failures=r.failures,
                cpu_s=r.cpu_s,
                decisions_per_s=r.decisions_per_s,
            )
            for r in rows
        ],
    )
