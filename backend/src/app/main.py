"""FastAPI app factory. The lifespan builds the agent and, when asked, runs the trading loop beside the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Depends, FastAPI

from app.api import health, metrics, openapi, protocol
from app.api.auth import MutationLimiter, VerifiedKeys
from app.api.docs import install_docs
from app.api.errors import install_error_handlers
from app.api.middleware import install_middleware
from app.api.v1 import accounts, alerts, audit, backtests, decisions, experiments, llm, strategies
from app.backtest import store as backtest_store
from app.backtest.jobs import BacktestJobs
from app.bootstrap import Agent, build_agent
from app.core.config import Settings
from app.core.heap import freeze_startup_objects
from app.web.router import install_dashboard

log = logging.getLogger(__name__)


async def _finish_cycle(task: asyncio.Task[None], grace_s: float) -> None:
    """Let the loop finish the cycle in flight (it stops before the next one) for `grace_s` at most, then cancel
    it: the decisions it leaves pending are then marked interrupted."""
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        log.warning("the decision cycle in flight did not finish within %g s: interrupting it", grace_s)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings | None = None,
    *,
    run_loop: bool = False,
    agent_factory: Callable[[Settings], Awaitable[Agent]] | None = None,
    freeze_startup: bool = False,
) -> FastAPI:
    """The API; `run_loop=True` also runs a decision cycle per account on every closed candle;
    `freeze_startup=True` (the served process) takes start-up's objects out of later garbage collections."""
    settings = settings or Settings()
    factory = agent_factory or build_agent

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = await factory(settings)
        if freeze_startup:
            freeze_startup_objects()
        app.state.agent = agent
        print(agent.describe(), flush=True)
        # Backtest jobs run in processes of their own; one left running or queued by a process that is gone
        # (this server's last run, a killed job) would otherwise show as running forever.
        interrupted = await backtest_store.mark_interrupted(agent.sessions, now=agent.wall_clock.now())
        if interrupted:
            log.warning("backtests left unfinished by a stopped process, marked failed: %s", interrupted)
        jobs = app.state.backtest_jobs = BacktestJobs(settings, agent.sessions, agent.wall_clock)
        task: asyncio.Task[None] | None = None
        if run_loop:
            # One loop per database: what is still pending now was left by a run that stopped or crashed, and so are
            # the accounts' leases and the model-call slots still held (a killed run's would hold them their full time)
            await agent.engine.interrupt_orphans(
                "interrupted: the agent stopped or crashed before this decision completed (found at start-up)"
            )
            await agent.engine.locks.release_all()
            await agent.llm.gate.release_all()
            resent = await agent.alerts.resend_unsent()  # what a stopped or killed run was still sending
            if resent:
                log.warning("%d alert(s) left unsent by a stopped run: sent again", resent)
            task = asyncio.create_task(agent.loop.run_forever(), name="trading-loop")
        try:
            yield
        finally:
            agent.loop.stop()
            await jobs.close()  # interrupts the backtests still running (their runs marked so)
            if task is not None:
                await _finish_cycle(task, settings.shutdown_grace_s)
            await agent.close()  # marks what the stopped cycle left pending as interrupted

    app = FastAPI(
        title="AI Trading Agent",
        version="0.1.0",
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # app.api.docs serves /docs from local assets
        redoc_url=None,
    )
    app.state.mutation_limiter = MutationLimiter(
        settings.api_mutations_per_minute, sessions=lambda: app.state.agent.sessions
    )  # counted in the database: every API process on it shares each key's limit
    app.state.verified_keys = VerifiedKeys()
    install_error_handlers(app)
    protocol.install_method_rules(app)
    openapi.install_openapi(app, interval=settings.interval, long_interval=settings.long_interval)
    install_middleware(app, max_body_bytes=settings.api_max_body_bytes)
    app.include_router(health.router)
    install_docs(app)
    install_dashboard(app)  # `/`: the pages, logged in with a key (a session cookie), not with the API's header
    # Every other route needs a key. On one that reads a body, once the key is checked: 415 when the body is not
    # JSON, 422 when its JSON types are not the schema's (app.api.protocol).
    keyed = [Depends(protocol.json_body)]
    for router in (
        metrics.router,
        decisions.router,
        strategies.router,
        accounts.router,
        audit.router,
        alerts.router,
        llm.router,
        experiments.router,
        backtests.router,
    ):
        app.include_router(router, dependencies=keyed)
    return app
