"""Backtests (admin keys only): start one as a job (the answer comes at once, with its id), follow its progress,
read its report: the summary (JSON), the page (self-contained HTML) and the picture (PNG).

A backtest runs in a process of its own (`app.backtest.jobs`), never in the API's event loop; its row is its
progress. The page and the picture are drawn from the stored run the first time they are asked for, then kept on
disk in the run's folder."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse

from app.api.auth import AdminPrincipal, MutatingAdmin
from app.api.deps import get_agent
from app.api.errors import ErrorBody, error_responses
from app.backtest import store
from app.backtest.jobs import BacktestJobs, JobsFullError, JobStartError
from app.backtest.results import BacktestConfig, BacktestResult
from app.backtest.runner import config_json
from app.bootstrap import Agent
from app.db.models import BacktestRun
from app.schemas.api import MAX_DB_ID
from app.schemas.backtests import (
    BacktestCreate,
    BacktestCreated,
    BacktestLinks,
    BacktestPart,
    BacktestView,
    server_folder,
)
from app.services.llm.llm_service import is_baseline
from app.services.llm.strategy_checks import runnable_problem
from app.services.llm.strategy_manager import StrategyError, StrategyNotFoundError

PREFIX = "/api/v1/backtests"
router = APIRouter(prefix=PREFIX, tags=["backtests"], responses=error_responses(401, 403))
AgentDep = Annotated[Agent, Depends(get_agent)]
BacktestId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The backtest's id")]
# The page's own policy (app.backtest.report), sent as a header too: it loads nothing from anywhere.
HTML_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: Responses = {404: {"description": "No such backtest", "model": ErrorBody}}
_NOT_DONE: Responses = {
    409: {"description": "Not done: queued, running or failed (the detail says which)", "model": ErrorBody}
}
_REFUSED: Responses = {
    404: {"description": "No strategy by that id, or no such data folder on the server", "model": ErrorBody},
    409: {
        "description": "Refused, nothing stored: the request conflicts with itself (`to` before `from`, more than "
        "20,000 cycles, `long_interval` not a whole multiple of `interval`, an asset twice, options of another data "
        "kind, `mask_assets` without `mask_dates`), the strategy cannot run at this interval (deactivated, invalid, "
        "unservable timeframes), or as many backtests are running as may at once",
        "model": ErrorBody,
    },
    503: {"description": "The job's process could not be started (the run is stored as failed)", "model": ErrorBody},
}


def _jobs(request: Request) -> BacktestJobs:
    jobs: BacktestJobs = request.app.state.backtest_jobs
    return jobs


def _links(run_id: int) -> BacktestLinks:
    base = f"{PREFIX}/{run_id}"
    return BacktestLinks.model_validate(
        {
            "self": base,
            "report": f"{base}/report",
            "report_html": f"{base}/report.html",
            "report_png": f"{base}/report.png",
        }
    )


@router.post(
    "",
    response_model=BacktestCreated,
    status_code=202,
    responses={**error_responses(413, 422, 429), **_REFUSED},
)
async def create_backtest(
    body: BacktestCreate, agent: AgentDep, _: MutatingAdmin, request: Request, response: Response
) -> BacktestCreated:
    """Queue the backtest and start its job; the answer comes at once with its id and links. Follow its progress at
    `links.self` (status, cycles, percent, ETA, money spent) and read its report once it is `done`. Refused with the
    reason, nothing stored: a request that conflicts with itself (409: `to` before `from`, more than 20,000 cycles,
    ...), a data folder or strategy this server does not have (404), a strategy that cannot run at `interval`, or as
    many backtests running as may at once (409). A period outside the data, or a cost estimate above `max_cost_usd`,
    fails the run with the reason (its `error`)."""
    conflict = body.conflict()
    if conflict:
        raise HTTPException(status_code=409, detail=conflict)
    data_dir = None
    if body.data_dir is not None:
        data_dir = await asyncio.to_thread(server_folder, body.data_dir)
        if data_dir is None:
            raise HTTPException(
                status_code=404, detail=f"data_dir {body.data_dir[:200]!r}: no such folder on the server"
            )
    await _check_strategy(agent, body)
    config = BacktestConfig(
        assets=tuple(body.assets),
        interval=body.interval,
        long_interval=body.long_interval,
        start=body.start,
        end=body.end,
        strategy=body.strategy,
        model=body.model,
        data=body.data,
        data_dir=data_dir,
        data_source=(body.data_source or agent.settings.market_source) if body.data == "stored" else None,
        seed=body.seed,
        initial_balance=body.initial_balance,
        temperature=body.temperature,
        max_cost_usd=body.max_cost_usd,
        mask_dates=body.mask_dates,
        mask_assets=body.mask_assets,
        label=body.label,
    )
    values = {**config_json(config), "with_baseline": body.baseline}
    jobs = _jobs(request)
    try:
        async with jobs.slot():
            run_id = await store.create_queued(
                agent.sessions, values, now=agent.wall_clock.now(), cycles_total=body.cycles
            )
            await jobs.start(run_id)
    except JobsFullError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except JobStartError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    links = _links(run_id)
    response.headers["Location"] = links.self_
    request.state.audit_detail = (
        f"backtest {run_id} started: {config.model} / {config.strategy} on {','.join(config.assets)} "
        f"{config.interval}, {config.start.isoformat()} to {config.end.isoformat()}, {body.cycles} cycles, "
        f"data {config.data}"
    )
    return BacktestCreated(id=run_id, status="queued", links=links)


async def _check_strategy(agent: Agent, body: BacktestCreate) -> None:
    try:
        strategy = await agent.strategies.get_strategy(body.strategy)
    except StrategyNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except StrategyError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    problem = runnable_problem(strategy, interval=body.interval)
    if problem:
        raise HTTPException(status_code=409, detail=f"{problem} (the backtest's interval)")


@router.get("", response_model=list[BacktestView], responses=error_responses(422))
async def list_backtests(
    agent: AgentDep,
    _: AdminPrincipal,
    parent_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_DB_ID,
            description="The runs beside this one (its baseline and masked runs); null: "
            "the backtests started on their own",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 50,
) -> list[BacktestView]:
    """Backtests, newest first, with their progress (without their summaries: see each one's)."""
    runs = await store.list_runs(
        agent.sessions, kind=None if parent_id else "backtest", parent_id=parent_id, top_level=True, limit=limit
    )
    parts = await store.parts_of(agent.sessions, [run.id for run in runs])
    now = agent.wall_clock.now()
    return [_view(run, parts[run.id], now, with_summary=False) for run in runs]


@router.get("/{backtest_id}", response_model=BacktestView, responses={**error_responses(422), **_NOT_FOUND})
async def get_backtest(backtest_id: BacktestId, agent: AgentDep, _: AdminPrincipal) -> BacktestView:
    """Its status and progress: cycles done of all, percent, ETA at the rate so far, money spent against the
    estimate, the error of a failed run, fingerprints, and the summary once done."""
    run = await _run(agent, backtest_id)
    parts = await store.parts_of(agent.sessions, [run.id])
    return _view(run, parts[run.id], agent.wall_clock.now(), with_summary=True)


@router.get(
    "/{backtest_id}/report",
    response_model=dict[str, Any],
    responses={**error_responses(422), **_NOT_FOUND, **_NOT_DONE},
)
async def backtest_report(backtest_id: BacktestId, agent: AgentDep, _: AdminPrincipal) -> dict[str, Any]:
    """The figures: the strategy against BTC and equal-weight buy-and-hold (and the rule baseline), per asset, in-
    and out-of-sample at the model's knowledge cutoff, the masked run, cost, fingerprints."""
    run = _finished(await _run(agent, backtest_id))
    return run.summary or {}


@router.get(
    "/{backtest_id}/report.html",
    response_class=Response,
    responses={
        200: {
            "description": "The report page: self-contained (no script, nothing loaded from elsewhere)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **error_responses(422),
        **_NOT_FOUND,
        **_NOT_DONE,
    },
)
async def backtest_report_html(
    backtest_id: BacktestId, agent: AgentDep, request: Request, _: AdminPrincipal
) -> Response:
    run = _finished(await _run(agent, backtest_id))
    page = (await _rendered(agent, _jobs(request), run, html=True))[1]
    return HTMLResponse(page, headers={"Content-Security-Policy": HTML_POLICY})


@router.get(
    "/{backtest_id}/report.png",
    response_class=Response,
    responses={
        200: {
            "description": "Equity and drawdown against buy-and-hold",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(422),
        **_NOT_FOUND,
        **_NOT_DONE,
    },
)
async def backtest_report_png(
    backtest_id: BacktestId, agent: AgentDep, request: Request, _: AdminPrincipal
) -> Response:
    run = _finished(await _run(agent, backtest_id))
    png = (await _rendered(agent, _jobs(request), run, html=False))[0]
    return Response(png, media_type="image/png")


# ------------------------------------------------------------------------------------------------ helpers
async def _run(agent: Agent, run_id: int) -> BacktestRun:
    run = await store.get_run(agent.sessions, run_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"backtest {run_id} does not exist")
    return run


def _finished(run: BacktestRun) -> BacktestRun:
    if run.status not in store.FINISHED:
        raise HTTPException(status_code=409, detail=str(store.RunNotFinishedError(run.id, run.status, run.error)))
    return run


def _view(run: BacktestRun, parts: list[BacktestRun], now: datetime, *, with_summary: bool) -> BacktestView:
    """The run with the progress of the whole job: its own cycles and its parts' (the baseline and masked runs
    come after it; until they start, each is counted as long as the run itself)."""
    expected = len(parts)
    if run.kind == "backtest" and run.parent_id is None:
        config = run.config
        expected = max(
            expected,
            int(bool(config.get("mask_dates")))
            + int(bool(config.get("with_baseline", True)) and not is_baseline(config.get("model"))),
        )
    total = run.cycles_total + sum(p.cycles_total for p in parts) + run.cycles_total * (expected - len(parts))
    done = run.cycles_done + sum(p.cycles_done for p in parts)
    finished = run.status in store.FINISHED
    percent = 100.0 if finished else (round(min(100.0, 100.0 * done / total), 1) if total else 0.0)
    eta = None
    if run.status == "running" and done and total:
        last = max([run.updated_at, *(p.updated_at for p in parts)])
        elapsed = (last - run.created_at).total_seconds()
        if elapsed > 0:
            eta = round(max(0.0, elapsed / done * (total - done) - (now - last).total_seconds()), 1)
    return BacktestView(
        id=run.id,
        kind=run.kind,
        parent_id=run.parent_id,
        label=run.label,
        status=run.status,
        config=run.config,
        cycles_done=done,
        cycles_total=total,
        percent=percent,
        eta_s=eta,
        spent_usd=run.spent_usd + sum(p.spent_usd for p in parts),
        estimated_cost_usd=run.estimated_cost_usd,
        error=run.error,
        data_fingerprint=run.data_fingerprint,
        trade_fingerprint=run.trade_fingerprint,
        code_version=run.code_version,
        created_at=run.created_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
        parts=[
            BacktestPart(
                id=p.id,
                label=p.label,
                status=p.status,
                cycles_done=p.cycles_done,
                cycles_total=p.cycles_total,
                trade_fingerprint=p.trade_fingerprint,
                error=p.error,
            )
            for p in parts
        ],
        summary=run.summary if with_summary and finished else None,
        links=_links(run.id),
    )


async def _rendered(agent: Agent, jobs: BacktestJobs, run: BacktestRun, *, html: bool) -> tuple[bytes, str]:
    """(the PNG, the page when asked), drawn from the stored run once and then read from its folder. The files'
    names carry the run's identity (id, creation, trades), so another database's run of the same id is never
    served."""
    identity = f"{run.id}|{run.created_at.isoformat()}|{run.trade_fingerprint}|{run.finished_at}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    folder = jobs.folder(run.id)
    png_path, html_path = folder / f"report-{key}.png", folder / f"report-{key}.html"
    async with jobs.render_lock:  # one drawing at a time (matplotlib is slow and memory-hungry)
        png = png_path.read_bytes() if png_path.exists() else None
        page = html_path.read_text() if html and html_path.exists() else ""
        if png is not None and (page or not html):
            return png, page
        result = await store.load_result(agent.sessions, run.id)
        baseline = await _baseline(agent, run)
        summary = run.summary or {}
        if png is None:
            png = await asyncio.to_thread(_draw, result, summary, baseline)
            _write(png_path, png)
        if html:
            from app.backtest.report import render_html

            page = await asyncio.to_thread(render_html, result, summary, png=png, baseline=baseline)
            _write(html_path, page.encode())
    return png, page


def _draw(result: BacktestResult, summary: dict[str, Any], baseline: BacktestResult | None) -> bytes:
    from app.backtest.report import render_png

    return render_png(result, summary, None, baseline=baseline)


async def _baseline(agent: Agent, run: BacktestRun) -> BacktestResult | None:
    """The rule baseline run beside `run` on the same data, when it has one."""
    for part in (await store.parts_of(agent.sessions, [run.id]))[run.id]:
        config = part.config
        if part.status in store.FINISHED and is_baseline(config.get("model")) and not config.get("mask_dates"):
            return await store.load_result(agent.sessions, part.id)
    return None


def _write(path: FilePath, data: bytes) -> None:
    """Whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
