"""`trading-agent backtest`: the engine over history, judged against buy-and-hold (wired in `app.cli`).

The run is stored in DATABASE_URL (`backtest_runs`) and its report written as a PNG and a self-contained HTML page
under `--out` (data/backtests/run-<id>/). `--job ID` runs a backtest the API queued (its settings are in the row).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.commands.common import fail, load_settings, parse_time

if TYPE_CHECKING:
    from app.backtest.results import BacktestConfig
    from app.backtest.runner import Progress, StoredBacktest
    from app.core.config import Settings

DEFAULT_OUT = "data/backtests"


# Options the backtest and the arena share.
AssetsOption = Annotated[str, typer.Option("--assets", help="Comma-separated assets, e.g. BTC,ETH,SOL.")]
IntervalOption = Annotated[str, typer.Option("--interval", help="Decision timeframe: one cycle per candle.")]
LongIntervalOption = Annotated[str, typer.Option("--long-interval", help="Trend timeframe.")]
DataOption = Annotated[
    str | None,
    typer.Option("--data", help="A folder of CSV files, or 'simulated'. Default: the candle store's candles."),
]
StoredOption = Annotated[
    str | None, typer.Option("--stored", help="The candle store's source (default: MARKET_SOURCE).")
]
BalanceOption = Annotated[float, typer.Option("--initial-balance", min=1.0)]
TemperatureOption = Annotated[float | None, typer.Option("--temperature", min=0.0, max=2.0)]


def backtest(
    assets: AssetsOption = "BTC,ETH,SOL",
    interval: IntervalOption = "1h",
    long_interval: LongIntervalOption = "4h",
    start: Annotated[str | None, typer.Option("--from", help="First cycle (date or ISO time, UTC).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last cycle, inclusive (date or ISO time, UTC).")] = None,
    strategy: Annotated[str, typer.Option("--strategy", help="Strategy id (conservative, aggressive, ...).")] = (
        "conservative"
    ),
    model: Annotated[str, typer.Option("--model", help="An OpenRouter model slug, or 'baseline'.")] = "baseline",
    data: DataOption = None,
    stored: StoredOption = None,
    initial_balance: BalanceOption = 10_000.0,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", min=0.0, help="Refuse to start (and stop) past this model cost, USD.")
    ] = None,
    mask_dates: Annotated[
        bool, typer.Option("--mask-dates", help="Also run with dates shifted and prices rebased to 100; report both.")
    ] = False,
    mask_assets: Annotated[bool, typer.Option("--mask-assets", help="With --mask-dates: assets named ASSET1...")] = (
        False
    ),
    seed: Annotated[int, typer.Option("--seed", help="The simulator's seed (--data simulated).")] = 42,
    temperature: TemperatureOption = None,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also run the rule baseline.")] = True,
    out: Annotated[Path, typer.Option("--out", help="Where the report files go.")] = Path(DEFAULT_OUT),
    job: Annotated[int | None, typer.Option("--job", help="Run the backtest the API queued with this id.")] = None,
) -> None:
    """Run the decision engine over history on a manual clock and report it against buy-and-hold."""
    settings = load_settings()
    quiet_decisions(settings)
    if job is not None:
        raise typer.Exit(asyncio.run(_job(settings, job, out)))
    try:
        config = build_config(
            assets=assets,
            interval=interval,
            long_interval=long_interval,
            start=start,
            end=end,
            strategy=strategy,
            model=model,
            data=data,
            stored=stored or settings.market_source,
            initial_balance=initial_balance,
            max_cost=max_cost,
            mask_dates=mask_dates,
            mask_assets=mask_assets,
            seed=seed,
            temperature=temperature,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    raise typer.Exit(asyncio.run(_run(settings, config, out, with_baseline=baseline)))


def quiet_decisions(settings: Settings) -> None:
    """No log line per decision over a progress bar (warnings and errors still show), unless the logs are JSON."""
    if settings.log_level.upper() in ("INFO", "DEBUG") and not settings.log_json:
        logging.getLogger("app").setLevel(logging.WARNING)


def build_config(
    *,
    assets: str,
    interval: str,
    long_interval: str,
    start: str | None,
    end: str | None,
    strategy: str,
    model: str,
    data: str | None,
    stored: str,
    initial_balance: float,
    max_cost: float | None,
    mask_dates: bool,
    mask_assets: bool,
    seed: int,
    temperature: float | None,
) -> BacktestConfig:
    """The config the options describe; ValueError with the reason."""
    from app.backtest.results import BacktestConfig, DataKind
    from app.core.symbols import normalise_asset
    from app.core.timeframes import timeframe_seconds

    for option, timeframe in (("--interval", interval), ("--long-interval", long_interval)):
        try:
            timeframe_seconds(timeframe)
        except ValueError:
            raise ValueError(f"{option} {timeframe!r}: a timeframe like 5m, 1h, 4h or 1d") from None
    if timeframe_seconds(long_interval) < timeframe_seconds(interval):
        raise ValueError(f"--long-interval {long_interval} is shorter than --interval {interval}")
    if mask_assets and not mask_dates:
        raise ValueError("--mask-assets goes with --mask-dates")
    kind: DataKind = "stored" if data is None else "simulated" if data == "simulated" else "folder"
    if kind == "folder" and not Path(str(data)).is_dir():
        raise ValueError(f"--data {data}: no such folder (a folder of CSV files, or 'simulated')")
    if kind != "folder" and (start is None or end is None):
        raise ValueError("--from and --to are needed (a CSV folder's whole span is the default only with --data DIR)")
    return BacktestConfig(
        assets=tuple(dict.fromkeys(normalise_asset(a) for a in assets.split(",") if a.strip())),
        interval=interval,
        long_interval=long_interval,
        start=parse_time(start, "--from") if start else datetime.min.replace(tzinfo=UTC),
        end=parse_time(end, "--to") if end else datetime.max.replace(tzinfo=UTC),
        strategy=strategy,
        model=model,
        data=kind,
        data_dir=str(data) if kind == "folder" else None,
        data_source=stored if kind == "stored" else None,
        seed=seed,
        initial_balance=initial_balance,
        max_cost_usd=max_cost,
        mask_dates=mask_dates,
        mask_assets=mask_assets,
        temperature=temperature,
    )


async def _run(
    settings: Settings, config: BacktestConfig, out: Path, *, with_baseline: bool, run_id: int | None = None
) -> int:
    from app.backtest.history import BacktestError
    from app.backtest.runner import Backtester
    from app.core.errors import TradingAgentError
    from app.db.migrate import ensure_migrated
    from app.db.session import create_engine, create_session_factory

    db = create_engine(settings.database_url)
    try:
        await ensure_migrated(db)
        backtester = Backtester(settings, create_session_factory(db))
        if config.data == "folder" and (config.start.year == 1 or config.end.year == 9999):
            config = await _whole_span(backtester, config)
        _describe(config)
        with _ProgressBar() as bar:
            try:
                stored = await backtester.run(config, progress=bar.update, run_id=run_id, with_baseline=with_baseline)
            except (BacktestError, TradingAgentError, ValueError) as exc:
                bar.stop()
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                return 1
        paths = write_report(stored, out)
        print_summary(stored, paths)
        return 0
    finally:
        await db.dispose()


async def _whole_span(backtester: Any, config: BacktestConfig) -> BacktestConfig:
    """A folder's whole span where --from or --to was left out."""
    from dataclasses import replace

    from app.backtest import history as hist

    source = await backtester.load_history(config)
    first, last = hist.cycle_span(source, list(config.assets), config.interval, config.long_interval)
    return replace(
        config,
        start=first if config.start.year == 1 else config.start,
        end=last if config.end.year == 9999 else config.end,
    )


async def _job(settings: Settings, run_id: int, out: Path) -> int:
    """The API's queued run: its settings from the row, its progress into the row."""
    from app.backtest.store import config_from_json, get_run
    from app.db.session import create_engine, create_session_factory

    db = create_engine(settings.database_url)
    try:
        run = await get_run(create_session_factory(db), run_id)
    finally:
        await db.dispose()
    if run is None:
        raise fail(f"no backtest run {run_id}")
    config = config_from_json(run.config)
    return await _run(settings, config, out, with_baseline=bool(run.config.get("with_baseline", True)), run_id=run_id)


def _describe(config: BacktestConfig) -> None:
    data = {
        "simulated": f"the seeded simulator (seed {config.seed}): SIMULATED prices",
        "folder": f"CSV files in {config.data_dir}",
        "stored": f"the candle store ({config.data_source})",
    }[config.data]
    typer.echo(
        f"Backtest {config.model} / {config.strategy} on {', '.join(config.assets)} {config.interval} "
        f"(trend {config.long_interval}) from {config.start:%Y-%m-%d %H:%M} to {config.end:%Y-%m-%d %H:%M} UTC\n"
        f"  market: {data}\n  venue: paper {config.venue}, {config.initial_balance:,.0f} USD\n"
        f"  clock: manual (no sleeping); model answers cached by model, prompt and parameters"
    )


class _ProgressBar:
    """Cycles done, ETA and money spent, per phase (the strategy, the masked run, the baseline)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("cycles"),
            TimeRemainingColumn(),
            TextColumn("spent ${task.fields[spent]:.4f}"),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._progress.stop()

    def update(self, progress: Progress) -> None:
        task = self._tasks.get(progress.phase)
        if task is None:
            task = self._tasks[progress.phase] = self._progress.add_task(
                progress.phase, total=progress.cycles_total, spent=0.0
            )
        self._progress.update(task, completed=progress.cycles_done, spent=progress.spent_usd)


def write_report(stored: StoredBacktest, out: Path) -> dict[str, Path]:
    """The PNG and the HTML page of a stored run, under `out`/run-<id>/."""
    from app.backtest.report import render_html, render_png

    folder = out / f"run-{stored.run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / "report.png"
    render_png(stored.result, stored.summary, png, baseline=stored.baseline)
    html = folder / "report.html"
    html.write_text(render_html(stored.result, stored.summary, png=png.read_bytes(), baseline=stored.baseline))
    return {"png": png, "html": html}


def _pct(value: Any) -> str:
    return f"{value * 100:+.2f}%" if isinstance(value, int | float) else "n/a"


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "n/a"


def print_summary(stored: StoredBacktest, paths: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    summary, result = stored.summary, stored.result
    table = Table(title=f"Backtest run {stored.run_id}")
    for column in ("", "return", "CAGR", "Sharpe", "Sortino", "max DD", "Calmar"):
        table.add_column(column, justify="right" if column else "left")
    for name, figures in _rows(summary):
        table.add_row(
            name,
            _pct(figures.get("total_return")),
            _pct(figures.get("cagr")),
            _num(figures.get("sharpe")),
            _num(figures.get("sortino")),
            _pct(-figures["max_drawdown"]) if isinstance(figures.get("max_drawdown"), float) else "n/a",
            _num(figures.get("calmar")),
        )
    console = Console()
    console.print(table)
    strategy = summary.get("strategy") or {}
    console.print(
        f"trades {strategy.get('trades', 'n/a')}  win rate {_pct(strategy.get('win_rate'))}  profit factor "
        f"{_num(strategy.get('profit_factor'))}  exposure {_pct(strategy.get('exposure'))}  fees "
        f"{_num(strategy.get('fees'))} USD  funding {_num(strategy.get('funding'))} USD"
    )
    console.print(
        f"model: {result.model_calls} calls, {result.cached_answers} cached answers, "
        f"${result.model_cost_usd:.4f}; errors {result.errors}, fallbacks {result.fallbacks} of {result.cycles} cycles"
    )
    if result.stopped:
        console.print(f"[yellow]{result.stopped}[/yellow]")
    console.print(f"data fingerprint  {result.data_fingerprint}")
    console.print(f"trade fingerprint {result.trade_fingerprint}")
    console.print(f"code version      {result.code_version}")
    console.print(f"report: {paths['html']}  picture: {paths['png']}")


def _rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, figures) of the strategy, each benchmark, the baseline and the masked run, as the summary has them."""
    rows = [("strategy", summary.get("strategy") or {})]
    for entry in (*(summary.get("benchmarks") or {}).values(), summary.get("baseline"), summary.get("masked")):
        if isinstance(entry, dict) and isinstance(entry.get("figures"), dict):
            rows.append((str(entry.get("label")), entry["figures"]))
    return rows
