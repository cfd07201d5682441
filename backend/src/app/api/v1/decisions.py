"""Decision endpoints: generate a decision now, read the history, validate a decision against a context,
switch models, and decision metrics."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, select

from app.api.auth import CurrentPrincipal, MutatingPrincipal, ensure_scope
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.api.model_check import require_listed_model
from app.api.params import SymbolFilter, Window
from app.bootstrap import Agent
from app.core.symbols import SYMBOL_PATTERN
from app.db import models
from app.db.repositories.outcome_figures import OutcomeFiguresRepository, OutcomeScope
from app.schemas.api import (
    MAX_DB_ID,
    DbId,
    DecisionMetrics,
    ModelSwitchRequest,
    OutcomeGroupBy,
    OutcomeHorizon,
    UTCDateTime,
    ValidateRequest,
)
from app.schemas.decision_result import DecisionResult
from app.schemas.trading_decision import STRATEGY_ID_PATTERN
from app.schemas.validation import ValidationResult
from app.services.evaluation.report import outcome_report
from app.services.llm.llm_exceptions import ModelCatalogUnavailableError, ModelNotAvailableError
from app.services.llm.strategy_manager import parse_window

router = APIRouter(prefix="/api/v1/decisions", tags=["decisions"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]


class GenerateDecisionRequest(BaseModel):
    """The seed's request shape."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[Annotated[str, Field(max_length=62, pattern=SYMBOL_PATTERN)]] | None = Field(
        None,
        description="Assets to decide on (BTC, BTCUSDT or BTC/USDT:USDT); defaults to $ASSETS; an asset this agent "
        "does not trade answers 404",
        max_length=50,
    )
    account_id: DbId
    strategy_override: str | None = Field(
        None,
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="Decide with this strategy instead of the account's (an active strategy id; an unknown one "
        "answers 404, an inactive one 409); the account keeps its own",
    )
    force_refresh: bool = Field(False, description="Decide again even if this candle already has a decision")


class ModelSwitchResult(BaseModel):
    model: str
    account_id: int | None
    models: list[str] = Field(..., description="The chain asked in order (first model, then the fallbacks)")


@router.post("/generate", response_model=DecisionResult, responses=error_responses(400, 404, 409, 413, 422, 429, 503))
async def generate_decision(
    body: GenerateDecisionRequest, agent: AgentDep, principal: MutatingPrincipal
) -> DecisionResult:
    """Run one decision cycle for the account now (context, model, validation, execution) and return it."""
    ensure_scope(principal, body.account_id)
    if body.strategy_override is not None:
        async with agent.sessions() as session:
            strategy = await session.get(models.Strategy, body.strategy_override)
        if strategy is None:
            raise HTTPException(
                status_code=404,
                detail=f"unknown strategy {body.strategy_override!r}: see GET /api/v1/strategies/available",
            )
        if not strategy.is_active:
            raise HTTPException(
                status_code=409, detail=f"strategy {body.strategy_override!r} is deactivated: choose an active one"
            )
    return await agent.engine.make_trading_decision(
        body.symbols,
        body.account_id,
        body.strategy_override,
        trigger="api",
        force_refresh=body.force_refresh,
    )


@router.get("/history", response_model=list[DecisionResult], responses=error_responses(400, 404, 422))
async def decision_history(
    agent: AgentDep,
    principal: CurrentPrincipal,
    account_id: Annotated[int, Query(ge=1, le=MAX_DB_ID)],
    limit: Annotated[
        int, Query(ge=1, le=500, description="At most 500 decisions a page (page on with before_id)")
    ] = 50,
    symbol: SymbolFilter = None,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="Page: decisions older than this id")
    ] = None,
    since: Annotated[
        UTCDateTime | None,
        Query(description="Cycle time from, on the market clock (ISO 8601 or a date; without a zone: UTC)"),
    ] = None,
    until: Annotated[
        UTCDateTime | None,
        Query(description="Cycle time until, on the market clock (ISO 8601 or a date; without a zone: UTC)"),
    ] = None,
) -> Response:
    """Stored decisions of an account, newest first."""
    ensure_scope(principal, account_id)
    items = await agent.engine.get_decision_history(
        account_id, limit, symbol, before_id=before_id, since=since, until=until
    )
    # Already the JSON of `DecisionResult`s (see DecisionRepository.history): written out as it is.
    return Response(orjson.dumps(items), media_type="application/json")


@router.post("/validate", response_model=ValidationResult, responses=error_responses(400, 404, 413, 422))
async def validate_decision(body: ValidateRequest, agent: AgentDep, principal: CurrentPrincipal) -> ValidationResult:
    """Per-asset verdicts for a decision against a context (nothing is executed or stored)."""
    ensure_scope(principal, body.context.account_id)
    return await agent.engine.validator.validate_decision(body.decision, body.context, body.risk_state)


@router.post(
    "/models/switch",
    response_model=ModelSwitchResult,
    responses=error_responses(400, 403, 404, 409, 413, 422, 429, 503),
)
async def switch_model(body: ModelSwitchRequest, agent: AgentDep, principal: MutatingPrincipal) -> ModelSwitchResult:
    """With `account_id`: the model that account asks first. Without: the default model (admin only). Either
    is checked against the endpoint's model catalog: 404 when it is not listed, 503 when the catalog cannot be
    read (nothing is saved)."""
    # Who may do it first (403 / 404 exactly as on every other route), then whether it can be done (400).
    if body.account_id is None and not principal.is_admin:
        raise HTTPException(status_code=403, detail="switching the default model needs an admin API key")
    if body.account_id is not None:
        ensure_scope(principal, body.account_id)
    if agent.llm.is_simulated:
        raise HTTPException(  # the request is fine; the agent's state does not allow it
            status_code=409, detail="no LLM is configured (set OPENROUTER_API_KEY): the rule-based baseline answers"
        )
    if body.account_id is None:
        # Checked against the endpoint's model catalog and kept in the database (restored at the next start).
        try:
            switched = await agent.llm.switch_model(body.model, by=principal.key_prefix)
        except ModelNotAvailableError as exc:  # a well-formed slug of a model this endpoint does not have
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except ModelCatalogUnavailableError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        if not switched:
            raise HTTPException(status_code=400, detail=f"not a model name: {body.model!r}")
        return ModelSwitchResult(model=body.model, account_id=None, models=agent.llm.models)
    async with agent.sessions() as session:
        if await session.get(models.Account, body.account_id) is None:
            raise HTTPException(status_code=404, detail=f"account {body.account_id} does not exist")
    # The same catalog check as the default's, before anything is saved (and outside the write transaction).
    await require_listed_model(agent.llm, body.model)
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, body.account_id)
        assert account is not None  # accounts are never deleted
        account.model = body.model
        account.updated_at = agent.wall_clock.now()
    chain = [body.model, *(m for m in agent.llm.models if m != body.model)]
    return ModelSwitchResult(model=body.model, account_id=body.account_id, models=chain)


@router.get("/metrics", response_model=DecisionMetrics, responses=error_responses(400, 404, 422))
async def decision_metrics(
    agent: AgentDep,
    principal: CurrentPrincipal,
    account_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_DB_ID, description="One account (an account key: its own, the default); admin: all"),
    ] = None,
    timeframe: Window = "24h",
    horizon: Annotated[
        OutcomeHorizon, Query(description="Outcomes measured this many candles of INTERVAL after each decision")
    ] = OutcomeHorizon.FOUR,
    group_by: Annotated[OutcomeGroupBy, Query(description="Outcome figures per model, strategy, asset or account")] = (
        "model"
    ),
    include_shadow: Annotated[
        bool, Query(description="Count experiments' shadow decisions (decided, never executed) in the outcomes")
    ] = False,
) -> DecisionMetrics:
    """Decisions by status, fallbacks, rejected assets, model calls, tokens, cost and latency over a window, and
    how the decisions turned out: hit rate, returns, profit factor, calibration of their confidence, realized
    trades and cost per decision, overall and per group."""
    if account_id is None and not principal.is_admin:
        account_id = principal.account_id
    if account_id is not None:
        ensure_scope(principal, account_id)
    since = agent.clock.now() - parse_window(timeframe)  # every window the pattern allows can be computed
    async with agent.sessions() as session:
        if account_id is not None and await session.get(models.Account, account_id) is None:
            raise HTTPException(status_code=404, detail=f"account {account_id} does not exist")
        d = models.Decision
        # Shadow decisions (an experiment's variants, never executed) are not the account's decisions.
        scope = [d.cycle_time >= since, d.shadow_of.is_(None)]
        if account_id is not None:
            scope.append(d.account_id == account_id)
        rows = (await session.execute(select(d.status, func.count()).where(*scope).group_by(d.status))).all()
        by_status = {status: int(count) for status, count in rows}
        fallbacks = await session.scalar(select(func.count()).select_from(d).where(*scope, d.is_fallback))
        results = (await session.scalars(select(d.validation_result).where(*scope).limit(10_000))).all()
        rejected = sum(
            1 for result in results for v in (result or {}).get("verdicts", []) if v.get("status") == "rejected"
        )
        c = models.LLMCall
        calls_query = select(
            func.count(),
            func.coalesce(func.sum(case((c.outcome != "ok", 1), else_=0)), 0),
            func.coalesce(func.sum(c.prompt_tokens), 0),
            func.coalesce(func.sum(c.completion_tokens), 0),
            func.coalesce(func.sum(c.cost_usd), 0.0),
            func.avg(c.latency_ms),
        )
        # The calls of the window's decisions (shadow ones included: real money), by the decisions' market-clock
        # cycle: a call's own stamp is the wall clock, which a simulation or a replay does not follow.
        calls_query = calls_query.join(d, d.id == c.decision_id).where(d.cycle_time >= since)
        if account_id is not None:
            calls_query = calls_query.where(d.account_id == account_id)
        calls, failures, prompt, completion, cost, latency = (await session.execute(calls_query)).one()
        outcome_scope = OutcomeScope(
            since=since,
            horizon=int(horizon),
            interval=agent.settings.interval,
            account_id=account_id,
            include_shadow=include_shadow,
        )
        selection = await OutcomeFiguresRepository(session).select(outcome_scope, group_by)
    total = sum(by_status.values())
    return DecisionMetrics(
        account_id=account_id,
        timeframe=timeframe,
        since=since,
        decisions=total,
        by_status=by_status,
        fallback_rate=(fallbacks or 0) / total if total else 0.0,
        rejected_assets=rejected,
        llm_calls=int(calls),
        llm_failures=int(failures),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cost_usd=float(cost),
        avg_latency_ms=float(latency) if latency is not None else None,
        outcomes=outcome_report(
            selection,
            horizon=outcome_scope.horizon,
            interval=outcome_scope.interval,
            include_shadow=include_shadow,
            group_by=group_by,
        ),
    )


# Last: `/history` and `/metrics` above must match before this path parameter does.
# `:int`: `GET /generate` or `/validate` is a method those paths do not serve (405), not a malformed decision id.
@router.get("/{decision_id:int}", response_model=DecisionResult, responses=error_responses(404, 422))
async def get_decision(
    agent: AgentDep,
    principal: CurrentPrincipal,
    decision_id: Annotated[int, Path(ge=1, le=MAX_DB_ID)],
    provenance: Annotated[
        bool, Query(description="Include what the decision was made from: the context snapshot and the prompt")
    ] = True,
) -> DecisionResult:
    """One stored decision with its orders, validation and (by default) its provenance."""
    # An account key reads its own account's decisions only; another's answers 404, as if it did not exist.
    own = None if principal.is_admin else principal.account_id
    return await agent.engine.get_decision(decision_id, account_id=own, provenance=provenance)
