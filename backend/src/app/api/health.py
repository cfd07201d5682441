"""`GET /health`: is the agent alive, and which of its parts are simulated."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import text

from app.api.deps import get_agent
from app.bootstrap import Agent

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(agent: Annotated[Agent, Depends(get_agent)]) -> dict[str, Any]:
    """Database reachability, loop heartbeat, model status and the simulated parts."""
    database = "ok"
    try:
        async with agent.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # report, never raise from the health check
        database = f"error: {type(exc).__name__}"
    beat = agent.loop.heartbeat
    model = await agent.llm.validate_api_health()
    status = "ok" if database == "ok" and not beat.per_account_errors else "degraded"
    return {
        "status": status,
        "database": database,
        "clock": agent.clock.now().isoformat(),
        "loop": {
            "running": beat.running,
            "cycles": beat.cycles,
            "decisions": beat.decisions,
            "failures": beat.failures,
            "last_cycle_at": beat.last_cycle_at.isoformat() if beat.last_cycle_at else None,
            "last_error": beat.last_error,
        },
        "model": model.model_dump(),
        "parts": [{"name": p.name, "what": p.what, "simulated": p.simulated, "why": p.why} for p in agent.parts],
    }
