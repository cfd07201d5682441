"""FastAPI dependencies: the running agent and its services."""

from __future__ import annotations

from fastapi import Request

from app.bootstrap import Agent
from app.services.llm.decision_engine import DecisionEngine


def get_agent(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent


def get_engine(request: Request) -> DecisionEngine:
    return get_agent(request).engine
