"""A/B experiments: start one (admin, or an account key on its own account), list them, show one and its
results, stop one (admin, or the account key that started it).

An account key sees the experiments that run on its account; any other answers 404, as if it did not exist.
A refused experiment stores nothing; the answer says why (404: an account, strategy or model this agent does
not have; 409: a conflict within the request or with the agent's state; 503: the model catalog cannot be read)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request

from app.api.auth import CurrentPrincipal, MutatingPrincipal, Principal
from app.api.deps import get_agent
from app.api.errors import ErrorBody, error_responses
from app.bootstrap import Agent
from app.schemas.api import MAX_DB_ID
from app.schemas.experiments import ExperimentCreate, ExperimentResults, ExperimentStop, ExperimentView
from app.services.llm.ab_testing import ExperimentError, ExperimentForbiddenError, ExperimentNotFoundError
from app.services.llm.llm_exceptions import ModelCatalogUnavailableError, ModelNotAvailableError
from app.services.llm.strategy_manager import StrategyError, StrategyNotFoundError

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]
ExperimentId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The experiment's id")]

_REFUSED = {
    404: {
        "description": "No such experiment (or not visible to this key), or an account, strategy or model this "
        "agent does not have",
        "model": ErrorBody,
    },
    409: {
        "description": "Refused, nothing stored: the request conflicts with itself (two controls, a name twice, "
        "fewer accounts than variants, shadow variants that all equal the control) or with the agent's state (an "
        "account in a running experiment, a strategy that cannot run, a model without a key, an expected daily "
        "cost over the budget), or the experiment is already stopped",
        "model": ErrorBody,
    },
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    out = error_responses(*codes)
    out.update({code: entry for code, entry in _REFUSED.items() if code in codes})
    return out


def _scope(principal: Principal) -> int | None:
    return None if principal.is_admin else principal.account_id


def _http(exc: Exception) -> HTTPException:
    if isinstance(exc, ExperimentNotFoundError | StrategyNotFoundError | ModelNotAvailableError):
        return HTTPException(status_code=404, detail=str(exc))
    if isinstance(exc, ExperimentForbiddenError):
        return HTTPException(status_code=403, detail=str(exc))
    if isinstance(exc, ModelCatalogUnavailableError):
        return HTTPException(status_code=503, detail=str(exc))
    return HTTPException(status_code=409, detail=str(exc))


@router.post(
    "",
    response_model=ExperimentView,
    status_code=201,
    responses=_responses(404, 409, 413, 422, 429, 503),
)
async def create_experiment(
    body: ExperimentCreate, agent: AgentDep, principal: MutatingPrincipal, request: Request
) -> ExperimentView:
    """Start an experiment on the listed accounts (an account key: its own account only, the default; an admin
    key: every account by default). It starts at once: its first cycle is the current candle. The answer shows
    each variant's expected daily cost and, for the `accounts` assignment, the accounts it runs on (drawn once
    from the seed, by weight, never changed). Refused, nothing stored, when a variant's expected daily cost is
    over its budget, an account is in another running experiment, a model is unknown (or not the baseline while
    no LLM is configured), a strategy unknown or unable to run."""
    try:
        view = await agent.experiments.create(body, _scope(principal))
    except (ExperimentError, StrategyError, ModelNotAvailableError, ModelCatalogUnavailableError) as exc:
        raise _http(exc) from exc
    request.state.audit_detail = (
        f"experiment {view.id} {view.name!r} started: {view.assignment} on account(s) "
        f"{', '.join(map(str, view.accounts))}; variants {', '.join(v.name for v in view.variants)}; "
        f"expected {view.expected_daily_cost_usd:.4f} USD a day"
    )
    return view


@router.get("", response_model=list[ExperimentView])
async def list_experiments(
    agent: AgentDep,
    principal: CurrentPrincipal,
    status: Annotated[
        Literal["running", "stopped", "all"], Query(description="Running, stopped, or all (the default)")
    ] = "all",
) -> list[ExperimentView]:
    """Every experiment, newest first (an account key: those on its account)."""
    return await agent.experiments.list_all(_scope(principal), status=None if status == "all" else status)


@router.get("/{experiment_id}", response_model=ExperimentView, responses=_responses(404, 422))
async def get_experiment(experiment_id: ExperimentId, agent: AgentDep, principal: CurrentPrincipal) -> ExperimentView:
    try:
        return await agent.experiments.get(experiment_id, _scope(principal))
    except ExperimentError as exc:
        raise _http(exc) from exc


@router.get("/{experiment_id}/results", response_model=ExperimentResults, responses=_responses(404, 422))
async def experiment_results(
    experiment_id: ExperimentId, agent: AgentDep, principal: CurrentPrincipal
) -> ExperimentResults:
    """Per variant: decisions, fallback and error rates, latency, cost and tokens; the metric over its cycles with
    its confidence interval; against the control the difference with its interval and p-value, and the verdict:
    `not yet` until `min_samples` cycles are in, then `better`, `worse` or `no difference`, taken on the first
    `min_samples` cycles only (later cycles never change it)."""
    try:
        return await agent.experiments.results(experiment_id, _scope(principal))
    except ExperimentError as exc:
        raise _http(exc) from exc


@router.post(
    "/{experiment_id}/stop",
    response_model=ExperimentView,
    responses=_responses(403, 404, 409, 413, 422, 429),
)
async def stop_experiment(
    experiment_id: ExperimentId,
    agent: AgentDep,
    principal: MutatingPrincipal,
    request: Request,
    body: Annotated[ExperimentStop | None, Body()] = None,
) -> ExperimentView:
    """Stop it: from the next decision on its accounts decide with their own settings again. An admin key stops
    any; an account key the experiments it started (403 for one an admin started on its account). 409 when it is
    already stopped. Its decisions and results stay."""
    reason = body.reason if body is not None else None
    try:
        view = await agent.experiments.stop(experiment_id, reason, _scope(principal))
    except ExperimentError as exc:
        raise _http(exc) from exc
    request.state.audit_detail = f"experiment {experiment_id} stopped" + (f": {reason}" if reason else "")
    return view
