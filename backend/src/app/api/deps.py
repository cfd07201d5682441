"""FastAPI dependencies: the running agent and its services.

Dependencies are `async def` even when they do not await: FastAPI runs a plain `def` dependency in its
thread pool, a round trip to a worker thread on every request: 0.3-0.4 ms of CPU per history request
(3.34-3.50 ms against 2.98-3.16 ms, in-process, 1,000 requests, 3 runs each).
"""

from __future__ import annotations

from fastapi import Request

from app.bootstrap import Agent


async def get_agent(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent
