"""What each dashboard page shows, read with the API's own handlers and repositories: an account key sees on the
dashboard exactly what it may read through the API (another account answers 404 with the API's words)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import case, func, select

from app.api import health
from app.api.auth import Principal, ensure_scope
from app.api.v1 import accounts as accounts_api
from app.bootstrap import Agent
from app.db import models
from app.db.repositories.alerts import AlertRepository
from app.db.repositories.llm_calls import LLMCallRepository
from app.db.repositories.trading import TradingRepository
from app.db.types import epoch_ms
from app.schemas.api import AccountView, FillView, OrderView, PositionView
from app.schemas.decision_result import DecisionResult
from app.services.market_data.candle_store import CandleStore
from app.web.charts import drawdown

DAY = timedelta(days=1)
TIMELINE_PAGE = 30


def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class AccountRow:
    """One account as the overview shows it."""

    view: AccountView
    equity: float
    day_pnl: float | None
    day_pnl_pct: float | None
    open_positions: int
    llm_spent_today: float
    llm_budget: float | None
    last_decision: models.Decision | None


@dataclass
class PositionRow:
    position: PositionView
    mark: float | None
    unrealized: float | None


@dataclass
class AccountPage:
    row: AccountRow
    curve_times: list[datetime]
    curve_equity: list[float]
    curve_drawdown: list[float]
    max_drawdown: float
    positions: list[PositionRow]
    orders: list[OrderView]
    fills: list[FillView]
    status_history: list[models.AccountStatusChange]
    strategies: list[Any]
    models: list[str]
    model_switchable: bool
    alerts: list[Any] = field(default_factory=list)


async def account_row(agent: Agent, view: AccountView) -> AccountRow:
    wall_day = day_start(agent.wall_clock.now())
    market_day = day_start(agent.clock.now())
    async with agent.sessions() as session:
        trading = TradingRepository(session)
        curve = await trading.equity_curve(view.id, limit=1)
        start = await trading.day_start_equity(view.id, market_day)
        open_count = len(await trading.open_positions(view.id))
        spent = await LLMCallRepository(session).spent_since(view.id, wall_day)
        last = await session.scalar(
            select(models.Decision)
            .where(models.Decision.account_id == view.id, models.Decision.shadow_of.is_(None))
            .order_by(models.Decision.id.desc())
            .limit(1)
        )
    equity = curve[-1].equity if curve else view.initial_balance
    day_pnl = equity - start if start is not None else None
    budget = view.daily_llm_budget_usd if view.daily_llm_budget_usd is not None else agent.settings.llm_daily_budget_usd
    return AccountRow(
        view=view,
        equity=equity,
        day_pnl=day_pnl,
        day_pnl_pct=(day_pnl / start * 100) if day_pnl is not None and start else None,
        open_positions=open_count,
        llm_spent_today=spent,
        llm_budget=budget,
        last_decision=last,
    )


async def overview(agent: Agent, principal: Principal) -> dict[str, Any]:
    views = await accounts_api.list_accounts(agent, principal)
    rows = [await account_row(agent, v) for v in views]
    state = await health.health(agent)
    return {
        "rows": rows,
        "health": state,
        "circuits": agent.llm.breakers.snapshot(),
        "alerts": await recent_alerts(agent, principal, limit=8),
    }


async def _marks(agent: Agent, symbols: set[str]) -> dict[str, float]:
    """The last closed candle's close per symbol, from the candle store (no request to the market)."""
    store = CandleStore(agent.sessions)
    now = agent.clock.now()
    marks = {}
    for symbol in symbols:
        series = await store.load_candles(agent.market.name, symbol, agent.settings.interval, limit=1, until=now)
        if len(series):
            marks[symbol] = float(series.candle(len(series) - 1).close)
    return marks


async def account_page(agent: Agent, principal: Principal, account_id: int) -> AccountPage:
    view = await accounts_api.get_account(account_id, agent, principal)  # 404 for an account the key cannot see
    row = await account_row(agent, view)
    async with agent.sessions() as session:
        curve = await TradingRepository(session).equity_curve(account_id, limit=2000)
        history = list(
            (
                await session.scalars(
                    select(models.AccountStatusChange)
                    .where(models.AccountStatusChange.account_id == account_id)
                    .order_by(models.AccountStatusChange.id.desc())
                    .limit(10)
                )
            ).all()
        )
    positions = await accounts_api.positions(account_id, agent, principal, status="open", limit=100)
    marks = await _marks(agent, {p.symbol for p in positions})
    rows = []
    for p in positions:
        mark = marks.get(p.symbol)
        sign = 1.0 if p.side == "long" else -1.0
        rows.append(PositionRow(p, mark, (mark - p.entry_price) * p.size * sign if mark is not None else None))
    times = [s.taken_at for s in curve]
    equity = [s.equity for s in curve]
    falls = drawdown(equity)
    strategies = await agent.strategies.get_available_strategies()
    return AccountPage(
        row=row,
        curve_times=times,
        curve_equity=equity,
        curve_drawdown=falls,
        max_drawdown=min(falls, default=0.0),
        positions=rows,
        orders=await accounts_api.orders(account_id, agent, principal, limit=100),
        fills=await accounts_api.fills(account_id, agent, principal, limit=50),
        status_history=history,
        strategies=strategies,
        models=list(agent.llm.models),
        model_switchable=not agent.llm.is_simulated,
        alerts=await recent_alerts(agent, principal, account_id=account_id, limit=10),
    )


async def timeline(
    agent: Agent, principal: Principal, account_id: int, before_id: int | None = None
) -> tuple[AccountView, list[DecisionResult]]:
    view = await accounts_api.get_account(account_id, agent, principal)
    items = await agent.engine.get_decision_history(account_id, TIMELINE_PAGE, None, before_id=before_id)
    # the history is the API's JSON already (stored JSON kept as orjson fragments): read back as the API's schema
    return view, [DecisionResult.model_validate(item) for item in orjson.loads(orjson.dumps(items))]


async def decision(agent: Agent, principal: Principal, decision_id: int) -> DecisionResult:
    own = None if principal.is_admin else principal.account_id
    return await agent.engine.get_decision(decision_id, account_id=own, provenance=True)


async def model_costs(agent: Agent, principal: Principal, days: int = 14) -> dict[str, Any]:
    """Calls, tokens, cost and latency per model and wall-clock day (the LLM calls table), newest day first."""
    since = day_start(agent.wall_clock.now()) - (days - 1) * DAY
    day = epoch_ms(models.LLMCall.created_at) // 86_400_000  # whole UTC days since 1970, on both databases
    query = (
        select(
            day.label("day"),
            models.LLMCall.model_requested,
            func.count().label("calls"),
            func.sum(case((models.LLMCall.outcome != "ok", 1), else_=0)).label("failures"),
            func.sum(
                func.coalesce(models.LLMCall.prompt_tokens, 0) + func.coalesce(models.LLMCall.completion_tokens, 0)
            ).label("tokens"),
            func.sum(func.coalesce(models.LLMCall.cost_usd, 0.0)).label("cost"),
            func.avg(models.LLMCall.latency_ms).label("latency"),
        )
        .where(models.LLMCall.created_at >= since)
        .group_by(day, models.LLMCall.model_requested)
        .order_by(day.desc(), models.LLMCall.model_requested)
    )
    if not principal.is_admin:
        query = query.where(models.LLMCall.account_id == principal.account_id)
    async with agent.sessions() as session:
        found = (await session.execute(query)).all()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = [
        {
            "day": (epoch + int(r.day) * DAY).date(),
            "model": r.model_requested,
            "calls": int(r.calls),
            "failures": int(r.failures or 0),
            "tokens": int(r.tokens or 0),
            "cost": float(r.cost or 0.0),
            "latency": float(r.latency) if r.latency is not None else None,
        }
        for r in found
    ]
    usage = await agent.llm.get_usage_metrics(
        account_id=None if principal.is_admin else principal.account_id, since=None, until=None
    )
    return {"rows": rows, "usage": usage, "days": days, "circuits": agent.llm.breakers.snapshot()}


async def recent_alerts(
    agent: Agent, principal: Principal, *, account_id: int | None = None, limit: int = 50
) -> list[Any]:
    """The newest alerts the key may see: an account key, its account's and the agent-wide ones."""
    if account_id is not None:
        ensure_scope(principal, account_id)
    scope = account_id if account_id is not None else (None if principal.is_admin else principal.account_id)
    async with agent.sessions() as session:
        return list(await AlertRepository(session).recent(limit=limit, account_id=scope))


async def experiments(agent: Agent, principal: Principal, limit: int = 20) -> list[dict[str, Any]]:
    """The newest experiments the key may see, each with its results and the chart of its variants' estimates."""
    scope = None if principal.is_admin else principal.account_id
    found = (await agent.experiments.list_all(scope, status=None))[:limit]
    out = []
    for experiment in found:
        results = await agent.experiments.results(experiment.id, scope)
        out.append(
            {
                "experiment": experiment,
                "variants": results.variants,
                "config": {v.id: v for v in experiment.variants},
                "chart_rows": [
                    (v.name, v.estimate.value, v.estimate.low, v.estimate.high)
                    for v in results.variants
                    if v.estimate is not None
                ],
            }
        )
    return out
