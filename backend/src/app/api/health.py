"""`GET /health`: is the agent alive, is it deciding, and which of its parts are simulated.

`status` is `ok` only when nothing stops or spoils decisions; otherwise `degraded`, with every reason in
`reasons`: the database cannot be reached, accounts' last cycles failed, the market cannot be reached, the
replay's data has ended, a model's circuit is open (or its provider refused the key when last asked), or, with
workers (PostgreSQL), the job queue waits with no worker alive or is more than a candle behind (`queue`).
`/health` needs no key: it never asks the provider about the key (that is the keyed `GET /api/v1/llm/health`)
and shows only the key's status and a short detail, never its credit nor its fingerprint.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import text

from app.api.deps import get_agent
from app.bootstrap import Agent
from app.core.timeframes import timeframe_seconds
from app.db.repositories.accounts import AccountRepository
from app.jobs.stats import queue_status
from app.services.llm.llm_metrics import HealthStatus
from app.trading.loop import Heartbeat

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(agent: Annotated[Agent, Depends(get_agent)]) -> dict[str, Any]:
    """Database reachability, loop heartbeat and pace, market reachability, model status and the simulated parts;
    `status` is `degraded` with `reasons` when decisions fail or cannot be made."""
    database = "ok"
    try:
        async with agent.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # report, never raise from the health check
        database = f"error: {type(exc).__name__}"
    beat = agent.loop.heartbeat
    model = await agent.llm.validate_api_health(ask_provider=False)  # never a request to the provider from here
    reasons = _reasons(agent, database, beat, model)
    live = await _live_accounts(agent)
    reasons += [f"live account {a['id']} is not traded: {a['refused']}" for a in live if a["refused"]]
    queue = await _queue(agent)
    if queue is not None:
        reasons += queue.pop("reasons")
    return {
        "status": "degraded" if reasons else "ok",
        "reasons": reasons,
        "database": database,
        "clock": agent.clock.now().isoformat(),
        "loop": {
            "running": beat.running,
            "cycles": beat.cycles,
            "decisions": beat.decisions,
            "failures": beat.failures,
            "last_cycle_at": beat.last_cycle_at.isoformat() if beat.last_cycle_at else None,
            "last_cycle_accounts": beat.last_cycle_accounts,
            "last_cycle_failures": beat.last_cycle_failures,
            "last_error": beat.last_error,
            "late_cycles": beat.late_cycles,
            "candles_skipped": beat.candles_skipped,
            "last_skipped": [t.isoformat() for t in beat.last_skipped],
            "stopped": beat.stopped,
        },
        "market": agent.market_status.snapshot(),
        "model": _public_model(agent, model),
        "live_accounts": live,
        "queue": queue,
        "parts": [{"name": p.name, "what": p.what, "simulated": p.simulated, "why": p.why} for p in agent.parts],
    }


async def _live_accounts(agent: Agent) -> list[dict[str, Any]]:
    """Every live account: its venue and network, whether it trades real money, and why it is not traded if so."""
    try:
        async with agent.sessions() as session:
            accounts = await AccountRepository(session).all()
    except Exception:  # the database is down: already a reason of its own
        return []
    return [
        {
            "id": a.id,
            "name": a.name,
            "venue": a.venue,
            "network": a.network,
            "real_money": a.network == "mainnet",
            "status": a.status,
            "refused": agent.venues.refusal(a),
        }
        for a in accounts
        if a.mode == "live"
    ]


def _public_model(agent: Agent, model: HealthStatus) -> dict[str, Any]:
    """The model's status for anyone: the key's status and a short detail from the last answer, never its amounts
    nor its fingerprint (those are on the keyed `GET /api/v1/llm/health`, which asks the provider)."""
    public = model.model_dump(exclude={"key"})
    if model.key is not None:
        public["key"] = {"status": model.key.status, "detail": model.key.detail}
    elif getattr(agent.llm.provider, "key_checker", None) is None:  # the baseline, or not OpenRouter: no key check
        public["key"] = None
    else:
        public["key"] = {"status": "unchecked", "detail": "not asked yet (GET /api/v1/llm/health asks the provider)"}
    return public


async def _queue(agent: Agent) -> dict[str, Any] | None:
    """The job queue of a multi-process agent (None without one): depth, oldest job, each worker's throughput, and
    why it is behind, if it is."""
    try:
        status = await queue_status(
            agent.sessions, agent.wall_clock.now(), heartbeat_s=agent.settings.worker_heartbeat_s
        )
    except Exception as exc:  # report, never raise from the health check
        return {"error": f"{type(exc).__name__}: {exc}", "reasons": [f"job queue: could not be read: {exc}"]}
    if status is None:
        return None
    alive = [w for w in status.workers if w.alive]
    reasons = []
    if status.depth and not alive:
        reasons.append(f"job queue: {status.depth} job(s) wait and no worker is alive (start `trading-agent worker`)")
    interval_s = timeframe_seconds(agent.settings.interval)
    if status.oldest_age_s > interval_s:
        reasons.append(
            f"job queue behind: the oldest waiting job has waited {status.oldest_age_s:.0f} s, more than one "
            f"{agent.settings.interval} candle (add workers or raise --concurrency)"
        )
    return {
        "waiting": status.depth,
        "running": status.running,
        "failed": status.failed,
        "oldest_job_age_s": round(status.oldest_age_s, 3),
        "decisions_per_s": round(status.decisions_per_s, 3),
        "workers": [
            {
                "name": w.name,
                "pid": w.pid,
                "host": w.host,
                "alive": w.alive,
                "concurrency": w.concurrency,
                "last_seen": w.last_seen.isoformat(),
                "jobs": w.jobs,
                "decisions": w.decisions,
                "failures": w.failures,
                "decisions_per_s": round(w.decisions_per_s, 3),
                "cpu_s": round(w.cpu_s, 3),
            }
            for w in status.workers
        ],
        "reasons": reasons,
    }


def _reasons(agent: Agent, database: str, beat: Heartbeat, model: HealthStatus) -> list[str]:
    """Why the agent is not deciding as it should (empty when it is)."""
    reasons = []
    if database != "ok":
        reasons.append(f"database: {database}")
    if beat.per_account_errors:
        failed = len(beat.per_account_errors)
        reasons.append(f"{failed} account(s) failed their last cycle; the latest: {beat.last_error}")
    if beat.stopped:
        reasons.append(beat.stopped)
    market = agent.market_status.reason()
    if market:
        reasons.append(market)
    if model.status != "ok":
        reasons.append(f"model {model.status}: {model.detail or 'see model.circuits'}")
    # accounts may ask their own models: an open circuit of one of them spoils those accounts' decisions
    others = {
        name: snap
        for name, snap in agent.llm.breakers.snapshot().items()
        if name not in model.circuits and snap["state"] == "open"
    }
    for name, snap in others.items():
        reasons.append(
            f"model {name}: circuit open since {snap['opened_at']}, next attempt in {snap['next_attempt_in_s']} s"
        )
    return reasons
