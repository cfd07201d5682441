"""Strategy endpoints: the available strategies, an account's strategy and switching it, custom strategies
and per-strategy performance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from app.api.auth import AdminPrincipal, CurrentPrincipal, MutatingPrincipal, ensure_scope
from app.api.deps import get_agent
from app.bootstrap import Agent
from app.schemas.api import CustomStrategyRequest, StrategySwitch
from app.schemas.trading_decision import TradingStrategy
from app.services.llm.strategy_manager import StrategyAssignmentView, StrategyError, StrategyPerformance

router = APIRouter(prefix="/api/v1/strategies", tags=["strategies"])
AgentDep = Annotated[Agent, Depends(get_agent)]


@router.get("/available", response_model=list[TradingStrategy])
async def available(agent: AgentDep, _: CurrentPrincipal) -> list[TradingStrategy]:
    """Built-in and custom strategies that are active."""
    return await agent.strategies.get_available_strategies()


@router.get("/account/{account_id}", response_model=TradingStrategy)
async def account_strategy(account_id: int, agent: AgentDep, principal: CurrentPrincipal) -> TradingStrategy:
    ensure_scope(principal, account_id)
    return await agent.strategies.get_account_strategy(account_id)


@router.get("/account/{account_id}/history", response_model=list[StrategyAssignmentView])
async def assignment_history(
    account_id: int, agent: AgentDep, principal: CurrentPrincipal
) -> list[StrategyAssignmentView]:
    """Which strategy the account ran when, with the reasons, newest first."""
    ensure_scope(principal, account_id)
    await agent.strategies.get_account_strategy(account_id)
    return await agent.strategies.assignment_history(account_id)


@router.post("/account/{account_id}/switch", response_model=TradingStrategy)
async def switch(
    account_id: int, body: StrategySwitch, agent: AgentDep, principal: MutatingPrincipal
) -> TradingStrategy:
    ensure_scope(principal, account_id)
    if not await agent.engine.switch_strategy(account_id, body.strategy_id, body.reason):
        raise HTTPException(status_code=400, detail=f"unknown or inactive strategy {body.strategy_id!r}")
    return await agent.strategies.get_account_strategy(account_id)


@router.post("/custom", response_model=TradingStrategy, status_code=201)
async def create_custom(body: CustomStrategyRequest, agent: AgentDep, _: AdminPrincipal) -> TradingStrategy:
    """Store a custom strategy (admin); a bad template or parameter is refused with the reason."""
    try:
        strategy_id = await agent.strategies.create_custom_strategy(body.strategy)
    except StrategyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return await agent.strategies.get_strategy(strategy_id)


@router.get("/{strategy_id}/performance", response_model=StrategyPerformance)
async def performance(
    strategy_id: str,
    agent: AgentDep,
    principal: CurrentPrincipal,
    timeframe: Annotated[str, Query(max_length=8, description="Window, e.g. 24h, 7d, 4w")] = "7d",
) -> StrategyPerformance:
    """Figures over every account for an admin key; over the caller's own account for an account key."""
    try:
        scope = None if principal.is_admin else principal.account_id
        return await agent.strategies.get_strategy_performance(strategy_id, timeframe, scope)
    except StrategyError as exc:
        status = 404 if "unknown strategy" in str(exc) else 400
        raise HTTPException(status_code=status, detail=str(exc)) from exc
