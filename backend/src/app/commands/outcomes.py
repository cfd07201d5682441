"""`trading-agent outcomes ...`: decision outcomes (wired in `app.cli` as `outcomes`).

`outcomes backfill` measures the outcomes of the decisions stored in DATABASE_URL that have none yet (older
decisions, or those the loop could not measure), from the candles stored in the same database, and the trade
outcome of every closed position a decision opened. Re-running it writes nothing twice. What it cannot measure is
counted with the reason (candles not stored: `trading-agent data download` or `data import` stores them).
`outcomes show DECISION_ID` prints what one decision's outcomes are.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from app.commands.common import fail, load_settings, parse_time

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.services.evaluation.tracker import OutcomeReport
    from app.services.market_data.candle_store import CandleStore

outcomes_app = typer.Typer(help="Decision outcomes: back-fill and inspect.", no_args_is_help=True)


@outcomes_app.callback()
def _group() -> None:
    """Decision outcome commands."""


def parse_horizons(text: str) -> list[int]:
    """`1,4,12,24` -> [1, 4, 12, 24]; ValueError with the reason."""
    try:
        horizons = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--horizons {text!r}: whole numbers of candles, e.g. 1,4,12,24") from None
    if not horizons or horizons[0] < 1:
        raise ValueError(f"--horizons {text!r}: at least one horizon, each of 1 candle or more")
    return horizons


@outcomes_app.command("backfill")
def backfill(
    account_id: Annotated[int | None, typer.Option("--account-id", help="Only this account's decisions")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only decisions for a cycle at or after this ISO time (UTC)")
    ] = None,
    horizons: Annotated[str, typer.Option(help="Comma-separated horizons, in candles of INTERVAL")] = "1,4,12,24",
    source: Annotated[
        str | None, typer.Option(help="Whose stored candles to measure on (default: MARKET_SOURCE)")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Measure the horizons closed by this ISO time (default: now; for a simulation or a replay, the "
            "close of its newest stored candle)"
        ),
    ] = None,
) -> None:
    """Measure the outcomes of stored decisions that have none yet, from the stored candles (safe to re-run)."""
    try:
        wanted = parse_horizons(horizons)
        start = parse_time(since, "--since") if since else None
        end = parse_time(until, "--until") if until else None
    except ValueError as exc:
        raise fail(str(exc)) from exc
    settings = load_settings()
    asyncio.run(_backfill(settings, source or settings.market_source, wanted, account_id, start, end))


async def _backfill(
    settings: Settings,
    source: str,
    horizons: list[int],
    account_id: int | None,
    since: datetime | None,
    until: datetime | None,
) -> None:
    from app.db.migrate import ensure_migrated
    from app.db.session import create_engine, create_session_factory
    from app.services.evaluation.tracker import OutcomeTracker
    from app.services.market_data.candle_store import CandleStore

    engine = create_engine(settings.database_url)
    try:
        await ensure_migrated(engine)
        sessions = create_session_factory(engine)
        store = CandleStore(sessions)
        now = until or await _market_now(store, source, settings)
        tracker = OutcomeTracker(sessions, store, source, settings.interval, horizons)
        report = await tracker.backfill(now, account_id=account_id, since=since)
    finally:
        await engine.dispose()
    _print_report(report, source, settings.interval)


async def _market_now(store: CandleStore, source: str, settings: Settings) -> datetime:
    """Now on the market's clock: real time for a venue; a simulation or a replay ran on its own clock (ahead of
    real time or long past), which stopped at the close of its newest stored candle."""
    from app.core.timeframes import timeframe_delta

    if source not in ("simulated", "replay"):
        return datetime.now(UTC)
    newest = [await store.latest_open_time(source, asset, settings.interval) for asset in settings.assets]
    stored = [moment for moment in newest if moment is not None]
    return max(stored) + timeframe_delta(settings.interval) if stored else datetime.now(UTC)


def _print_report(report: OutcomeReport, source: str, interval: str) -> None:
    typer.echo(
        f"{report.written} outcome row(s) written from {report.decisions} decision(s); "
        f"{report.trades} trade outcome(s) of closed positions written"
    )
    if report.unmeasured:
        typer.echo(
            f"{len(report.unmeasured)} decision(s) could not be measured at every horizon: their {source} {interval} "
            "candles are not stored:"
        )
        for asset, missing in sorted(report.missing.items()):
            typer.echo(
                f"  {asset}: {missing.outcomes} outcome(s) of decisions from {missing.first_cycle:%Y-%m-%d %H:%M} "
                f"to {missing.last_cycle:%Y-%m-%d %H:%M} UTC"
            )
        typer.echo(
            f"  store them with `trading-agent data download --source <venue> --assets <assets> --timeframes "
            f"{interval}` (or `trading-agent data import DIR --source {source}`), then run this again"
        )
    if report.no_price:
        typer.echo(
            f"{report.no_price} asset decision(s) have no price (no asset_state and no stored context): they "
            "cannot be measured"
        )
    if report.pending:
        typer.echo(f"{report.pending} decision(s) are still pending: measured once they are finished")
    if report.not_due:
        typer.echo(f"{report.not_due} outcome(s) are not due yet (the last candle of their horizon has not closed)")


@outcomes_app.command("show")
def show(decision_id: Annotated[int, typer.Argument(help="The decision's id")]) -> None:
    """A decision's outcomes at each horizon, and the trade outcome of the positions it opened."""
    settings = load_settings()
    if not asyncio.run(_show(settings, decision_id)):
        typer.echo(f"decision {decision_id} has no outcome yet")
        raise typer.Exit(1)


async def _show(settings: Settings, decision_id: int) -> bool:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from app.db.models import DecisionOutcome, DecisionTradeOutcome
    from app.db.session import create_engine, create_session_factory

    engine = create_engine(settings.database_url)
    try:
        async with create_session_factory(engine)() as session:
            rows = (
                await session.scalars(
                    select(DecisionOutcome)
                    .where(DecisionOutcome.decision_id == decision_id)
                    .order_by(DecisionOutcome.asset, DecisionOutcome.horizon)
                )
            ).all()
            trades = (
                await session.scalars(
                    select(DecisionTradeOutcome).where(DecisionTradeOutcome.decision_id == decision_id)
                )
            ).all()
    finally:
        await engine.dispose()
    console = Console()
    if rows:
        table = Table("asset", "horizon", "action", "verdict", "direction", "entry", "exit", "return", "adverse")
        for name in ("favourable", "first hit", "hit"):
            table.add_column(name)
        for r in rows:
            table.add_row(
                r.asset,
                f"{r.horizon} x {r.interval}",
                r.action,
                r.verdict,
                f"{r.direction:+d}",
                f"{r.entry_price:g}",
                f"{r.exit_price:g}",
                f"{r.direction_return:+.4%}",
                "" if r.max_adverse is None else f"{r.max_adverse:.4%}",
                "" if r.max_favourable is None else f"{r.max_favourable:.4%}",
                "" if r.first_hit is None else r.first_hit + (f" {r.first_hit_at:%H:%M}" if r.first_hit_at else ""),
                "" if r.hit is None else ("yes" if r.hit else "no"),
            )
        console.print(table)
    for t in trades:
        console.print(
            f"position {t.position_id} {t.asset} {t.side}: realized {t.realized_pnl:+.2f} - fees {t.fees:.2f} + "
            f"funding {t.funding:+.2f} = net {t.net_pnl:+.2f} USD "
            f"({t.exit_reason or 'closed'} at {t.closed_at:%Y-%m-%d %H:%M})"
        )
    return bool(rows or trades)
