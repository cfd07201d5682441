"""`GET /metrics`: Prometheus text format, for an admin key only (it covers every account, e.g. the equity of
each: an account key must not read other accounts through it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.auth import AdminPrincipal
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.bootstrap import Agent
from app.jobs.stats import queue_status

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition format", "content": {CONTENT_TYPE_LATEST: {}}},
        **error_responses(401, 403),
    },
)
async def metrics(agent: Annotated[Agent, Depends(get_agent)], _: AdminPrincipal) -> Response:
    """Decisions, rejections by reason, model latency/tokens/cost by model, orders, equity per account; with workers
    (PostgreSQL), the job queue's depth and oldest job and each worker's decisions per second. Admin only: an account
    key answers 403."""
    queue = await queue_status(agent.sessions, agent.wall_clock.now(), heartbeat_s=agent.settings.worker_heartbeat_s)
    if queue is not None:
        agent.metrics.observe_queue(
            waiting=queue.depth,
            running=queue.running,
            failed=queue.failed,
            oldest_age_s=queue.oldest_age_s,
            workers=list(queue.workers),
        )
    return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)
