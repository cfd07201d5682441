"""`trading-agent worker --concurrency N`: runs the queue's jobs, N at a time.

Each job is one account's cycle of one candle, made exactly as the one-process loop makes it
(`DecisionEngine.make_trading_decision(trigger="loop")`), at the job's candle (`JobClock`): a worker has no market
clock of its own. What a worker needs of an account comes from the database when it takes the account (the engine's
`AccountLocks`): its paper venue is restored from the stored ledger, positions and orders, and decisions another
worker left pending when it was killed are marked interrupted. A second decision of a candle is refused by the
database; a retried job then finds the first one and stops there.

SIGTERM or SIGINT: no new job is started, the running ones finish (up to SHUTDOWN_GRACE_S), then the worker exits.
SIGKILL: its jobs stay `doing` until the scheduler sees its heartbeat stop and queues them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import datetime

from app.core.config import Settings
from app.core.errors import TemporaryError
from app.core.timeframes import timeframe_delta
from app.jobs.clock import JobClock
from app.jobs.queue import CHECK, DECIDE, ensure_schema, queue_app
from app.jobs.stats import WorkerStatsWriter

log = logging.getLogger(__name__)

REALTIME_MARKETS = ("binanceusdm", "hyperliquid")


def default_name() -> str:
    return f"worker-{socket.gethostname()}-{os.getpid()}"


async def run_worker(settings: Settings, *, concurrency: int, name: str | None = None) -> None:
    """Run jobs until SIGTERM/SIGINT."""
    from app.bootstrap import build_agent

    name = name or default_name()
    await ensure_schema(settings.database_url)
    clock = JobClock()
    agent = await build_agent(settings, clock=clock)
    step = timeframe_delta(settings.interval)
    realtime = settings.market_source in REALTIME_MARKETS
    stats = WorkerStatsWriter(
        agent.sessions, agent.wall_clock, name=name, concurrency=concurrency, every_s=settings.worker_heartbeat_s
    )
    app = queue_app(settings.database_url)
    engine = agent.engine

    async def decide(account_id: int, cycle_time: str, enqueued_at: str) -> None:
        candle = datetime.fromisoformat(cycle_time)
        stats.counters.jobs += 1
        if realtime and agent.wall_clock.now() >= candle + step:
            log.warning(
                "account %s: the job of candle %s came after the next candle closed: skipped", account_id, cycle_time
            )
            return
        with clock.at(candle):
            try:
                result = await engine.make_trading_decision(None, account_id, trigger="loop")
                await engine.shadows_done()
            except Exception as exc:
                stats.counters.failures += 1
                if isinstance(exc, TemporaryError):
                    log.warning("decision job of account %s failed: %s", account_id, exc)
                else:
                    log.exception("decision job of account %s failed", account_id)
                raise
        stats.counters.decisions += 1
        if result.status == "error":
            stats.counters.failures += 1
        log.info("decision %s account %s candle %s: %s", result.id, account_id, cycle_time, result.status)

    async def check(account_id: int, cycle_time: str, enqueued_at: str) -> None:
        stats.counters.jobs += 1
        with clock.at(datetime.fromisoformat(cycle_time)):
            await engine.check_account(account_id)

    app.task(name=DECIDE)(decide)
    app.task(name=CHECK)(check)
    print(f"{agent.describe()}\n\nworker {name}: {concurrency} job(s) at a time", flush=True)
    beating = asyncio.create_task(stats.run())
    try:
        async with app.open_async():
            await app.run_worker_async(
                name=name,
                concurrency=concurrency,
                update_heartbeat_interval=settings.worker_heartbeat_s,
                stalled_worker_timeout=settings.worker_stalled_s,
                shutdown_graceful_timeout=settings.shutdown_grace_s,
                install_signal_handlers=True,
            )
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        with contextlib.suppress(Exception):
            await stats.write(stopped=True)
        await agent.close()
