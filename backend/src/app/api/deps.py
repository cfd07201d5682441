"""FastAPI dependencies: the running agent and its services."""

from __future__ import annotations

from fastapi import Request

from app.bootstrap import Agent


def get_agent(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent
