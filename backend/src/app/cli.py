"""`trading-agent`: run the agent, make one decision, migrate the database."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.commands.admin import admin_app
from app.commands.arena import arena
from app.commands.backtest import backtest
from app.commands.common import load_settings
from app.commands.data import data_app
from app.commands.data_download import download
from app.commands.experiments import experiments_app
from app.commands.llm import llm_app
from app.commands.outcomes import outcomes_app
from app.core.config import Settings
from app.core.errors import ConfigurationError
from app.schemas.decision_result import DecisionResult

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(help="AI Trading Agent: an LLM decision engine for crypto perpetual futures.", no_args_is_help=True)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(llm_app, name="llm", help="LLM tools: parse raw model outputs and say why they were rejected.")
data_app.command("download")(download)
app.add_typer(data_app, name="data", help="Market data: download from a venue or import CSV folders.")
app.add_typer(admin_app, name="admin", help="Administration: issue a new admin key when it is lost.")
app.add_typer(outcomes_app, name="outcomes", help="Decision outcomes: what followed each decision; back-fill.")
app.command("backtest")(backtest)
app.command("arena")(arena)
app.add_typer(experiments_app, name="experiments", help="A/B experiments between models, strategies and prompts.")
console = Console()


def _settings() -> Settings:
    """The settings; a bad value exits 2 with the reason (no traceback)."""
    return load_settings()


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT, 8000)")] = None,
) -> None:
    """Serve the API and run a decision cycle for every active account on every closed candle."""
    _serve(host, port, run_loop=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT, 8000)")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="API server processes behind the one port (more than 1 needs PostgreSQL)")
    ] = 1,
) -> None:
    """Serve the API only (decisions are made on request; with `scheduler` and `worker`, the API of a multi-process
    agent)."""
    if workers > 1:
        import uvicorn

        settings = _multiprocess_settings("serve --workers")
        bind_host, bind_port = host or settings.api_host, port or settings.api_port
        console.print(f"Dashboard on http://{bind_host}:{bind_port}/ ({workers} API server processes)")
        # each process builds its own agent from the environment; they share nothing but the database
        uvicorn.run(
            "app.cli:api_server", factory=True, host=bind_host, port=bind_port, workers=workers, log_config=None
        )
        return
    _serve(host, port, run_loop=False)


def api_server() -> FastAPI:
    """One API server process of `serve --workers N` (uvicorn's factory)."""
    from app.main import create_app

    return create_app(_settings(), run_loop=False, freeze_startup=True)


@app.command()
def scheduler(
    cycles: Annotated[int, typer.Option(help="Exit after this many cycles, once their jobs are done (0: run on)")] = 0,
) -> None:
    """Multi-process mode (PostgreSQL): queue one job per account on every closed candle for the workers."""
    from app.jobs.scheduler import run_scheduler

    settings = _multiprocess_settings("scheduler")
    ran = asyncio.run(run_scheduler(settings, cycles=cycles))
    console.print(f"scheduler stopped after {ran} cycle(s)")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs (accounts) at a time in this process")] = 8,
    name: Annotated[
        str | None, typer.Option(help="The worker's name in /health (default: worker-<host>-<pid>)")
    ] = None,
) -> None:
    """Multi-process mode (PostgreSQL): run the scheduler's jobs, each one account's decision cycle of one candle."""
    from app.jobs.worker import run_worker

    settings = _multiprocess_settings("worker")
    asyncio.run(run_worker(settings, concurrency=concurrency, name=name))


def _multiprocess_settings(command: str) -> Settings:
    settings = _settings()
    if settings.is_sqlite:
        console.print(
            f"[red]configuration error:[/red] `trading-agent {command}` shares its work with other processes through "
            "PostgreSQL: set DATABASE_URL=postgresql://... (SQLite is for the one-process `trading-agent run`)"
        )
        raise typer.Exit(2)
    return settings


def _serve(host: str | None, port: int | None, *, run_loop: bool) -> None:
    import uvicorn

    from app.main import create_app

    settings = _settings()
    bind_host, bind_port = host or settings.api_host, port or settings.api_port
    console.print(
        f"Dashboard on http://{bind_host}:{bind_port}/ (log in with an API key), API docs at /docs"
        + (", with the trading loop" if run_loop else "")
    )
    try:
        served = create_app(settings, run_loop=run_loop, freeze_startup=True)
        uvicorn.run(served, host=bind_host, port=bind_port, log_config=None)
    except ConfigurationError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def decide(
    once: Annotated[bool, typer.Option("--once", help="Make exactly one decision and exit")] = False,
    account_id: Annotated[int, typer.Option("--account-id", help="Account to decide for")] = 1,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated assets (default: ASSETS)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON")] = False,
    cycles: Annotated[int, typer.Option(help="Without --once: how many cycles to run (0: forever)")] = 0,
) -> None:
    """Make a decision now and print it, its validation and the orders placed."""
    settings = _settings()
    wanted = [s for s in symbols.split(",") if s.strip()] if symbols else None
    try:
        asyncio.run(_decide(settings, account_id, wanted, as_json, 1 if once else cycles))
    except ConfigurationError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


async def _decide(settings: Settings, account_id: int, symbols: list[str] | None, as_json: bool, cycles: int) -> None:
    from app.bootstrap import build_agent
    from app.core.timeframes import floor_time, timeframe_delta
    from app.services.llm.llm_exceptions import DecisionEngineError

    agent = await build_agent(settings)
    try:
        if not as_json:
            console.print(agent.describe())
        done = 0
        while cycles == 0 or done < cycles:
            if done:
                next_close = floor_time(agent.clock.now(), settings.interval) + timeframe_delta(settings.interval)
                await agent.clock.sleep_until(next_close)
            try:
                result = await agent.engine.make_trading_decision(symbols, account_id, trigger="cli")
                await agent.engine.shadows_done()  # an experiment's shadow decisions are stored before the exit
            except DecisionEngineError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(1) from exc
            if as_json:
                print(result.model_dump_json())
            else:
                print_decision(result)
            done += 1
    finally:
        await agent.close()


def print_decision(result: DecisionResult) -> None:
    """Decision, validation verdicts and orders, as tables."""
    console.rule(f"decision {result.id}  account {result.account_id}  {result.cycle_time:%Y-%m-%d %H:%M} UTC")
    console.print(
        f"status [bold]{result.status}[/bold]  model {result.model_served or result.model_requested}"
        f"  latency {result.latency_ms or 0:.1f} ms  tokens {result.usage.total_tokens or 0}"
        f"  cost ${result.usage.cost_usd or 0:.4f}"
    )
    if result.error:
        console.print(f"[yellow]{result.error}[/yellow]")
    verdicts = Table("asset", "action", "allocation", "SL", "TP", "verdict", "reasons", title="decision and validation")
    for v in result.validation.verdicts if result.validation else []:
        final = v.final
        verdicts.add_row(
            v.asset,
            final.action
            if v.original is None or v.original.action == final.action
            else f"{v.original.action} -> {final.action}",
            f"{final.allocation_usd:,.2f}",
            f"{final.sl_price:g}" if final.sl_price else "",
            f"{final.tp_price:g}" if final.tp_price else "",
            v.status,
            "; ".join(v.reasons),
        )
    console.print(verdicts)
    if result.validation and result.validation.errors:
        console.print("validation notes: " + "; ".join(result.validation.errors))
    if result.orders:
        orders = Table("client order id", "asset", "side", "type", "kind", "status", "qty", "price", title="orders")
        for o in result.orders:
            price = o.avg_fill_price or o.trigger_price
            orders.add_row(
                o.client_order_id,
                o.symbol,
                o.side,
                o.type,
                o.kind,
                o.status + (f" ({o.reject_reason})" if o.reject_reason else ""),
                f"{o.quantity:g}",
                f"{price:g}" if price else "",
            )
        console.print(orders)
    else:
        console.print("orders: none")
    for error in result.execution_errors + result.context_errors:
        console.print(f"[yellow]note:[/yellow] {error}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database named by DATABASE_URL to the latest schema."""
    from app.db.migrate import current_revision, upgrade
    from app.db.session import create_engine

    settings = _settings()

    async def _run() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    revision = asyncio.run(_run())
    console.print(f"database at revision {revision}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()


__all__ = ["app", "main"]
