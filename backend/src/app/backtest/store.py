"""Stored backtest runs read back: a run's row, the runs of a kind, a finished run's whole result rebuilt from its
records, and the bookkeeping of runs started as jobs (queued before their process starts; failed when their process
is gone).

The runner writes a run (`Backtester._finish`); this module is its reading side, so the API and the report need no
run in memory: `load_result` gives the same `BacktestResult` the run returned (its trade fingerprint recomputed
from the loaded fills equals the stored one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from app.backtest.results import (
    BacktestConfig,
    BacktestResult,
    DecisionRecord,
    EquityPoint,
    FundingEvent,
    OrderRecord,
    TradeFill,
)
from app.db.models import BacktestRecord, BacktestRun

FINISHED = ("done", "stopped")  # a run with a result: complete, or ended early by its cost cap
UNFINISHED = ("queued", "running")
INTERRUPTED = "interrupted: the process running it stopped"

Sessions = async_sessionmaker[AsyncSession]
T = TypeVar("T")


class RunNotFoundError(LookupError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"backtest {run_id} does not exist")
        self.run_id = run_id


class RunNotFinishedError(RuntimeError):
    """The run has no result (yet): it is queued, running or failed."""

    def __init__(self, run_id: int, status: str, error: str | None = None) -> None:
        reason = f"backtest {run_id} is {status}" + (f": {error}" if error else "")
        super().__init__(reason if status == "failed" else f"{reason}; its report is ready once it is done")
        self.run_id = run_id
        self.status = status


# ------------------------------------------------------------------------------------------------ reading
async def get_run(sessions: Sessions, run_id: int) -> BacktestRun | None:
    async with sessions() as session:
        return await session.get(BacktestRun, run_id)


async def list_runs(
    sessions: Sessions,
    *,
    kind: str | None = None,
    parent_id: int | None = None,
    top_level: bool = False,
    limit: int = 50,
) -> list[BacktestRun]:
    """Runs newest first, without their equity (large; reading it raises). `parent_id`: the runs of that parent
    (an arena's entrants, a backtest's baseline and masked runs); `top_level`: only runs without a parent."""
    query = select(BacktestRun).options(defer(BacktestRun.equity, raiseload=True))
    if kind is not None:
        query = query.where(BacktestRun.kind == kind)
    if parent_id is not None:
        query = query.where(BacktestRun.parent_id == parent_id)
    elif top_level:
        query = query.where(BacktestRun.parent_id.is_(None))
    async with sessions() as session:
        return list((await session.scalars(query.order_by(BacktestRun.id.desc()).limit(limit))).all())


async def parts_of(sessions: Sessions, parent_ids: Sequence[int]) -> dict[int, list[BacktestRun]]:
    """The runs beside each of `parent_ids` (a backtest's baseline and masked runs, an arena's entrants), oldest
    first, without their equity."""
    found: dict[int, list[BacktestRun]] = {parent: [] for parent in parent_ids}
    if not parent_ids:
        return found
    query = (
        select(BacktestRun)
        .options(defer(BacktestRun.equity, raiseload=True))
        .where(BacktestRun.parent_id.in_(list(parent_ids)))
        .order_by(BacktestRun.id)
    )
    async with sessions() as session:
        for run in (await session.scalars(query)).all():
            if run.parent_id is not None:
                found[run.parent_id].append(run)
    return found


def config_from_json(values: dict[str, Any]) -> BacktestConfig:
    """The settings as `runner.config_json` stored them (keys this version does not know are left out)."""
    known = {f.name for f in fields(BacktestConfig)}
    kept = {k: v for k, v in values.items() if k in known}
    kept["assets"] = tuple(values["assets"])
    kept["start"], kept["end"] = _time(values["start"]), _time(values["end"])
    kept["date_shift"] = timedelta(seconds=float(values.get("date_shift") or 0.0))
    return BacktestConfig(**kept)


async def load_result(sessions: Sessions, run_id: int) -> BacktestResult:
    """The result of a finished run (done, or stopped by its cost cap), rebuilt from its row and records.

    What the records do not hold (model calls, cached answers, errors, fallbacks, the knowledge cutoff, notes) is
    read from the stored summary, where the run put it."""
    async with sessions() as session:
        run = await session.get(BacktestRun, run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        if run.status not in FINISHED:
            raise RunNotFinishedError(run_id, run.status, run.error)
        rows = (
            await session.execute(
                select(BacktestRecord.kind, BacktestRecord.at, BacktestRecord.asset, BacktestRecord.payload)
                .where(BacktestRecord.run_id == run_id)
                .order_by(BacktestRecord.kind, BacktestRecord.seq)
            )
        ).all()
    config = config_from_json(run.config)
    payloads: dict[str, list[dict[str, Any]]] = {}
    rates: dict[str, list[tuple[datetime, float]]] = {asset: [] for asset in config.assets}
    for kind, at, asset, payload in rows:
        if kind == "rate":
            rates.setdefault(asset, []).append((at, float(payload["rate"])))
        else:
            payloads.setdefault(kind, []).append(payload)
    summary = run.summary or {}
    figures = summary.get("strategy") or {}
    cost = summary.get("cost") or {}
    cutoff = (summary.get("sample_split") or {}).get("knowledge_cutoff")
    equity = [
        EquityPoint(_time(at), value, wallet, gross, dict(prices))
        for at, value, wallet, gross, prices in run.equity or []
    ]
    return BacktestResult(
        config=config,
        equity=equity,
        fills=_rebuild(TradeFill, payloads.get("fill", []), times=("at",)),
        funding=_rebuild(FundingEvent, payloads.get("funding", []), times=("at",)),
        orders=_rebuild(OrderRecord, payloads.get("order", []), times=("at",)),
        decisions=_rebuild(DecisionRecord, payloads.get("decision", []), times=("cycle_time",)),
        funding_rates=rates,
        data_fingerprint=run.data_fingerprint or "",
        trade_fingerprint=run.trade_fingerprint or "",
        code_version=run.code_version or "",
        model_cost_usd=run.spent_usd,
        model_calls=int(cost.get("model_calls", figures.get("model_calls")) or 0),
        cached_answers=int(cost.get("cached_answers", figures.get("cached_answers")) or 0),
        cycles=int(summary.get("cycles", len(equity)) or 0),
        errors=int(figures.get("errors") or 0),
        fallbacks=int(figures.get("fallbacks") or 0),
        knowledge_cutoff=_time(cutoff) if cutoff else None,
        stopped=run.error if run.status == "stopped" else None,
        notes=list(summary.get("notes") or []),
    )


def _rebuild(cls: type[T], payloads: Sequence[dict[str, Any]], *, times: tuple[str, ...]) -> list[T]:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    out = []
    for payload in payloads:
        values = {k: v for k, v in payload.items() if k in known}
        for name in times:
            values[name] = _time(values[name])
        out.append(cls(**values))
    return out


def _time(text: str | datetime) -> datetime:
    return text if isinstance(text, datetime) else datetime.fromisoformat(text)


# ----------------------------------------------------------------------------------------------- job rows
async def create_queued(
    sessions: Sessions, config_json: dict[str, Any], *, now: datetime, cycles_total: int = 0
) -> int:
    """A run waiting for its job process (which turns it `running` and fills in its fingerprints)."""
    label = config_json.get("label") or f"{config_json.get('model')} / {config_json.get('strategy')}"
    async with sessions.begin() as session:
        run = BacktestRun(
            kind="backtest",
            label=label,
            status="queued",
            config=config_json,
            cycles_total=cycles_total,
            cycles_done=0,
            spent_usd=0.0,
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        await session.flush()
        return run.id


async def set_pid(sessions: Sessions, run_id: int, pid: int, *, now: datetime) -> None:
    """The process started for a queued run (its own start writes the same pid again)."""
    async with sessions.begin() as session:
        await session.execute(
            update(BacktestRun)
            .where(BacktestRun.id == run_id, BacktestRun.status.in_(UNFINISHED))
            .values(pid=pid, updated_at=now)
        )


async def fail_unfinished(sessions: Sessions, run_ids: Sequence[int], reason: str, *, now: datetime) -> list[int]:
    """Mark the runs of `run_ids` still queued or running failed with `reason`; their ids."""
    if not run_ids:
        return []
    async with sessions.begin() as session:
        failed = (
            await session.scalars(
                update(BacktestRun)
                .where(BacktestRun.id.in_(list(run_ids)), BacktestRun.status.in_(UNFINISHED))
                .values(status="failed", error=reason, updated_at=now, finished_at=now)
                .returning(BacktestRun.id)
            )
        ).all()
    return sorted(failed)


async def mark_interrupted(sessions: Sessions, *, now: datetime, stale_after_s: float = 120) -> list[int]:
    """Runs left queued or running whose process is gone become failed (`INTERRUPTED`); their ids.

    Gone: the recorded process is not alive on this machine, or the run has not reported progress for
    `stale_after_s` (a process on another machine, a pid taken by another program, a queued run that never got a
    process). Called at the API's start, when this process runs no job: its own pid is gone too (in a container
    the restarted server often has the pid its predecessor had)."""
    stale = now - timedelta(seconds=stale_after_s)
    async with sessions() as session:
        candidates = (
            await session.execute(
                select(BacktestRun.id, BacktestRun.pid, BacktestRun.updated_at).where(
                    BacktestRun.status.in_(UNFINISHED),
                    or_(BacktestRun.pid.is_not(None), BacktestRun.updated_at < stale),
                )
            )
        ).all()
    gone = [run_id for run_id, pid, updated in candidates if updated < stale or not _alive(pid)]
    return await fail_unfinished(sessions, gone, INTERRUPTED, now=now)


def _alive(pid: int | None) -> bool:
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
