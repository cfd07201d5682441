"""`trading-agent data download`: fill the candle store from a venue (Binance USD-M or Hyperliquid) via ccxt.

Closed candles and funding settlements of the last DAYS days are fetched page by page and upserted into the
database named by DATABASE_URL as they arrive (keyed by venue, asset, timeframe and open time), so a re-run
is idempotent and an interrupted run keeps what it fetched. The summary says, per asset and timeframe, how
many candles were expected, stored and new, and where the gaps are (Hyperliquid serves only its latest 5000
candles per timeframe). Exit codes: 0 complete, 1 the venue failed (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.core.config import Settings
from app.core.errors import TemporaryError
from app.core.logging import configure_logging
from app.core.timeframes import timeframe_seconds
from app.db.migrate import ensure_migrated
from app.db.session import create_engine, create_session_factory
from app.services.market_data.base import UnknownSymbolError
from app.services.market_data.candle_store import CandleStore

if TYPE_CHECKING:  # ccxt is imported when a download runs, not whenever the CLI starts (`trading-agent run`)
    from app.services.market_data.ccxt_source import CcxtMarketData, ExchangeId

# Retries of each read (module constants so tests can shorten them).
ATTEMPTS = 4
BACKOFF_S = 0.5


@dataclass
class _Result:
    asset: str
    series: str  # a timeframe or "funding"
    expected: int | None = None
    received: int = 0
    new: int = 0
    first: datetime | None = None
    last: datetime | None = None
    notes: list[str] = field(default_factory=list)
    missing: int = 0
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)


def _split(value: str) -> list[str]:
    return list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def download(
    source: Annotated[str, typer.Option(help="Venue: binanceusdm or hyperliquid")] = "binanceusdm",
    assets: Annotated[str, typer.Option(help="Comma-separated assets, e.g. BTC,ETH")] = "BTC,ETH",
    timeframes: Annotated[str, typer.Option(help="Comma-separated candle timeframes, e.g. 5m,4h")] = "5m,4h",
    days: Annotated[int, typer.Option(min=1, help="How many days back from now")] = 90,
    base_url: Annotated[
        str | None, typer.Option(hidden=True, help="Send the venue's public API calls here (tests, fakes)")
    ] = None,
) -> None:
    """Download closed candles and funding history into the database (DATABASE_URL); safe to re-run.

    Exit code 1 when the venue could not be read (what was fetched is kept), 2 on a bad source, asset or
    timeframe.
    """
    from app.services.market_data.ccxt_source import VENUES

    venue = source.strip().lower()
    if venue not in VENUES:
        raise _fail(f"unknown source {source!r}: use one of {', '.join(VENUES)}")
    wanted = [a.upper() for a in _split(assets)]
    frames = _split(timeframes)
    if not wanted or not frames:
        raise _fail("give at least one asset and one timeframe")
    for tf in frames:
        try:
            timeframe_seconds(tf)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    try:
        settings = Settings()
    except ValidationError as exc:
        raise _fail(f"bad configuration: {exc}") from exc
    configure_logging(settings.log_level, json_lines=settings.log_json)
    code = asyncio.run(_download(settings, cast("ExchangeId", venue), wanted, frames, days, base_url))
    if code:
        raise typer.Exit(code)


async def _download(
    settings: Settings, venue: ExchangeId, assets: list[str], timeframes: list[str], days: int, base_url: str | None
) -> int:
    from app.services.market_data.ccxt_source import CcxtMarketData, VenueRequestError, local_api_urls

    console = Console()
    overrides = local_api_urls(venue, base_url) if base_url else None
    market = CcxtMarketData(venue, assets, api_overrides=overrides, attempts=ATTEMPTS, backoff_s=BACKOFF_S)
    engine = create_engine(settings.database_url)
    try:
        offered = list(market.exchange.timeframes or {})
        unknown = [tf for tf in timeframes if tf not in offered]
        if unknown:
            typer.echo(f"error: {venue} has no {', '.join(unknown)} candles; it offers {', '.join(offered)}", err=True)
            return 2
        try:
            await market.load()
        except UnknownSymbolError as exc:
            typer.echo(f"error: {exc}", err=True)
            return 2
        except (TemporaryError, VenueRequestError) as exc:
            typer.echo(f"error: cannot read {venue}'s markets: {exc}", err=True)
            return 1
        await ensure_migrated(engine)
        store = CandleStore(create_session_factory(engine))
        end = datetime.now(UTC)
        start = end - timedelta(days=days)
        console.print(
            f"{venue}: {', '.join(assets)} {', '.join(timeframes)} from {start:%Y-%m-%d %H:%M} UTC", soft_wrap=True
        )
        results, failure = await _fetch_all(console, market, store, assets, timeframes, start, end)
    finally:
        await market.close()
        await engine.dispose()
    _summary(console, venue, results)
    if failure:
        console.print(f"[red]download incomplete:[/red] {failure}", soft_wrap=True)
        return 1
    console.print("download complete")
    return 0


async def _fetch_all(
    console: Console,
    market: CcxtMarketData,
    store: CandleStore,
    assets: list[str],
    timeframes: list[str],
    start: datetime,
    end: datetime,
) -> tuple[list[_Result], str | None]:
    """Fetch and store every series in turn; stop at the first failure (the rest is marked not fetched)."""
    from app.services.market_data.ccxt_source import VenueRequestError

    failures = (TemporaryError, VenueRequestError, UnknownSymbolError)
    results: list[_Result] = []
    failure: str | None = None
    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for asset in assets:
            for series in [*timeframes, "funding"]:
                result = _Result(asset, series, None if series == "funding" else _expected(series, start, end))
                results.append(result)
                if failure:
                    result.notes.append("not fetched")
                    continue
                try:
                    if series == "funding":
                        await _funding(progress, market, store, result, start, end)
                    else:
                        await _candles(progress, market, store, result, start, end)
                except failures as exc:
                    failure = f"{asset} {series}: {exc}"
                    result.notes.append("failed")
                if series != "funding":
                    await _gaps(store, market.name, result, start, end)
    return results, failure


def _expected(timeframe: str, start: datetime, end: datetime) -> int:
    """How many candles lie wholly in [start, end]."""
    tf_ms = timeframe_seconds(timeframe) * 1000
    first = -(-int(start.timestamp() * 1000) // tf_ms)
    return max(0, int(end.timestamp() * 1000) // tf_ms - first)


async def _candles(
    progress: Progress, market: CcxtMarketData, store: CandleStore, result: _Result, start: datetime, end: datetime
) -> None:
    task = progress.add_task(f"{result.asset} {result.series}", total=result.expected)
    pages = market.fetch_candles_range(
        result.asset, result.series, start, end, progress=lambda n: progress.advance(task, n)
    )
    async for page in pages:
        if len(page) == 0:
            continue
        result.new += await store.upsert_candles(market.name, result.asset, result.series, page, now=end)
        result.received += len(page)
        page_first, page_last = (datetime.fromtimestamp(int(t) / 1000, UTC) for t in page.open_time_ms[[0, -1]])
        result.first = result.first or page_first
        result.last = page_last


async def _funding(
    progress: Progress, market: CcxtMarketData, store: CandleStore, result: _Result, start: datetime, end: datetime
) -> None:
    task = progress.add_task(f"{result.asset} funding", total=None)
    rates = await market.fetch_funding_history(result.asset, start, end)
    result.received = len(rates)
    result.new = await store.upsert_funding(market.name, result.asset, rates)
    if rates:
        result.first, result.last = (
            datetime.fromtimestamp(r.funding_time_ms / 1000, UTC) for r in (rates[0], rates[-1])
        )
    else:
        result.notes.append("no settlements in the period")
    progress.update(task, total=len(rates), completed=len(rates))


async def _gaps(store: CandleStore, venue: str, result: _Result, start: datetime, end: datetime) -> None:
    """Note the candles of the period that are not in the store (after this run)."""
    gaps = await store.find_gaps(venue, result.asset, result.series, start, end)
    if not gaps:
        return
    tf = timedelta(seconds=timeframe_seconds(result.series))
    result.missing = sum(int((b - a) / tf) for a, b in gaps)
    result.gaps = gaps
    result.notes.append(f"{result.missing} missing")


def _summary(console: Console, venue: str, results: list[_Result]) -> None:
    table = Table(title=f"{venue} (UTC)")
    for name in ("asset", "series", "received", "new", "first", "last"):
        table.add_column(name, no_wrap=True)
    table.add_column("notes")
    for r in results:
        table.add_row(
            r.asset,
            r.series,
            str(r.received) if r.expected is None else f"{r.received}/{r.expected}",
            str(r.new),
            f"{r.first:%m-%d %H:%M}" if r.first else "",
            f"{r.last:%m-%d %H:%M}" if r.last else "",
            ", ".join(r.notes),
        )
    console.print(table)
    for r in results:
        if r.gaps:
            shown = "; ".join(f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M}" for a, b in r.gaps[:3])
            more = f" and {len(r.gaps) - 3} more" if len(r.gaps) > 3 else ""
            console.print(
                f"{r.asset} {r.series}: {r.missing} candle(s) missing in {len(r.gaps)} gap(s): {shown}{more}",
                soft_wrap=True,
            )
