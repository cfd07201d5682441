"""Strategy endpoints: the available strategies, an account's strategy and switching it, custom strategies
and per-strategy performance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from app.api.auth import CurrentPrincipal, MutatingAdmin, MutatingPrincipal, ensure_scope
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.bootstrap import Agent
from app.schemas.api import MAX_DB_ID, CustomStrategyRequest, StrategySwitch
from app.schemas.trading_decision import TradingStrategy
from app.services.llm.strategy_manager import StrategyAssignmentView, StrategyError, StrategyPerformance

router = APIRouter(prefix="/api/v1/strategies", tags=["strategies"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]
AccountId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The account id")]


@router.get("/available", response_model=list[TradingStrategy])
async def available(agent: AgentDep, _: CurrentPrincipal) -> list[TradingStrategy]:
    """Built-in and custom strategies that are active."""
    return await agent.strategies.get_available_strategies()


@router.get("/account/{account_id}", response_model=TradingStrategy, responses=error_responses(400, 404, 422))
async def account_strategy(account_id: AccountId, agent: AgentDep, principal: CurrentPrincipal) -> TradingStrategy:
    ensure_scope(principal, account_id)
    return await agent.strategies.get_account_strategy(account_id)


@router.get(
    "/account/{account_id}/history",
    response_model=list[StrategyAssignmentView],
    responses=error_responses(400, 404, 422),
)
async def assignment_history(
    account_id: AccountId, agent: AgentDep, principal: CurrentPrincipal
) -> list[StrategyAssignmentView]:
    """Which strategy the account ran when, with the reasons, newest first."""
    ensure_scope(principal, account_id)
    await agent.strategies.get_account_strategy(account_id)
    return await agent.strategies.assignment_history(account_id)


@router.post(
    "/account/{account_id}/switch",
    response_model=TradingStrategy,
    responses=error_responses(400, 404, 413, 422, 429),
)
async def switch(
    account_id: AccountId, body: StrategySwitch, agent: AgentDep, principal: MutatingPrincipal
) -> TradingStrategy:
    ensure_scope(principal, account_id)
    if not await agent.engine.switch_strategy(account_id, body.strategy_id, body.reason):
        raise HTTPException(status_code=400, detail=f"unknown or inactive strategy {body.strategy_id!r}")
    return await agent.strategies.get_account_strategy(account_id)


@router.post(
    "/custom", response_model=TradingStrategy, status_code=201, responses=error_responses(400, 403, 413, 422, 429)
)
async def create_custom(body: CustomStrategyRequest, agent: AgentDep, _: MutatingAdmin) -> TradingStrategy:
    """Store a custom strategy (admin); a bad template or parameter is refused with the reason."""
    try:
        strategy_id = await agent.strategies.create_custom_strategy(body.strategy)
    except StrategyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return await agent.strategies.get_strategy(strategy_id)


@router.get("/{strategy_id}/performance", response_model=StrategyPerformance, responses=error_responses(400, 404, 422))
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
    except OverflowError as exc:  # e.g. 99999999w reaches before year 1
        raise HTTPException(status_code=400, detail=f"window too long: {timeframe!r}") from exc
