"""Accounts: create, list, read, pause/resume/reduce/halt (and the history of those changes), model, keys,
credentials, and their positions, orders and fills.

Accounts' and keys' times are the wall clock's (`agent.wall_clock`); a new account's strategy assignment, like
everything the market does, is the market clock's (`agent.clock`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from sqlalchemy import select

from app.api.auth import AdminPrincipal, CurrentPrincipal, MutatingAdmin, MutatingPrincipal, ensure_scope
from app.api.deps import get_agent
from app.api.errors import error_responses
from app.api.model_check import require_listed_model
from app.bootstrap import Agent
from app.core.errors import TemporaryError
from app.db import models
from app.db.repositories.accounts import AccountRepository
from app.db.repositories.api_keys import ApiKeyRepository
from app.db.repositories.trading import TradingRepository
from app.schemas.api import (
    MAX_DB_ID,
    AccountCreate,
    AccountView,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyView,
    CredentialsRequest,
    FillView,
    ModelAssignment,
    OrderView,
    PositionView,
    StatusChange,
    StatusChangeView,
)
from app.services.account.new_account import new_account
from app.services.alerts.events import account_status
from app.services.exchange.base import ExchangeError
from app.services.execution.kill_switch import flatten
from app.services.llm.strategy_manager import StrategyNotFoundError, StrategyUnavailableError

router = APIRouter(prefix="/api/v1/accounts", tags=["accounts"], responses=error_responses(401))
AgentDep = Annotated[Agent, Depends(get_agent)]
AccountId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The account id")]


def view(account: models.Account) -> AccountView:
    return AccountView(
        id=account.id,
        name=account.name,
        mode=account.mode,
        venue=account.venue,
        network=account.network,
        status=account.status,
        model=account.model,
        strategy_id=account.strategy_id,
        initial_balance=account.initial_balance,
        max_position_size=account.max_position_size,
        max_leverage=account.max_leverage,
        maker_fee_bps=account.maker_fee_bps,
        taker_fee_bps=account.taker_fee_bps,
        daily_llm_budget_usd=account.daily_llm_budget_usd,
        has_credentials=account.credentials_encrypted is not None,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


async def _view(agent: Agent, account: models.Account) -> AccountView:
    """The account's view, with the reason it holds when its strategy cannot run (deactivated, invalid). It reads
    the strategy in a session of its own: call it after a write transaction ends, never inside one (a second
    connection while the first holds the write lock)."""
    notice = await agent.strategies.strategy_notice(account.strategy_id)
    return view(account).model_copy(update={"strategy_notice": notice, "live_refusal": agent.venues.refusal(account)})


async def _load(agent: Agent, principal: CurrentPrincipal, account_id: int) -> models.Account:
    ensure_scope(principal, account_id)
    async with agent.sessions() as session:
        account = await session.get(models.Account, account_id)
    if account is None:
        raise HTTPException(status_code=404, detail=f"account {account_id} does not exist")
    return account


@router.post(
    "",
    response_model=AccountView,
    status_code=201,
    responses=error_responses(400, 403, 404, 409, 413, 422, 429, 503),
)
async def create_account(body: AccountCreate, agent: AgentDep, _: MutatingAdmin) -> AccountView:
    """Create a paper or a live account. Admin only: an account key answers 403. A live account trades on its venue's
    `network` (testnet by default) once TRADING_MODE=live and its credentials are stored; a mainnet one is refused
    (409) unless LIVE_MAINNET_CONFIRM allows real money. An unknown strategy answers 404, and so does a `model` the
    endpoint's model catalog does not list (503 when the catalog cannot be read; nothing is saved)."""
    now = agent.wall_clock.now()
    if body.mode == "live" and body.network == "mainnet" and not agent.settings.mainnet_confirmed:
        raise HTTPException(
            status_code=409,
            detail="a live mainnet account trades real money: set LIVE_MAINNET_CONFIRM=real-money on the agent first "
            "(or create it on the testnet)",
        )
    try:  # a deactivated strategy, or one whose stored definition is invalid, is not assigned: 409, nothing saved
        await agent.strategies.check_assignable(body.strategy_id)
    except StrategyUnavailableError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except StrategyNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    if body.model is not None:  # checked against the model catalog like every model named through the API
        await require_listed_model(agent.llm, body.model)
    async with agent.sessions.begin() as session:
        if await session.scalar(select(models.Account).where(models.Account.name == body.name)) is not None:
            raise HTTPException(status_code=409, detail=f"an account named {body.name!r} exists")
        account = await AccountRepository(session).add(
            new_account(
                body.name,
                now=now,
                venue=body.venue,
                strategy_id=body.strategy_id,
                initial_balance=body.initial_balance,
                mode=body.mode,
                network=body.network if body.mode == "live" else None,
                model=body.model,
                max_position_size=body.max_position_size,
                max_leverage=body.max_leverage,
                daily_llm_budget_usd=body.daily_llm_budget_usd,
            ),
            reason="created through the API",
            now=agent.clock.now(),  # the strategy assignment, on the market clock as every strategy switch
        )
    return await _view(agent, account)


@router.get("", response_model=list[AccountView])
async def list_accounts(agent: AgentDep, principal: CurrentPrincipal) -> list[AccountView]:
    """Every account (admin), or the caller's own."""
    async with agent.sessions() as session:
        accounts = await AccountRepository(session).all()
    visible = [a for a in accounts if principal.can_see(a.id)]
    notices = {sid: await agent.strategies.strategy_notice(sid) for sid in {a.strategy_id for a in visible}}
    return [
        view(a).model_copy(update={"strategy_notice": notices[a.strategy_id], "live_refusal": agent.venues.refusal(a)})
        for a in visible
    ]


@router.get("/{account_id}", response_model=AccountView, responses=error_responses(404, 422))
async def get_account(account_id: AccountId, agent: AgentDep, principal: CurrentPrincipal) -> AccountView:
    return await _view(agent, await _load(agent, principal, account_id))


async def _set_status(
    request: Request,
    agent: Agent,
    principal: CurrentPrincipal,
    account_id: int,
    status: str,
    body: StatusChange | None,
) -> AccountView:
    """Change the status; the reason (if any) goes to the account's history and to the request's audit entry."""
    reason = body.reason if body is not None else None
    request.state.audit_detail = reason
    await _load(agent, principal, account_id)
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, account_id)
        assert account is not None
        before = account.status
        await AccountRepository(session).set_status(
            account,
            status,
            reason=reason,
            now=agent.wall_clock.now(),
            key_prefix=principal.key_prefix,
            request_id=getattr(request.state, "request_id", None),  # the audit entry's (set by the middleware)
        )
    if status in ("PAUSED", "HALTED") and before != status:
        by = f"{'admin' if principal.is_admin else 'account'} API key {principal.key_prefix}..."
        agent.alerts.emit(account_status(account_id, status, by=by, reason=reason))
    return await _view(agent, account)


_STATUS_ERRORS = error_responses(400, 404, 413, 422, 429)
# No body, `{}` or `{"reason": "..."}`.
StatusBody = Annotated[StatusChange | None, Body()]


@router.post("/{account_id}/pause", response_model=AccountView, responses=_STATUS_ERRORS)
async def pause(
    request: Request, account_id: AccountId, agent: AgentDep, principal: MutatingPrincipal, body: StatusBody = None
) -> AccountView:
    """No decision cycles until resumed; positions keep their protective orders."""
    return await _set_status(request, agent, principal, account_id, "PAUSED", body)


@router.post("/{account_id}/resume", response_model=AccountView, responses=_STATUS_ERRORS)
async def resume(
    request: Request, account_id: AccountId, agent: AgentDep, principal: MutatingPrincipal, body: StatusBody = None
) -> AccountView:
    """Back to ACTIVE: decisions and orders again."""
    return await _set_status(request, agent, principal, account_id, "ACTIVE", body)


@router.post("/{account_id}/reduce", response_model=AccountView, responses=_STATUS_ERRORS)
async def reduce(
    request: Request, account_id: AccountId, agent: AgentDep, principal: MutatingPrincipal, body: StatusBody = None
) -> AccountView:
    """REDUCING: decisions go on, but only actions that reduce exposure pass."""
    return await _set_status(request, agent, principal, account_id, "REDUCING", body)


@router.post("/{account_id}/halt", response_model=AccountView, responses=error_responses(400, 404, 413, 422, 429, 502))
async def halt(
    request: Request, account_id: AccountId, agent: AgentDep, principal: MutatingPrincipal, body: StatusBody = None
) -> AccountView:
    """The kill switch: no decision cycles and no new orders. A paper account's positions keep their protective
    stops; a live account's are flattened at once: entry orders cancelled, positions closed with reduce-only market
    orders, then their stops cancelled (a position whose close the venue refuses keeps its stop). When the venue
    cannot be reached the account is HALTED all the same and the answer is 502 with the reason: halt again to flatten.
    """
    halted = await _set_status(request, agent, principal, account_id, "HALTED", body)
    if halted.mode == "live":
        await _flatten(agent, account_id)
    return halted


async def _flatten(agent: Agent, account_id: int) -> None:
    """Flatten the live account under its execution lock: a decision executing now finishes first (and one that
    comes after reads HALTED and sends nothing). 502 with what is left when the venue fails or refuses a close."""
    try:
        async with agent.engine.execution_lock(account_id):
            exchange = await agent.venues.exchange_for(account_id)
            exchange.refresh()
            report = await flatten(exchange, account_id, f"h{int(agent.wall_clock.now().timestamp() * 1000)}")
            for event in report.alerts:  # closes the venue refused
                agent.alerts.emit(event)
            async with agent.sessions.begin() as session:
                await agent.engine.reconciler.sync(session, account_id, exchange, placed=report.orders)
    except (TemporaryError, ExchangeError) as exc:
        raise HTTPException(
            status_code=502,
            detail=f"account {account_id} is HALTED (no more decisions or orders), but its positions could not be "
            f"flattened: {exc}. They keep their stops; halt again to flatten",
        ) from exc
    if report.remaining:
        raise HTTPException(
            status_code=502,
            detail=f"account {account_id} is HALTED (no more decisions or orders), but {', '.join(report.remaining)} "
            f"could not be closed ({'; '.join(report.errors)}). They keep their stops; halt again to retry",
        )


@router.get("/{account_id}/history", response_model=list[StatusChangeView], responses=error_responses(404, 422))
async def status_history(
    account_id: AccountId,
    agent: AgentDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID, description="Page: changes older than this id")] = None,
) -> list[StatusChangeView]:
    """The account's status changes (pause, resume, reduce, halt), newest first, with the reason given."""
    await _load(agent, principal, account_id)
    async with agent.sessions() as session:
        rows = await AccountRepository(session).status_history(account_id, limit=limit, before_id=before_id)
    return [StatusChangeView.model_validate(r) for r in rows]


@router.put(
    "/{account_id}/model", response_model=AccountView, responses=error_responses(400, 404, 409, 413, 422, 429, 503)
)
async def assign_model(
    account_id: AccountId, body: ModelAssignment, agent: AgentDep, principal: MutatingPrincipal
) -> AccountView:
    """The model this account's decisions ask first (None: the configured LLM_MODEL). Checked against the
    endpoint's model catalog like the default model's switch: 404 when it is not listed, 503 when the catalog
    cannot be read (nothing is saved)."""
    await _load(agent, principal, account_id)
    if body.model is not None and agent.llm.is_simulated:
        # The request is fine; the agent's state does not allow it.
        raise HTTPException(status_code=409, detail="no LLM is configured (OPENROUTER_API_KEY): the baseline answers")
    if body.model is not None:  # the same catalog check as the default model's, before anything is saved
        await require_listed_model(agent.llm, body.model)
    async with agent.sessions.begin() as session:
        account = await session.get(models.Account, account_id)
        assert account is not None
        account.model = body.model
        account.updated_at = agent.wall_clock.now()
    return await _view(agent, account)


@router.put("/{account_id}/credentials", status_code=204, responses=error_responses(400, 403, 404, 413, 422, 429))
async def store_credentials(
    account_id: AccountId, body: CredentialsRequest, agent: AgentDep, principal: MutatingAdmin
) -> None:
    """Exchange credentials, encrypted at rest; they are never returned by any endpoint. Admin only: an account
    key answers 403."""
    account = await _load(agent, principal, account_id)
    token = agent.secrets.encrypt(body.model_dump_json())
    async with agent.sessions.begin() as session:
        row = await session.get(models.Account, account.id)
        assert row is not None
        row.credentials_encrypted = token
        row.updated_at = agent.wall_clock.now()
    await agent.venues.forget(
        account.id
    )  # a live adapter built with the old credentials is closed, rebuilt when needed


@router.post(
    "/{account_id}/keys",
    response_model=ApiKeyCreated,
    status_code=201,
    responses=error_responses(400, 403, 404, 413, 422, 429),
)
async def create_account_key(
    account_id: AccountId,
    agent: AgentDep,
    principal: MutatingAdmin,
    body: Annotated[ApiKeyCreate | None, Body()] = None,
) -> ApiKeyCreated:
    """A key that can only see and act on this account, named as asked (no body: `account <id>`). The key is
    shown once. Admin only: an account key answers 403."""
    await _load(agent, principal, account_id)
    name = body.name if body is not None and body.name else f"account {account_id}"
    async with agent.sessions.begin() as session:
        key, row = await ApiKeyRepository(session).create(
            role="account", account_id=account_id, name=name, now=agent.wall_clock.now()
        )
    return ApiKeyCreated(
        id=row.id,
        key=key,
        prefix=row.prefix,
        role=row.role,
        account_id=account_id,
        name=row.name,
        created_at=row.created_at,
    )


@router.get("/{account_id}/keys", response_model=list[ApiKeyView], responses=error_responses(403, 404, 422))
async def account_keys(account_id: AccountId, agent: AgentDep, principal: AdminPrincipal) -> list[ApiKeyView]:
    """The account's keys, revoked ones included; never the keys themselves. Admin only: an account key answers
    403."""
    await _load(agent, principal, account_id)
    async with agent.sessions() as session:
        rows = await ApiKeyRepository(session).for_account(account_id)
    return [ApiKeyView.model_validate(r, from_attributes=True) for r in rows]


@router.delete("/{account_id}/keys/{key_id}", response_model=ApiKeyView, responses=error_responses(403, 404, 422, 429))
async def revoke_account_key(
    account_id: AccountId,
    key_id: Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The key's id")],
    agent: AgentDep,
    principal: MutatingAdmin,
    request: Request,
) -> ApiKeyView:
    """Revoke one of the account's keys: every request with it is refused (401) from now on. Admin only: an
    account key answers 403."""
    await _load(agent, principal, account_id)
    async with agent.sessions.begin() as session:
        row = await ApiKeyRepository(session).revoke(account_id, key_id, agent.wall_clock.now())
        if row is None:
            raise HTTPException(status_code=404, detail=f"account {account_id} has no key {key_id}")
    request.app.state.verified_keys.forget_all()  # committed: refused from the next request on
    return ApiKeyView.model_validate(row, from_attributes=True)


@router.get("/{account_id}/positions", responses=error_responses(404, 422), response_model=list[PositionView])
async def positions(
    account_id: AccountId,
    agent: AgentDep,
    principal: CurrentPrincipal,
    status: Annotated[
        str, Query(pattern="^(open|closed|all)$", description="open (the default), closed or all positions")
    ] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PositionView]:
    await _load(agent, principal, account_id)
    async with agent.sessions() as session:
        query = select(models.Position).where(models.Position.account_id == account_id)
        if status != "all":
            query = query.where(models.Position.status == status)
        rows = (await session.scalars(query.order_by(models.Position.id.desc()).limit(limit))).all()
    return [PositionView.model_validate(r, from_attributes=True) for r in rows]


@router.get("/{account_id}/orders", responses=error_responses(404, 422), response_model=list[OrderView])
async def orders(
    account_id: AccountId,
    agent: AgentDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OrderView]:
    await _load(agent, principal, account_id)
    async with agent.sessions() as session:
        rows = await TradingRepository(session).orders(account_id, limit=limit)
    return [OrderView.model_validate(r, from_attributes=True) for r in rows]


@router.get("/{account_id}/fills", responses=error_responses(404, 422), response_model=list[FillView])
async def fills(
    account_id: AccountId,
    agent: AgentDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FillView]:
    await _load(agent, principal, account_id)
    async with agent.sessions() as session:
        query = (
            select(models.Fill).where(models.Fill.account_id == account_id).order_by(models.Fill.id.desc()).limit(limit)
        )
        rows = (await session.scalars(query)).all()
    return [FillView.model_validate(r, from_attributes=True) for r in rows]
