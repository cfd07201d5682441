"""Strategy endpoints: the available strategies, an account's strategy and switching it, custom strategies
(created, edited, deactivated and activated by an admin) and per-strategy performance.

A strategy that cannot run (deactivated, or a stored definition that no longer validates) is never offered
nor assigned; an account already on it holds with the reason on each decision, and its strategy view says why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from app.api.auth import AdminPrincipal, CurrentPrincipal, MutatingAdmin, MutatingPrincipal, ensure_scope
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.api.params import StrategyIdPath, Window
from app.bootstrap import Agent
from app.schemas.api import MAX_DB_ID, CustomStrategyRequest, OutcomeHorizon, StrategySwitch
from app.schemas.strategies import StrategyActivation, StrategyPatch, StrategyReplacement
from app.schemas.trading_decision import TradingStrategy
from app.services.llm.strategy_manager import (
    BuiltinStrategyError,
    StrategyAssignmentView,
    StrategyConflictError,
    StrategyError,
    StrategyNotFoundError,
    StrategyPerformance,
    StrategyStatus,
    StrategyUnavailableError,
)

router = APIRouter(prefix="/api/v1/strategies", tags=["strategies"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]
AccountId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The account id")]


def _http(exc: StrategyError) -> HTTPException:
    """404 for an unknown strategy, 409 for one whose state refuses the request (built in, cannot run, an id
    taken, a replacement that names another id), 400 for a refused definition."""
    if isinstance(exc, StrategyNotFoundError):
        return HTTPException(status_code=404, detail=str(exc))
    if isinstance(exc, BuiltinStrategyError | StrategyUnavailableError | StrategyConflictError):
        return HTTPException(status_code=409, detail=str(exc))
    return HTTPException(status_code=400, detail=str(exc))


@router.get("/available", response_model=list[TradingStrategy])
async def available(
    agent: AgentDep,
    _: CurrentPrincipal,
    include_inactive: Annotated[bool, Query(description="Also list deactivated strategies (is_active false)")] = False,
) -> list[TradingStrategy]:
    """Built-in and custom strategies that are active. A stored strategy whose definition is invalid is left
    out (`GET /api/v1/strategies/custom` says why)."""
    return await agent.strategies.get_available_strategies(include_inactive=include_inactive)


@router.get("/account/{account_id}", response_model=TradingStrategy, responses=error_responses(400, 404, 409, 422))
async def account_strategy(account_id: AccountId, agent: AgentDep, principal: CurrentPrincipal) -> TradingStrategy:
    """The account's strategy; `is_active` false when it was deactivated (the account holds until switched).
    409 with the reason when its stored definition is invalid."""
    ensure_scope(principal, account_id)
    try:
        return await agent.strategies.get_account_strategy(account_id)
    except StrategyUnavailableError as exc:
        notice = await agent.strategies.strategy_notice(exc.strategy_id)
        raise HTTPException(status_code=409, detail=f"account {account_id}: {notice or exc}") from exc


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
    await agent.strategies.account_strategy_id(account_id)
    return await agent.strategies.assignment_history(account_id)


@router.post(
    "/account/{account_id}/switch",
    response_model=TradingStrategy,
    responses=error_responses(400, 404, 409, 413, 422, 429),
)
async def switch(
    account_id: AccountId, body: StrategySwitch, agent: AgentDep, principal: MutatingPrincipal, request: Request
) -> TradingStrategy:
    """Switch the account to another strategy: 404 for an unknown one, 409 (nothing saved) for one that cannot
    run (deactivated, or an invalid stored definition)."""
    ensure_scope(principal, account_id)
    await agent.strategies.account_strategy_id(account_id)  # an unknown account: 404 before the strategy
    try:
        await agent.strategies.check_assignable(body.strategy_id)
    except StrategyError as exc:
        raise _http(exc) from exc
    if not await agent.engine.switch_strategy(account_id, body.strategy_id, body.reason):
        raise HTTPException(status_code=409, detail=f"strategy {body.strategy_id!r} cannot be assigned now")
    request.state.audit_detail = f"strategy switched to {body.strategy_id!r}: {body.reason}"
    return await agent.strategies.get_account_strategy(account_id)


@router.post(
    "/custom", response_model=TradingStrategy, status_code=201, responses=error_responses(400, 403, 409, 413, 422, 429)
)
async def create_custom(
    body: CustomStrategyRequest, agent: AgentDep, _: MutatingAdmin, request: Request
) -> TradingStrategy:
    """Store a custom strategy (admin); a bad template or parameter is refused with the reason, nothing stored."""
    try:
        strategy_id = await agent.strategies.create_custom_strategy(body.strategy)
    except StrategyError as exc:  # 409 for an id that is taken, 400 for a definition refused with the reason
        raise _http(exc) from exc
    request.state.audit_detail = f"custom strategy {strategy_id!r} created"
    return await agent.strategies.get_strategy(strategy_id)


@router.get("/custom", response_model=list[StrategyStatus], responses=error_responses(403))
async def custom_strategies(agent: AgentDep, _: AdminPrincipal) -> list[StrategyStatus]:
    """Every custom strategy, active or not, valid or not: whether it can run, why not, and the accounts on it."""
    return await agent.strategies.strategy_statuses()


@router.get("/custom/{strategy_id}", response_model=StrategyStatus, responses=error_responses(403, 404, 422))
async def custom_strategy(strategy_id: StrategyIdPath, agent: AgentDep, _: AdminPrincipal) -> StrategyStatus:
    """One stored strategy's status (built-in ones too)."""
    try:
        return await agent.strategies.strategy_status(strategy_id)
    except StrategyError as exc:
        raise _http(exc) from exc


def _edited(request: Request, strategy_id: str, summary: str, reason: str | None) -> None:
    request.state.audit_detail = f"custom strategy {strategy_id!r} edited: {summary}" + (
        f" (reason: {reason})" if reason else ""
    )


@router.put(
    "/custom/{strategy_id}",
    response_model=TradingStrategy,
    responses=error_responses(400, 403, 404, 409, 413, 422, 429),
)
async def replace_custom(
    strategy_id: StrategyIdPath, body: StrategyReplacement, agent: AgentDep, _: MutatingAdmin, request: Request
) -> TradingStrategy:
    """Replace a custom strategy's definition (admin), checked like a new one; its id (the path's), type and
    activity stay (409 for a built-in one). The change is written to the audit log. Accounts on it use it from
    their next decision."""
    try:
        strategy, summary = await agent.strategies.update_custom_strategy(
            strategy_id, body.strategy.strategy(strategy_id)
        )
    except StrategyError as exc:
        raise _http(exc) from exc
    _edited(request, strategy_id, summary, body.reason)
    return strategy


@router.patch(
    "/custom/{strategy_id}",
    response_model=TradingStrategy,
    responses=error_responses(400, 403, 404, 409, 413, 422, 429),
)
async def edit_custom(
    strategy_id: StrategyIdPath, body: StrategyPatch, agent: AgentDep, _: MutatingAdmin, request: Request
) -> TradingStrategy:
    """Change some fields of a custom strategy (admin; `risk_parameters` key by key); the result is checked like
    a new strategy. The change is written to the audit log."""
    try:
        strategy, summary = await agent.strategies.patch_custom_strategy(strategy_id, body.changes())
    except StrategyError as exc:
        raise _http(exc) from exc
    _edited(request, strategy_id, summary, body.reason)
    return strategy


async def _set_active(
    strategy_id: str, active: bool, body: StrategyActivation | None, agent: Agent, request: Request
) -> StrategyStatus:
    try:
        status = await agent.strategies.set_strategy_active(strategy_id, active)
    except StrategyError as exc:
        raise _http(exc) from exc
    reason = body.reason if body is not None and body.reason else None
    request.state.audit_detail = (
        f"custom strategy {strategy_id!r} {'activated' if active else 'deactivated'}"
        + (f"; accounts on it: {', '.join(map(str, status.accounts))}" if status.accounts else "")
        + (f" (reason: {reason})" if reason else "")
    )
    return status


@router.post(
    "/custom/{strategy_id}/deactivate",
    response_model=StrategyStatus,
    responses=error_responses(403, 404, 409, 413, 422, 429),
)
async def deactivate_custom(
    strategy_id: StrategyIdPath,
    agent: AgentDep,
    _: MutatingAdmin,
    request: Request,
    body: StrategyActivation | None = None,
) -> StrategyStatus:
    """No longer offered nor assignable (admin). The accounts on it (listed in the answer) hold with the reason
    on each decision until they are switched or it is activated again."""
    return await _set_active(strategy_id, False, body, agent, request)


@router.post(
    "/custom/{strategy_id}/activate",
    response_model=StrategyStatus,
    responses=error_responses(403, 404, 409, 413, 422, 429),
)
async def activate_custom(
    strategy_id: StrategyIdPath,
    agent: AgentDep,
    _: MutatingAdmin,
    request: Request,
    body: StrategyActivation | None = None,
) -> StrategyStatus:
    """Offered and assignable again (admin); 409 while its stored definition is invalid (fix it first)."""
    return await _set_active(strategy_id, True, body, agent, request)


@router.get("/{strategy_id}/performance", response_model=StrategyPerformance, responses=error_responses(400, 404, 422))
async def performance(
    strategy_id: StrategyIdPath,
    agent: AgentDep,
    principal: CurrentPrincipal,
    timeframe: Window = "7d",
    horizon: Annotated[
        OutcomeHorizon, Query(description="Outcomes measured this many candles of INTERVAL after each decision")
    ] = OutcomeHorizon.FOUR,
) -> StrategyPerformance:
    """Figures over every account for an admin key; over the caller's own account for an account key: decisions,
    closed trades, and what followed the strategy's decisions at `horizon` (hit rate, returns, calibration, cost)."""
    try:
        scope = None if principal.is_admin else principal.account_id
        return await agent.strategies.get_strategy_performance(strategy_id, timeframe, scope, horizon=int(horizon))
    except StrategyError as exc:
        raise _http(exc) from exc
