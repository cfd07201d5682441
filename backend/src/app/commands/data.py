"""`trading-agent data ...`: market data in the database (wired in `app.cli` as `data`).

`data import DIR` reads a folder of CSV files (the `../shared/data/market/` format, see `ReplaySource`) and
upserts the candles and funding rates into the database named by DATABASE_URL. Re-running it is idempotent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.core.config import Settings
from app.core.timeframes import from_ms, timeframe_delta, timeframe_seconds
from app.services.market_data.base import CandleSeries, FundingRate
from app.services.market_data.candle_store import CandleStore
from app.services.market_data.replay import ReplayDataError, ReplaySource, slice_series

data_app = typer.Typer(help="Market data: import CSV folders into the candle store.", no_args_is_help=True)

IMPORT_CHUNK = 10_000  # candles per upsert (one transaction each), so the progress bar moves


@data_app.callback()
def _group() -> None:
    """Market data commands (a group even with one command, so `data import DIR` works standalone too)."""


@dataclass
class _Job:
    asset: str
    timeframe: str  # "funding" for funding rates
    candles: CandleSeries | None = None
    funding: list[FundingRate] | None = None

    @property
    def size(self) -> int:
        return len(self.candles) if self.candles is not None else len(self.funding or [])


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def _plan(replay: ReplaySource, timeframes: list[str] | None) -> list[_Job]:
    """Every series to import, read (and aggregated) before the database is touched."""
    jobs: list[_Job] = []
    for asset in replay.assets:
        for timeframe in timeframes if timeframes is not None else replay.timeframes(asset):
            jobs.append(_Job(asset, timeframe, candles=replay.series(asset, timeframe)))
        funding = replay.funding_history(asset)
        if funding:
            jobs.append(_Job(asset, "funding", funding=funding))
    return jobs


@data_app.command("import")
def import_(
    folder: Annotated[Path, typer.Argument(help="Folder of CSVs named like BTC_USDT-5m.csv, BTC_USDT-funding.csv")],
    source: Annotated[str, typer.Option(help="Source name the rows are stored under")] = "replay",
    assets: Annotated[str | None, typer.Option(help="Comma-separated assets (default: every asset in DIR)")] = None,
    timeframes: Annotated[
        str | None, typer.Option(help="Comma-separated timeframes; missing files are aggregated (default: the files')")
    ] = None,
    quote: Annotated[str | None, typer.Option(help="Only pairs quoted in this currency (DIR mixes quotes)")] = None,
) -> None:
    """Import candles and funding rates from CSV files into the database (idempotent).

    Exit code 2 when DIR is missing, a CSV is malformed or a timeframe cannot be built from the files.
    """
    if not folder.is_dir():
        raise _fail(f"{folder} is not a folder")
    wanted_timeframes = _split(timeframes)
    try:
        for timeframe in wanted_timeframes or []:
            timeframe_seconds(timeframe)
        replay = ReplaySource(folder, assets=_split(assets), quote=quote)
        jobs = _plan(replay, wanted_timeframes)
    except (ReplayDataError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    settings = Settings()
    rows = asyncio.run(_import(settings.database_url, source, jobs))
    table = Table(title=f"imported as {source!r}", box=box.SIMPLE_HEAD)
    for name in ("asset", "timeframe", "rows", "new", "first (UTC)", "last (UTC)", "gaps"):
        table.add_column(name, no_wrap=True, justify="right" if name in ("rows", "new", "gaps") else "left")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


async def _import(database_url: str, source: str, jobs: list[_Job]) -> list[tuple[str, ...]]:
    from app.db.migrate import ensure_migrated
    from app.db.session import create_engine, create_session_factory

    engine = create_engine(database_url)
    try:
        await ensure_migrated(engine)
        store = CandleStore(create_session_factory(engine))
        now = datetime.now(UTC)
        new: dict[tuple[str, str], int] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            overall = progress.add_task("importing", total=sum(job.size for job in jobs))
            for job in jobs:
                progress.update(overall, description=f"{job.asset} {job.timeframe}")
                key = (job.asset, job.timeframe)
                if job.funding is not None:
                    new[key] = await store.upsert_funding(source, job.asset, job.funding)
                    progress.advance(overall, job.size)
                    continue
                assert job.candles is not None
                new[key] = 0
                for start in range(0, job.size, IMPORT_CHUNK):
                    chunk = slice_series(job.candles, start, min(job.size, start + IMPORT_CHUNK))
                    new[key] += await store.upsert_candles(source, job.asset, job.timeframe, chunk, now=now)
                    progress.advance(overall, len(chunk))
        return [await _summary(store, source, job, new[(job.asset, job.timeframe)]) for job in jobs]
    finally:
        await engine.dispose()


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


async def _summary(store: CandleStore, source: str, job: _Job, new: int) -> tuple[str, ...]:
    """(asset, timeframe, rows, new, first, last, gaps) of what the database now holds."""
    if job.funding is not None:
        stored = await store.load_funding(source, job.asset)
        first, last = (from_ms(stored[i].funding_time_ms) if stored else None for i in (0, -1))
        return job.asset, job.timeframe, str(len(stored)), str(new), _when(first), _when(last), ""
    count = await store.count_candles(source, job.asset, job.timeframe)
    span = await store.span(source, job.asset, job.timeframe)
    gaps = 0
    if span is not None:
        end = span[1] + timeframe_delta(job.timeframe)
        gaps = len(await store.find_gaps(source, job.asset, job.timeframe, span[0], end))
    first, last = span if span else (None, None)
    return job.asset, job.timeframe, str(count), str(new), _when(first), _when(last), str(gaps)
