"""The dashboard: server-rendered pages at `/`, served by the agent itself (no CDN, no front-end build, one small
script of our own). Log in with an API key; an account key sees only its account, as in the API, because every
page reads through the API's own handlers with the logged-in key's principal.

Pages update in place: the script asks `/events` every few seconds for a version of what the key can see and,
when it changed, fetches the page again and swaps its `<main>` (no reload, forms being filled are left alone).
Controls are plain forms posted here, checked (CSRF token, per-key mutation limit, audit entry) and passed to
the same handlers the JSON API runs."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import func, null, select

from app.api.auth import Principal, ensure_scope
from app.api.v1 import accounts as accounts_api
from app.api.v1 import backtests as backtests_api
from app.api.v1 import strategies as strategies_api
from app.bootstrap import Agent
from app.db import models
from app.db.models import Alert
from app.schemas.api import MAX_DB_ID, ModelAssignment, StatusChange, StrategySwitch
from app.services.llm.llm_exceptions import AccountNotFoundError, DecisionNotFoundError
from app.web import charts, formats, views
from app.web.session import COOKIE, SESSION_HOURS, csrf_ok, csrf_token, log_in, session_principal

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(line_chart=charts.line_chart, interval_chart=charts.interval_chart)
templates.env.filters.update(formats.FILTERS)
FLASH = "ta_flash"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# The account controls, each the JSON API's own handler (its checks, the status history, the audit entry)
CONTROLS = {
    "pause": accounts_api.pause,
    "resume": accounts_api.resume,
    "reduce": accounts_api.reduce,
    "halt": accounts_api.halt,
}


class LoginRequired(Exception):
    """No session: the page answers a redirect to the login form."""


class DashboardRoute(APIRoute):
    """A dashboard route answers its errors as pages, in the API's words (the JSON API's stay JSON), and a
    request without a session with the login form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if request.url.path == "/events":
                    return JSONResponse({"detail": "log in again"}, status_code=401)
                return RedirectResponse(f"/login?next={urllib.parse.quote(request.url.path)}", status_code=303)
            except HTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail), exc.headers)
            except (AccountNotFoundError, DecisionNotFoundError) as exc:
                return error_page(request, 404, str(exc))

        return answer


router = APIRouter(include_in_schema=False, route_class=DashboardRoute)


async def _principal(request: Request) -> Principal:
    principal = await session_principal(request)
    if principal is None:
        raise LoginRequired
    return principal


WebPrincipal = Annotated[Principal, Depends(_principal)]


def _agent(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent


def _page(request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any) -> Response:
    """A page, or only its `<main>` when the script asks for it (`X-Dashboard-Fragment`)."""
    flash = request.cookies.get(FLASH)
    context.update(
        principal=principal,
        csrf=csrf_token(request) if principal else "",
        fragment=request.headers.get("x-dashboard-fragment") == "main",
        flash=urllib.parse.unquote(flash) if flash else None,
        parts=_agent(request).parts,
        path=request.url.path,
    )
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Cache-Control"] = "no-store"
    if flash and not context["fragment"]:
        response.delete_cookie(FLASH, path="/")
    return response


def _back(url: str, message: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(FLASH, urllib.parse.quote(message[:600]), max_age=60, path="/", samesite="strict")
    return response


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}


def _account_id(value: int) -> int:
    if not 1 <= value <= MAX_DB_ID:
        raise HTTPException(status_code=404, detail=f"account {value} does not exist")
    return value


# ------------------------------------------------------------------------------------------------ login
@router.get("/login")
async def login_form(request: Request) -> Response:
    if await session_principal(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _page(request, "login.html", None, next=request.query_params.get("next", "/"))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    key = form.get("api_key", "")
    found = await log_in(_agent(request), key) if key.strip() else None
    if found is None:
        return _page(request, "login.html", None, status_code=401, error="invalid API key", next=form.get("next", "/"))
    principal, cookie = found
    target = form.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # never a redirect to another site
    if not principal.is_admin and target == "/":
        target = f"/accounts/{principal.account_id}"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request, principal: WebPrincipal) -> Response:
    form = await _form(request)
    if not csrf_ok(request, form.get("csrf")):
        raise HTTPException(status_code=403, detail="the form has expired: reload the page and try again")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ------------------------------------------------------------------------------------------------ pages
@router.get("/")
async def overview(request: Request, principal: WebPrincipal) -> Response:
    if not principal.is_admin:
        return RedirectResponse(f"/accounts/{principal.account_id}", status_code=303)
    data = await views.overview(_agent(request), principal)
    return _page(request, "overview.html", principal, **data)


@router.get("/accounts/{account_id}")
async def account(request: Request, account_id: int, principal: WebPrincipal) -> Response:
    page = await views.account_page(_agent(request), principal, _account_id(account_id))
    return _page(request, "account.html", principal, page=page, row=page.row, account=page.row.view)


@router.get("/accounts/{account_id}/decisions")
async def decisions(request: Request, account_id: int, principal: WebPrincipal) -> Response:
    before = request.query_params.get("before_id")
    before_id = int(before) if before and before.isdigit() and 0 < int(before) <= MAX_DB_ID else None
    account_view, items = await views.timeline(_agent(request), principal, _account_id(account_id), before_id)
    return _page(request, "decisions.html", principal, account=account_view, items=items, page_size=views.TIMELINE_PAGE)


@router.get("/decisions/{decision_id}")
async def decision(request: Request, decision_id: int, principal: WebPrincipal) -> Response:
    if not 1 <= decision_id <= MAX_DB_ID:
        raise HTTPException(status_code=404, detail=f"decision {decision_id} does not exist")
    item = await views.decision(_agent(request), principal, decision_id)
    return _page(request, "decision.html", principal, item=item)


@router.get("/models")
async def model_costs(request: Request, principal: WebPrincipal) -> Response:
    return _page(request, "models.html", principal, **await views.model_costs(_agent(request), principal))


@router.get("/experiments")
async def experiments(request: Request, principal: WebPrincipal) -> Response:
    return _page(request, "experiments.html", principal, items=await views.experiments(_agent(request), principal))


@router.get("/backtests")
async def backtests(request: Request, principal: WebPrincipal) -> Response:
    if not principal.is_admin:
        raise HTTPException(status_code=403, detail="backtests need an admin API key")
    runs = await backtests_api.list_backtests(_agent(request), principal, parent_id=None, limit=50)
    return _page(request, "backtests.html", principal, runs=runs)


@router.get("/backtests/{backtest_id}/report")
async def backtest_report(request: Request, backtest_id: int, principal: WebPrincipal) -> Response:
    """The backtest's own report page (self-contained, its picture inline), behind the dashboard's login."""
    if not principal.is_admin:
        raise HTTPException(status_code=403, detail="backtests need an admin API key")
    if not 1 <= backtest_id <= MAX_DB_ID:
        raise HTTPException(status_code=404, detail=f"backtest {backtest_id} does not exist")
    return await backtests_api.backtest_report_html(backtest_id, _agent(request), request, principal)


@router.get("/alerts")
async def alerts(request: Request, principal: WebPrincipal) -> Response:
    items = await views.recent_alerts(_agent(request), principal, limit=200)
    return _page(request, "alerts.html", principal, items=items)


@router.get("/events")
async def events(request: Request, principal: WebPrincipal) -> Response:
    """What the page's script polls: a version of everything the key can see; a change means "fetch again"."""
    return JSONResponse({"version": await _version(_agent(request), principal)}, headers={"Cache-Control": "no-store"})


async def _version(agent: Agent, principal: Principal) -> str:
    """One statement (one round trip): the newest decision, order, order change, equity snapshot, account change,
    status change, alert and backtest progress the key can see, and the loop's cycles."""
    scoped = not principal.is_admin

    def newest(column: Any, account_column: Any) -> Any:
        query = select(func.max(column))
        if scoped and account_column is not None:
            query = query.where(account_column == principal.account_id)
        return query.scalar_subquery()

    query = select(
        newest(models.Decision.id, models.Decision.account_id),
        newest(models.Order.id, models.Order.account_id),
        newest(models.Order.updated_at, models.Order.account_id),
        newest(models.EquitySnapshot.id, models.EquitySnapshot.account_id),
        newest(models.Account.updated_at, models.Account.id),
        newest(models.AccountStatusChange.id, models.AccountStatusChange.account_id),
        newest(Alert.last_at, None),  # agent-wide alerts too: an account key sees them
        newest(Alert.id, None),
        null() if scoped else newest(models.BacktestRun.updated_at, None),  # backtests are the admin's
    )
    async with agent.sessions() as session:
        row = (await session.execute(query)).one()
    beat = agent.loop.heartbeat
    return "|".join("" if p is None else str(p) for p in (*row, beat.cycles, beat.running))


# ----------------------------------------------------------------------------------------------- controls
async def _checked_form(request: Request, principal: Principal, account_id: int) -> dict[str, str]:
    """The form, once its CSRF token, the key's scope and its mutation limit are checked."""
    form = await _form(request)
    if not csrf_ok(request, form.get("csrf")):
        raise HTTPException(status_code=403, detail="the form has expired: reload the page and try again")
    ensure_scope(principal, account_id)
    await request.app.state.mutation_limiter.take(principal, _agent(request).wall_clock.now())
    return form


async def _attempt(back: str, failed: str, change: Callable[[], Awaitable[str]]) -> Response:
    """Back to the account's page with what `change` did, or why it was refused (the API's own words)."""
    try:
        done = await change()
    except ValidationError as exc:
        return _back(back, f"{failed}: {exc.errors()[0]['msg']}")
    except HTTPException as exc:
        return _back(back, f"{failed}: {exc.detail}")
    return _back(back, done)


@router.post("/accounts/{account_id}/control")
async def control(request: Request, account_id: int, principal: WebPrincipal) -> Response:
    """Pause, resume, reduce or halt, through the API's own handlers (the same checks, history and audit)."""
    account_id = _account_id(account_id)
    form = await _checked_form(request, principal, account_id)
    action = form.get("action", "")
    back = f"/accounts/{account_id}"
    if action not in CONTROLS:
        return _back(back, f"unknown control {action!r}")
    if action == "halt" and form.get("confirm") != "yes":
        return _back(back, "not halted: tick the box to confirm the halt")
    handler = CONTROLS[action]

    async def change() -> str:
        body = StatusChange(reason=form.get("reason") or f"{action} from the dashboard")
        view = await handler(request, account_id, _agent(request), principal, body)
        return f"account {account_id} is now {view.status}"

    return await _attempt(back, f"not done ({action})", change)


@router.post("/accounts/{account_id}/model")
async def switch_model(request: Request, account_id: int, principal: WebPrincipal) -> Response:
    account_id = _account_id(account_id)
    form = await _checked_form(request, principal, account_id)

    async def change() -> str:
        body = ModelAssignment(model=form.get("model", "").strip() or None)
        view = await accounts_api.assign_model(account_id, body, _agent(request), principal)
        request.state.audit_detail = f"model set to {view.model or 'the default'}"
        return f"account {account_id} now asks {view.model or 'the default model'}"

    return await _attempt(f"/accounts/{account_id}", "model not changed", change)


@router.post("/accounts/{account_id}/strategy")
async def switch_strategy(request: Request, account_id: int, principal: WebPrincipal) -> Response:
    account_id = _account_id(account_id)
    form = await _checked_form(request, principal, account_id)

    async def change() -> str:
        body = StrategySwitch(strategy_id=form.get("strategy_id", ""), reason="switched from the dashboard")
        strategy = await strategies_api.switch(account_id, body, _agent(request), principal, request)
        return f"account {account_id} now runs {strategy.strategy_id}"

    return await _attempt(f"/accounts/{account_id}", "strategy not switched", change)


# ------------------------------------------------------------------------------------------------ install
def install_dashboard(app: FastAPI) -> None:
    """The pages and their static files (the script, the style sheet)."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static")
    app.include_router(router)


def error_page(request: Request, status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    principal = getattr(request.state, "principal", None)
    response = _page(request, "error.html", principal, status_code=status_code, status=status_code, detail=detail)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
