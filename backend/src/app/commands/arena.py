"""`trading-agent arena`: several models or strategies on the same frozen windows, and a leaderboard (wired in
`app.cli`).

The windows are chosen from the reference asset's prices (BTC, else the first asset) before any entrant runs
(`backtest.windows`), then every entrant (each model with each strategy, the rule baseline always among them as
the yardstick) is backtested on every window by the one backtester, without its own baseline run. The arena is
stored as a run of kind "arena" (its settings with the entrants and windows, the fingerprint of the data over its
whole span, its progress) with its entrants' backtests as children; the leaderboard (`backtest.arena`) is printed
and stored as its summary. Model answers are cached, so a rerun asks no model and costs nothing.

Buy-and-hold, per window, is the equal-weight portfolio of the arena's assets (bought at the window's first close,
one taker fee, funding paid), as the backtest report computes it. `--max-cost` caps the whole arena: each run may
spend what the runs before it left, and the arena stops (the leaderboard on the windows every entrant finished)
when a run is refused or stopped by it. `--seed` is the simulator's and the bootstrap's.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.commands.backtest import (
    AssetsOption,
    BalanceOption,
    DataOption,
    IntervalOption,
    LongIntervalOption,
    StoredOption,
    TemperatureOption,
    quiet_decisions,
)
from app.commands.common import fail, load_settings

if TYPE_CHECKING:
    from app.backtest.arena import Entrant, WindowFigures
    from app.backtest.results import BacktestConfig
    from app.backtest.runner import Backtester
    from app.backtest.windows import Window
    from app.core.config import Settings
    from app.services.market_data.replay import ReplaySource

BUY_AND_HOLD = "equal_weight_buy_and_hold"  # the summary's benchmark the leaderboard compares with


def arena(
    models: Annotated[str, typer.Option("--models", help="Comma-separated OpenRouter slugs and/or 'baseline'.")],
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated strategy ids; every model runs each.")
    ] = "conservative",
    windows: Annotated[int, typer.Option("--windows", min=1, help="How many windows to run every entrant on.")] = 8,
    window_days: Annotated[int, typer.Option("--window-days", min=1, help="Each window's length in days.")] = 14,
    assets: AssetsOption = "BTC,ETH,SOL",
    interval: IntervalOption = "1h",
    long_interval: LongIntervalOption = "4h",
    start: Annotated[
        str | None, typer.Option("--from", help="Windows start at or after this (date or ISO time, UTC).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Windows end at or before this (date or ISO time, UTC).")
    ] = None,
    data: DataOption = None,
    stored: StoredOption = None,
    initial_balance: BalanceOption = 10_000.0,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", min=0.0, help="The whole arena's model cost cap, USD.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The simulator's seed and the bootstrap's.")] = 42,
    temperature: TemperatureOption = None,
) -> None:
    """Run every model and strategy on the same windows (up, down and sideways markets) and rank them."""
    from app.backtest.arena import entrants

    settings = load_settings()
    quiet_decisions(settings)
    model_list = _split(models)
    strategy_list = _split(strategies)
    if not model_list or not strategy_list:
        raise fail("--models and --strategies need at least one name each")
    if data == "simulated" and (start is None or end is None):
        start, end = _simulated_period(start, end, windows, window_days, interval, long_interval)
    try:
        from app.commands.backtest import build_config

        config = build_config(
            assets=assets,
            interval=interval,
            long_interval=long_interval,
            start=start,
            end=end,
            strategy=strategy_list[0],
            model="baseline",
            data=data,
            stored=stored or settings.market_source,
            initial_balance=initial_balance,
            max_cost=max_cost,
            mask_dates=False,
            mask_assets=False,
            seed=seed,
            temperature=temperature,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    chosen, yardstick = entrants(model_list, strategy_list)
    raise typer.Exit(asyncio.run(_arena(settings, config, chosen, yardstick, windows, window_days)))


def _split(text: str) -> list[str]:
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def _simulated_period(
    start: str | None, end: str | None, count: int, days: int, interval: str, long_interval: str
) -> tuple[str, str]:
    """Simulated history has no end: by default the first cycle with a full warm-up, and twice the windows' days
    after it, so that the choice has markets to choose from."""
    from app.backtest.history import SIMULATOR_EPOCH, warmup
    from app.commands.common import parse_time

    span = timedelta(days=2 * count * days)
    if start is None and end is None:
        first = SIMULATOR_EPOCH + warmup(interval, long_interval)
        return first.isoformat(), (first + span).isoformat()
    if start is None:
        return (parse_time(str(end), "--to") - span).isoformat(), str(end)
    return str(start), (parse_time(start, "--from") + span).isoformat()


async def _arena(
    settings: Settings, base: BacktestConfig, chosen: list[Entrant], yardstick: str, count: int, days: int
) -> int:
    from app.backtest import history as hist
    from app.backtest.runner import Backtester, cycle_times
    from app.backtest.windows import WindowError, choose_windows
    from app.core.errors import TradingAgentError
    from app.db.migrate import ensure_migrated
    from app.db.session import create_engine, create_session_factory

    db = create_engine(settings.database_url)
    try:
        await ensure_migrated(db)
        backtester = Backtester(settings, create_session_factory(db))
        try:
            source = await backtester.load_history(base)
            first, last = hist.cycle_span(source, list(base.assets), base.interval, base.long_interval)
        except (TradingAgentError, ValueError) as exc:
            raise fail(str(exc)) from exc
        first, last = max(first, base.start), min(last, base.end)
        reference = "BTC" if "BTC" in base.assets else base.assets[0]
        try:
            chosen_windows = choose_windows(
                source.series(reference, base.interval),
                first=first,
                last=last,
                count=count,
                days=days,
                interval=base.interval,
            )
        except WindowError as exc:
            raise fail(str(exc)) from exc
        _describe(base, chosen, yardstick, reference, chosen_windows, count)
        begin = min(w.start for w in chosen_windows) - hist.warmup(base.interval, base.long_interval)
        arena_id = await _create_arena(
            backtester,
            _arena_config(base, chosen, yardstick, reference, chosen_windows, days),
            fingerprint=hist.data_fingerprint(source, list(base.assets), begin, max(w.end for w in chosen_windows)),
            cycles_total=len(chosen)
            * sum(len(cycle_times(replace(base, start=w.start, end=w.end))) for w in chosen_windows),
        )
        return await _compete(backtester, arena_id, base, source, chosen, yardstick, chosen_windows)
    finally:
        await db.dispose()


async def _compete(
    backtester: Backtester,
    arena_id: int,
    base: BacktestConfig,
    source: ReplaySource,
    chosen: list[Entrant],
    yardstick: str,
    chosen_windows: list[Window],
) -> int:
    """Every entrant on every window (window by window), then the leaderboard, printed and stored."""
    from app.backtest.arena import WindowFigures, format_leaderboard, leaderboard
    from app.core.errors import TradingAgentError

    results: dict[str, dict[int, WindowFigures]] = {e.label: {} for e in chosen}
    buy_and_hold: dict[int, float] = {}
    runs: dict[str, dict[int, int]] = {e.label: {} for e in chosen}
    spent, cycles_done, stopped = 0.0, 0, None
    try:
        for index, window in enumerate(chosen_windows):
            for entrant in chosen:
                config = replace(
                    base,
                    start=window.start,
                    end=window.end,
                    model=entrant.model,
                    strategy=entrant.strategy,
                    label=f"{entrant.label} · window {index + 1}",
                    max_cost_usd=None if base.max_cost_usd is None else max(0.0, base.max_cost_usd - spent),
                )
                try:
                    stored = await backtester.run(
                        config, progress=None, parent_id=arena_id, with_baseline=False, source=source
                    )
                except (TradingAgentError, ValueError) as exc:
                    stopped = f"{entrant.label} on window {index + 1}: {exc}"
                    break
                spent += stored.result.model_cost_usd
                cycles_done += stored.result.cycles
                runs[entrant.label][index] = stored.run_id
                await _update_arena(backtester, arena_id, cycles_done=cycles_done, spent_usd=spent)
                figures = WindowFigures.from_run(stored.result, stored.summary)
                if stored.result.stopped or figures is None:
                    stopped = f"{entrant.label} on window {index + 1}: {stored.result.stopped or 'no cycle ran'}"
                    break
                results[entrant.label][index] = figures
                benchmark = ((stored.summary.get("benchmarks") or {}).get(BUY_AND_HOLD) or {}).get("figures") or {}
                if index not in buy_and_hold and benchmark.get("total_return") is not None:
                    buy_and_hold[index] = float(benchmark["total_return"])
                _report_run(index, len(chosen_windows), entrant, figures, stored.run_id)
            if stopped:
                break
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, Exception) and str(exc) else f"interrupted ({type(exc).__name__})"
        now = backtester.wall_clock.now()
        await _update_arena(backtester, arena_id, status="failed", error=reason, finished_at=now)
        raise
    complete = [i for i in range(len(chosen_windows)) if all(i in by_window for by_window in results.values())]
    finished = {label: {i: by_window[i] for i in complete} for label, by_window in results.items()}
    board = leaderboard(
        finished,
        buy_and_hold={i: buy_and_hold[i] for i in complete if i in buy_and_hold},
        baseline_label=yardstick,
        seed=base.seed,
    )
    typer.echo("")
    typer.echo(format_leaderboard(board))
    if stopped:
        typer.secho(
            f"arena stopped: {stopped} (the leaderboard covers the {len(complete)} windows every entrant finished)",
            fg=typer.colors.YELLOW,
        )
    summary = {
        "leaderboard": board.as_dict(),
        "windows_complete": complete,
        "runs": {label: {str(i): run for i, run in by_window.items()} for label, by_window in runs.items()},
        "buy_and_hold": {str(i): value for i, value in buy_and_hold.items()},
        "spent_usd": spent,
        "stopped": stopped,
    }
    now = backtester.wall_clock.now()
    await _update_arena(
        backtester,
        arena_id,
        status="stopped" if stopped else "done",
        summary=summary,
        error=stopped,
        finished_at=now,
    )
    typer.echo(f"arena run {arena_id}: {len(complete)} of {len(chosen_windows)} windows, model cost ${spent:.4f}")
    return 1 if stopped else 0


async def _create_arena(backtester: Backtester, config: dict[str, Any], *, fingerprint: str, cycles_total: int) -> int:
    """The arena's row (kind "arena", running), its entrants' backtests become its children."""
    import os

    from app.backtest.runner import code_version
    from app.db.models import BacktestRun

    now = backtester.wall_clock.now()
    labels = ", ".join(e["label"] for e in config["entrants"])
    async with backtester.sessions.begin() as session:
        run = BacktestRun(
            kind="arena",
            label=f"arena: {labels}"[:200],
            status="running",
            config=config,
            data_fingerprint=fingerprint,
            code_version=code_version(),
            cycles_total=cycles_total,
            cycles_done=0,
            spent_usd=0.0,
            pid=os.getpid(),
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        await session.flush()
        return run.id


async def _update_arena(backtester: Backtester, arena_id: int, **values: Any) -> None:
    from sqlalchemy import update

    from app.db.models import BacktestRun

    async with backtester.sessions.begin() as session:
        await session.execute(
            update(BacktestRun)
            .where(BacktestRun.id == arena_id)
            .values(updated_at=backtester.wall_clock.now(), **values)
        )


def _arena_config(
    base: BacktestConfig, chosen: list[Entrant], yardstick: str, reference: str, chosen_windows: list[Window], days: int
) -> dict[str, Any]:
    """The arena's settings as stored with it: the shared backtest settings, the entrants and the windows."""
    from app.backtest.runner import config_json

    shared = config_json(base)
    for key in ("start", "end", "model", "strategy", "label"):
        shared.pop(key, None)
    return {
        **shared,
        "entrants": [asdict(e) for e in chosen],
        "baseline": yardstick,
        "reference": reference,
        "window_days": days,
        "windows": [
            {
                "start": w.start.isoformat(),
                "end": w.end.isoformat(),
                "regime": w.regime,
                "reference_return": w.reference_return,
            }
            for w in chosen_windows
        ],
        "buy_and_hold": BUY_AND_HOLD,
    }


def _describe(
    base: BacktestConfig,
    chosen: list[Entrant],
    yardstick: str,
    reference: str,
    chosen_windows: list[Window],
    asked: int,
) -> None:
    data = {
        "simulated": f"the seeded simulator (seed {base.seed}): SIMULATED prices",
        "folder": f"CSV files in {base.data_dir}",
        "stored": f"the candle store ({base.data_source})",
    }[base.data]
    typer.echo(
        f"Arena: {len(chosen)} entrants on {len(chosen_windows)} windows of {', '.join(base.assets)} {base.interval} "
        f"(trend {base.long_interval}); market: {data}; paper {base.venue}, {base.initial_balance:,.0f} USD each"
    )
    typer.echo(f"entrants: {', '.join(e.label for e in chosen)} (yardstick: {yardstick})")
    typer.echo(f"windows, chosen from {reference}'s {base.interval} closes before any entrant runs:")
    for index, window in enumerate(chosen_windows):
        typer.echo(
            f"  {index + 1:>2}  {window.start:%Y-%m-%d %H:%M} -> {window.end:%Y-%m-%d %H:%M}  {window.regime:<8}  "
            f"{reference} {window.reference_return * 100:+.2f}%"
        )
    if len(chosen_windows) < asked:
        typer.secho(f"only {len(chosen_windows)} of {asked} windows fit in the period", fg=typer.colors.YELLOW)
    missing = {"up", "down", "sideways"} - {w.regime for w in chosen_windows}
    if missing:
        typer.secho(f"no {' or '.join(sorted(missing))} window in the period", fg=typer.colors.YELLOW)


def _report_run(index: int, total: int, entrant: Entrant, figures: WindowFigures, run_id: int) -> None:
    typer.echo(
        f"window {index + 1}/{total}  {entrant.label}: return {figures.total_return * 100:+.2f}%, "
        f"{figures.cycles} cycles, ${figures.cost_usd:.4f}  (run {run_id})"
    )
