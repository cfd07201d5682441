"""The job queue: procrastinate on the agent's own PostgreSQL database.

Two tasks, one job per (account, candle):

- `decide`: the account's decision cycle of that candle.
- `check`: a paused or halted account with positions: its venue read and its stops checked (no decision).

Every job of an account carries the lock `account:<id>`: procrastinate never starts a job while another with the same
lock runs, so no two workers work on one account at once. Its queueing lock `<task>:<id>:<candle>` keeps a second
copy of it out of the queue while the first waits. Behind both, the database refuses a second loop decision of one
(account, candle) (a unique index), whatever happens to the queue.

A worker that is killed leaves its jobs `doing`; once its heartbeat is older than `stalled_after_s`, the scheduler
puts them back in the queue (`retry_stalled`) and another worker runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

import procrastinate
import psycopg
from procrastinate import exceptions as queue_errors
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

DECIDE = "decide"
CHECK = "check"
TASKS = (DECIDE, CHECK)
BATCH = 500  # jobs per insert when a cycle is enqueued
_SCHEMA_LOCK = 18_000_018  # advisory lock: two processes starting at once install the queue's tables once


def conninfo(database_url: str) -> str:
    """The libpq connection string of the agent's PostgreSQL URL (psycopg speaks libpq, not SQLAlchemy's drivers)."""
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        raise ValueError("the job queue needs PostgreSQL (DATABASE_URL=postgresql://...)")
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


def queue_app(database_url: str, *, pool_size: int = 4) -> procrastinate.App:
    """The procrastinate app on the agent's database (open it with `open_async`)."""
    connector = procrastinate.PsycopgConnector(conninfo=conninfo(database_url), min_size=1, max_size=pool_size)
    return procrastinate.App(connector=connector)


async def ensure_schema(database_url: str) -> bool:
    """Install the queue's tables (procrastinate_*) unless they are there; True when this call installed them."""
    async with await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            row = await (await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
            if row is not None and row[0]:
                return False
            await conn.execute(SchemaManager.get_schema().encode())  # the package's own SQL file
            log.info("job queue tables installed")
            return True
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


async def enqueue(
    app: procrastinate.App, task: str, account_ids: Iterable[int], cycle_time: datetime, *, now: datetime
) -> list[int]:
    """One `task` job per account for the candle `cycle_time`; returns the ids of the jobs queued (a job already waiting
    for the same account and candle is not queued twice)."""
    jobs = []
    for account_id in account_ids:
        deferrer = app.configure_task(
            task, lock=f"account:{account_id}", queueing_lock=f"{task}:{account_id}:{cycle_time.isoformat()}"
        )
        jobs.append(
            deferrer.make_new_job(account_id=account_id, cycle_time=cycle_time.isoformat(), enqueued_at=now.isoformat())
        )
    ids: list[int] = []
    for start in range(0, len(jobs), BATCH):
        chunk = jobs[start : start + BATCH]
        try:
            ids.extend(job.id for job in await app.job_manager.batch_defer_jobs_async(chunk) if job.id is not None)
        except queue_errors.AlreadyEnqueued:  # one of them waits already (a restart in the same candle): one by one
            for job in chunk:
                try:
                    queued = await app.job_manager.defer_job_async(job)
                except queue_errors.AlreadyEnqueued:
                    continue
                if queued.id is not None:
                    ids.append(queued.id)
    return ids


async def unfinished(app: procrastinate.App, job_ids: Sequence[int]) -> int:
    """How many jobs from the first of `job_ids` to the last are still waiting or running: the ids of one cycle's jobs
    are one range (the scheduler alone queues jobs), read through the primary key (`id = ANY` of 10,000 ids was a
    sequential scan of the table at every poll)."""
    if not job_ids:
        return 0
    row = await app.connector.execute_query_one_async(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE id BETWEEN %(first)s AND %(last)s "
        "AND status IN ('todo', 'doing')",
        first=min(job_ids),
        last=max(job_ids),
    )
    return int(row["n"])


async def retry_stalled(app: procrastinate.App, *, stalled_after_s: float) -> list[int]:
    """Put back in the queue the jobs of workers whose heartbeat is older than `stalled_after_s` (killed, or frozen);
    returns their ids."""
    retried = []
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after_s):
        if job.id is None or job.task_name not in TASKS:
            continue
        await app.job_manager.retry_job(job)
        retried.append(job.id)
    if retried:
        log.warning("jobs of a stopped worker queued again: %s", retried)
    await app.job_manager.prune_stalled_workers(stalled_after_s)
    return retried
